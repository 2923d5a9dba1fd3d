/**
 * The wal-push <-> agent daemon protocol on a unix socket. archive_command runs once per WAL
 * segment, so its side must start fast: this module imports only node builtins.
 *
 * A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. The client
 * (push-client.ts) sends one request and waits for one reply:
 *   -> {"v":1,"op":"wal-push","path":"/abs/pg_wal/000000010000000000000003","cluster":"main","repoPath":"/repo"}
 *      cluster and repoPath are what the caller's command line and environment name (absent when
 *      they name nothing): the daemon compares them with what it serves
 *   <- {"ok":true,"result":"stored"|"exists"}          only after the repository put completed
 *   <- {"ok":false,"code":"PGF-4002","message":"...","hint":"..."}
 *   <- {"ok":false,"direct":true,...}   the daemon serves another cluster or repository than the
 *                                        caller names: the caller archives the file itself
 * The reply "ok" is the durable ack archive_command waits for: the daemon sends it only after
 * the repository reported the object stored (posix: fsynced and renamed; S3: upload completed).
 *
 * The previous release's fast path sent a second shape, version 2, carrying its command line
 * unparsed (`"args":["%p","--cluster","main",...],"env":{"PGFLEET_...":"..."}`) for the daemon to
 * parse. No client sends it any more; the daemon still reads it (LegacyWalPushRequest), because
 * PostgreSQL may run the old archive_command binary while the agent is being upgraded.
 */
import { connect } from 'node:net';
import { lstatSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * The version of the one request shape every client sends. Daemons of every release read it, so
 * a new wal-push works with an agent daemon not yet upgraded.
 */
export const PROTOCOL_VERSION = 1;
/** The previous release's fast path: path plus its unparsed command line. Read, never sent. */
export const LEGACY_ARGS_VERSION = 2;
/** A request holds a path and a cluster name: anything bigger is not our peer. */
export const MAX_FRAME_BYTES = 64 * 1024;

export interface WalPushRequest {
  v: typeof PROTOCOL_VERSION;
  op: 'wal-push';
  /** absolute path of the file PostgreSQL asked to archive */
  path: string;
  /** the cluster the caller was configured for, when it names one */
  cluster?: string;
  /** the repositories' canonical URLs, space-separated, in order (options.ts repositoryIdentity), when it names any */
  repoPath?: string;
}

/** What the previous release's fast path sent (see the module header); the daemon derives cluster and repoPath from args and env. */
export interface LegacyWalPushRequest {
  v: typeof LEGACY_ARGS_VERSION;
  op: 'wal-push';
  path: string;
  cluster?: string;
  repoPath?: string;
  /** wal-push's arguments after the command name, unparsed */
  args?: string[];
  /** the caller's PGFLEET_* environment variables (no secrets), which the option table also reads */
  env?: Record<string, string>;
}

/** The socket an agent daemon serving `pgdata` listens on unless --socket says otherwise: beside the data directory. */
export function defaultSocketPath(pgdata: string): string {
  return join(dirname(pgdata), `${basename(pgdata)}.pgfleet-agent.sock`);
}

/**
 * Where the daemon hard-links the segments it pushed ahead and stored, for the installed
 * launcher's shell fast path (launcher.ts): beside PGDATA's physical path, as the launcher finds
 * it from archive_command's working directory (`cd -P .`). A link there is the daemon's word that
 * this very file (same inode) is durably in the repository.
 */
export function pushedMarkerDir(pgdataPhysical: string): string {
  return join(dirname(pgdataPhysical), `${basename(pgdataPhysical)}.pgfleet-agent.pushed`);
}

export type DaemonReply =
  | { ok: true; result: 'stored' | 'exists' }
  | { ok: false; code: string; message: string; hint?: string; direct?: boolean };

export function encodeFrame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  if (body.length > MAX_FRAME_BYTES) throw new FrameError(`frame of ${body.length} bytes exceeds ${MAX_FRAME_BYTES}`);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

/** Reassembles frames from socket chunks (which may split or merge frames anywhere). */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  /** Returns every complete message in the bytes seen so far; throws FrameError on a bad frame. */
  push(chunk: Buffer): unknown[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: unknown[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len > MAX_FRAME_BYTES) throw new FrameError(`frame of ${len} bytes exceeds ${MAX_FRAME_BYTES}`);
      if (this.buf.length < 4 + len) break;
      const body = this.buf.subarray(4, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      try {
        out.push(JSON.parse(body.toString('utf8')));
      } catch {
        throw new FrameError('frame is not JSON');
      }
    }
    return out;
  }

  /** Bytes of an incomplete frame still buffered. */
  get pending(): number {
    return this.buf.length;
  }
}

/** Fields both shapes share, checked the same way. */
function isRequestOf(r: Partial<LegacyWalPushRequest> | null, v: number): boolean {
  return (
    typeof r === 'object' &&
    r !== null &&
    r.v === v &&
    r.op === 'wal-push' &&
    typeof r.path === 'string' &&
    r.path.length > 0 &&
    (r.cluster === undefined || typeof r.cluster === 'string') &&
    (r.repoPath === undefined || typeof r.repoPath === 'string') &&
    (r.env === undefined ||
      (typeof r.env === 'object' && r.env !== null && Object.values(r.env).every((v) => typeof v === 'string')))
  );
}

/**
 * The one request shape. One carrying args is refused rather than archived as if it named
 * nothing: those args might name another cluster.
 */
export function isWalPushRequest(m: unknown): m is WalPushRequest {
  const r = m as Partial<LegacyWalPushRequest> | null;
  return isRequestOf(r, PROTOCOL_VERSION) && r!.args === undefined;
}

export function isLegacyWalPushRequest(m: unknown): m is LegacyWalPushRequest {
  const r = m as Partial<LegacyWalPushRequest> | null;
  return (
    isRequestOf(r, LEGACY_ARGS_VERSION) &&
    (r!.args === undefined || (Array.isArray(r!.args) && r!.args.every((a) => typeof a === 'string')))
  );
}

export function isDaemonReply(m: unknown): m is DaemonReply {
  const r = m as Record<string, unknown> | null;
  if (typeof r !== 'object' || r === null) return false;
  if (r.ok === true) return r.result === 'stored' || r.result === 'exists';
  return r.ok === false && typeof r.code === 'string' && typeof r.message === 'string';
}

/** No daemon listens (socket file missing, stale, or not ours): the caller pushes by itself. */
export class NoDaemonError extends Error {
  constructor(
    message: string,
    readonly reason: string,
  ) {
    super(message);
    this.name = 'NoDaemonError';
  }
}

/**
 * Sends one request and resolves with the daemon's reply. Rejects with NoDaemonError when
 * nobody is there to take the file, and with a plain Error when a daemon took the request but
 * did not answer (connection lost, timeout, garbage): then the outcome is unknown and the caller
 * must fail so PostgreSQL retries (pushing is idempotent, the retry is safe).
 */
export async function requestDaemon(
  socketPath: string,
  request: WalPushRequest,
  timeoutMs: number,
): Promise<DaemonReply> {
  // A socket someone else created is not our daemon: never hand WAL to it (it could ack and drop).
  // lstatSync, not fs/promises: node:fs is loaded at start-up anyway, while node:fs/promises costs
  // archive_command a few ms of module loading (it pulls in readline) and the libuv thread pool.
  try {
    const st = lstatSync(socketPath);
    if (!st.isSocket()) throw new NoDaemonError(`${socketPath} is not a socket`, 'ENOTSOCK');
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
      throw new NoDaemonError(
        `${socketPath} belongs to uid ${st.uid}, not to this user (${process.getuid()}); ignoring it`,
        'EPERM',
      );
    }
  } catch (err) {
    if (err instanceof NoDaemonError) throw err;
    throw new NoDaemonError(`no agent daemon socket at ${socketPath}`, (err as NodeJS.ErrnoException).code ?? 'ENOENT');
  }
  return new Promise<DaemonReply>((resolve, reject) => {
    const sock = connect(socketPath);
    const decoder = new FrameDecoder();
    let connected = false;
    let settled = false;
    const finish = (err: Error | undefined, reply?: DaemonReply) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(
      () => finish(new Error(`agent daemon at ${socketPath} did not answer within ${Math.round(timeoutMs / 1000)} s`)),
      timeoutMs,
    );
    sock.on('connect', () => {
      connected = true;
      sock.write(encodeFrame(request));
    });
    sock.on('data', (chunk: Buffer) => {
      let messages: unknown[];
      try {
        messages = decoder.push(chunk);
      } catch (err) {
        finish(new Error(`agent daemon at ${socketPath} sent a bad frame: ${(err as Error).message}`));
        return;
      }
      const m = messages[0];
      if (m === undefined) return;
      if (!isDaemonReply(m)) finish(new Error(`agent daemon at ${socketPath} sent an unexpected reply`));
      else finish(undefined, m);
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      if (!connected && (err.code === 'ENOENT' || err.code === 'ECONNREFUSED' || err.code === 'ENOTSOCK')) {
        finish(new NoDaemonError(`no agent daemon at ${socketPath} (${err.code})`, err.code));
      } else {
        finish(new Error(`agent daemon at ${socketPath}: ${err.message}`));
      }
    });
    sock.on('close', () => finish(new Error(`agent daemon at ${socketPath} closed the connection without an answer`)));
  });
}
