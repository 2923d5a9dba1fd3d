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
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
 * postmaster with setsid) and to the pid if it is still there after `graceMs`.
 */
export function terminateSync(pid: number, first: NodeJS.Signals, graceMs = 3000): void {
  try {
    process.kill(pid, first);
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (processAlive(pid) && Date.now() < deadline) sleepSync(25);
  if (!processAlive(pid)) return;
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // not a group leader / already gone
    }
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

/** Stops servers (and removes dirs) left behind by test processes that died without cleanup. */
export function reapOrphans(): void {
  if (process.env.PGFLEET_KEEP_TMP === '1') return;
  const tmp = os.tmpdir();
  for (const name of readdirSync(tmp)) {
    if (!name.startsWith('pgfleet-')) continue;
    let m: OwnerMarker;
    try {
      m = JSON.parse(readFileSync(path.join(tmp, name, MARKER), 'utf8')) as OwnerMarker;
    } catch {
      continue; // no marker: not a launcher dir, or one still being set up
    }
    if (!Number.isInteger(m.ownerPid) || processAlive(m.ownerPid)) continue;
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
    for (const d of [...m.dirs, path.join(tmp, name)]) rmSync(d, { recursive: true, force: true });
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
    if (!exited) child.kill('SIGKILL');
    if (process.env.PGFLEET_KEEP_TMP !== '1') rmSync(dir, { recursive: true, force: true });
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
