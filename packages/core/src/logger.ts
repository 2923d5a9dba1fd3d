/**
 * Structured logging. Every subsystem logs through a child with its own `component`, and jobs
 * add `jobId`, so one grep follows a job across agent and controller. Secrets never reach the
 * log: the redact list covers every key that may hold one, and every string (messages, fields,
 * bindings, error messages and stacks) has the credentials of URLs in it redacted (redact.ts), so
 * a NATS or catalog URL with a password prints as nats://user:[redacted]@host.
 */
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';
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
 * never spans two JSON strings.)
 */
export function redactingSink(sink: LogSink): DestinationStream {
  return {
    write: (line: string) => sink.write(redactCredentials(line)),
    ...(sink.flushSync ? { flushSync: () => sink.flushSync!() } : {}),
    ...(sink.flush ? { flush: (cb?: (err?: Error) => void) => sink.flush!(cb) } : {}),
  };
}

export interface LoggerOptions {
  level?: string;
  /** Where lines go; default stderr so stdout stays free for command output. */
  destination?: number;
  name?: string;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.PGFLEET_LOG_LEVEL ?? 'info',
      ...(opts.name ? { name: opts.name } : {}),
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
    },
    redactingSink(pino.destination({ fd: opts.destination ?? 2, sync: true })),
  );
}

/** A logger that drops everything; for unit tests and library callers that pass none. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
