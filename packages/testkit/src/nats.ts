/**
 * Launcher for a private nats-server with JetStream per test.
 *
 * Event publishing/consuming tests talk to a real server (as nats.js's own tests do), started on
 * a free port on 127.0.0.1 with its JetStream store in a temp dir, never the system NATS on 4222.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, rmSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { registerExitCleanup, writeOwnerMarker } from './cleanup.js';
import { makeTempDir, removeDir, tail } from './os-user.js';
import { freePort } from './ports.js';

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
}

export interface NatsOptions {
  /** default 15 s */
  startTimeoutMs?: number;
}

/** nats-server binary: PGFLEET_NATS_SERVER, else the Debian path, else PATH. */
export function natsServerBin(): string {
  if (process.env.PGFLEET_NATS_SERVER) return process.env.PGFLEET_NATS_SERVER;
  for (const p of ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server']) {
    if (existsSync(p)) return p;
  }
  return 'nats-server';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startNats(opts: NatsOptions = {}): Promise<NatsServer> {
  const timeoutMs = opts.startTimeoutMs ?? 15_000;
  const dir = await makeTempDir('nats');
  const storeDir = path.join(dir, 'store');
  await mkdir(storeDir);
  const logFile = path.join(dir, 'nats-server.log');
  const readLog = () => readFile(logFile, 'utf8').catch(() => '');

  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    // The server logs to stderr; send it straight to a file so no pipe keeps this process busy.
    const fd = openSync(logFile, 'a');
    const child = spawn(natsServerBin(), ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', storeDir], {
      stdio: ['ignore', fd, fd],
      cwd: dir,
    });
    closeSync(fd);
    child.unref(); // the exit handler below kills it if a test forgets stop()
    let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let spawnError: Error | undefined;
    const exitPromise = new Promise<void>((resolve) => {
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
    if (child.pid) writeOwnerMarker(dir, { pid: child.pid, cmdlineMustInclude: storeDir, signal: 'SIGKILL', dirs: [] });
    const unregister = registerExitCleanup(() => {
      if (!exited) child.kill('SIGKILL');
      if (process.env.PGFLEET_KEEP_TMP !== '1') rmSync(dir, { recursive: true, force: true });
    });

    const killAndWait = async () => {
      if (!exited) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exitPromise;
        clearTimeout(t);
      }
    };

    // Ready when the server says so (a TCP probe alone could hit whoever else owns the port).
    const deadline = Date.now() + timeoutMs;
    let ready = false;
    while (!exited && Date.now() < deadline) {
      const log = await readLog();
      if (log.includes(`Listening for client connections on 127.0.0.1:${port}`) && log.includes('Server is ready')) {
        ready = true;
        break;
      }
      await sleep(50);
    }
    if (!ready) {
      await killAndWait();
      unregister();
      const log = await readLog();
      if (!spawnError && /address already in use/i.test(log) && attempt < 3) continue;
      await removeDir(dir);
      const why = spawnError
        ? `could not run ${natsServerBin()}: ${spawnError.message}`
        : exited
          ? `nats-server exited (code ${exited.code}, signal ${exited.signal})`
          : `nats-server not ready within ${timeoutMs} ms`;
      throw new Error(`startNats: ${why}\n--- nats-server log tail ---\n${tail(log)}`);
    }

    let stopping: Promise<void> | undefined;
    let logAtStop: string | undefined;
    return {
      port,
      url: `nats://127.0.0.1:${port}`,
      storeDir,
      logFile,
      log: async () => logAtStop ?? readLog(),
      stop() {
        stopping ??= (async () => {
          await killAndWait();
          logAtStop = await readLog();
          unregister();
          await removeDir(dir);
        })();
        return stopping;
      },
    };
  }
}
