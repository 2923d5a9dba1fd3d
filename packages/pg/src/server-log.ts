/**
 * What a PostgreSQL server log says about why the server failed, kept small enough to travel in
 * a job result: when a throwaway server (a drill's copy) fails to start, exits or does not finish
 * recovery, its log is the only place that says why ("requested timeline 2 is not a child of this
 * server's history"), and the log goes away with the scratch directory.
 *
 * The log is the server's stderr (log_destination = stderr, logging_collector off), one message
 * per line after log_line_prefix, severity as `FATAL:  text` (two spaces; lc_messages = 'C' keeps
 * the severity words English), and the message's DETAIL, HINT, CONTEXT and STATEMENT on lines of
 * their own right after it (elog.c, send_message_to_server_log). Those follow-up lines belong to
 * the message before them, so they are kept or dropped with it.
 *
 * Left out: the refusals PostgreSQL logs when a client connects before the server is consistent
 * ("the database system is not yet accepting connections", "... is starting up"): the drill
 * polls for that moment and each attempt logs one, so they would fill the tail and are never
 * the cause.
 */

/**
 * The first `WORD:  ` of a line is its severity, or the kind of a follow-up line: elog.c writes
 * the word and a colon and two spaces right after log_line_prefix.
 */
const SEVERITY =
  /\b(DEBUG[1-5]|LOG|INFO|NOTICE|WARNING|ERROR|FATAL|PANIC|DETAIL|HINT|CONTEXT|STATEMENT|QUERY|LOCATION): {2}/;
/** Problem severities (WARNING too: "hot standby is not possible ..." explains a paused recovery). */
const PROBLEMS = new Set(['WARNING', 'ERROR', 'FATAL', 'PANIC']);
const FOLLOW_UPS = new Set(['DETAIL', 'HINT', 'CONTEXT', 'STATEMENT', 'QUERY', 'LOCATION']);
/** A client's connection refused while the server was still starting or not yet consistent: the drill's own polling. */
const POLLING =
  /the database system is (not yet accepting connections|starting up|shutting down)|Consistent recovery state has not been yet reached/;

type LineKind = 'problem' | 'fatal' | 'follow-up' | 'other';

function kindOf(line: string): LineKind {
  // A message spanning lines (a statement, a multi-line detail) continues on lines starting with a tab.
  if (line.startsWith('\t')) return 'follow-up';
  const word = SEVERITY.exec(line)?.[1];
  if (word === 'FATAL' || word === 'PANIC') return 'fatal';
  if (word && PROBLEMS.has(word)) return 'problem';
  if (word && FOLLOW_UPS.has(word)) return 'follow-up';
  return 'other';
}

export interface ServerLogLimits {
  /** Problem lines kept (the first half and the last half when there are more). */
  problemLines: number;
  /** Lines of the tail. */
  tailLines: number;
  /** Problem lines and tail together, in UTF-8 bytes. */
  totalBytes: number;
  /** One line, in UTF-8 bytes; a longer one is cut and ends with "...". */
  lineBytes: number;
}

export const SERVER_LOG_LIMITS: ServerLogLimits = {
  problemLines: 20,
  tailLines: 30,
  totalBytes: 8192,
  lineBytes: 1024,
};

export interface ServerLogExcerpt {
  /** FATAL, PANIC, ERROR and WARNING lines with their follow-up lines, oldest first. */
  problems: string[];
  /** The last lines of the log, oldest first. */
  tail: string[];
  /** The first FATAL or PANIC message without its line prefix, e.g. `FATAL: requested timeline 2 is not a child of this server's history`. */
  firstFatal?: string;
  /** The last ERROR or WARNING message without its line prefix (when nothing was fatal, the best clue left). */
  lastProblem?: string;
}

/**
 * Picks the problem lines and the tail out of a server log. Control characters are removed (a
 * log cut short by a crash may end in NUL bytes, which a JSONB catalog column refuses) and every
 * line is cut to `lineBytes`; the problem lines are kept first, then as much of the tail as
 * `totalBytes` leaves room for, newest lines first.
 */
export function serverLogExcerpt(log: string, limits: ServerLogLimits = SERVER_LOG_LIMITS): ServerLogExcerpt {
  const lines = withoutPolling(
    log
      .split('\n')
      .map((l) => cutBytes(clean(l), limits.lineBytes))
      .filter((l) => l.trim() !== ''),
  );
  const problems: string[] = [];
  let firstFatal: string | undefined;
  let lastProblem: string | undefined;
  let inProblem = false;
  for (const line of lines) {
    const kind = kindOf(line);
    if (kind === 'fatal' || kind === 'problem') {
      inProblem = true;
      problems.push(line);
      if (kind === 'fatal') firstFatal ??= messageOf(line);
      else lastProblem = messageOf(line);
    } else if (inProblem && kind === 'follow-up') {
      problems.push(line);
    } else {
      inProblem = false;
    }
  }
  const keptProblems = firstAndLast(problems, limits.problemLines);
  let budget = limits.totalBytes;
  const fitting: string[] = [];
  for (const l of keptProblems) {
    const n = Buffer.byteLength(l) + 1;
    if (n > budget) break;
    fitting.push(l);
    budget -= n;
  }
  const tail: string[] = [];
  for (const l of lines.slice(-limits.tailLines).reverse()) {
    const n = Buffer.byteLength(l) + 1;
    if (n > budget) break;
    tail.unshift(l);
    budget -= n;
  }
  return { problems: fitting, tail, ...(firstFatal ? { firstFatal } : {}), ...(lastProblem ? { lastProblem } : {}) };
}

/**
 * The FATALs with which recovery (xlogrecovery.c, PostgreSQL 13-18) gives up because WAL it needs
 * is not there: the archive ran out before the target, before the backup's end or consistency, or
 * never had the checkpoint's segment.
 */
const WAL_RAN_OUT =
  /recovery ended before configured recovery target was reached|could not locate required checkpoint record|could not find redo location referenced by checkpoint record|WAL ends before (end of online backup|consistent recovery point)/;

/**
 * Whether a failed recovery may be for want of WAL: PostgreSQL said so, or said nothing fatal (it
 * paused, or never got far enough to say). Any other FATAL (a timeline that does not fit, a bad
 * setting) is the cause itself, and a WAL segment that merely was not archived yet is not.
 */
export function recoveryMayLackWal(excerpt: Pick<ServerLogExcerpt, 'firstFatal'> | undefined): boolean {
  return excerpt?.firstFatal === undefined || WAL_RAN_OUT.test(excerpt.firstFatal);
}

/** Drops the drill's own refused connection attempts, with their DETAIL lines. */
function withoutPolling(lines: string[]): string[] {
  const out: string[] = [];
  let dropping = false;
  for (const l of lines) {
    if (POLLING.test(l) && kindOf(l) !== 'other') dropping = true;
    else if (!(dropping && kindOf(l) === 'follow-up')) {
      dropping = false;
      out.push(l);
    }
  }
  return out;
}

/** `2026-11-24 12:00:00.123 UTC [42] FATAL:  text` -> `FATAL: text`. */
function messageOf(line: string): string {
  const m = SEVERITY.exec(line)!;
  return `${m[1]}: ${line.slice(m.index + m[0].length).trim()}`;
}

// eslint-disable-next-line no-control-regex
const clean = (l: string): string => l.replace(/\r$/, '').replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, '');

/** `s` cut to at most `max` UTF-8 bytes (on a character boundary), ending with "..." when cut. */
export function cutBytes(s: string, max: number): string {
  if (Buffer.byteLength(s) <= max) return s;
  let out = '';
  let bytes = 3;
  for (const ch of s) {
    const n = Buffer.byteLength(ch);
    if (bytes + n > max) break;
    out += ch;
    bytes += n;
  }
  return `${out}...`;
}

/** At most `max` items: the first half and the last half, with a line saying how many were left out. */
function firstAndLast(items: string[], max: number): string[] {
  if (items.length <= max) return items;
  const head = Math.ceil((max - 1) / 2);
  const tail = max - 1 - head;
  return [
    ...items.slice(0, head),
    `... (${items.length - head - tail} more line(s))`,
    ...items.slice(items.length - tail),
  ];
}
