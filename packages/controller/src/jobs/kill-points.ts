/**
 * Kill points for crash tests: with PGFLEET_TEST_KILL_AT=<point>[:<job kind>] in its environment
 * the controller SIGKILLs itself when it reaches that point (for a job of that kind only, when one
 * is named), as an OOM kill, a power loss or `kill -9` would stop it there. A real process death,
 * not a mock: the catalog, the agents and the other controllers see exactly what they would see.
 * test/src/lost-dispatch.test.ts kills a controller between creating a job and sending it, and
 * between sending it and recording the send. Unset (always, outside such tests) it costs one
 * environment lookup per dispatch.
 */
export type KillPoint = 'dispatch-before-send' | 'dispatch-after-send';

/** The variable naming the kill point; read at every call, so a test sets it per process. */
export const KILL_AT_ENV = 'PGFLEET_TEST_KILL_AT';

export function killPoint(point: KillPoint, jobKind: string): void {
  const want = process.env[KILL_AT_ENV];
  if (!want) return;
  const [at, kind] = want.split(':');
  if (at !== point || (kind && kind !== jobKind)) return;
  // stderr is unbuffered: the test reads this line from the log of a process that is gone.
  process.stderr.write(`${JSON.stringify({ msg: 'kill point reached: SIGKILL', point, jobKind, pid: process.pid })}\n`);
  process.kill(process.pid, 'SIGKILL');
}
