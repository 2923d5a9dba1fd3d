/**
 * Last-resort cleanup for servers started by the testkit.
 *
 * Every launcher registers a synchronous "kill it now" function here while its server runs.
 * If the test process exits (normally, by an uncaught error, or by SIGINT/SIGTERM/SIGHUP)
 * before a test called `stop()`, these run from the process 'exit' handler, so no PostgreSQL,
 * nats-server or S3 child outlives the test run and keeps a port or a temp dir busy.
 * Only synchronous work is possible in an 'exit' handler.
 *
 * A SIGKILLed test process runs no handler at all, so each launcher also drops an owner marker
 * (`.pgfleet-owner.json`) in its temp dir; the first launcher used by a later test process
 * reaps servers whose owner process is gone (checking the server's command line first, so an
 * unrelated process that reused the pid is never touched) and removes their dirs.
 *
 * Test files run in parallel, so several processes may reap at the same moment. Each orphan is
 * claimed by renaming its marker dir (atomic: one reaper wins), and a reaper returns only once no
 * live reaper holds a claim any more, so when `reapOrphans()` returns the orphans are gone,
 * whoever reaped them.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { processAlive } from '@pgfleet/core/process-alive';

type SyncCleanup = () => void;

const pending = new Map<number, SyncCleanup>();
let nextId = 1;
let installed = false;

function runAll(): void {
  for (const [id, fn] of [...pending]) {
    pending.delete(id);
    try {
      fn();
    } catch {
      // best effort: the process is going away
    }
  }
}

function onSignal(signal: NodeJS.Signals): void {
  runAll();
  process.removeListener(signal, onSignal);
  // Keep the default meaning of the signal (terminate) unless someone else handles it.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function install(): void {
  if (installed) return;
  installed = true;
  try {
    reapOrphans();
  } catch {
    // reaping is best effort; never fail a launcher because of it
  }
  process.on('exit', runAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, onSignal);
}

/** Registers a synchronous emergency cleanup; returns the function that unregisters it. */
export function registerExitCleanup(fn: SyncCleanup): () => void {
  install();
  const id = nextId++;
  pending.set(id, fn);
  return () => {
    pending.delete(id);
  };
}

/** Sleeps synchronously (only for use inside exit cleanup, where nothing async can run). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Stops a server process synchronously: `first` (SIGQUIT = PostgreSQL immediate shutdown, which
 * also releases its shared memory), then SIGKILL to its process group (pg_ctl starts the
 * postmaster with setsid) and to the pid if it is still there after `graceMs`. Returns once the
 * process is gone: a signal is only queued, and until the kernel has torn the process down it
 * still holds its port and may still write into its dir (that takes a while on a loaded machine).
 */
export function terminateSync(pid: number, first: NodeJS.Signals, graceMs = 3000): void {
  try {
    process.kill(pid, first);
  } catch {
    return;
  }
  if (waitGoneSync(pid, graceMs)) return;
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // not a group leader / already gone
    }
  }
  waitGoneSync(pid, GONE_AFTER_SIGKILL_MS);
}

/** Generous: SIGKILL cannot be caught, only the scheduler of a loaded machine delays the exit. */
const GONE_AFTER_SIGKILL_MS = 60_000;

/** Waits (synchronously) until `pid` has exited; false if it still runs after `timeoutMs`. */
function waitGoneSync(pid: number, timeoutMs: number): boolean {
  const deadline = Date.now() + timeoutMs;
  while (processAlive(pid)) {
    if (Date.now() >= deadline) return false;
    sleepSync(25);
  }
  return true;
}

/**
 * Removes the tree `dir` and returns true once it is really gone (false if it still exists after
 * `timeoutMs`). One rmSync does not promise that: when another process removes the same tree at
 * the same time, or a dying server still unlinks files in it, rmSync meets ENOENT inside the tree,
 * counts it as done (force) and returns while entries are left. So remove until it is gone.
 */
export function removeDirSync(dir: string, timeoutMs = 60_000): boolean {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // ENOTEMPTY and the like while someone else still writes or deletes there: try again
    }
    if (!existsSync(dir)) return true;
    if (Date.now() >= deadline) return false;
    sleepSync(25);
  }
}

const MARKER = '.pgfleet-owner.json';

export interface OwnerMarker {
  /** the test process that started the server */
  ownerPid: number;
  /** dirs to remove once the server is gone */
  dirs: string[];
  /** server pid, or a file whose first line is the pid (postmaster.pid) */
  pid?: number;
  pidFile?: string;
  /** only signal the pid if /proc/PID/cmdline contains this (guards against pid reuse) */
  cmdlineMustInclude: string;
  signal: NodeJS.Signals;
}

/** Records who owns the server living in `dir` (see reapOrphans). */
export function writeOwnerMarker(dir: string, marker: Omit<OwnerMarker, 'ownerPid'>): void {
  writeFileSync(path.join(dir, MARKER), JSON.stringify({ ownerPid: process.pid, ...marker }));
}

function cmdline(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return undefined;
  }
}

/** True if `pid` runs and its command line mentions `mustInclude` (true when procfs is unavailable). */
export function pidMatches(pid: number, mustInclude: string): boolean {
  if (!processAlive(pid)) return false;
  const cl = cmdline(pid);
  return cl === undefined ? existsSync('/proc/self') === false : cl.includes(mustInclude);
}

/** A claimed orphan: `.pgfleet-reaping-<reaper pid>-<original dir name>` in the temp dir. */
const CLAIM = /^\.pgfleet-reaping-(\d+)-(pgfleet-.+)$/;
const claimName = (reaperPid: number, dirName: string) => `.pgfleet-reaping-${reaperPid}-${dirName}`;

/** How long a reaper waits for other live reapers to finish (each normally takes seconds). */
const OTHER_REAPERS_WAIT_MS = 120_000;

function readMarker(dir: string): OwnerMarker | undefined {
  try {
    return JSON.parse(readFileSync(path.join(dir, MARKER), 'utf8')) as OwnerMarker;
  } catch {
    return undefined; // no marker: not a launcher dir, one still being set up, or claimed meanwhile
  }
}

/** Claims `from` for this process by renaming it to our claim name; false if someone else got it. */
function claim(tmp: string, from: string, dirName: string): string | undefined {
  const to = path.join(tmp, claimName(process.pid, dirName));
  try {
    renameSync(path.join(tmp, from), to);
    return to;
  } catch {
    return undefined; // claimed (or removed) by another reaper a moment ago
  }
}

/** Stops the server of a claimed orphan, then removes its dirs, the claimed marker dir last. */
function reapClaimed(claimedDir: string, m: OwnerMarker): void {
  let pid = m.pid;
  if (pid === undefined && m.pidFile) {
    try {
      pid = Number(readFileSync(m.pidFile, 'utf8').split('\n')[0]);
    } catch {
      pid = undefined;
    }
  }
  if (pid && pid > 0 && m.cmdlineMustInclude && pidMatches(pid, m.cmdlineMustInclude)) {
    terminateSync(pid, m.signal);
  }
  // The claim goes last: other reapers wait for it to vanish, so by then the rest is gone too.
  for (const d of [...m.dirs, claimedDir]) removeDirSync(d);
}

/**
 * Stops servers (and removes dirs) left behind by test processes that died without cleanup.
 * Returns once they are gone, also those another process is reaping right now.
 */
export function reapOrphans(): void {
  if (process.env.PGFLEET_KEEP_TMP === '1') return;
  const tmp = os.tmpdir();
  const deadline = Date.now() + OTHER_REAPERS_WAIT_MS;
  for (;;) {
    for (const name of readdirSync(tmp)) {
      if (!name.startsWith('pgfleet-')) continue;
      const m = readMarker(path.join(tmp, name));
      if (!m || !Number.isInteger(m.ownerPid) || processAlive(m.ownerPid)) continue;
      const claimed = claim(tmp, name, name);
      if (claimed) reapClaimed(claimed, m);
    }
    // Listed after the pass above: an orphan we skipped because another reaper renamed it away
    // shows up here under its claim name until that reaper is done with it.
    let othersBusy = false;
    for (const name of readdirSync(tmp)) {
      const c = CLAIM.exec(name);
      if (!c) continue;
      const reaper = Number(c[1]);
      if (reaper !== process.pid && processAlive(reaper)) {
        othersBusy = true;
        continue;
      }
      // Its reaper died half-way (or an earlier call of ours failed): finish the job.
      const m = readMarker(path.join(tmp, name));
      const claimed = reaper === process.pid ? path.join(tmp, name) : claim(tmp, name, c[2]!);
      if (claimed) {
        if (m) reapClaimed(claimed, m);
        else removeDirSync(claimed);
      }
    }
    if (!othersBusy || Date.now() >= deadline) return;
    sleepSync(50);
  }
}

/** A server child process of a launcher: how it ended, and how to stop it. */
export interface SupervisedChild {
  /** How it ended (undefined while it runs; code and signal null when it could not be spawned). */
  readonly exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** Why it could not be spawned (e.g. ENOENT for a missing binary). */
  readonly spawnError: Error | undefined;
  /** Settles when it exited or could not be spawned. */
  readonly ended: Promise<void>;
  /** SIGTERM, SIGKILL after 5 s; resolves once it is gone. */
  killAndWait(): Promise<void>;
  /** Drops the exit-time cleanup (call once the launcher removed `dir` itself). */
  unregister(): void;
}

/**
 * Watches a server child that lives in the temp dir `dir`: leaves an owner marker so a later run
 * reaps it after a SIGKILL of this process (its command line must include `cmdlineMustInclude`),
 * and kills it and removes `dir` when this process exits without stopping it.
 */
export function superviseChild(child: ChildProcess, dir: string, cmdlineMustInclude: string): SupervisedChild {
  let exited: SupervisedChild['exited'];
  let spawnError: Error | undefined;
  const ended = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve();
    });
    child.once('error', (e) => {
      spawnError = e;
      exited ??= { code: null, signal: null };
      resolve();
    });
  });
  if (child.pid) writeOwnerMarker(dir, { pid: child.pid, cmdlineMustInclude, signal: 'SIGKILL', dirs: [] });
  const unregister = registerExitCleanup(() => {
    // Waits until it is gone, so its port is free and it writes no more when this process ends.
    if (!exited && child.pid) terminateSync(child.pid, 'SIGKILL');
    if (process.env.PGFLEET_KEEP_TMP !== '1') removeDirSync(dir);
  });
  return {
    get exited() {
      return exited;
    },
    get spawnError() {
      return spawnError;
    },
    ended,
    async killAndWait() {
      if (exited) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await ended;
      clearTimeout(t);
    },
    unregister,
  };
}
