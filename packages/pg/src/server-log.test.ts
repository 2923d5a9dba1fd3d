// serverLogExcerpt: what a failed server's log says, small enough for a job result. The lines
// are PostgreSQL 15's own wording (default log_line_prefix '%m [%p] ').
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { cutBytes, recoveryMayLackWal, serverLogExcerpt } from './server-log.js';

const at = (pid: number, rest: string) => `2026-11-24 12:00:00.123 UTC [${pid}] ${rest}`;

/** A start that fails on its timeline, with the drill's polling refusals around it. */
const TIMELINE_LOG = [
  at(100, 'LOG:  starting PostgreSQL 15.8 (Debian 15.8-0+deb12u1) on x86_64-pc-linux-gnu'),
  at(100, 'LOG:  listening on Unix socket "/scratch/pgfleet-drill-j1/.s.PGSQL.41234"'),
  at(101, 'LOG:  database system was interrupted; last known up at 2026-11-24 11:59:00 UTC'),
  at(102, 'FATAL:  the database system is starting up'),
  at(101, 'LOG:  restored log file "00000002.history" from archive'),
  at(101, 'LOG:  starting point-in-time recovery to "pgfleet-drill-j1"'),
  at(103, 'FATAL:  the database system is not yet accepting connections'),
  at(103, 'DETAIL:  Consistent recovery state has not been yet reached.'),
  at(101, "FATAL:  requested timeline 2 is not a child of this server's history"),
  at(
    101,
    'DETAIL:  Latest checkpoint is at 0/3000028 on timeline 1, but in the history of the requested timeline, the server forked off from that timeline at 0/2000000.',
  ),
  at(100, 'LOG:  startup process (PID 101) exited with exit code 1'),
  at(100, 'LOG:  aborting startup due to startup process failure'),
  at(100, 'LOG:  database system is shut down'),
  '',
].join('\n');

test("the first FATAL is the cause, with its DETAIL; the drill's own refused connections are left out", () => {
  const x = serverLogExcerpt(TIMELINE_LOG);
  assert.equal(x.firstFatal, "FATAL: requested timeline 2 is not a child of this server's history");
  assert.deepEqual(x.problems, [
    at(101, "FATAL:  requested timeline 2 is not a child of this server's history"),
    at(
      101,
      'DETAIL:  Latest checkpoint is at 0/3000028 on timeline 1, but in the history of the requested timeline, the server forked off from that timeline at 0/2000000.',
    ),
  ]);
  // The tail: every line but the polling refusals (and their DETAIL), oldest first.
  assert.equal(x.tail.length, 10);
  assert.equal(x.tail[0], at(100, 'LOG:  starting PostgreSQL 15.8 (Debian 15.8-0+deb12u1) on x86_64-pc-linux-gnu'));
  assert.equal(x.tail.at(-1), at(100, 'LOG:  database system is shut down'));
  assert.ok(!x.tail.some((l) => /starting up|not yet accepting|Consistent recovery state/.test(l)), x.tail.join('\n'));
});

test('PANIC counts as fatal, the first one wins; without one the last ERROR or WARNING is the clue', () => {
  const x = serverLogExcerpt(
    [
      at(1, 'ERROR:  first error'),
      at(1, 'PANIC:  could not locate a valid checkpoint record'),
      at(1, 'FATAL:  later fatal'),
    ].join('\n'),
  );
  assert.equal(x.firstFatal, 'PANIC: could not locate a valid checkpoint record');
  assert.equal(x.lastProblem, 'ERROR: first error');
  const paused = serverLogExcerpt(
    [
      at(1, 'WARNING:  hot standby is not possible because of insufficient parameter settings'),
      at(1, 'DETAIL:  max_connections = 10 is a lower setting than on the primary server, where its value was 100.'),
      at(1, 'LOG:  recovery has paused'),
      at(1, 'HINT:  Execute pg_wal_replay_resume() to continue.'),
    ].join('\n'),
  );
  assert.equal(paused.firstFatal, undefined);
  assert.equal(paused.lastProblem, 'WARNING: hot standby is not possible because of insufficient parameter settings');
  // The LOG line's HINT is not a problem line; the WARNING's DETAIL is.
  assert.equal(paused.problems.length, 2);
  assert.match(paused.problems[1]!, /DETAIL: {2}max_connections = 10/);
  // A message continued on tab-indented lines stays whole.
  const multi = serverLogExcerpt(
    [
      at(1, 'ERROR:  syntax error at or near "x"'),
      at(1, 'STATEMENT:  SELECT'),
      '\tx',
      at(1, 'LOG:  checkpoint starting: time'),
      '\tnot a problem',
    ].join('\n'),
  );
  assert.deepEqual(multi.problems, [at(1, 'ERROR:  syntax error at or near "x"'), at(1, 'STATEMENT:  SELECT'), '\tx']);
});

test('a log without problems: a tail and no cause; an empty log: nothing', () => {
  const quiet = serverLogExcerpt(
    [at(1, 'LOG:  redo starts at 0/2000028'), at(1, 'LOG:  consistent recovery state reached at 0/2000100')].join('\n'),
  );
  assert.deepEqual(quiet.problems, []);
  assert.equal(quiet.firstFatal, undefined);
  assert.equal(quiet.tail.length, 2);
  assert.deepEqual(serverLogExcerpt(''), { problems: [], tail: [] });
});

test('bounds: 30 tail lines, 20 problem lines (first and last), 1 KiB a line, 8 KiB in all, problems first', () => {
  const restored = Array.from({ length: 500 }, (_, i) =>
    at(
      7,
      `LOG:  restored log file "0000000100000000000000${(i + 1).toString(16).toUpperCase().padStart(2, '0')}" from archive`,
    ),
  );
  const x = serverLogExcerpt(
    [
      ...restored,
      at(7, 'FATAL:  recovery ended before configured recovery target was reached'),
      at(6, 'LOG:  startup process (PID 7) exited with exit code 1'),
    ].join('\n'),
  );
  assert.equal(x.tail.length, 30);
  assert.equal(x.tail.at(-1), at(6, 'LOG:  startup process (PID 7) exited with exit code 1'));
  assert.equal(x.tail.at(-2), at(7, 'FATAL:  recovery ended before configured recovery target was reached'));
  assert.equal(x.firstFatal, 'FATAL: recovery ended before configured recovery target was reached');

  const errors = Array.from({ length: 100 }, (_, i) => at(8, `ERROR:  error number ${i}`));
  const many = serverLogExcerpt(errors.join('\n'));
  assert.equal(many.problems.length, 20);
  assert.equal(many.problems[0], errors[0]);
  assert.equal(many.problems[9], errors[9]);
  assert.equal(many.problems[10], '... (81 more line(s))');
  assert.equal(many.problems.at(-1), errors[99]);

  // Long lines: each cut to 1 KiB; problem lines are kept before the tail gets the rest of 8 KiB.
  const long = (n: number, sev: string) => at(9, `${sev}:  ${'é'.repeat(2000)} ${n}`);
  const big = serverLogExcerpt(
    [
      ...Array.from({ length: 5 }, (_, i) => long(i, 'FATAL')),
      ...Array.from({ length: 40 }, (_, i) => long(i, 'LOG')),
    ].join('\n'),
  );
  for (const l of [...big.problems, ...big.tail]) {
    assert.ok(Buffer.byteLength(l) <= 1024, `a line of ${Buffer.byteLength(l)} bytes`);
    assert.ok(l.endsWith('...'));
  }
  assert.equal(big.problems.length, 5);
  const total = [...big.problems, ...big.tail].reduce((n, l) => n + Buffer.byteLength(l) + 1, 0);
  assert.ok(total <= 8192, `${total} bytes`);
  assert.ok(
    big.tail.length >= 1 && big.tail.at(-1)!.startsWith(at(9, 'LOG:  ')),
    'the newest lines of the tail fill what is left',
  );
});

test('control characters (NUL bytes of a log cut short by a crash) are removed, tabs kept', () => {
  const x = serverLogExcerpt(`${at(1, 'FATAL:  bad\u0000 thing\u0007')}\r\n\u0000\u0000\u0000\n`);
  assert.equal(x.firstFatal, 'FATAL: bad thing');
  assert.deepEqual(x.tail, [at(1, 'FATAL:  bad thing')]);
  assert.equal(cutBytes('abc', 3), 'abc');
  assert.equal(cutBytes('abcdef', 5), 'ab...');
  assert.equal(cutBytes('ééé', 6), 'ééé');
  assert.equal(cutBytes('ééé', 5), 'é...');
});

test('recoveryMayLackWal: only the FATALs of WAL running out (or none) point at a missing segment', () => {
  for (const m of [
    'FATAL: recovery ended before configured recovery target was reached',
    'FATAL: could not locate required checkpoint record',
    'FATAL: could not locate required checkpoint record at 0/3000098',
    'FATAL: WAL ends before end of online backup',
    'FATAL: WAL ends before consistent recovery point',
    undefined,
  ]) {
    assert.equal(recoveryMayLackWal({ firstFatal: m }), true, String(m));
  }
  assert.equal(recoveryMayLackWal(undefined), true);
  assert.equal(recoveryMayLackWal(serverLogExcerpt(TIMELINE_LOG)), false);
  assert.equal(
    recoveryMayLackWal({ firstFatal: 'FATAL: configuration file "/x/postgresql.conf" contains errors' }),
    false,
  );
});
