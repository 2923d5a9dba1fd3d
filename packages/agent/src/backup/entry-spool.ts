/**
 * A backup's manifest entries, kept in a local file while the copy runs instead of in memory
 * (issue 16: held as objects, a 100k-file backup's entries cost ~27 MB of heap, and about twice
 * that in RSS with the garbage collector's slack). The manifest is then written from this file
 * as a stream (Repository.writeManifestStream), in the order the files were stored; what the
 * manifest's head and the job's summary say of the entries (counts, sizes, format, the backups
 * they read) is counted as they come.
 *
 * The file is the agent's own, 0600 in a 0700 directory of the system's temporary directory,
 * removed with close(): it holds only what the manifest will say (names, sizes, checksums).
 * The directory's name says whose it is, `pgfleet-entries-<cluster>-<pid>-XXXXXX`: an agent
 * killed mid-backup (kill -9, OOM) cannot close it, so the next daemon of the cluster removes
 * the ones whose process is gone (sweepEntrySpools) and never another agent's on the same host.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readdir, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from '@pgfleet/core';
import { entryBackups, type ManifestFile } from '@pgfleet/storage';

const SPOOL_PREFIX = 'pgfleet-entries-';
/** <cluster>-<pid>-<mkdtemp's 6 characters>; a cluster name holds no '/' and the pid is its last '-' part but one. */
const SPOOL_NAME_RE = /^pgfleet-entries-(.+)-(\d+)-[A-Za-z0-9]{6}$/;

/** Entries' text gathered before one write (a write per file would be 100k syscalls). */
const FLUSH_BYTES = 256 << 10;

export class EntrySpool {
  /** Entries added. */
  count = 0;
  /** Content bytes of every entry (the manifest's sizeBytes). */
  sizeBytes = 0;
  /** Bytes stored in this backup's own directory (the manifest's storedBytes). */
  storedBytes = 0;
  /** Whether an entry stores only changed blocks (manifest format 2). */
  changedBlocks = false;
  /** Entries whose bytes are in this backup, and their content bytes. */
  own = 0;
  ownBytes = 0;
  /** Other backups the entries read (the summary's readsFrom). */
  readonly readsFrom = new Set<string>();
  /** Page checksum errors carried by entries referenced from older backups. */
  readonly carriedPageErrors: { path: string; blocks: number[] }[] = [];
  private pending: string[] = [];
  private pendingBytes = 0;
  private writing: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly dir: string,
    private readonly fh: FileHandle,
    private readonly label: string,
  ) {}

  /** A spool for backup `label` of `cluster`, in `parent` (the system's temporary directory unless told). */
  static async create(label: string, cluster: string, parent = tmpdir()): Promise<EntrySpool> {
    const dir = await makeSpoolDir(cluster, parent);
    try {
      return new EntrySpool(dir, await open(join(dir, 'entries.jsonl'), 'wx', 0o600), label);
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  add(f: ManifestFile): void {
    this.count++;
    this.sizeBytes += f.size;
    if (f.backup === this.label) {
      this.own++;
      this.ownBytes += f.size;
      this.storedBytes += f.storedSize + (f.blocks && !f.blocks.changed ? f.blocks.map.storedSize : 0);
    } else if (f.pageChecksumErrors?.length)
      this.carriedPageErrors.push({ path: f.path, blocks: f.pageChecksumErrors });
    if (f.blocks?.changed) this.changedBlocks = true;
    for (const b of entryBackups(f)) if (b !== this.label) this.readsFrom.add(b);
    const line = `${JSON.stringify(f)}\n`;
    this.pending.push(line);
    this.pendingBytes += line.length;
    if (this.pendingBytes >= FLUSH_BYTES) this.flush();
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    const text = this.pending.join('');
    this.pending = [];
    this.pendingBytes = 0;
    // One write at a time, in order; a failure is seen by the next flush or by entries().
    this.writing = this.writing.then(() => this.fh.write(text));
  }

  /** Every entry added, in the order added (read back from the file). */
  async *entries(): AsyncGenerator<ManifestFile> {
    this.flush();
    await this.writing;
    const lines = createInterface({ input: createReadStream(join(this.dir, 'entries.jsonl')), crlfDelay: Infinity });
    for await (const line of lines) if (line !== '') yield JSON.parse(line) as ManifestFile;
  }

  async close(): Promise<void> {
    await this.writing.catch(() => {});
    await this.fh.close().catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * A private directory (0700) for a backup's local files of `cluster`, named so that
 * sweepEntrySpools removes it once this process is gone (module header). Its owner removes it.
 */
export function makeSpoolDir(cluster: string, parent = tmpdir()): Promise<string> {
  return mkdtemp(join(parent, `${SPOOL_PREFIX}${cluster}-${process.pid}-`));
}

/** Whether process `pid` exists (signal 0 checks without sending; EPERM: it exists, another user's). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the spools a killed agent of `cluster` left in `parent` (module header): only the ones
 * named for this cluster whose process is gone; another cluster's agent on the same host, or a
 * live one, keeps its own. Returns the directories removed. A pid reused since is taken as alive
 * (the spool stays until a later start): never a live backup's spool removed.
 */
export function sweepEntrySpools(cluster: string, log: Logger, parent = tmpdir()): Promise<string[]> {
  return sweepDeadSpools({ parent, cluster, pattern: SPOOL_NAME_RE, what: 'local spools of backups', log });
}

/**
 * The sweep of sweepEntrySpools for any spool named for its cluster and agent process:
 * `pattern` matches the directory names, its first group the cluster and its second the pid.
 * Also used for the dump spools (logical/dump.ts).
 */
export async function sweepDeadSpools(o: {
  parent: string;
  cluster: string;
  pattern: RegExp;
  /** What the spools are, for the log ("manifest spools of backups"). */
  what: string;
  log: Logger;
}): Promise<string[]> {
  const { parent, log } = o;
  let names: string[];
  try {
    names = await readdir(parent);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    log.warn({ err: (err as Error).message, dir: parent }, `leftover ${o.what} cannot be looked for`);
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = o.pattern.exec(name);
    if (!m || m[1] !== o.cluster) continue;
    const pid = Number(m[2]);
    if (pid === process.pid || processAlive(pid)) continue;
    const dir = join(parent, name);
    try {
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
      removed.push(dir);
    } catch (err) {
      log.warn({ err: (err as Error).message, dir }, `leftover ${o.what} could not be removed`);
    }
  }
  if (removed.length > 0) log.info({ removed }, `removed the ${o.what} killed with an earlier agent process`);
  return removed;
}
