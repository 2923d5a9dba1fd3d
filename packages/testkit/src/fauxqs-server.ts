/**
 * Child-process entry point for the S3 test server (fauxqs), started by `startS3()`.
 *
 * Why not fauxqs's own CLI: `startFauxqs()` hard-codes `listen({ host: '0.0.0.0' })` (FAUXQS_HOST
 * only changes the host written into SQS queue URLs), and its CLI ignores FAUXQS_S3_STORAGE_DIR.
 * Test servers must bind 127.0.0.1 only, so this entry narrows the bind address before fauxqs
 * starts, uses file-based S3 storage in the launcher's temp dir, listens on port 0 and reports
 * the port the OS chose over IPC (no free-port race). It exits when its parent goes away.
 *
 * env: FAUXQS_LISTEN_HOST (default 127.0.0.1), FAUXQS_S3_STORAGE_DIR, FAUXQS_PORT (default 0).
 */
import net from 'node:net';
import { startFauxqs } from 'fauxqs';

const listenHost = process.env.FAUXQS_LISTEN_HOST ?? '127.0.0.1';
const origListen = net.Server.prototype.listen;
net.Server.prototype.listen = function patchedListen(this: net.Server, ...args: unknown[]) {
  const first = args[0];
  if (first && typeof first === 'object' && (first as net.ListenOptions).host === '0.0.0.0') {
    args[0] = { ...(first as net.ListenOptions), host: listenHost };
  }
  return (origListen as (...a: unknown[]) => net.Server).apply(this, args);
} as typeof net.Server.prototype.listen;

// S3 lists keys in binary (UTF-8 byte) order and continues a listing after the last key by that
// order; fauxqs 2.4 sorts with localeCompare but continues with `<=`, so where the two orders
// disagree ('_' vs '.', case) a key at a page boundary is skipped: `13406.zst` after its
// `13406_fsm.zst` fork was lost from a 1000-key page. Its listing is made to sort in byte order.
// (A file URL reaches the store module that fauxqs's package exports do not expose; it is the
// same module instance the server uses.)
const { S3Store } = (await import(new URL('./s3/s3Store.js', import.meta.resolve('fauxqs')).href)) as {
  S3Store: { prototype: { listObjects(...args: unknown[]): unknown } };
};
const listObjects = S3Store.prototype.listObjects;
const byteOrder = function (this: string, that: string): number {
  return this < that ? -1 : this > that ? 1 : 0;
};
S3Store.prototype.listObjects = function binaryOrderListObjects(this: unknown, ...args: unknown[]) {
  // listObjects is synchronous: nothing else runs while the comparison is swapped.
  const localeCompare = String.prototype.localeCompare;
  String.prototype.localeCompare = byteOrder as typeof localeCompare;
  try {
    return listObjects.apply(this, args);
  } finally {
    String.prototype.localeCompare = localeCompare;
  }
};

const storageDir = process.env.FAUXQS_S3_STORAGE_DIR;
const server = await startFauxqs({
  port: Number(process.env.FAUXQS_PORT ?? '0'),
  logger: process.env.FAUXQS_LOGGER === 'true',
  ...(storageDir ? { s3StorageDir: storageDir } : {}),
});

const ready = { type: 'ready', port: server.port, address: server.address };
if (process.send) {
  process.send(ready);
  // Parent gone (even if it was SIGKILLed and ran no cleanup): stop serving.
  process.on('disconnect', () => process.exit(0));
} else {
  console.log(JSON.stringify(ready));
}

for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    void server.stop().finally(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
