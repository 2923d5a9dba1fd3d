/**
 * glibc malloc settings for the agent daemon (issue 19: peak RSS <= 150 MB with every codec).
 * Measured on the daemon during backups and restores (docs/benchmarks.md, "Agent peak RSS per
 * codec"): glibc gives every thread that allocates its own arena (the copy worker, libuv's
 * threadpool where lz4-napi, zstd and the hashes run), and after the first 1 MiB buffer is freed
 * it raises its mmap threshold so that later ones come from those arenas, which keep the memory
 * once freed: tens of MB of RSS holding nothing. Two arenas bound how much of it can linger.
 *
 * A fixed mmap threshold (256 KiB, tried first) is not set: it made every buffer above it a fresh
 * mmap, zero-filled by the kernel and unmapped on free. A loop allocating and filling 3,000 1 MiB
 * Buffers took ~10 s CPU (half of it in the kernel) with it against ~1.1 s with arena_max=2 alone,
 * and the bench's backups and restores kept their peak RSS under 140 MB with every codec without
 * it (docs/benchmarks.md, "glibc malloc tunables, A/B").
 *
 * These are read by glibc when the process starts, so the daemon re-executes itself once with
 * them in its environment (process.execve: same PID, for systemd and pid files alike). A
 * GLIBC_TUNABLES that already names a glibc.malloc setting is the operator's choice and left
 * alone; other tunables are kept. Not glibc (musl), no execve, or not Linux: nothing happens.
 */
export const DAEMON_MALLOC_TUNABLES = 'glibc.malloc.arena_max=2';

/** The GLIBC_TUNABLES value to re-execute with, or undefined when the environment is already right (or the operator's). */
export function daemonTunables(current: string | undefined): string | undefined {
  if (current?.includes('glibc.malloc.')) return undefined;
  return current ? `${current}:${DAEMON_MALLOC_TUNABLES}` : DAEMON_MALLOC_TUNABLES;
}

/** Re-executes this process with DAEMON_MALLOC_TUNABLES when it runs on glibc and lacks them; returns only when it does not. */
export function reexecWithMallocTuning(): void {
  if (process.platform !== 'linux' || typeof process.execve !== 'function') return;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  if (!header?.glibcVersionRuntime) return;
  const tunables = daemonTunables(process.env.GLIBC_TUNABLES);
  if (tunables === undefined) return;
  process.execve(process.execPath, [process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    ...process.env,
    GLIBC_TUNABLES: tunables,
  });
}
