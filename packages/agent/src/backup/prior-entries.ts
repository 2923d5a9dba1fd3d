/**
 * The prior backup of a diff/incr, its entries looked up by path without holding them (issue 16:
 * read whole and mapped by path, a 100k-file prior manifest cost tens of MB of objects).
 *
 * Why an index and not a merge in path order: a manifest lists its files in the order they were
 * stored (largest first, entry-spool.ts), not by path, and older manifests in any order, so a
 * merge with the walk of PGDATA would need both sides sorted by path first (an external sort of
 * the prior manifest, and a walk in byte order rather than directory order). Instead the
 * manifest's entries are streamed once (Repository.openManifestFor: authenticated and checked
 * first) into a local file, one JSON line each, and indexed in one buffer: per entry a 16-byte
 * fingerprint of its path (the first half of its sha256), where its line is in the file, and the
 * size and mtime the copy decision needs (prior.ts decideFile). 44 bytes an entry, 4.4 MB at 100k
 * files, sorted by fingerprint for a binary search; no object per entry. An entry's full text is
 * read back (one positioned read) only when it is used: a file referenced, compared by checksum,
 * or copied on top of its prior block map.
 *
 * Every entry read back is checked to name the path it was looked up for: two paths sharing a
 * fingerprint (a 2^-128 chance) can only make a file be copied, never referenced wrongly.
 *
 * The file is the agent's own, 0600 in a 0700 directory named for the cluster and the agent's
 * process (entry-spool.ts makeSpoolDir: swept after a crash), removed by close().
 */
import { createHash } from 'node:crypto';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { ManifestFile, ManifestHead } from '@pgfleet/storage';
import { makeSpoolDir } from './entry-spool.js';

/** Bytes of one index record: fingerprint, line offset, line length, size, mtime. */
const RECORD = 44;
const FP = 16;
const AT_OFFSET = 16;
const AT_LENGTH = 24;
const AT_SIZE = 28;
const AT_MTIME = 36;

/** Lines gathered before one write. */
const FLUSH_BYTES = 256 << 10;

/** What the index says of a prior entry, without reading it: enough to decide whether the file changed. */
export interface PriorFacts {
  /** Where the record is (for entry()). */
  slot: number;
  size: number;
  mtimeMs: number;
}

/** The fingerprint of a path: the first 16 bytes of the sha256 of its UTF-8 bytes. */
export function pathFingerprint(path: string): Buffer {
  return createHash('sha256').update(path, 'utf8').digest().subarray(0, FP);
}

export class PriorEntries {
  private constructor(
    private readonly dir: string,
    private readonly fh: FileHandle,
    /** RECORD bytes per entry, sorted by fingerprint. */
    private readonly index: Buffer,
    /** Entries indexed. */
    readonly count: number,
  ) {}

  /** Streams `files` into a local file of `cluster`'s in `parent` (the system's temporary directory unless told) and indexes them. */
  static async build(
    files: AsyncIterable<ManifestFile> | Iterable<ManifestFile>,
    cluster: string,
    sizeHint = 1024,
    parent?: string,
  ): Promise<PriorEntries> {
    const dir = await makeSpoolDir(cluster, parent);
    let fh: FileHandle | undefined;
    try {
      fh = await open(join(dir, 'prior.jsonl'), 'w+', 0o600);
      let records = Buffer.alloc(Math.max(1, sizeHint) * RECORD);
      let n = 0;
      let offset = 0;
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      for await (const f of files) {
        const line = Buffer.from(`${JSON.stringify(f)}\n`, 'utf8');
        if ((n + 1) * RECORD > records.length) {
          const grown = Buffer.alloc(records.length * 2);
          records.copy(grown);
          records = grown;
        }
        const r = n * RECORD;
        pathFingerprint(f.path).copy(records, r);
        records.writeDoubleLE(offset, r + AT_OFFSET);
        records.writeUInt32LE(line.length, r + AT_LENGTH);
        records.writeDoubleLE(f.size, r + AT_SIZE);
        records.writeDoubleLE(f.mtimeMs, r + AT_MTIME);
        n++;
        offset += line.length;
        pending.push(line);
        pendingBytes += line.length;
        if (pendingBytes >= FLUSH_BYTES) {
          await fh.write(Buffer.concat(pending));
          pending = [];
          pendingBytes = 0;
        }
      }
      if (pending.length > 0) await fh.write(Buffer.concat(pending));
      return new PriorEntries(dir, fh, sortRecords(records, n), n);
    } catch (err) {
      await fh?.close().catch(() => {});
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** The index's facts of the prior entry for `path`, or undefined when the prior backup has none. */
  find(path: string): PriorFacts | undefined {
    const fp = pathFingerprint(path);
    let lo = 0;
    let hi = this.count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const c = this.index.compare(fp, 0, FP, mid * RECORD, mid * RECORD + FP);
      if (c === 0) {
        const r = mid * RECORD;
        return {
          slot: mid,
          size: this.index.readDoubleLE(r + AT_SIZE),
          mtimeMs: this.index.readDoubleLE(r + AT_MTIME),
        };
      }
      // compare() is the record's order against fp: the record sorts after it, look lower.
      if (c > 0) hi = mid - 1;
      else lo = mid + 1;
    }
    return undefined;
  }

  /** The prior entry `facts` found for `path`, read back; undefined when the record is another path's (a shared fingerprint). */
  async entry(facts: PriorFacts, path: string): Promise<ManifestFile | undefined> {
    const r = facts.slot * RECORD;
    const length = this.index.readUInt32LE(r + AT_LENGTH);
    const buf = Buffer.allocUnsafe(length);
    const { bytesRead } = await this.fh.read(buf, 0, length, this.index.readDoubleLE(r + AT_OFFSET));
    const f = JSON.parse(buf.toString('utf8', 0, bytesRead)) as ManifestFile;
    return f.path === path ? f : undefined;
  }

  /** Closes and removes the local file; the entries are unusable afterwards. */
  async close(): Promise<void> {
    await this.fh.close().catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** The first `n` records of `records`, ordered by fingerprint (byte order), in a buffer of their own. */
function sortRecords(records: Buffer, n: number): Buffer {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  // Four big-endian words compare as the 16 bytes do; no buffer made per comparison.
  order.sort((a, b) => {
    for (let w = 0; w < FP; w += 4) {
      const x = records.readUInt32BE(a * RECORD + w);
      const y = records.readUInt32BE(b * RECORD + w);
      if (x !== y) return x < y ? -1 : 1;
    }
    return 0;
  });
  const sorted = Buffer.alloc(n * RECORD);
  for (let i = 0; i < n; i++) records.copy(sorted, i * RECORD, order[i]! * RECORD, (order[i]! + 1) * RECORD);
  return sorted;
}

/** A diff/incr's prior backup: its manifest's head, the backups its entries read, and its entries by path. */
export interface PriorManifest {
  head: ManifestHead;
  /** Other backups its entries read (ManifestReader.readsFrom). */
  readsFrom: readonly string[];
  entries: PriorEntries;
}
