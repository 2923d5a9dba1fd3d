/**
 * Structured logging. Every subsystem logs through a child with its own `component`, and jobs
 * add `jobId`, so one grep follows a job across agent and controller. Secrets never reach the
 * log: the redact list covers every key that may hold one, and every string (messages, fields,
 * bindings, error messages and stacks) has the credentials of URLs in it redacted (redact.ts), so
 * a NATS or catalog URL with a password prints as nats://user:[redacted]@host.
 */
import { createRequire } from 'node:module';
import { isatty } from 'node:tty';
import type { DestinationStream, Logger as PinoLogger, pino as PinoFactory } from 'pino';
import type { PrettyOptions } from 'pino-pretty';
import { redactCredentials } from './redact.js';

export type Logger = PinoLogger;

const SECRET_KEYS = [
  'password',
  'pass',
  'token',
  'secret',
  'passphrase',
  'authorization',
  'connectionString',
  'secretAccessKey',
  'enrollToken',
  'pgPassword',
  'credentials',
  'creds',
  'nkey',
  'seed',
];

export const REDACT_PATHS = SECRET_KEYS.flatMap((k) => [k, `*.${k}`]);

/** What pino writes to: a destination (a SonicBoom) or any object with write(). */
interface LogSink {
  write(line: string): unknown;
  flushSync?(): void;
  flush?(cb?: (err?: Error) => void): void;
}

/**
 * A sink that redacts credentials of URLs in every finished line before it is written. Applied to
 * the serialised line, it covers what key-based redaction cannot: messages, child bindings,
 * nested fields and error messages and stacks. (redact.ts keeps '"' out of user-info, so a match
 * never spans two JSON strings.) It also keeps one `component` per line (uniqueComponent).
 */
export function redactingSink(sink: LogSink): DestinationStream {
  return {
    write: (line: string) => sink.write(uniqueComponent(redactCredentials(line))),
    ...(sink.flushSync ? { flushSync: () => sink.flushSync!() } : {}),
    ...(sink.flush ? { flush: (cb?: (err?: Error) => void) => sink.flush!(cb) } : {}),
  };
}

const COMPONENT_KEY = '"component":';

/**
 * pino appends a child's bindings to its parent's without merging, so a component logger handed
 * to a subsystem that names itself (the controller's `event-relay` child given to the relay, the
 * agent's command logger given to `check`) wrote `component` twice, and JSON tools keep one at
 * random. One line of JSON with a repeated `component` is re-serialised through JSON.parse, which
 * keeps the last, innermost value: the subsystem that logged. Lines without one (nearly all) are
 * passed on untouched, so the common path costs two indexOf calls.
 */
export function uniqueComponent(line: string): string {
  const first = line.indexOf(COMPONENT_KEY);
  if (first < 0 || line.indexOf(COMPONENT_KEY, first + 1) < 0) return line;
  try {
    return `${JSON.stringify(JSON.parse(line))}\n`;
  } catch {
    return line; // not one JSON object (a "component": inside a message): leave it as written
  }
}

/** How log lines look: JSON for machines, or one readable line each for a person at a terminal. */
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/**
 * `auto` (the default) is pretty when the log's own stream (stderr) is a terminal and JSON
 * otherwise, so journald, files, pipes and log shippers keep getting JSON.
 * PGFLEET_LOG_FORMAT=json|pretty forces either when no option says.
 */
export function resolveLogFormat(format: string | undefined, isTerminal: boolean): 'json' | 'pretty' {
  const f = format ?? process.env.PGFLEET_LOG_FORMAT ?? 'auto';
  if (f === 'json' || f === 'pretty') return f;
  return isTerminal ? 'pretty' : 'json';
}

export interface LoggerOptions {
  level?: string;
  /** Where lines go; default stderr so stdout stays free for command output. */
  destination?: number;
  name?: string;
  /** json, pretty or auto (see resolveLogFormat); default PGFLEET_LOG_FORMAT, else auto. */
  format?: LogFormat;
}

/**
 * pino (12 modules), loaded by the first logger made rather than by importing core: the CLI's
 * --help and usage errors, and every process that exits before logging, never need it, and the
 * end-to-end tests start these processes hundreds of times.
 */
function pinoModule(): typeof PinoFactory {
  return (createRequire(import.meta.url)('pino') as { pino: typeof PinoFactory }).pino;
}

/**
 * pino-pretty, loaded only when a log is shown pretty: wal-push and wal-fetch start once per WAL
 * segment under PostgreSQL (never at a terminal) and should not pay for loading it.
 */
function prettyStream(): (o: PrettyOptions) => DestinationStream {
  return (createRequire(import.meta.url)('pino-pretty') as { build: (o: PrettyOptions) => DestinationStream }).build;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const pino = pinoModule();
  const fd = opts.destination ?? 2;
  const terminal = isatty(fd);
  // pino-pretty as an in-process synchronous stream rather than pino.transport(): a transport runs
  // in a worker thread, so lines logged just before process.exit (a CLI's or agent command's
  // last error) could be lost, and our redacting sink could not see the lines first.
  const sink =
    resolveLogFormat(opts.format, terminal) === 'pretty'
      ? prettyStream()({
          destination: fd,
          sync: true,
          colorize: terminal,
          translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l o',
          ignore: 'pid,hostname',
        })
      : pino.destination({ fd, sync: true });
  return pino(
    {
      level: opts.level ?? process.env.PGFLEET_LOG_LEVEL ?? 'info',
      ...(opts.name ? { name: opts.name } : {}),
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
    },
    redactingSink(sink),
  );
}

/** A logger that drops everything; for unit tests and library callers that pass none. */
export function silentLogger(): Logger {
  return pinoModule()({ level: 'silent' });
}
