/**
 * WAL streaming (like pg_receivewal) for an RPO of seconds. The agent holds a physical
 * replication slot `pgfleet_<cluster>`, so PostgreSQL keeps every segment the agent has not
 * confirmed, and streams WAL into a spool beside PGDATA:
 *   <segment>.partial   the segment being received, always full size (zero-filled ahead)
 *   <segment>           complete, fsynced, waiting for (or retrying) its upload
 *   <segment>.done      zero-byte marker of the newest uploaded segment: where to resume
 *   <segment>.conflict  the repository holds other content under this name (kept for a human)
 * Received WAL is fsynced at least every `flushIntervalMs` while it arrives, and only fsynced
 * positions are reported as flushed: the slot never moves past WAL that is not on disk, so a
 * crash (even kill -9) loses nothing. On restart streaming resumes at the start of the partial
 * segment, or after the newest complete one, or at the slot's restart_lsn when the spool is new.
 *
 * Completed segments go to the repository with the same validation and idempotent push as
 * archive_command (archive.ts): both write <segment>-<sha256>, so whichever comes second finds the
 * same name and checksum and stores nothing.
 */
import { mkdir, open, readdir, rename, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { asPgfleetError, ErrorCodes, fsyncPath, PgfleetError, sleep, type Logger } from '@pgfleet/core';
import {
  connectPg,
  identifySystem,
  Lsn,
  parseReplicationMessage,
  replicationSlotName,
  standbyStatusUpdate,
  startPhysicalReplication,
  WalSegmentName,
  walSegmentSize,
  type PgConnectionOptions,
} from '@pgfleet/pg';
import type { Codec, Repository } from '@pgfleet/storage';
import { archiveWalFile, reportReplacedCopies } from './archive.js';
import { WalNameLock } from './name-lock.js';

export interface WalStreamerOptions {
  cluster: string;
  pg: PgConnectionOptions;
  spool: string;
  repo: Repository;
  codec: Codec;
  systemIdentifier: string;
  /** The cluster's pg_wal: a new timeline's history is there before its first segment streams. */
  pgWalDir?: string;
  log: Logger;
  /** fsync + flush report at least this often while WAL arrives (the RPO of the spool) */
  flushIntervalMs?: number;
  /** status update when idle (must stay below wal_sender_timeout, 60 s by default) */
  statusIntervalMs?: number;
  /** shared with the archive socket, which pushes the same names */
  lock?: WalNameLock;
  /** Called for each segment this stream stored (not for one the repository already held): heartbeat counters. */
  onStored?: (name: string, bytes: number) => void;
}

const SEGMENT_RE = /^([0-9A-F]{24})$/;
const PARTIAL_RE = /^([0-9A-F]{24})\.partial$/;
const DONE_RE = /^([0-9A-F]{24})\.done$/;

/** Where streaming resumes, from the spool alone (undefined: the spool holds nothing of this timeline). */
export function resumePoint(entries: readonly string[], timeline: number, segmentSize: number): Lsn | undefined {
  const tli = timeline.toString(16).toUpperCase().padStart(8, '0');
  let partial: string | undefined;
  let complete: string | undefined;
  for (const e of entries) {
    const p = PARTIAL_RE.exec(e)?.[1];
    if (p?.startsWith(tli) && (!partial || p > partial)) partial = p;
    const c = SEGMENT_RE.exec(e)?.[1] ?? DONE_RE.exec(e)?.[1];
    if (c?.startsWith(tli) && (!complete || c > complete)) complete = c;
  }
  // A partial segment is re-received from its start (its tail past the last fsync is not trusted).
  if (partial && (!complete || partial > complete)) return WalSegmentName.parse(partial, segmentSize).startLsn;
  if (complete) return WalSegmentName.parse(complete, segmentSize).next().startLsn;
  return undefined;
}

export class WalStreamer {
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private stream: Duplex | undefined;
  private segmentSize = 0;
  private timeline = 0;
  /** the open .partial segment */
  private file: { name: WalSegmentName; fh: FileHandle } | undefined;
  private received = 0n;
  private flushed = 0n;
  private dirty = false;
  private lastFlush = Date.now();
  private lastStatus = 0;
  /** file operations and status updates run one at a time, in order */
  private chain: Promise<void> = Promise.resolve();
  private readonly uploads: string[] = [];
  private uploading: Promise<void> | undefined;
  private readonly flushIntervalMs: number;
  private readonly statusIntervalMs: number;
  readonly slot: string;
  segmentsUploaded = 0;
  private readonly lock: WalNameLock;

  constructor(private readonly o: WalStreamerOptions) {
    this.lock = o.lock ?? new WalNameLock();
    this.slot = replicationSlotName('pgfleet', o.cluster);
    this.flushIntervalMs = o.flushIntervalMs ?? 200;
    this.statusIntervalMs = o.statusIntervalMs ?? 10_000;
  }

  /** The newest WAL position fsynced in the spool ('' before the first). */
  get streamedLsn(): string {
    return this.flushed === 0n ? '' : Lsn.fromBigInt(this.flushed).toString();
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    this.stream?.destroy();
    await this.loop?.catch(() => undefined);
    await this.serial(() => this.closeFile());
  }

  private async run(): Promise<void> {
    let attempt = 0;
    await mkdir(this.o.spool, { recursive: true, mode: 0o700 });
    while (!this.abort.signal.aborted) {
      const began = Date.now();
      try {
        await this.session();
      } catch (err) {
        if (this.abort.signal.aborted) break;
        const e =
          err instanceof PgfleetError
            ? err
            : new PgfleetError('WalStreamFailed', (err as Error).message, { cause: err });
        this.o.log.warn({ code: e.code, err: e.message }, 'WAL streaming interrupted');
      }
      await this.serial(() => this.closeFile());
      if (Date.now() - began > 30_000) attempt = 0;
      const backoff = Math.min(30_000, 500 * 2 ** attempt++) * (0.5 + Math.random() / 2);
      await sleep(backoff, { signal: this.abort.signal });
    }
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const p = this.chain.then(fn);
    this.chain = p.catch(() => undefined);
    return p;
  }

  private async session(): Promise<void> {
    const admin = await connectPg(this.o.pg);
    let restartLsn: Lsn | undefined;
    try {
      restartLsn = await this.ensureSlot(admin);
    } finally {
      await admin.end().catch(() => undefined);
    }
    const client = await connectPg({ ...this.o.pg, replication: true, applicationName: 'pgfleet-agent-stream' });
    try {
      const id = await identifySystem(client);
      if (id.systemIdentifier !== this.o.systemIdentifier) {
        throw new PgfleetError(
          'SystemIdMismatch',
          `streaming connection reached database system ${id.systemIdentifier}, PGDATA belongs to ${this.o.systemIdentifier}`,
        );
      }
      this.segmentSize = await walSegmentSize(client);
      this.timeline = id.timeline;
      const entries = await readdir(this.o.spool);
      this.queueCompleted(entries);
      let start = resumePoint(entries, id.timeline, this.segmentSize) ?? restartLsn ?? id.xlogpos;
      start = WalSegmentName.fromLsn(id.timeline, start, this.segmentSize).startLsn;
      if (restartLsn && start.segmentNumber(this.segmentSize) < restartLsn.segmentNumber(this.segmentSize)) {
        // The server no longer has that WAL (the slot was dropped and recreated?): what lies between is only in the archive.
        this.o.log.error(
          { code: ErrorCodes.WalStreamFailed.code, from: start.toString(), to: restartLsn.toString() },
          'streamed WAL has a gap the server cannot fill; archive_command must have archived it',
        );
        start = WalSegmentName.fromLsn(id.timeline, restartLsn, this.segmentSize).startLsn;
      }
      this.received = start.value;
      if (this.flushed < start.value) this.flushed = start.value;
      this.o.log.info(
        { slot: this.slot, start: start.toString(), timeline: id.timeline, spool: this.o.spool },
        'streaming WAL',
      );
      const stream = startPhysicalReplication(client, this.slot, start, id.timeline);
      this.stream = stream;
      const ticker = setInterval(
        () => void this.serial(() => this.tick()).catch((err: unknown) => stream.destroy(err as Error)),
        Math.min(100, this.flushIntervalMs),
      );
      try {
        for await (const chunk of stream) {
          const msg = parseReplicationMessage(chunk as Buffer);
          if (msg.kind === 'xlogdata') await this.serial(() => this.write(msg.dataStart, msg.data));
          else if (msg.kind === 'keepalive' && msg.replyRequested) await this.serial(() => this.flushAndReport(true));
        }
      } finally {
        clearInterval(ticker);
        this.stream = undefined;
      }
      // CopyDone: the server ended this timeline (promotion upstream); the next session follows the new one.
      await this.serial(() => this.flushAndReport(false));
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** Creates the slot if missing (reserving WAL now); returns its restart_lsn. */
  private async ensureSlot(admin: Awaited<ReturnType<typeof connectPg>>): Promise<Lsn | undefined> {
    const read = async () =>
      (
        await admin.query<{ restart_lsn: string | null }>(
          'SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1',
          [this.slot],
        )
      ).rows[0];
    let row = await read();
    if (!row) {
      try {
        await admin.query('SELECT pg_create_physical_replication_slot($1, true)', [this.slot]);
        this.o.log.info({ slot: this.slot }, 'created physical replication slot');
      } catch (err) {
        if ((err as { code?: string }).code !== '42710')
          throw new PgfleetError(
            'WalStreamFailed',
            `cannot create replication slot ${this.slot}: ${(err as Error).message}`,
            { cause: err },
          );
      }
      row = await read();
    }
    return row?.restart_lsn ? Lsn.parse(row.restart_lsn) : undefined;
  }

  private async tick(): Promise<void> {
    const now = Date.now();
    if (this.dirty && now - this.lastFlush >= this.flushIntervalMs) await this.flushAndReport(false);
    else if (now - this.lastStatus >= this.statusIntervalMs) this.report(false);
  }

  /** Writes WAL at its position, switching segment files at boundaries (a message may span two). */
  private async write(dataStart: bigint, data: Buffer): Promise<void> {
    // The server sends WAL contiguously from the start position; anything else means we lost
    // track of message boundaries, and writing on would put garbage into a segment.
    if (dataStart !== this.received) {
      throw new PgfleetError(
        'WalStreamFailed',
        `WAL stream out of order: got ${Lsn.fromBigInt(dataStart).toString()}, expected ${Lsn.fromBigInt(this.received).toString()}`,
      );
    }
    let pos = dataStart;
    let off = 0;
    while (off < data.length) {
      const seg = WalSegmentName.fromLsn(this.timeline, Lsn.fromBigInt(pos), this.segmentSize);
      if (!this.file || this.file.name.segmentNumber !== seg.segmentNumber) await this.openSegment(seg);
      const inSeg = Number(pos % BigInt(this.segmentSize));
      const n = Math.min(data.length - off, this.segmentSize - inSeg);
      await this.file!.fh.write(data, off, n, inSeg);
      off += n;
      pos += BigInt(n);
      this.received = pos;
      this.dirty = true;
      if (inSeg + n === this.segmentSize) await this.completeSegment();
    }
  }

  private async openSegment(seg: WalSegmentName): Promise<void> {
    await this.closeFile();
    const path = join(this.o.spool, `${seg.toString()}.partial`);
    const fh = await open(path, 'a+')
      .then((h) => h.close())
      .then(() => open(path, 'r+'));
    // Full size from the start, like pg_receivewal: the completed file is exactly one segment.
    if ((await fh.stat()).size !== this.segmentSize) await fh.truncate(this.segmentSize);
    this.file = { name: seg, fh };
  }

  private async closeFile(): Promise<void> {
    const f = this.file;
    this.file = undefined;
    if (f) {
      if (this.dirty) {
        await f.fh.sync().catch(() => undefined);
        this.dirty = false;
      }
      await f.fh.close().catch(() => undefined);
    }
  }

  private async completeSegment(): Promise<void> {
    const f = this.file!;
    await f.fh.sync();
    await f.fh.close();
    this.file = undefined;
    const name = f.name.toString();
    await rename(join(this.o.spool, `${name}.partial`), join(this.o.spool, name));
    await fsyncPath(this.o.spool);
    this.dirty = false;
    this.markFlushed(this.received);
    this.report(false);
    this.enqueueUpload(name);
  }

  private async flushAndReport(replyRequested: boolean): Promise<void> {
    if (this.dirty && this.file) {
      await this.file.fh.sync();
      this.dirty = false;
    }
    this.markFlushed(this.received);
    this.report(replyRequested);
  }

  private markFlushed(lsn: bigint): void {
    if (lsn > this.flushed) this.flushed = lsn;
    this.lastFlush = Date.now();
  }

  private report(replyRequested: boolean): void {
    this.lastStatus = Date.now();
    const s = this.stream;
    if (s && !s.destroyed && s.writable) s.write(standbyStatusUpdate(this.received, this.flushed, replyRequested));
  }

  // ---- uploads -------------------------------------------------------------------------

  private queueCompleted(entries: readonly string[]): void {
    for (const e of [...entries].sort()) if (SEGMENT_RE.test(e)) this.enqueueUpload(e);
  }

  private enqueueUpload(name: string): void {
    if (!this.uploads.includes(name)) this.uploads.push(name);
    this.uploading ??= this.drainUploads().finally(() => {
      this.uploading = undefined;
    });
  }

  private async drainUploads(): Promise<void> {
    let failures = 0;
    while (this.uploads.length > 0 && !this.abort.signal.aborted) {
      const name = this.uploads[0]!;
      const path = join(this.o.spool, name);
      try {
        const out = await this.lock.run(name, () =>
          archiveWalFile(path, this.o.repo, this.o.cluster, this.o.codec, this.o.systemIdentifier, this.o.pgWalDir),
        );
        reportReplacedCopies(out, this.o.log);
        this.uploads.shift();
        this.segmentsUploaded++;
        if (out.result === 'stored') this.o.onStored?.(name, this.segmentSize);
        failures = 0;
        // Remember the newest uploaded segment (resume point), then drop the bytes.
        const entries = await readdir(this.o.spool);
        await writeFile(join(this.o.spool, `${name}.done`), '');
        for (const e of entries) {
          const d = DONE_RE.exec(e)?.[1];
          if (d && d < name) await rm(join(this.o.spool, e), { force: true });
        }
        await rm(path, { force: true });
        this.o.log.info(
          { wal: name, result: out.result, via: 'stream' },
          out.result === 'stored'
            ? 'uploaded streamed WAL segment'
            : 'streamed WAL segment was already archived with the same content',
        );
      } catch (err) {
        const e = asPgfleetError(err);
        if (e.errorName === 'WalConflict' || e.errorName === 'WalFileInvalid' || e.errorName === 'WalFileEmpty') {
          // Never retried: keep the bytes aside for a human, go on with the next segment.
          this.uploads.shift();
          await rename(path, `${path}.conflict`).catch(() => undefined);
          this.o.log.error({ wal: name, code: e.code, err: e.message }, 'streamed WAL segment not uploaded');
          continue;
        }
        failures++;
        this.o.log.warn({ wal: name, code: e.code, err: e.message }, 'upload of streamed WAL segment failed; retrying');
        await sleep(Math.min(30_000, 500 * 2 ** failures), { signal: this.abort.signal });
      }
    }
  }
}
