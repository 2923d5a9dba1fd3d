/**
 * Launcher for an S3-compatible test server (fauxqs) per test.
 *
 * The S3 repository driver and e2e scenarios need a real HTTP S3 endpoint. fauxqs runs as a
 * SEPARATE child process (see fauxqs-server.ts for why we use our own tiny entry point), bound to
 * 127.0.0.1 on an OS-chosen port, storing objects as files in a temp dir. Clients use path-style
 * addressing (forcePathStyle: true) against http://127.0.0.1:PORT.
 */
import { fork } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { superviseChild } from './cleanup.js';
import { makeTempDir, removeDir, tail } from './os-user.js';

export interface S3Server {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  port: number;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** where fauxqs keeps objects (file storage) */
  storageDir: string;
  /** ready-made config for `new S3Client(...)`: endpoint, region, credentials, forcePathStyle */
  clientConfig: S3ClientConfig & { endpoint: string; region: string; forcePathStyle: true };
  createBucket(name: string): Promise<void>;
  log(): Promise<string>;
  /** SIGTERM (SIGKILL after 5 s), then remove the temp dir; idempotent */
  stop(): Promise<void>;
}

export interface S3Options {
  /** default 60 s: a loaded machine may take many seconds to start a server (only a bound on a hang) */
  startTimeoutMs?: number;
}

const ENTRY = fileURLToPath(new URL('./fauxqs-server.js', import.meta.url));

export async function startS3(opts: S3Options = {}): Promise<S3Server> {
  const timeoutMs = opts.startTimeoutMs ?? 60_000;
  const dir = await makeTempDir('s3');
  const storageDir = path.join(dir, 'objects');
  await mkdir(storageDir);
  const logFile = path.join(dir, 'fauxqs.log');
  const readLog = () => readFile(logFile, 'utf8').catch(() => '');

  const fd = openSync(logFile, 'a');
  const child = fork(ENTRY, [], {
    cwd: dir,
    env: { ...process.env, FAUXQS_LISTEN_HOST: '127.0.0.1', FAUXQS_PORT: '0', FAUXQS_S3_STORAGE_DIR: storageDir },
    stdio: ['ignore', fd, fd, 'ipc'],
    execArgv: [],
  });
  closeSync(fd);

  const sup = superviseChild(child, dir, ENTRY);

  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`fauxqs not ready within ${timeoutMs} ms`)), timeoutMs);
      child.once('message', (m: { type?: string; port?: number }) => {
        clearTimeout(timer);
        if (m?.type === 'ready' && typeof m.port === 'number') resolve(m.port);
        else reject(new Error(`unexpected message from fauxqs child: ${JSON.stringify(m)}`));
      });
      void sup.ended.then(() => {
        clearTimeout(timer);
        reject(sup.spawnError ?? new Error(`fauxqs exited (code ${sup.exited?.code}, signal ${sup.exited?.signal})`));
      });
    });
  } catch (err) {
    await sup.killAndWait();
    sup.unregister();
    const log = await readLog();
    await removeDir(dir);
    throw new Error(`startS3: ${(err as Error).message}\n--- fauxqs log tail ---\n${tail(log)}`, { cause: err });
  }
  // Keep the IPC channel (the child exits when it closes) but let the test process exit freely;
  // the exit handler kills the child if stop() was never called.
  child.unref();
  child.channel?.unref();

  const endpoint = `http://127.0.0.1:${port}`;
  const region = 'us-east-1';
  const accessKeyId = 'pgfleet-test';
  const secretAccessKey = 'pgfleet-test-secret';
  const clientConfig = {
    endpoint,
    region,
    forcePathStyle: true as const,
    credentials: { accessKeyId, secretAccessKey },
  };
  let client: S3Client | undefined;
  let stopping: Promise<void> | undefined;
  let logAtStop: string | undefined;

  return {
    endpoint,
    port,
    region,
    accessKeyId,
    secretAccessKey,
    storageDir,
    clientConfig,
    async createBucket(name: string) {
      client ??= new S3Client(clientConfig);
      await client.send(new CreateBucketCommand({ Bucket: name }));
    },
    log: async () => logAtStop ?? readLog(),
    stop() {
      stopping ??= (async () => {
        client?.destroy();
        await sup.killAndWait();
        logAtStop = await readLog();
        sup.unregister();
        await removeDir(dir);
      })();
      return stopping;
    },
  };
}
