/**
 * glibc malloc and V8 settings for the agent daemon (issue 19: peak RSS <= 150 MB with every
 * codec). Measured on the daemon during backups and restores (docs/benchmarks.md, "Agent peak RSS
 * per codec"): glibc gives every thread that allocates its own arena (the copy worker, libuv's
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
 * V8 grows the main thread's young generation to 2 x 16 MiB semi-spaces under the allocation rate
 * of a job (the main thread runs copy tasks too), and that memory stays resident: a 1 MiB
 * semi-space (as the copy workers' 4 MB young generation, copy/pool.ts) took 5-7 MB off the peak
 * of a backup and of a restore on the same process, with no CPU difference above the noise
 * (docs/benchmarks.md, "Agent peak RSS, encrypted pairs"). Scavenges cost what survives, and
 * almost nothing a copy task allocates does.
 *
 * These are read when the process starts, so the daemon re-executes itself once with them
 * (process.execve: same PID, for systemd and pid files alike). A GLIBC_TUNABLES that already
 * names a glibc.malloc setting is the operator's choice and left alone, as is a semi-space size
 * given in the Node flags or NODE_OPTIONS; other tunables and flags are kept. Not glibc (musl),
 * no execve, or not Linux: nothing happens.
 */
export const DAEMON_MALLOC_TUNABLES = 'glibc.malloc.arena_max=2';

/** V8 flags the daemon adds to its own (semi-space size in MiB). */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=1'] as const;

/** The GLIBC_TUNABLES value to re-execute with, or undefined when the environment is already right (or the operator's). */
export function daemonTunables(current: string | undefined): string | undefined {
  if (current?.includes('glibc.malloc.')) return undefined;
  return current ? `${current}:${DAEMON_MALLOC_TUNABLES}` : DAEMON_MALLOC_TUNABLES;
}

/** The Node flags to add on re-execution: none when the flags or NODE_OPTIONS already size the semi-space (or a re-execution added them). */
export function daemonNodeFlags(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  const sized = /(^|\s)--(max|min)[-_]semi[-_]space[-_]size\b/;
  // Flags only: an execArgv element may be an -e script that merely mentions one.
  if (execArgv.some((a) => a.startsWith('--') && sized.test(a)) || sized.test(nodeOptions ?? '')) return [];
  return [...DAEMON_NODE_FLAGS];
}

/** Re-executes this process with DAEMON_MALLOC_TUNABLES and DAEMON_NODE_FLAGS when it runs on glibc and lacks them; returns only when it does not. */
export function reexecWithMallocTuning(): void {
  if (process.platform !== 'linux' || typeof process.execve !== 'function') return;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  if (!header?.glibcVersionRuntime) return;
  const tunables = daemonTunables(process.env.GLIBC_TUNABLES);
  const flags = daemonNodeFlags(process.execArgv, process.env.NODE_OPTIONS);
  if (tunables === undefined && flags.length === 0) return;
  // The flags first: execArgv may end with `-e <script>`, after which nothing is a Node flag.
  process.execve(process.execPath, [process.execPath, ...flags, ...process.execArgv, ...process.argv.slice(1)], {
    ...process.env,
    ...(tunables !== undefined ? { GLIBC_TUNABLES: tunables } : {}),
  });
}
