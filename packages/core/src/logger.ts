/**
 * Structured logging. Every subsystem logs through a child with its own `component`, and jobs
 * add `jobId`, so one grep follows a job across agent and controller. Secrets never reach the
 * log: the redact list covers every key that may hold one.
 */
import { pino, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

export const REDACT_PATHS = [
  'password',
  '*.password',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'passphrase',
  '*.passphrase',
  'authorization',
  '*.authorization',
  'connectionString',
  '*.connectionString',
];

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
    pino.destination({ fd: opts.destination ?? 2, sync: true }),
  );
}

/** A logger that drops everything; for unit tests and library callers that pass none. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
