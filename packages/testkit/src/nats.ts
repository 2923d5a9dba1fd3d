/**
 * Launcher for a private nats-server with JetStream per test.
 *
 * Event publishing/consuming tests talk to a real server (as nats.js's own tests do), started on
 * a free port on 127.0.0.1 with its JetStream store in a temp dir, never the system NATS on 4222.
 * Outage tests stop the server with kill() and bring it back with restart(): same port, same
 * store, so clients reconnect by themselves and the stream (and its dedupe state) survives.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, statSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { registerExitCleanup, removeDirSync, superviseChild, type SupervisedChild } from './cleanup.js';
import { makeTempDir, removeDir, tail } from './os-user.js';
import { freePort } from './ports.js';
import { sleep } from '@pgfleet/core/async';

export interface NatsServer {
  port: number;
  /** nats://127.0.0.1:PORT */
  url: string;
  /** JetStream store dir (-sd) */
  storeDir: string;
  logFile: string;
  log(): Promise<string>;
  /** SIGTERM (SIGKILL after 5 s), then remove the temp dir; idempotent */
  stop(): Promise<void>;
  /** Stops the server process (SIGTERM, SIGKILL after 5 s) but keeps the store dir; idempotent. */
  kill(): Promise<void>;
  /** Starts the server again on the same port and store dir (kills it first if it runs). */
  restart(): Promise<void>;
  /** True while the server process runs. */
  readonly running: boolean;
}

export interface NatsOptions {
  /** default 60 s: a loaded machine may take many seconds to start a server (only a bound on a hang) */
  startTimeoutMs?: number;
  /** More nats-server arguments, e.g. --user/--pass or --tls --tlscert/--tlskey. */
  args?: readonly string[];
}

/** nats-server binary: PGFLEET_NATS_SERVER, else the Debian path, else PATH. */
export function natsServerBin(): string {
  if (process.env.PGFLEET_NATS_SERVER) return process.env.PGFLEET_NATS_SERVER;
  for (const p of ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server']) {
    if (existsSync(p)) return p;
  }
  return 'nats-server';
}

type LaunchResult =
  { ok: true; proc: SupervisedChild } | { ok: false; why: string; log: string; addressInUse: boolean };

/** Spawns one nats-server on `port` and waits until its log (from this start on) says it is ready. */
async function launch(
  dir: string,
  storeDir: string,
  logFile: string,
  port: number,
  timeoutMs: number,
  args: readonly string[] = [],
): Promise<LaunchResult> {
  // A restart appends to the same log: only what this start writes counts for readiness.
  const logOffset = existsSync(logFile) ? statSync(logFile).size : 0;
  const readNewLog = async () => (await readFile(logFile, 'utf8').catch(() => '')).slice(logOffset);
  // The server logs to stderr; send it straight to a file so no pipe keeps this process busy.
  const fd = openSync(logFile, 'a');
  const child = spawn(natsServerBin(), ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', storeDir, ...args], {
    stdio: ['ignore', fd, fd],
    cwd: dir,
  });
  closeSync(fd);
  child.unref(); // the exit handler below kills it if a test forgets stop()
  const sup = superviseChild(child, dir, storeDir);

  // Ready when the server says so (a TCP probe alone could hit whoever else owns the port).
  const deadline = Date.now() + timeoutMs;
  while (!sup.exited && Date.now() < deadline) {
    const log = await readNewLog();
    if (log.includes(`Listening for client connections on 127.0.0.1:${port}`) && log.includes('Server is ready')) {
      return { ok: true, proc: sup };
    }
    await sleep(50);
  }
  await sup.killAndWait();
  sup.unregister();
  const log = await readNewLog();
  const why = sup.spawnError
    ? `could not run ${natsServerBin()}: ${sup.spawnError.message}`
    : sup.exited
      ? `nats-server exited (code ${sup.exited.code}, signal ${sup.exited.signal})`
      : `nats-server not ready within ${timeoutMs} ms`;
  return { ok: false, why, log, addressInUse: !sup.spawnError && /address already in use/i.test(log) };
}

export async function startNats(opts: NatsOptions = {}): Promise<NatsServer> {
  const timeoutMs = opts.startTimeoutMs ?? 60_000;
  const dir = await makeTempDir('nats');
  const storeDir = path.join(dir, 'store');
  await mkdir(storeDir);
  const logFile = path.join(dir, 'nats-server.log');
  const readLog = () => readFile(logFile, 'utf8').catch(() => '');

  let port = 0;
  let proc: SupervisedChild | undefined;
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    const r = await launch(dir, storeDir, logFile, port, timeoutMs, opts.args);
    if (r.ok) {
      proc = r.proc;
      break;
    }
    if (r.addressInUse && attempt < 3) continue;
    await removeDir(dir);
    throw new Error(`startNats: ${r.why}\n--- nats-server log tail ---\n${tail(r.log)}`);
  }

  let current: SupervisedChild | undefined = proc;
  let stopping: Promise<void> | undefined;
  let logAtStop: string | undefined;
  // While killed, no process cleanup is registered: keep one that still removes the temp dir.
  let unregisterDirCleanup: (() => void) | undefined;
  const kill = async () => {
    const p = current;
    current = undefined;
    if (p) {
      await p.killAndWait();
      unregisterDirCleanup ??= registerExitCleanup(() => {
        if (process.env.PGFLEET_KEEP_TMP !== '1') removeDirSync(dir);
      });
      p.unregister();
    }
  };
  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    storeDir,
    logFile,
    log: async () => logAtStop ?? readLog(),
    get running() {
      return current !== undefined && !current.exited;
    },
    kill,
    async restart() {
      if (stopping) throw new Error('startNats: restart() after stop()');
      await kill();
      // The port was ours a moment ago; another process may grab it meanwhile (rare): say so.
      const r = await launch(dir, storeDir, logFile, port, timeoutMs, opts.args);
      if (!r.ok)
        throw new Error(`startNats: restart on port ${port}: ${r.why}\n--- nats-server log tail ---\n${tail(r.log)}`);
      current = r.proc;
      unregisterDirCleanup?.();
      unregisterDirCleanup = undefined;
    },
    stop() {
      stopping ??= (async () => {
        await kill();
        logAtStop = await readLog();
        await removeDir(dir);
        unregisterDirCleanup?.();
      })();
      return stopping;
    },
  };
}
