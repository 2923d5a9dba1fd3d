/**
 * The daemon side of archive_command. `pgfleet-agent wal-push %p` (push-client.ts) connects to
 * this unix socket, sends the path and waits (the protocol: socket.ts); the daemon validates and
 * archives the file with the same code as a direct wal-push (archive.ts: size, page header,
 * timeline, system identifier; compressed; idempotent by name + sha256, never overwriting) and
 * answers only once the repository stored it. A Node process start (~30 ms) is then the whole
 * foreground cost of a segment.
 *
 * Push-ahead: when PostgreSQL falls behind (many pg_wal/archive_status/*.ready files), each
 * request also starts pushing the next ready files in the background, a bounded few at a time,
 * in the order PostgreSQL will ask for them (timeline history files first, then oldest segment).
 * When archive_command later asks for one of them, the daemon answers from what it stored: the
 * same name with the same file (inode, size, mtime) and checksum is already durable.
 *
 * With `watchReady` the daemon does not wait for the first request: it watches archive_status
 * (inotify) and starts pushing as soon as PostgreSQL marks a segment ready. PostgreSQL writes the
 * .ready file only after the segment is complete and fsynced (XLogArchiveNotify), and only then
 * starts archive_command, whose Node process needs ~30 ms to start: the segment is usually stored
 * before the client connects, so the client's wait is its own start-up plus one round trip.
 *
 * Markers: a Node process start is still ~25-60 ms of CPU per segment, more than pgBackRest's C
 * archive-push. So a segment pushed ahead and stored is also hard-linked into the marker
 * directory (socket.ts pushedMarkerDir), and the installed launcher (launcher.ts), a /bin/sh
 * script, answers archive_command from it without starting Node: the link names the same inode as
 * %p (`test -ef`), so a later file of the same name (a new cluster in the same place, a recycled
 * segment) never matches a marker of an earlier one, and while the link exists the inode cannot be
 * reused. pgBackRest's asynchronous archiving answers the same way from its spool's `.ok` files.
 * Markers are made only once the repository stored the file, removed when used or asked for over
 * the socket, bounded in number (each pins its segment's 16 MiB until removed), and wiped when the
 * agent starts and when the daemon stops; the launcher trusts them only while the daemon that made
 * them lives and listens on the default socket (openMarkers). Where a link cannot be made (pg_wal on another filesystem, another user) there
 * are no markers and the launcher runs the Node client as before.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { watch, type FSWatcher } from 'node:fs';
import { chmod, link, lstat, mkdir, readdir, realpath, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { asPgfleetError, PgfleetError, type Logger } from '@pgfleet/core';
import { parseCommandLineWith, resolveSettings } from '@pgfleet/core/command-line';
import type { Codec, Repository } from '@pgfleet/storage';
import { AGENT_PROGRAM, repositoriesFromSettings, repositoryIdentity } from '../options.js';
import { archiveWalFile, reportReplacedCopies, type ArchivedFile } from './archive.js';
import { WalNameLock } from './name-lock.js';
import {
  encodeFrame,
  FrameDecoder,
  FrameError,
  isLegacyWalPushRequest,
  isWalPushRequest,
  defaultSocketPath,
  PROTOCOL_VERSION,
  pushedMarkerDir,
  type DaemonReply,
  type LegacyWalPushRequest,
  type WalPushRequest,
} from './socket.js';

export interface WalArchiveServerOptions {
  socketPath: string;
  pgdata: string;
  cluster: string;
  systemIdentifier: string;
  repo: Repository;
  /** the daemon's repositories as wal-push names them (options.ts repositoryIdentity), compared with its request */
  repoPath?: string;
  codec: Codec;
  /** ready files pushed ahead at once (0 = off) */
  ahead: number;
  /** push ready files as PostgreSQL marks them (archive_status watched), not only once archive_command first asks; needs ahead > 0 */
  watchReady?: boolean;
  log: Logger;
  /** shared with the WAL stream, which pushes the same names */
  lock?: WalNameLock;
  /** Called for each file this daemon stored (not for one the repository already held): heartbeat counters. */
  onStored?: (name: string, bytes: number) => void;
}

interface StoredFile {
  ino: number;
  size: number;
  mtimeMs: number;
  sha256: string;
}

/** How many stored files to remember (a few minutes of WAL at full speed). */
const REMEMBER = 512;
/**
 * Markers kept at most. Each pins its segment's inode, which costs disk only once PostgreSQL has
 * dropped the segment, i.e. for a marker nobody used; the archiver normally uses each within a
 * moment of its making.
 */
const MAX_MARKERS = 64;

/** Order in which PostgreSQL's archiver picks ready files: timeline history first, then by name. */
export function archiveOrder(a: string, b: string): number {
  const ha = a.endsWith('.history') ? 0 : 1;
  const hb = b.endsWith('.history') ? 0 : 1;
  return ha - hb || (a < b ? -1 : a > b ? 1 : 0);
}

/**
 * The one request shape from either: a legacy request's unparsed command line is read here with
 * the option table, flags and environment only (the config file is not read, as the client does).
 * Throws the parser's error for arguments wal-push would refuse.
 */
export function fromLegacyRequest(r: WalPushRequest | LegacyWalPushRequest): WalPushRequest {
  if (r.v === PROTOCOL_VERSION) return r;
  const base = { v: PROTOCOL_VERSION, op: r.op, path: r.path } as const;
  if (!r.args) {
    return {
      ...base,
      ...(r.cluster !== undefined ? { cluster: r.cluster } : {}),
      ...(r.repoPath !== undefined ? { repoPath: r.repoPath } : {}),
    };
  }
  const parsed = parseCommandLineWith(AGENT_PROGRAM, ['wal-push', ...r.args], r.env ?? {}, null);
  const settings = resolveSettings(AGENT_PROGRAM, 'wal-push', parsed.options);
  const { cluster } = settings;
  const specs = repositoriesFromSettings(settings);
  return {
    ...base,
    ...(cluster !== undefined ? { cluster } : {}),
    ...(specs.length > 0 ? { repoPath: repositoryIdentity(specs) } : {}),
  };
}

/**
 * Removes the pushed-segment markers of this PGDATA (archive-server "Markers"): at every agent
 * start, whether or not it serves archive_command this time, and when its daemon stops, so no
 * marker outlives the daemon and configuration that made it.
 */
export async function removePushedMarkers(pgdata: string): Promise<void> {
  const dir = await realpath(pgdata).then(pushedMarkerDir, () => undefined);
  if (dir !== undefined) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
}

export class WalArchiveServer {
  private server: Server | undefined;
  private watcher: FSWatcher | undefined;
  private readonly stored = new Map<string, StoredFile>();
  private readonly inflight = new Map<string, Promise<ArchivedFile>>();
  private aheadRunning = 0;
  /** Names whose push-ahead failed: not pushed ahead again (each completion would retry at once, a busy loop) until archive_command asks for them. */
  private readonly aheadFailed = new Set<string>();
  /** Ready files of the last archive_status reading, in archive order, and how many were taken (nextReady). */
  private readyQueue: string[] = [];
  private readyAt = 0;
  private readingReady: Promise<void> | undefined;
  private closed = false;
  /** The marker directory (socket.ts pushedMarkerDir), undefined when markers are off or a link failed. */
  private markers: string | undefined;
  /** Markers made, oldest first (removed beyond MAX_MARKERS). */
  private readonly marked = new Set<string>();
  /** Names archive_command asked for over the socket: a push-ahead finishing after that leaves no marker. */
  private readonly asked = new Set<string>();
  /** Requests answered (for tests and the log). */
  requests = 0;
  pushedAhead = 0;
  /** Push-aheads that failed (each name once until archive_command asks for it). */
  aheadFailures = 0;

  private readonly lock: WalNameLock;

  constructor(private readonly o: WalArchiveServerOptions) {
    this.lock = o.lock ?? new WalNameLock();
  }

  private get walDir(): string {
    return join(resolve(this.o.pgdata), 'pg_wal');
  }

  async start(): Promise<void> {
    const path = this.o.socketPath;
    await removePushedMarkers(this.o.pgdata);
    await this.removeStaleSocket(path);
    const server = createServer((sock) => this.onConnection(sock));
    // The socket is created with mode 0600 (umask around the synchronous bind), so no other user
    // can connect even for an instant; chmod repeats it for filesystems that ignore the umask.
    const old = process.umask(0o177);
    try {
      await new Promise<void>((res, rej) => {
        server.once('error', rej);
        server.listen(path, () => {
          server.off('error', rej);
          res();
        });
      });
    } finally {
      process.umask(old);
    }
    await chmod(path, 0o600);
    server.on('error', (err) => this.o.log.error({ err: err.message }, 'WAL socket error'));
    this.server = server;
    if (this.o.ahead > 0) await this.openMarkers();
    if (this.o.watchReady && this.o.ahead > 0) this.watchReady();
    this.o.log.info({ socket: path, ahead: this.o.ahead, watch: this.watcher !== undefined }, 'listening for wal-push');
  }

  /**
   * Watches archive_status: a .ready file appearing starts a push-ahead at once. Events are only
   * a hint (inotify may coalesce or drop them): the push itself reads archive_status, and each
   * request still schedules push-ahead as without the watch. A missing directory (not a real
   * PGDATA) or a failed watch leaves push-ahead request-driven.
   */
  private watchReady(): void {
    try {
      const w = watch(join(this.walDir, 'archive_status'), { persistent: false }, (_event, file) => {
        if (file === null || String(file).endsWith('.ready')) this.scheduleAhead(undefined);
      });
      w.on('error', (err) => {
        this.o.log.warn({ err: err.message }, 'watching archive_status failed; pushing ahead on request only');
        w.close();
        if (this.watcher === w) this.watcher = undefined;
      });
      this.watcher = w;
      this.scheduleAhead(undefined); // a backlog already present when the daemon starts
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'cannot watch archive_status; pushing ahead on request only');
    }
  }

  async stop(): Promise<void> {
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
    const server = this.server;
    this.server = undefined;
    this.markers = undefined;
    await removePushedMarkers(this.o.pgdata);
    if (!server) return;
    await new Promise<void>((r) => server.close(() => r()));
    await rm(this.o.socketPath, { force: true });
  }

  /** A socket file left by a daemon that died is removed; a live daemon on it is an error. */
  private async removeStaleSocket(path: string): Promise<void> {
    const st = await lstat(path).catch(() => undefined);
    if (!st) return;
    if (!st.isSocket())
      throw new PgfleetError(
        'InvalidConfig',
        `--socket ${path} exists and is not a socket; remove it or choose another path`,
      );
    const alive = await new Promise<boolean>((r) => {
      const c = connect(path);
      c.once('connect', () => {
        c.destroy();
        r(true);
      });
      c.once('error', () => r(false));
    });
    if (alive)
      throw new PgfleetError(
        'InvalidConfig',
        `another agent daemon already listens on ${path}; stop it or set --socket`,
      );
    await rm(path, { force: true });
  }

  private onConnection(sock: Socket): void {
    const decoder = new FrameDecoder();
    let handled = false;
    const reply = (r: DaemonReply) => {
      if (!sock.destroyed) sock.end(encodeFrame(r));
    };
    sock.on('error', () => {}); // a client gone away (archiver killed) is not our problem
    sock.on('data', (chunk: Buffer) => {
      if (handled) return;
      let messages: unknown[];
      try {
        messages = decoder.push(chunk);
      } catch (err) {
        handled = true;
        const e = new PgfleetError('InvalidArgument', `bad request on the WAL socket: ${(err as FrameError).message}`);
        reply({ ok: false, code: e.code, message: e.message, hint: e.hint });
        return;
      }
      const m = messages[0];
      if (m === undefined) return;
      handled = true;
      if (!isWalPushRequest(m) && !isLegacyWalPushRequest(m)) {
        const e = new PgfleetError(
          'InvalidArgument',
          'unsupported request on the WAL socket (is wal-push from another pgfleet version?)',
        );
        reply({ ok: false, code: e.code, message: e.message, hint: e.hint });
        return;
      }
      void this.handle(m).then(reply);
    });
  }

  /** Archives the requested file and answers; never throws (errors become replies with their codes). */
  async handle(request: WalPushRequest | LegacyWalPushRequest): Promise<DaemonReply> {
    const started = Date.now();
    this.requests++;
    const name = basename(request.path);
    this.aheadFailed.delete(name);
    this.noteAsked(name);
    let req: WalPushRequest;
    try {
      req = fromLegacyRequest(request);
    } catch (err) {
      // wal-push reports its own bad arguments, with their exit code, when it parses them itself.
      const e = asPgfleetError(err);
      return { ok: false, code: e.code, message: e.message, hint: e.hint, direct: true };
    }
    // archive_command names another cluster or repository than this daemon serves: archiving
    // here would put the file where the caller did not ask; it archives it itself instead.
    const otherCluster = req.cluster !== undefined && req.cluster !== this.o.cluster;
    const otherRepo = req.repoPath !== undefined && this.o.repoPath !== undefined && req.repoPath !== this.o.repoPath;
    if (otherCluster || otherRepo) {
      const e = new PgfleetError(
        'InvalidConfig',
        `wal-push names cluster '${req.cluster ?? this.o.cluster}' in ${req.repoPath ?? this.o.repoPath}, the agent daemon on ${this.o.socketPath} serves '${this.o.cluster}' in ${this.o.repoPath ?? this.o.repo.location}; archiving directly`,
      );
      this.o.log.warn({ wal: name, code: e.code, via: 'socket' }, e.message);
      return { ok: false, code: e.code, message: e.message, hint: e.hint, direct: true };
    }
    try {
      if (!isAbsolute(req.path)) throw new PgfleetError('InvalidArgument', `wal-push sent a relative path ${req.path}`);
      const ours = dirname(req.path) === this.walDir;
      if (ours) this.scheduleAhead(name);
      const out = await this.push(req.path, ours);
      this.o.log.info(
        { wal: name, result: out.result, ms: Date.now() - started, via: 'socket' },
        out.result === 'stored' ? 'archived WAL file' : 'WAL file already archived with the same content',
      );
      return { ok: true, result: out.result };
    } catch (err) {
      const e = asPgfleetError(err);
      this.o.log.warn(
        { wal: name, code: e.code, err: e.message, via: 'socket' },
        'refused WAL file; PostgreSQL will retry',
      );
      return { ok: false, code: e.code, message: e.message, hint: e.hint };
    }
  }

  /** One push per name at a time (a later one waits for the earlier); a file this daemon already stored (same inode, size, mtime) is answered from memory. */
  private push(path: string, ours: boolean): Promise<ArchivedFile> {
    const name = basename(path);
    const previous = this.inflight.get(name);
    const p = (async (): Promise<ArchivedFile> => {
      if (previous) await previous.catch(() => undefined);
      const st = await stat(path).catch(() => undefined);
      const known = this.stored.get(name);
      if (st && known && known.ino === st.ino && known.size === st.size && known.mtimeMs === st.mtimeMs) {
        return { name, result: 'exists', sha256: known.sha256 };
      }
      const out = await this.lock.run(name, () =>
        archiveWalFile(path, this.o.repo, this.o.cluster, this.o.codec, ours ? this.o.systemIdentifier : undefined),
      );
      reportReplacedCopies(out, this.o.log);
      if (st) this.remember(name, { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, sha256: out.sha256 });
      if (out.result === 'stored') this.o.onStored?.(name, st?.size ?? 0);
      return out;
    })();
    this.inflight.set(name, p);
    p.then(
      () => undefined,
      () => undefined,
    ).finally(() => {
      if (this.inflight.get(name) === p) this.inflight.delete(name);
    });
    return p;
  }

  private remember(name: string, f: StoredFile): void {
    this.stored.delete(name);
    this.stored.set(name, f);
    if (this.stored.size > REMEMBER) this.stored.delete(this.stored.keys().next().value!);
  }

  /**
   * Markers only for the daemon the Node client would ask (the default socket of this PGDATA) and
   * only when it runs as the WAL files' owner (root could link them into a directory the launcher
   * cannot read). The directory holds this daemon's pid (`.pid`) and a hard link to its socket
   * (`.sock`): the launcher trusts a marker only while that process lives and that socket is the
   * default one, so markers of a daemon that stopped, died or served another socket are never used.
   */
  private async openMarkers(): Promise<void> {
    try {
      const pgdata = await realpath(this.o.pgdata);
      if (resolve(this.o.socketPath) !== defaultSocketPath(pgdata)) {
        this.o.log.info({ socket: this.o.socketPath }, 'no pushed-segment markers: not the default socket of PGDATA');
        return;
      }
      if ((await stat(this.walDir)).uid !== process.getuid?.()) {
        this.o.log.info('no pushed-segment markers: pg_wal belongs to another user');
        return;
      }
      const dir = pushedMarkerDir(pgdata);
      await mkdir(dir, { mode: 0o700 });
      await writeFile(join(dir, '.pid'), `${process.pid}\n`);
      await link(this.o.socketPath, join(dir, '.sock'));
      this.markers = dir;
    } catch (err) {
      this.o.log.info(
        { err: (err as Error).message },
        'no pushed-segment markers; archive_command runs the Node client',
      );
    }
  }

  private noteAsked(name: string): void {
    this.asked.add(name);
    if (this.asked.size > REMEMBER) this.asked.delete(this.asked.values().next().value!);
    if (this.marked.delete(name)) void this.unmark(name);
  }

  /**
   * Links a segment this daemon pushed ahead into the marker directory, once the file is still the
   * one it stored (inode, size, mtime): the launcher then answers archive_command for it.
   */
  private async mark(name: string): Promise<void> {
    const dir = this.markers;
    const known = this.stored.get(name);
    if (dir === undefined || known === undefined || this.asked.has(name) || this.closed) return;
    const path = join(this.walDir, name);
    const marker = join(dir, name);
    try {
      const st = await stat(path);
      if (st.ino !== known.ino || st.size !== known.size || st.mtimeMs !== known.mtimeMs) return;
      await unlink(marker).catch(() => undefined);
      await link(path, marker);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return; // archived and recycled meanwhile
      // EXDEV (pg_wal elsewhere), EPERM (another user's file): markers are off for this run.
      this.markers = undefined;
      this.o.log.info(
        { err: (err as Error).message },
        'cannot link pushed segments; archive_command runs the Node client',
      );
      return;
    }
    // Asked for while the link was made: the client was answered over the socket already.
    if (this.asked.has(name) || this.closed) {
      await unlink(marker).catch(() => undefined);
      return;
    }
    this.marked.add(name);
    if (this.marked.size > MAX_MARKERS) {
      const oldest = this.marked.values().next().value!;
      this.marked.delete(oldest);
      await this.unmark(oldest);
    }
  }

  private async unmark(name: string): Promise<void> {
    if (this.markers !== undefined) await unlink(join(this.markers, name)).catch(() => undefined);
  }

  /**
   * One push-ahead. While it runs, `<name>.pending` in the marker directory tells the launcher to
   * wait for its marker rather than start a Node client to ask (archive_command usually runs the
   * moment PostgreSQL writes the .ready file, while this push is under way).
   */
  private async pushAhead(name: string): Promise<void> {
    // Started first: push() marks the name in flight at once, so the next nextReady skips it.
    const pushed = this.push(join(this.walDir, name), true);
    const pending = this.markers !== undefined ? join(this.markers, `${name}.pending`) : undefined;
    // The launcher waits while this file exists and the daemon (.pid) lives.
    if (pending !== undefined) await writeFile(pending, `${process.pid}\n`).catch(() => undefined);
    try {
      const out = await pushed;
      this.pushedAhead++;
      await this.mark(name);
      this.o.log.debug({ wal: name, result: out.result }, 'pushed ready WAL file ahead of archive_command');
    } catch (err) {
      // Not fatal: archive_command asks for this file later and gets the error itself.
      this.aheadFailures++;
      this.aheadFailed.add(name);
      if (this.aheadFailed.size > REMEMBER) this.aheadFailed.delete(this.aheadFailed.values().next().value!);
      const e = asPgfleetError(err);
      this.o.log.debug({ wal: name, code: e.code, err: e.message }, 'push-ahead failed; archive_command will retry');
    } finally {
      if (pending !== undefined) await unlink(pending).catch(() => undefined);
    }
  }

  /** Starts background pushes of the ready files other than `requested`, up to `ahead` at a time. */
  private scheduleAhead(requested: string | undefined): void {
    if (this.o.ahead <= 0 || this.closed || this.aheadRunning >= this.o.ahead) return;
    // Taken here, before the await: concurrent calls never count the same free slot twice.
    this.aheadRunning++;
    void this.nextReady(requested).then(
      (name) => {
        if (name === undefined || this.closed) {
          this.aheadRunning--;
          return;
        }
        void this.pushAhead(name).finally(() => {
          this.aheadRunning--;
          this.scheduleAhead(requested);
        });
        this.scheduleAhead(requested);
      },
      () => {
        this.aheadRunning--;
      },
    );
  }

  /**
   * The next ready file to push ahead, undefined when there is none. archive_status is read (and
   * sorted) again only once every file of the last reading was taken: with a backlog of 10k ready
   * files it is read once per 10k pushes, not once per push; once caught up it is small anyway.
   */
  private async nextReady(requested: string | undefined): Promise<string | undefined> {
    for (let refilled = false; ; refilled = true) {
      while (this.readyAt < this.readyQueue.length) {
        const name = this.readyQueue[this.readyAt++]!;
        if (name !== requested && !this.inflight.has(name) && !this.stored.has(name) && !this.aheadFailed.has(name))
          return name;
      }
      if (refilled) return undefined;
      this.readingReady ??= this.readReady().finally(() => {
        this.readingReady = undefined;
      });
      await this.readingReady;
    }
  }

  private async readReady(): Promise<void> {
    const entries = await readdir(join(this.walDir, 'archive_status')).catch(() => [] as string[]);
    this.readyQueue = entries
      .filter((e) => e.endsWith('.ready'))
      .map((e) => e.slice(0, -'.ready'.length))
      .sort(archiveOrder);
    this.readyAt = 0;
  }
}
