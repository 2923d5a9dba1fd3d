/**
 * Stores pg_dump's table data files while pg_dump still runs (docs/logical.md, "Storing while
 * pg_dump runs"). Storing after pg_dump ended made a dump cost pg_dump's time plus the storing
 * (sha256 and the repository write); here each `<dump id>.dat[.gz]` file is read once, as pg_dump
 * writes it, into the repository, and leaves the spool once stored. (Rows are counted in pg_dump's
 * snapshot, dump-snapshot.ts, not from these bytes.)
 *
 * Why a file is complete when this says so. pg_dump -Fd creates each table's data file in
 * _StartData (pg_backup_directory.c: one open for writing, gzopen for .gz), appends to it with
 * sequential writes only (COPY data, then `\.` and blank lines: dumpTableData_copy) and closes it
 * in _EndData; nothing reopens it for writing afterwards. toc.dat is written once before any data
 * file; the only later open is the fsync pass at pg_dump's end, which the agent turns off with
 * --no-sync (the spool is scratch: what must last is the repository's copy, written with its own
 * fsync). So a data file that no pg_dump process has open is whole, and:
 *
 * 1. a follower reads the file to its current end, and again as it grows; bytes below a file's
 *    size are final (appends only; the kernel raises the size after copying the bytes in);
 * 2. at the end of what is there it asks for a probe that starts after that read
 *    (open-files.ts: the directory listed, then the fds of pg_dump's processes); once a probe
 *    found the file listed and not open, one more read to the end takes what was written before
 *    the close, and that is all the file will ever hold;
 * 3. that "not open" is believed only when an earlier probe saw the file open: a probe's one blind
 *    spot is the instant inside open(2) where the file is listed but its descriptor not yet in
 *    pg_dump's fd table, and a file is opened once, so once a probe has seen its descriptor the
 *    open is over and a later "not open" is its close. A file no probe saw open (a small table
 *    written between two probes, or that blind instant) is not stored early: the write is
 *    abandoned (the repository keeps no object of a failed write) and the file is stored after
 *    pg_dump exits, exactly as before. Large-object files, blobs tables of contents and toc.dat
 *    are always stored then. (Until issue 17's third round the proof here was the content's:
 *    gunzipped and ended by COPY's `\.` line, which cost ~5 s of agent CPU per GB of COPY text;
 *    the open-then-closed proof costs nothing.)
 *
 * After pg_dump exited successfully every file is closed (the leader waits for its workers), so
 * the followers finish without a probe. After a failure (pg_dump's, the spool bound, a cancel)
 * every follower is stopped and waited for before the caller deletes what was stored, so no
 * write can land after that deletion.
 */
import { open, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { type Logger, PgfleetError } from '@pgfleet/core';
import type { StoredFile } from '@pgfleet/storage';
import type { OpenFilesProbe } from './open-files.js';

/** A table's data file as pg_dump -Fd names it: `<dump id>.dat`, `.dat.gz` with gzip. */
const TABLE_DATA_FILE = /^\d+\.dat(\.gz)?$/;

/** Bytes read from a spool file at once. */
const CHUNK = 256 * 1024;

export interface SpoolDrainOptions {
  /** pg_dump's output directory. */
  dir: string;
  /** The files of `dir` pg_dump's processes have open (open-files.ts). */
  probe: OpenFilesProbe;
  /** Files read and stored at once. */
  limit: number;
  /** Stores one file's content (the repository write); rejects when it cannot. */
  store: (name: string, content: Readable) => Promise<StoredFile>;
  /**
   * Called after a file was stored, before it leaves the spool: the dump measures the spool
   * then, so each file is counted at least once while it is there (the bound's periodic
   * measurement could fall between its arrival and its removal).
   */
  beforeRemove?: () => Promise<void>;
  log: Logger;
}

/**
 * A probe's verdict: the files listed and not open, and those listed and open (both empty when the
 * probe failed); 'all' once pg_dump has ended.
 */
type Closed = { closed: ReadonlySet<string>; open: ReadonlySet<string> } | 'all';

export class SpoolDrain {
  private readonly followers = new Map<string, Promise<void>>();
  private readonly drained = new Map<string, StoredFile>();
  private waiters: { resolve: (c: Closed) => void; reject: (e: Error) => void }[] = [];
  private ended = false;
  private stopped: Error | undefined;
  private failure: { error: unknown } | undefined;
  /** Followers not finished yet. */
  private active = 0;
  /** Bytes stored so far by finished followers (progress). */
  bytesStored = 0;
  /** Table files a probe has seen open (step 3 of the module header): only these are stored early. */
  readonly seenOpen = new Set<string>();

  constructor(private readonly o: SpoolDrainOptions) {}

  /**
   * One round while pg_dump runs: lists the directory, probes pg_dump's open files, starts
   * followers for new table data files (up to the limit) and answers the followers waiting for a
   * verdict. Never throws: a probe that fails answers "nothing closed".
   */
  async tick(): Promise<void> {
    if (this.ended || this.stopped) return;
    const waiting = this.waiters;
    this.waiters = [];
    let closed: Set<string> = new Set();
    let opened: Set<string> = new Set();
    try {
      const names = await readdir(this.o.dir).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [] as string[];
        throw err;
      });
      // Only a follower at the end of its file needs a verdict; the probe reads /proc for it.
      const open = waiting.length > 0 ? await this.o.probe() : undefined;
      if (open !== undefined) {
        closed = new Set(names.filter((n) => !open.has(n)));
        opened = new Set(names.filter((n) => open.has(n)));
      }
      for (const n of names) {
        if (this.active >= this.o.limit) break;
        if (!TABLE_DATA_FILE.test(n) || this.followers.has(n)) continue;
        this.active++;
        this.followers.set(
          n,
          this.follow(n).finally(() => this.active--),
        );
      }
    } catch (err) {
      this.o.log.debug({ err, dir: this.o.dir }, 'spool probe failed; nothing is taken as closed this round');
    }
    for (const w of waiting) w.resolve({ closed, open: opened });
  }

  /** pg_dump exited successfully: every file is closed. */
  pgDumpEnded(): void {
    this.ended = true;
    for (const w of this.waiters) w.resolve('all');
    this.waiters = [];
  }

  /** Waits for every follower (after pgDumpEnded); the files stored early, by name. Throws a store's failure. */
  async finish(): Promise<ReadonlyMap<string, StoredFile>> {
    await Promise.all(this.followers.values());
    if (this.failure) throw this.failure.error;
    return this.drained;
  }

  /** Stops every follower and waits for them (the caller then removes what was stored). */
  async stop(reason: Error): Promise<void> {
    this.stopped ??= reason;
    for (const w of this.waiters) w.reject(reason);
    this.waiters = [];
    await Promise.all(this.followers.values());
  }

  /** The verdict of the next probe that starts after this call. */
  private nextVerdict(): Promise<Closed> {
    if (this.stopped) return Promise.reject(this.stopped);
    if (this.ended) return Promise.resolve('all');
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Stores one file as it grows; a file no probe saw open is left to the after-pg_dump path (module header). Never rejects. */
  private async follow(name: string): Promise<void> {
    const path = join(this.o.dir, name);
    let incomplete = false;
    const content = async function* (this: SpoolDrain): AsyncGenerator<Buffer> {
      const fh = await open(path, 'r');
      try {
        let pos = 0;
        let closedSeen = false;
        for (;;) {
          if (this.stopped) throw this.stopped;
          const buf = Buffer.allocUnsafe(CHUNK);
          const { bytesRead } = await fh.read(buf, 0, CHUNK, pos);
          if (bytesRead > 0) {
            pos += bytesRead;
            const chunk = buf.subarray(0, bytesRead);
            yield chunk;
            continue;
          }
          // At the end of what is there: after a verdict of "closed", this read was the last one.
          if (closedSeen) break;
          const verdict = await this.nextVerdict();
          if (verdict === 'all') closedSeen = true;
          else if (verdict.open.has(name)) this.seenOpen.add(name);
          else if (verdict.closed.has(name)) {
            // Not open now, and never seen open: the blind instant of open(2) cannot be ruled out.
            if (!this.seenOpen.has(name)) {
              incomplete = true;
              throw new PgfleetError('DumpFileNotWhole', `${name} was never seen open by a probe`);
            }
            closedSeen = true;
          }
        }
      } finally {
        await fh.close();
      }
    }.call(this);
    try {
      const stored = await this.o.store(name, Readable.from(content, { objectMode: false }));
      // Stored: the spool no longer needs it (this is what keeps the spool to the files in flight).
      await this.o.beforeRemove?.();
      await unlink(path);
      this.drained.set(name, stored);
      this.bytesStored += stored.size;
    } catch (error) {
      if (incomplete)
        this.o.log.debug({ err: error, file: name }, 'never seen open by a probe; stored after pg_dump ends');
      else if (!this.stopped) this.failure ??= { error };
    }
  }
}
