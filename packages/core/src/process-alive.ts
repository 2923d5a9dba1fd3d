import { existsSync, readFileSync } from 'node:fs';

/**
 * True while the process runs (signal 0 probes without sending anything; EPERM means it exists
 * under another user). A zombie (exited, not yet reaped by its parent, often init for a
 * daemonized postmaster) does not count: its postmaster.pid or drill directory is stale.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // /proc/PID/stat: "pid (comm) STATE ...": comm may hold spaces, so read after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return !existsSync('/proc/self/stat'); // gone meanwhile; without /proc the signal test is all there is
  }
}
