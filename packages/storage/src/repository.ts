/**
 * The repository layout on top of a driver (docs/repository-format.md):
 *
 *   pgfleet.json                                     repository format marker
 *   <cluster>/cluster.json                           system identifier, PG version, segment size
 *   <cluster>/encryption.json, .../dek-<id>.key      an encrypted cluster's keys (repository-keys.ts)
 *   <cluster>/backup/<label>/pg_data/<path>[.zst]    file bytes
 *   <cluster>/backup/<label>/pg_chunks/<path>/<n>[.zst]   chunks of large files (manifest `chunks`)
 *   <cluster>/backup/<label>/pg_blocks/<path>/map|data[.zst]   block map and changed blocks of a relation file (manifest `blocks`)
 *   <cluster>/backup/<label>/backup.summary          what listings choose by (backup-summary.ts), just before the manifest
 *   <cluster>/backup/<label>/backup.manifest         written last: its presence means "complete"
 *   <cluster>/backup/<label>/backup.lease            while the backup runs: the backups it references (backup-lease.ts)
 *   <cluster>/wal/<timeline+log>/<segment>-<sha256>-<mac>[.zst]   archived WAL (also .backup, .partial)
 *   <cluster>/wal/timelines/<tli>.history-<sha256>-<mac>[.zst]
 *
 * The content checksum is in each WAL file's name so the archive can find "already there with
 * the same content?" from a listing; the MAC beside it (wal-auth.ts) says the cluster's own agent
 * wrote that name with that checksum, so readers never use a planted or renamed object. Before it answers so, the found object is made durable and
 * read back against that checksum once per process (confirmWal): the writer that listed it may
 * have died before its directory fsync, and PostgreSQL recycles a segment once told it is archived.
 *
 * On a mirror (several repositories, mirrored-driver.ts) reads see the union and writes go
 * everywhere; what is written only when missing (format marker, cluster identity, WAL) is decided
 * per member, so a member that lacks an object gets it and a conflict in any member is refused.
 */
import { PassThrough, type Readable, type Transform, type TransformCallback, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
// The light entries of core: copy worker threads open repositories on their own (agent copy/worker.ts).
import { mapLimit, settleAll } from '@pgfleet/core/async';
import { PgfleetError } from '@pgfleet/core/errors';
import { isBackupLabel, isClusterName, parseBackupLabel, parseClusterName } from '@pgfleet/core/names';
import { CODECS, type Codec, codecExtension, codecOfExtension, hasBlockForm, HashingStream } from './codec.js';
import type { ObjectInfo, PutOptions, RepositoryDriver } from './driver.js';
import { BlockMap, type BlockMapPart } from './block-map.js';
import { type BackupLease, type FoundLease, leaseState, parseBackupLease } from './backup-lease.js';
import {
  journalBatchName,
  journalSeq,
  type JournalBatch,
  parseJournalBatch,
  type UnfinishedBackup,
} from './backup-journal.js';
import {
  type BackupManifest,
  type ManifestFile,
  type ManifestHead,
  type ObjectFigures,
  parseManifest,
} from './manifest.js';
import { ManifestReader, manifestHeadPieces } from './manifest-stream.js';
import {
  ManifestMacStream,
  type ManifestKeys,
  openManifest,
  sealManifest,
  sealManifestPieces,
} from './manifest-auth.js';
import {
  type BackupSummary,
  checkSummaryAgrees,
  parseSummary,
  summarizeHead,
  summarizeManifest,
  summaryMacName,
} from './backup-summary.js';
import { walMac, walMacMatches } from './wal-auth.js';
import { MirroredDriver } from './mirrored-driver.js';
import { encodeFile, fileStream, ObjectIo, type StoredFile } from './object-io.js';
import type { RepositorySpec } from './repository-url.js';
import { readSmall } from './posix-driver.js';
import {
  isDataKeyObject,
  kekId,
  type KeyResolver,
  readEncryptionRecord,
  releaseScopeKeys,
  RepositoryKeys,
  rotateClusterKey,
  rotationFrom,
  type RotationResult,
} from './repository-keys.js';

export type { StoredFile } from './object-io.js';

export interface WriteOptions extends PutOptions {
  /** Compression level (codec default when absent). */
  level?: number;
}

export interface ClusterInfo {
  systemIdentifier: string;
  pgVersionNum: number;
  walSegmentSize: number;
}

export interface ArchivedWal {
  name: string;
  key: string;
  sha256: string;
  codec: Codec;
  storedSize: number;
  /** The MAC its key carries (wal-auth.ts); undefined for an object named without one. */
  mac: string | undefined;
  /**
   * Whether the MAC matches under the cluster's key this process holds: only such copies are
   * ever read, counted as archived or restored from. False without a key.
   */
  authentic: boolean;
}

/** An archived WAL file as a listing without sizes gives it (Repository.listWalUnsized): storedSize undefined where not known. */
export type ListedWal = Omit<ArchivedWal, 'storedSize'> & { storedSize: number | undefined };

/** A manifest without its file entries, with their number (Repository.readManifestHead). */
export type CountedManifestHead = ManifestHead & { fileCount: number };

async function headOf(reader: ManifestReader): Promise<CountedManifestHead> {
  await reader.close();
  return { ...reader.head, fileCount: reader.fileCount };
}

/** The format marker's key (docs/repository-format.md). */
export const REPOSITORY_FORMAT_KEY = 'pgfleet.json';
const FORMAT_KEY = REPOSITORY_FORMAT_KEY;
/** Format 2 may hold encrypted clusters; format 1 (plaintext only) is still read and written. */
export const REPOSITORY_FORMAT = 2;
/**
 * The first segment of every key of a cluster. The last line behind the entry points' checks: a
 * name such as `shop/wal` would put one cluster's objects inside another's WAL prefix (and that
 * cluster's retention would delete them), so no key is built from a name outside the rule.
 */
function clusterDir(cluster: string): string {
  return parseClusterName(cluster, 'repository key');
}

/** What the repository's keys say of one cluster: whether it has cluster.json, and its manifest labels. */
export interface ScannedCluster {
  hasInfo: boolean;
  labels: string[];
}
/** WAL files up to this size are archived in one pass, their stored bytes held in memory meanwhile (Repository.archiveWal). */
const ONE_PASS_WAL_BYTES = 64 << 20;
/** <name>-<sha256>[-<mac>][.ext]: WAL names hold no '-', and the MAC is shorter than a checksum, so the parts never blur. */
const WAL_KEY_RE = /^(.+)-([0-9a-f]{64})(?:-([0-9a-f]{32}))?(\.zst|\.lz4|\.gz)?$/;
/** Keys per delete call while removing a backup's files (between two, a cancelled job stops). */
const DELETE_BATCH = 1000;

const JOURNAL_KEY_RE = /^[^/]+\/backup\/([^/]+)\/backup\.progress\/(\d{6})$/;

/**
 * WAL objects this process stored or confirmed (location + key), so an "exists" answer reads an
 * object back once per process, not once per push: the WAL stream and archive_command's retries
 * of the same segment meet in the agent daemon. Bounded; the oldest entries go first.
 */
const confirmedWal = new Set<string>();
const CONFIRMED_WAL_MAX = 8192;

function rememberConfirmed(id: string): void {
  confirmedWal.add(id);
  if (confirmedWal.size > CONFIRMED_WAL_MAX) confirmedWal.delete(confirmedWal.values().next().value!);
}

/** The directory under `wal/` holding the timeline history files (the others: one per timeline+log). */
const WAL_HISTORY_DIR = 'timelines';
/** Keys per batch of listWalKeys where the driver lists object by object (S3). */
const WAL_KEY_BATCH = 1000;

/** A batch of archived WAL keys (Repository.listWalKeys): `sizes[i]` is `keys[i]`'s stored size when the listing gave it. */
export interface WalKeyBatch {
  keys: string[];
  sizes: number[] | undefined;
}

/** Which archived WAL a listing asks for (Repository.listWal). */
export interface WalListRange {
  /** Only this timeline's files. */
  timeline?: number;
  /** Only files at or after this position: the 16 hex digits of a segment name after its timeline. */
  fromPosition?: string;
  /** Only files of segments before this position (same form). */
  beforePosition?: string;
}

/** What archiving one WAL file did (Repository.archiveWal). */
export interface WalArchiveOutcome {
  result: 'stored' | 'exists';
  sha256: string;
  /** Keys of stored copies that failed their checksum or vanished, replaced by this push. */
  replaced: string[];
}

/** One stored object of a manifest entry and what it must hold (Repository.entryObjects). */
export interface EntryObject extends ObjectFigures {
  /** The file (and which part of it) for messages. */
  what: string;
  key: string;
  codec: Codec;
}

function pickFigures(o: ObjectFigures): ObjectFigures {
  return { size: o.size, sha256: o.sha256, storedSize: o.storedSize, storedSha256: o.storedSha256 };
}

/** Backup labels read at once while listing a cluster's backups (one small read or directory level each). */
const LIST_CONCURRENCY = 16;

/** The lease object of a dump in progress, under its label (Repository.writeDumpLease). */
const DUMP_LEASE = 'dump.lease';

/** One backup label's directory level: which of the known objects it holds (Repository.backupLevels). */
interface BackupLevel {
  label: string;
  manifest: boolean;
  summary: boolean;
  lease: boolean;
  journal: boolean;
}

/** An object under a backup's label (Repository.listBackupObjects). */
export interface BackupObject extends ObjectInfo {
  label: string;
}

export class Repository {
  /** Every object's bytes are written and read through this layer (object-io.ts). */
  readonly objects: ObjectIo;

  /**
   * @param manifestKeys the keys this process authenticates manifests with (manifest-auth.ts);
   * without the key of a cluster its manifests can be neither written nor read.
   * @param keys each cluster's key-encryption key, for encrypted clusters (absent: this process holds none).
   */
  constructor(
    readonly driver: RepositoryDriver,
    private readonly manifestKeys?: ManifestKeys,
    private readonly keys?: KeyResolver,
    objects?: ObjectIo,
  ) {
    this.objects =
      objects ?? new ObjectIo(driver, new RepositoryKeys(driver, keys, () => this.markFormat(REPOSITORY_FORMAT)));
  }

  /**
   * The same repository (same driver and key caches, shared) with these manifest keys: one job's
   * view of it. Sharing the keys lets a rotate-key job's cut-over reach the daemon's archiving.
   */
  withManifestKeys(keys: ManifestKeys): Repository {
    return new Repository(this.driver, keys, this.keys, this.objects);
  }

  get location(): string {
    return this.driver.location;
  }

  /** The repositories of a mirror, one Repository each (or just this one). */
  private members(): Repository[] {
    return this.driver.members?.map((d) => new Repository(d, this.manifestKeys, this.keys)) ?? [this];
  }

  /**
   * The specs another thread opens this repository from by itself (open-repository.ts), when
   * copy worker threads pay off: objects that are local files, read and written block by block on
   * the worker's core. Undefined otherwise (S3, mirrors: the copy runs on the main thread, whose
   * event loop overlaps their network I/O; an S3 SDK per thread would cost more than it saves).
   */
  threadSpecs(): RepositorySpec[] | undefined {
    return this.driver.localFiles && this.driver.spec ? [this.driver.spec] : undefined;
  }

  /** Releases the driver's connections (S3); the repository is unusable afterwards. */
  close(): void {
    this.driver.close?.();
  }

  /** Writes the format marker on first use; refuses a repository of a newer format. */
  async init(): Promise<void> {
    if (this.driver.members) {
      await settleAll(this.members().map((m) => m.init()));
      return;
    }
    if ((await this.readFormat()) === undefined) await this.markFormat(REPOSITORY_FORMAT);
  }

  /** The format marker's version, undefined when there is none; refuses a newer format. */
  private async readFormat(): Promise<number | undefined> {
    if (!(await this.driver.stat(FORMAT_KEY))) return undefined;
    const doc = JSON.parse((await readSmall(this.driver, FORMAT_KEY)).toString('utf8')) as { format: number };
    if (doc.format !== 1 && doc.format !== REPOSITORY_FORMAT)
      throw new PgfleetError(
        'RepoManifestInvalid',
        `repository ${this.location} has format ${doc.format}; this pgfleet reads formats 1 and ${REPOSITORY_FORMAT}`,
      );
    return doc.format;
  }

  /** Writes the format marker, or raises a format-1 one (pgfleet before encryption must not write into encrypted clusters). */
  private async markFormat(format: number): Promise<void> {
    const current = await this.readFormat();
    if (current !== undefined && current >= format) return;
    await this.driver.put(FORMAT_KEY, Buffer.from(JSON.stringify({ format, createdBy: 'pgfleet' }, null, 2)));
  }

  /**
   * Re-wraps every data key of `cluster` from `oldKek` to `newKek` without rewriting any data
   * (repository-keys.ts rotateClusterKey: restartable; the old key opens nothing afterwards).
   */
  async rotateKey(cluster: string, oldKek: Buffer, newKek: Buffer): Promise<RotationResult> {
    return rotateClusterKey(this.driver, cluster, oldKek, newKek);
  }

  /**
   * `pgfleet repo rotate-key`: re-wraps `cluster`'s data keys from the previous KEK this process
   * holds (--previous-encryption-key-*) to its current one, as rotateKey does, then resolves the
   * cluster's keys again so that new objects get data keys made under the current KEK. Refused
   * with EncryptionPreviousKeyMissing without a previous key and with EncryptionPreviousKeyWrong
   * when the repository is under neither key. A re-run after an interrupted rotation completes
   * it; one after a finished rotation (previous key still given) only counts.
   */
  async rotateToCurrentKey(
    cluster: string,
    onKey?: (done: RotationResult) => void,
  ): Promise<RotationResult & { oldKeyId: string; newKeyId: string }> {
    const current = await this.keys?.(cluster);
    if (!current)
      throw new PgfleetError(
        'EncryptionModeMismatch',
        `this process holds no encryption key for cluster '${cluster}': give the new key as --encryption-key-file (or -command)`,
      );
    const record = await readEncryptionRecord(this.driver, cluster);
    const newKeyId = kekId(current);
    const previous = await this.keys?.previous?.(cluster);
    if (!previous) {
      throw new PgfleetError(
        'EncryptionPreviousKeyMissing',
        record.kekId === newKeyId && record.rotatingFrom === undefined
          ? `cluster '${cluster}' is already under the agent's current key (key id ${newKeyId}) and the agent holds no previous key (--previous-encryption-key-file or -command): nothing to rotate`
          : `cluster '${cluster}' is encrypted with key id ${record.rotatingFrom ?? record.kekId} and the agent holds no previous key to rotate from (--previous-encryption-key-file or -command); its current key has id ${newKeyId}`,
      );
    }
    const oldKeyId = kekId(previous);
    if (record.kekId !== oldKeyId && !rotationFrom(record, oldKeyId, newKeyId))
      throw new PgfleetError(
        'EncryptionPreviousKeyWrong',
        `cluster '${cluster}' is encrypted with key id ${record.kekId}${record.rotatingFrom ? ` (rotating from ${record.rotatingFrom})` : ''}; the agent's previous key has id ${oldKeyId} and its current key id ${newKeyId}`,
      );
    const result = await rotateClusterKey(this.driver, cluster, previous, current, onKey);
    this.objects.keys?.forgetCluster(cluster);
    return { ...result, oldKeyId, newKeyId };
  }

  /**
   * Resolves the data key objects under `key`'s scope get (creating it when the scope has none,
   * and the cluster's encryption record when it is new): a backup calls it before its copy, so
   * the copy threads all find one data key.
   */
  async prepareKeys(key: string): Promise<void> {
    await this.objects.keys?.forWrite(key);
  }

  /** The key-encryption keys this repository resolved, by cluster, for another thread to open it with (threadSpecs). */
  threadKeys(): Record<string, Buffer> {
    return Object.fromEntries(this.objects.keys?.resolvedKeys() ?? []);
  }

  /** Whether the format marker exists: the directory or bucket is a pgfleet repository (catalog rebuild asks before reading it). */
  async hasFormatMarker(): Promise<boolean> {
    return (await this.driver.stat(FORMAT_KEY)) !== undefined;
  }

  /**
   * One pass over the keys (of one cluster, or of all): each cluster with whether its
   * cluster.json exists and the labels of its complete (manifested) backups. For a catalog
   * rebuild, which must see every cluster a repository holds.
   */
  async scanClusters(only?: string): Promise<Map<string, ScannedCluster>> {
    const found = new Map<string, ScannedCluster>();
    // By the key layout: the root's levels, then each cluster's own level and backup labels, never its files or WAL.
    const clusters = only === undefined ? (await this.driver.listLevel('')).levels.filter(isClusterName) : [only];
    for (const cluster of clusters) {
      const prefix = `${clusterDir(cluster)}/`;
      const hasInfo = (await this.driver.listLevel(prefix)).objects.some((o) => o.key === `${prefix}cluster.json`);
      const labels = (await this.backupLevels(cluster)).filter((l) => l.manifest).map((l) => l.label);
      if (hasInfo || labels.length > 0) found.set(cluster, { hasInfo, labels });
    }
    return found;
  }

  // ---- cluster identity -------------------------------------------------------------------

  async readClusterInfo(cluster: string): Promise<ClusterInfo | undefined> {
    const key = `${clusterDir(cluster)}/cluster.json`;
    if (!(await this.driver.stat(key))) return undefined;
    return JSON.parse((await this.objects.readSmall(key)).toString('utf8')) as ClusterInfo;
  }

  /**
   * Records which database system the cluster name belongs to, or checks it: two clusters under
   * one name would interleave WAL of different systems and make both unrestorable.
   */
  async ensureClusterInfo(cluster: string, info: ClusterInfo): Promise<void> {
    // cluster.json is written once and never changes its system identifier: once this process
    // found (or wrote) the same one, every further WAL segment skips the stat and read (on S3, two
    // requests per segment). Another identifier is checked (and refused) every time.
    if (this.clusterInfoConfirmed.get(cluster) === info.systemIdentifier) return;
    if (this.driver.members) {
      await settleAll(this.members().map((m) => m.ensureClusterInfo(cluster, info)));
      this.clusterInfoConfirmed.set(cluster, info.systemIdentifier);
      return;
    }
    const existing = await this.readClusterInfo(cluster);
    if (existing) {
      if (existing.systemIdentifier !== info.systemIdentifier) {
        throw new PgfleetError(
          'SystemIdMismatch',
          `repository ${this.location} holds cluster '${cluster}' with system identifier ${existing.systemIdentifier}, but this database is ${info.systemIdentifier}`,
        );
      }
    } else {
      await this.init();
      await this.objects.storeSmall(`${clusterDir(cluster)}/cluster.json`, Buffer.from(JSON.stringify(info, null, 2)));
    }
    this.clusterInfoConfirmed.set(cluster, info.systemIdentifier);
  }

  /** Clusters whose cluster.json this instance read or wrote, with its system identifier (ensureClusterInfo). */
  private readonly clusterInfoConfirmed = new Map<string, string>();

  // ---- file bytes -------------------------------------------------------------------------

  /**
   * Stores a stream: content hashed, compressed, stored bytes hashed, all in one pass. `inspect`
   * stages (e.g. page-checksum validation) see the content in the same pass and must pass it on
   * unchanged.
   */
  async writeObject(
    key: string,
    source: Readable,
    codec: Codec,
    inspect: readonly Transform[] = [],
    options: WriteOptions = {},
  ): Promise<StoredFile> {
    return this.objects.storeStream(key, source, codec, { ...options, inspect });
  }

  /** Makes objects written with `deferDirSync` durable (posix: one fsync per directory); call before the manifest. */
  async syncKeys(keys: readonly string[]): Promise<void> {
    if (keys.length > 0 && this.driver.syncKeys) await this.driver.syncKeys(keys);
  }

  /**
   * Streams an object's decompressed content into `dest`, verifying the content checksum (and the
   * size) at the end: a damaged repository file fails loudly instead of restoring silent garbage.
   */
  async readObject(
    key: string,
    codec: Codec,
    expected: { sha256: string; size?: number },
    dest: Writable,
  ): Promise<void> {
    await this.objects.readStream(key, codec, expected, dest);
  }

  // ---- logical dumps (pgfleet dump, docs/logical.md) ----------------------------------------

  /** Where a dump's files live: <cluster>/dump/<label>/ (dump.json, written last, marks it complete). */
  dumpPrefix(cluster: string, label: string): string {
    if (!/^\d{8}-\d{6}-\d{3}L$/.test(label))
      throw new PgfleetError('InvalidArgument', `'${label}' is not a dump label (like 20261207-010203-123L)`);
    return `${clusterDir(cluster)}/dump/${label}`;
  }

  /** Labels of the cluster's complete dumps (those with a dump.json), sorted (catalog rebuild). */
  async listDumpLabels(cluster: string): Promise<string[]> {
    return (await this.dumpDirectories(cluster)).filter((d) => d.complete).map((d) => d.label);
  }

  /**
   * Every dump label of the cluster that holds objects, sorted, with what marks it: dump.json
   * (complete) and dump.lease (a dump in progress holds it; one killed left it behind). A label
   * without dump.json is a dump running or one that died: never listed (agent logical/abandoned-dumps.ts).
   */
  async dumpDirectories(cluster: string): Promise<{ label: string; complete: boolean; leased: boolean }[]> {
    const root = `${clusterDir(cluster)}/dump/`;
    const found = new Map<string, { label: string; complete: boolean; leased: boolean }>();
    for await (const o of this.driver.list(root)) {
      const [label, ...rest] = o.key.slice(root.length).split('/');
      if (!label || !/^\d{8}-\d{6}-\d{3}L$/.test(label)) continue;
      let d = found.get(label);
      if (!d) found.set(label, (d = { label, complete: false, leased: false }));
      const name = rest.join('/');
      if (name === 'dump.json') d.complete = true;
      if (name === DUMP_LEASE) d.leased = true;
    }
    return [...found.values()].sort((a, b) => (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
  }

  /** The objects under a dump's label (dump.json and dump.lease included), in key order. */
  async dumpObjects(cluster: string, label: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    for await (const o of this.driver.list(`${this.dumpPrefix(cluster, label)}/`)) out.push(o);
    return out;
  }

  /**
   * A dump in progress holds a lease at `<cluster>/dump/<label>/dump.lease`, in the form of a
   * backup's (backup-lease.ts, `chain` empty): refreshed while it runs, removed when it ends, left
   * behind by a dump whose agent died, which is how what such a dump stored is told from what a
   * running one stores (agent logical/abandoned-dumps.ts).
   */
  async writeDumpLease(lease: BackupLease): Promise<void> {
    await this.driver.put(
      `${this.dumpPrefix(lease.cluster, lease.label)}/${DUMP_LEASE}`,
      Buffer.from(JSON.stringify(lease, null, 1)),
    );
  }

  async removeDumpLease(cluster: string, label: string): Promise<void> {
    await this.driver.delete([`${this.dumpPrefix(cluster, label)}/${DUMP_LEASE}`]);
  }

  /** One dump's lease with its state at `nowMs`, or undefined when it has none. */
  async readDumpLease(cluster: string, label: string, nowMs: number): Promise<FoundLease | undefined> {
    return this.readLease(`${this.dumpPrefix(cluster, label)}/${DUMP_LEASE}`, label, nowMs);
  }

  /** A dump's manifest (dump.json: the DumpResult as JSON), decrypted when the cluster's repository is encrypted. */
  async readDumpManifest(cluster: string, label: string): Promise<Buffer> {
    return this.objects.readSmall(`${this.dumpPrefix(cluster, label)}/dump.json`);
  }

  /** Removes a dump's objects, dump.json first (a half-removed dump never looks complete). */
  async deleteDump(cluster: string, label: string): Promise<void> {
    const prefix = this.dumpPrefix(cluster, label);
    await this.driver.delete([`${prefix}/dump.json`]);
    await this.driver.deletePrefix(`${prefix}/`);
  }

  // ---- backups ----------------------------------------------------------------------------

  /** The prefix of every backup of the cluster (no trailing slash). */
  backupsPrefix(cluster: string): string {
    return `${clusterDir(cluster)}/backup`;
  }

  backupPrefix(cluster: string, label: string): string {
    return `${clusterDir(cluster)}/backup/${parseBackupLabel(label, 'backup label')}`;
  }

  backupFileKey(cluster: string, label: string, path: string, codec: Codec): string {
    return `${this.backupPrefix(cluster, label)}/pg_data/${path}${codecExtension(codec)}`;
  }

  /** Key of chunk `index` (0-based) of a large file (ManifestFile.chunks), outside pg_data/ so it never aliases a file. */
  backupChunkKey(cluster: string, label: string, path: string, index: number, codec: Codec): string {
    return `${this.backupPrefix(cluster, label)}/pg_chunks/${path}/${String(index).padStart(4, '0')}${codecExtension(codec)}`;
  }

  /** Key of a relation file's block map (ManifestFile.blocks.map, block-map.ts), outside pg_data/ like chunks. */
  blockMapKey(cluster: string, label: string, path: string, codec: Codec): string {
    return `${this.backupPrefix(cluster, label)}/pg_blocks/${path}/map${codecExtension(codec)}`;
  }

  /** Key of the changed blocks a block-incremental backup stored of a relation file (ManifestFile.blocks.changed). */
  blockDataKey(cluster: string, label: string, path: string, codec: Codec): string {
    return `${this.backupPrefix(cluster, label)}/pg_blocks/${path}/data${codecExtension(codec)}`;
  }

  /** Key of an object a block map names (its label checked like every other). */
  blockPartKey(cluster: string, path: string, part: BlockMapPart): string {
    switch (part.object) {
      case 'file':
        return this.backupFileKey(cluster, part.backup, path, part.codec);
      case 'chunk':
        return this.backupChunkKey(cluster, part.backup, path, part.chunk ?? 0, part.codec);
      case 'blocks':
        return this.blockDataKey(cluster, part.backup, path, part.codec);
    }
  }

  /** A block map the manifest entry `f` of backup `label` names, checked against the entry's figures. */
  async readBlockMap(cluster: string, f: ManifestFile): Promise<BlockMap> {
    const key = this.blockMapKey(cluster, f.backup, f.path, f.codec);
    const chunks: Buffer[] = [];
    await this.objects.readStream(
      key,
      f.codec,
      { sha256: f.blocks!.map.sha256, size: f.blocks!.map.size },
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          chunks.push(chunk);
          cb();
        },
      }),
    );
    const map = BlockMap.decode(Buffer.concat(chunks), key);
    if (map.size !== f.size)
      throw new PgfleetError(
        'BlockMapInvalid',
        `block map ${key} is for ${map.size} bytes, the manifest says ${f.size}`,
      );
    return map;
  }

  /**
   * The objects a manifest entry's backup (`f.backup`) stores for it, with what each must hold:
   * its block map when it has one, then its changed blocks, its chunks or its one object. Blocks a
   * map takes from other backups are those backups' own entries' objects.
   */
  entryObjects(cluster: string, f: ManifestFile): EntryObject[] {
    const out: EntryObject[] = [];
    const object = (what: string, key: string, figures: ObjectFigures) =>
      out.push({ what, key, codec: f.codec, ...pickFigures(figures) });
    if (f.blocks) object(`${f.path} (block map)`, this.blockMapKey(cluster, f.backup, f.path, f.codec), f.blocks.map);
    if (f.blocks?.changed)
      object(`${f.path} (changed blocks)`, this.blockDataKey(cluster, f.backup, f.path, f.codec), f.blocks.changed);
    else if (f.chunks && f.chunks.length > 0)
      for (const c of f.chunks) object(`${f.path} (chunk at ${c.offset})`, c.key, c);
    else object(f.path, this.backupFileKey(cluster, f.backup, f.path, f.codec), f);
    return out;
  }

  /** Key of a backup's catalog snapshot (BackupManifest.catalogSnapshot), beside the manifest. */
  catalogSnapshotKey(cluster: string, label: string, codec: Codec): string {
    return `${this.backupPrefix(cluster, label)}/catalog-snapshot.json${codecExtension(codec)}`;
  }

  /** A backup's catalog snapshot as JSON text, checked against the manifest's figures; undefined when it has none. */
  async readCatalogSnapshot(
    m: Pick<BackupManifest, 'cluster' | 'label' | 'catalogSnapshot'>,
  ): Promise<string | undefined> {
    const e = m.catalogSnapshot;
    if (!e) return undefined;
    const chunks: Buffer[] = [];
    await this.objects.readStream(
      this.catalogSnapshotKey(m.cluster, m.label, e.codec),
      e.codec,
      { sha256: e.sha256, size: e.size },
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          chunks.push(chunk);
          cb();
        },
      }),
    );
    return Buffer.concat(chunks).toString('utf8');
  }

  /** The manifest's key: its presence makes the backup complete. */
  backupManifestKey(cluster: string, label: string): string {
    return `${this.backupPrefix(cluster, label)}/backup.manifest`;
  }

  backupSummaryKey(cluster: string, label: string): string {
    return `${this.backupPrefix(cluster, label)}/backup.summary`;
  }

  /**
   * Stores the manifest, authenticated under its cluster's key (manifest-auth.ts), and its
   * summary (backup-summary.ts) just before it: the manifest stays the last word on completeness.
   */
  async writeManifest(manifest: BackupManifest): Promise<void> {
    await this.writeManifestStream(manifest, manifest.files, summarizeManifest(manifest));
  }

  /**
   * writeManifest for a writer that does not hold its entries (a backup keeps them in a local
   * file): `head` is the manifest with `files` marking the member's place, `files` its entries
   * (read once), `summary` what they imply (summarizeHead). Written as it is serialised: the
   * same bytes as sealManifest(JSON.stringify(manifest, null, 1)), never held whole (a 100k-file
   * manifest is ~33 MB of text; manifest-stream.ts).
   */
  async writeManifestStream(
    head: ManifestHead & { files?: readonly ManifestFile[] },
    files: Iterable<ManifestFile> | AsyncIterable<ManifestFile>,
    summary: BackupSummary,
  ): Promise<void> {
    const summaryText = sealManifest(
      JSON.stringify(summary, null, 1),
      this.manifestKey(head.cluster),
      head.cluster,
      summaryMacName(head.label),
    );
    await this.objects.storeSmall(this.backupSummaryKey(head.cluster, head.label), Buffer.from(summaryText));
    await this.objects.storePieces(
      this.backupManifestKey(head.cluster, head.label),
      sealManifestPieces(manifestHeadPieces(head, files), this.manifestKey(head.cluster), head.cluster, head.label),
    );
  }

  /**
   * A manifest opened as a stream (manifest-stream.ts ManifestReader): authenticated and checked
   * like readManifest, its file entries read one at a time, so that memory does not grow with
   * them. The caller closes it.
   */
  async openManifest(cluster: string, label: string): Promise<ManifestReader> {
    return this.openManifestReader(cluster, label, false);
  }

  /** openManifest, or with `allowUnsigned` also a manifest without a MAC (adoptManifest only). */
  private async openManifestReader(cluster: string, label: string, allowUnsigned: boolean): Promise<ManifestReader> {
    const key = this.backupManifestKey(cluster, label);
    const where = key;
    try {
      return await ManifestReader.open({
        read: (onChunk) => this.objects.readPieces(key, onChunk),
        mac: new ManifestMacStream(this.manifestKey(cluster), cluster, label, where),
        allowUnsigned,
        unsigned: () =>
          new PgfleetError(
            'ManifestUnsigned',
            `manifest of backup ${label} of cluster ${cluster} (${where}) carries no authentication code; it is not trusted`,
          ),
        where,
        checkHead: (head) => this.checkDescribes(head, cluster, label, where),
      });
    } catch (err) {
      throw this.noManifest(err, cluster, label);
    }
  }

  /** openManifest for a backup chosen by its summary, refused (BackupSummaryMismatch) when it is another backup (manifestFor). */
  async openManifestFor(summary: BackupSummary): Promise<ManifestReader> {
    const reader = await this.openManifest(summary.cluster, summary.label);
    try {
      checkSummaryAgrees(
        summary,
        summarizeHead(reader.head, reader.fileCount, reader.readsFrom),
        this.backupManifestKey(summary.cluster, summary.label),
      );
    } catch (err) {
      await reader.close();
      throw err;
    }
    return reader;
  }

  /**
   * A manifest's head (every member but the file entries) and its file count, authenticated and
   * checked like readManifest (every entry included), the entries streamed through and never held
   * (openManifest): for callers that need what a backup is, not its files (drills, the catalog).
   */
  async readManifestHead(cluster: string, label: string): Promise<CountedManifestHead> {
    return headOf(await this.openManifest(cluster, label));
  }

  /** readManifestHead for a backup chosen by its summary, refused (BackupSummaryMismatch) when it is another backup (manifestFor). */
  async manifestHeadFor(summary: BackupSummary): Promise<CountedManifestHead> {
    return headOf(await this.openManifestFor(summary));
  }

  /**
   * Reads a manifest and trusts it only once its MAC matches under the cluster's key for this
   * cluster and label: ManifestUnauthenticated when it does not, ManifestUnsigned when it has
   * none (adoptManifest signs those), then the paths are checked (parseManifest).
   */
  async readManifest(cluster: string, label: string): Promise<BackupManifest> {
    const { text, where } = await this.manifestText(cluster, label);
    const opened = openManifest(text, this.manifestKey(cluster), cluster, label, where);
    if (!opened.signed)
      throw new PgfleetError(
        'ManifestUnsigned',
        `manifest of backup ${label} of cluster ${cluster} (${where}) carries no authentication code; it is not trusted`,
      );
    return this.parseFor(opened.json, cluster, label, where);
  }

  /**
   * The manifest of a backup chosen by its summary (listBackups), verified, and refused
   * (BackupSummaryMismatch) when it is not the backup the summary described: a summary is
   * trusted for choosing only.
   */
  async manifestFor(summary: BackupSummary): Promise<BackupManifest> {
    const manifest = await this.readManifest(summary.cluster, summary.label);
    checkSummaryAgrees(summary, manifest, this.backupManifestKey(summary.cluster, summary.label));
    return manifest;
  }

  /**
   * A backup's summary, authenticated; undefined when it has none or it cannot be trusted
   * (unsigned, failing its MAC, unreadable): the caller falls back to the manifest, which decides.
   */
  private async readSummary(cluster: string, label: string): Promise<BackupSummary | undefined> {
    const key = this.backupSummaryKey(cluster, label);
    try {
      const text = (await this.objects.readSmall(key)).toString('utf8');
      const opened = openManifest(text, this.manifestKey(cluster), cluster, summaryMacName(label), key);
      return opened.signed ? parseSummary(opened.json, cluster, label, key) : undefined;
    } catch (err) {
      if (PgfleetError.is(err, 'ManifestKeyMissing')) throw err;
      return undefined;
    }
  }

  /**
   * The one explicit route for manifests written before manifests were signed: reads the
   * manifest, checks its paths and that it describes this backup, and stores it signed.
   * 'signed' when it was unsigned, 'valid' when it already carried a matching MAC; a manifest
   * with a MAC that does not match is refused (ManifestUnauthenticated), never re-signed.
   * Read and written as a stream (openManifest): a 100k-file manifest is never held whole.
   */
  async adoptManifest(
    cluster: string,
    label: string,
    options: { dryRun?: boolean; checked?: (head: ManifestHead) => void } = {},
  ): Promise<'signed' | 'valid'> {
    const reader = await this.openManifestReader(cluster, label, true);
    try {
      // What sign-manifests vouches for (the WAL from the oldest backup's start on) is read from its head.
      options.checked?.(reader.head);
      if (reader.signed) return 'valid';
      if (!options.dryRun)
        await this.writeManifestStream(
          reader.head,
          reader.files(),
          summarizeHead(reader.head, reader.fileCount, reader.readsFrom),
        );
      return 'signed';
    } finally {
      await reader.close();
    }
  }

  private manifestKey(cluster: string): Buffer {
    const key = this.manifestKeys?.keyFor(cluster);
    if (!key)
      throw new PgfleetError(
        'ManifestKeyMissing',
        `no manifest key for cluster ${cluster}: its manifests can be neither written nor trusted here`,
      );
    return key;
  }

  /** A manifest read's error: UnknownBackup when the manifest does not exist, else the error itself. */
  private noManifest(err: unknown, cluster: string, label: string): unknown {
    if (!PgfleetError.is(err, 'RepoFileMissing')) return err;
    return new PgfleetError(
      'UnknownBackup',
      `backup ${label} of cluster ${cluster} has no manifest in ${this.location} (missing or incomplete)`,
      { cause: err },
    );
  }

  private async manifestText(cluster: string, label: string): Promise<{ text: string; where: string }> {
    const key = this.backupManifestKey(cluster, label);
    try {
      return { text: (await this.objects.readSmall(key)).toString('utf8'), where: key };
    } catch (err) {
      throw this.noManifest(err, cluster, label);
    }
  }

  private parseFor(json: string, cluster: string, label: string, where: string): BackupManifest {
    const manifest = parseManifest(json, where);
    this.checkDescribes(manifest, cluster, label, where);
    return manifest;
  }

  private checkDescribes(manifest: ManifestHead, cluster: string, label: string, where: string): void {
    if (manifest.cluster !== cluster || manifest.label !== label)
      throw new PgfleetError(
        'RepoManifestInvalid',
        `manifest ${where} describes backup ${manifest.label} of cluster ${manifest.cluster}`,
      );
  }

  /** Whether the backup's manifest exists (the backup is complete and listed). */
  async hasManifest(cluster: string, label: string): Promise<boolean> {
    return (await this.driver.stat(this.backupManifestKey(cluster, label))) !== undefined;
  }

  /**
   * Removes a backup's manifest and returns its stored bytes (undefined when there was none), so
   * that an expire that finds the backup leased after all can put it back unchanged
   * (reinstateManifest): the stored bytes, not a re-serialisation, so whatever authenticates a
   * manifest still holds.
   */
  async withdrawManifest(cluster: string, label: string): Promise<Buffer | undefined> {
    const key = this.backupManifestKey(cluster, label);
    let stored: Buffer;
    try {
      stored = await readSmall(this.driver, key);
    } catch (err) {
      if (PgfleetError.is(err, 'RepoFileMissing')) return undefined;
      throw err;
    }
    await this.driver.delete([key]);
    return stored;
  }

  /** Puts back a manifest removed by withdrawManifest (durably). */
  async reinstateManifest(cluster: string, label: string, stored: Buffer): Promise<void> {
    await this.driver.put(this.backupManifestKey(cluster, label), stored);
  }

  // ---- leases of backups in progress (backup-lease.ts) -----------------------------------------

  backupLeaseKey(cluster: string, label: string): string {
    return `${this.backupPrefix(cluster, label)}/backup.lease`;
  }

  /** Writes (or refreshes) a lease, durably: an expire that lists it must find it after a power loss too. */
  async writeBackupLease(lease: BackupLease): Promise<void> {
    await this.driver.put(this.backupLeaseKey(lease.cluster, lease.label), Buffer.from(JSON.stringify(lease, null, 1)));
  }

  /** Whether the backup's lease is still there (someone who judged it stale may have removed its directory). */
  async hasBackupLease(cluster: string, label: string): Promise<boolean> {
    return (await this.driver.stat(this.backupLeaseKey(cluster, label))) !== undefined;
  }

  async removeBackupLease(cluster: string, label: string): Promise<void> {
    await this.driver.delete([this.backupLeaseKey(cluster, label)]);
  }

  /** One backup's lease with its state at `nowMs`, or undefined when it has none. */
  async readBackupLease(cluster: string, label: string, nowMs: number): Promise<FoundLease | undefined> {
    return this.readLease(this.backupLeaseKey(cluster, label), label, nowMs);
  }

  /** The lease object `key` (of a backup or a dump) with its state at `nowMs`, or undefined when there is none. */
  private async readLease(key: string, label: string, nowMs: number): Promise<FoundLease | undefined> {
    let text: string;
    try {
      text = (await readSmall(this.driver, key)).toString('utf8');
    } catch (err) {
      if (PgfleetError.is(err, 'RepoFileMissing')) return undefined;
      throw err;
    }
    try {
      const lease = parseBackupLease(text, key);
      return { key, label, lease, ...leaseState(lease, nowMs) };
    } catch {
      return { key, label, lease: undefined, state: 'unreadable' };
    }
  }

  /** Every backup lease of the cluster with its state at `nowMs` (a lease removed while listed is skipped). */
  async listBackupLeases(cluster: string, nowMs: number): Promise<FoundLease[]> {
    const leased = (await this.backupLevels(cluster)).filter((l) => l.lease);
    const found = await mapLimit(leased, LIST_CONCURRENCY, (l) => this.readBackupLease(cluster, l.label, nowMs));
    return found.filter((f) => f !== undefined);
  }

  // ---- progress journals of backups in progress (backup-journal.ts) ---------------------------

  backupJournalKey(cluster: string, label: string, seq: number): string {
    return `${this.backupPrefix(cluster, label)}/backup.progress/${journalSeq(seq)}`;
  }

  /** Stores batch `seq` of a backup's progress journal, authenticated like a manifest. */
  async writeJournalBatch(batch: JournalBatch, seq: number): Promise<void> {
    const text = sealManifest(
      JSON.stringify(batch, null, 1),
      this.manifestKey(batch.cluster),
      batch.cluster,
      journalBatchName(batch.label, seq),
    );
    await this.objects.storeSmall(this.backupJournalKey(batch.cluster, batch.label, seq), Buffer.from(text));
  }

  /**
   * The batches of a backup's progress journal in write order, with the sequence number the next
   * one takes; a batch that cannot be read, is unsigned or fails authentication is left out and
   * named in `rejected` (its files are copied again).
   */
  async readJournal(
    cluster: string,
    label: string,
  ): Promise<{ batches: JournalBatch[]; nextSeq: number; rejected: { key: string; reason: string }[] }> {
    const batches: JournalBatch[] = [];
    const rejected: { key: string; reason: string }[] = [];
    let nextSeq = 0;
    for await (const o of this.driver.list(`${this.backupPrefix(cluster, label)}/backup.progress/`)) {
      const m = JOURNAL_KEY_RE.exec(o.key);
      if (!m) continue;
      const seq = Number(m[2]);
      nextSeq = Math.max(nextSeq, seq + 1);
      try {
        const text = (await this.objects.readSmall(o.key)).toString('utf8');
        const opened = openManifest(text, this.manifestKey(cluster), cluster, journalBatchName(label, seq), o.key);
        if (!opened.signed) throw new PgfleetError('ManifestUnsigned', `${o.key} carries no authentication code`);
        batches.push(parseJournalBatch(opened.json, cluster, label, o.key));
      } catch (err) {
        // A missing manifest key is this process's fault, not the batch's.
        if (PgfleetError.is(err, 'ManifestKeyMissing')) throw err;
        rejected.push({ key: o.key, reason: (err as Error).message });
      }
    }
    return { batches, nextSeq, rejected };
  }

  /** Removes a backup's progress journal (once its manifest exists, the journal says nothing more). */
  async deleteJournal(cluster: string, label: string): Promise<void> {
    await this.driver.deletePrefix(`${this.backupPrefix(cluster, label)}/backup.progress/`);
  }

  /**
   * Every label of the cluster without a manifest, with whether it holds a lease and journal
   * batches: a directory level per label, and one more for the journal of each unfinished one.
   */
  async listUnfinishedBackups(cluster: string): Promise<UnfinishedBackup[]> {
    const unfinished = (await this.backupLevels(cluster)).filter((l) => !l.manifest);
    return mapLimit(unfinished, LIST_CONCURRENCY, async (l) => {
      let journalBatches = 0;
      if (l.journal) {
        const level = await this.driver.listLevel(`${this.backupPrefix(cluster, l.label)}/backup.progress/`);
        journalBatches = level.objects.filter((o) => JOURNAL_KEY_RE.test(o.key)).length;
      }
      return { label: l.label, leased: l.lease, journalBatches };
    });
  }

  /**
   * Every backup label of the cluster with what its directory level holds: one level listing
   * of the cluster's backups and one per label, never a listing of the backups' files. Names
   * that are no backup label are not pgfleet's and are passed over.
   */
  private async backupLevels(cluster: string): Promise<BackupLevel[]> {
    const labels = await this.listBackupLabels(cluster);
    return mapLimit(labels, LIST_CONCURRENCY, async (label) => {
      const prefix = `${this.backupPrefix(cluster, label)}/`;
      const level = await this.driver.listLevel(prefix);
      const names = new Set(level.objects.map((o) => o.key.slice(prefix.length)));
      return {
        label,
        manifest: names.has('backup.manifest'),
        summary: names.has('backup.summary'),
        lease: names.has('backup.lease'),
        journal: level.levels.includes('backup.progress'),
      };
    });
  }

  /**
   * Every backup label of the cluster (complete or not), from one level listing of its backups;
   * names that are no backup label are not pgfleet's and are passed over.
   */
  async listBackupLabels(cluster: string): Promise<string[]> {
    return (await this.driver.listLevel(`${this.backupsPrefix(cluster)}/`)).levels.filter(isBackupLabel);
  }

  /** Every object under every backup label of the cluster (complete or not), in key order. */
  async *listBackupObjects(cluster: string): AsyncIterable<BackupObject> {
    const prefix = `${clusterDir(cluster)}/backup/`;
    for await (const o of this.driver.list(prefix)) {
      const rest = o.key.slice(prefix.length);
      const slash = rest.indexOf('/');
      if (slash > 0) yield { ...o, label: rest.slice(0, slash) };
    }
  }

  /** Every object stored under one backup label (its manifest, when it has one, included). */
  async backupObjects(cluster: string, label: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    for await (const o of this.driver.list(`${this.backupPrefix(cluster, label)}/`)) out.push(o);
    return out;
  }

  /**
   * Removes a backup's manifest: from then on the backup is incomplete, never listed or restored,
   * whatever happens to its files. Always the first step of deleting a backup.
   */
  async deleteBackupManifest(cluster: string, label: string): Promise<void> {
    await this.driver.delete([this.backupManifestKey(cluster, label)]);
  }

  /**
   * Removes everything under a backup's label: `listed` (backupObjects) first, a batch at a time
   * with `signal` checked in between, then whatever else the driver keeps for the label (posix:
   * the emptied directories) and the backup's data key objects last, so an interrupted delete
   * never leaves a file without its key. Call deleteBackupManifest first.
   */
  async deleteBackupFiles(
    cluster: string,
    label: string,
    listed: readonly ObjectInfo[] = [],
    signal?: AbortSignal,
  ): Promise<void> {
    const manifest = this.backupManifestKey(cluster, label);
    const keys = listed.map((o) => o.key).filter((k) => k !== manifest && !isDataKeyObject(k));
    for (let i = 0; i < keys.length; i += DELETE_BATCH) {
      signal?.throwIfAborted();
      await this.driver.delete(keys.slice(i, i + DELETE_BATCH));
    }
    await this.driver.deletePrefix(`${this.backupPrefix(cluster, label)}/`);
  }

  /** True when anything (a manifest, or files of a backup that never finished) is stored under this label. */
  async labelInUse(cluster: string, label: string): Promise<boolean> {
    for await (const _ of this.driver.list(`${this.backupPrefix(cluster, label)}/`)) return true;
    return false;
  }

  /** True when the repository holds a complete backup (one with a manifest) of the cluster; stops at the first. */
  async hasBackups(cluster: string): Promise<boolean> {
    const labels = await this.listBackupLabels(cluster);
    // Newest labels first: the last backup is the one most likely complete.
    for (const label of labels.reverse()) if (await this.hasManifest(cluster, label)) return true;
    return false;
  }

  /**
   * The summary of every complete backup (one with a manifest), ordered by stop time: a small
   * authenticated read per backup (backup-summary.ts); a backup without a trustworthy summary (an
   * older repository, a damaged or forged summary) is summarised from its manifest, read once,
   * and nothing is written (the repository may be read-only). A manifest removed meanwhile (an
   * expire at work) drops the backup. Choose by the summaries, then read the chosen manifests
   * with manifestFor.
   */
  async listBackups(cluster: string): Promise<BackupSummary[]> {
    const complete = (await this.backupLevels(cluster)).filter((l) => l.manifest);
    const found = await mapLimit(complete, LIST_CONCURRENCY, async (l) => {
      const summary = l.summary ? await this.readSummary(cluster, l.label) : undefined;
      if (summary) return summary;
      try {
        return summarizeManifest(await this.readManifest(cluster, l.label));
      } catch (err) {
        if (PgfleetError.is(err, 'UnknownBackup')) return undefined;
        throw err;
      }
    });
    return found
      .filter((s) => s !== undefined)
      .sort((a, b) => Date.parse(a.stopTime) - Date.parse(b.stopTime) || (a.label < b.label ? -1 : 1));
  }

  /**
   * The manifest of every complete backup, one at a time in label order: for callers that need
   * every file list (catalog rebuild, info); a caller that keeps only a summary of each never
   * holds two. A manifest removed between the listing and its read is skipped.
   */
  async *manifests(cluster: string): AsyncIterable<BackupManifest> {
    for (const l of await this.backupLevels(cluster)) {
      if (!l.manifest) continue;
      let manifest: BackupManifest;
      try {
        manifest = await this.readManifest(cluster, l.label);
      } catch (err) {
        if (PgfleetError.is(err, 'UnknownBackup')) continue;
        throw err;
      }
      yield manifest;
    }
  }

  // ---- WAL archive ------------------------------------------------------------------------

  private walDir(cluster: string, name: string): string {
    const dir = clusterDir(cluster);
    return name.endsWith('.history') ? `${dir}/wal/${WAL_HISTORY_DIR}` : `${dir}/wal/${name.slice(0, 16)}`;
  }

  /** The cluster's key for WAL names (the manifest key, wal-auth.ts), undefined when this process holds none. */
  private walMacKey(cluster: string): Buffer | undefined {
    return this.manifestKeys?.keyFor(cluster);
  }

  /** The key or WalKeyMissing: nothing is archived, nor any archived WAL trusted, without it. */
  private requireWalMacKey(cluster: string): Buffer {
    const key = this.walMacKey(cluster);
    if (!key)
      throw new PgfleetError(
        'WalKeyMissing',
        `no key for cluster ${cluster}: its WAL can be neither archived nor trusted here`,
      );
    return key;
  }

  /** A parser of the cluster's WAL object keys (undefined: not a WAL object) that judges each MAC under the cluster's key. */
  private walParser(
    cluster: string,
  ): <S extends number | undefined>(
    key: string,
    size: S,
  ) => (Omit<ArchivedWal, 'storedSize'> & { storedSize: S }) | undefined {
    const macKey = this.walMacKey(cluster);
    return (key, size) => {
      const m = WAL_KEY_RE.exec(key.slice(key.lastIndexOf('/') + 1));
      if (!m) return undefined;
      const name = m[1]!;
      const sha256 = m[2]!;
      const mac = m[3];
      return {
        name,
        key,
        sha256,
        codec: codecOfExtension(m[4]),
        storedSize: size,
        mac,
        authentic: macKey !== undefined && mac !== undefined && walMacMatches(macKey, cluster, name, sha256, mac),
      };
    };
  }

  /**
   * Every archived copy of `name` (normally zero or one), authenticated ones first. Writers and
   * retention look at all of them; readers take authenticWal (or fetchWal, readWalFile).
   */
  async findWal(cluster: string, name: string): Promise<ArchivedWal[]> {
    const parse = this.walParser(cluster);
    const out: ArchivedWal[] = [];
    for await (const o of this.driver.list(`${this.walDir(cluster, name)}/${name}-`)) {
      const w = parse(o.key, o.size);
      if (w?.name === name) out.push(w);
    }
    return out.sort((a, b) => Number(b.authentic) - Number(a.authentic));
  }

  /** The authenticated copy of `name`, undefined when there is none (unauthenticated copies never count). */
  async authenticWal(cluster: string, name: string): Promise<ArchivedWal | undefined> {
    return (await this.findWal(cluster, name)).find((w) => w.authentic);
  }

  /**
   * The copy of `name` a reader may use: undefined when none is archived, WalUnauthenticated
   * (naming the objects) when every copy lacks a matching MAC, WalKeyMissing without a key.
   */
  private async readableWal(cluster: string, name: string): Promise<ArchivedWal | undefined> {
    this.requireWalMacKey(cluster);
    const found = await this.findWal(cluster, name);
    if (found.length === 0 || found[0]!.authentic) return found[0];
    throw new PgfleetError(
      'WalUnauthenticated',
      `archived WAL file ${name} of cluster ${cluster} in ${this.location} is not authenticated (${found.map((w) => w.key).join(', ')}): it was planted, renamed or copied from elsewhere, or archived before WAL names carried a MAC; it is not used`,
    );
  }

  /**
   * Every archived WAL file of the cluster (segments, history, backup history, partial), each
   * with whether it is authenticated: retention lists them all (to delete them), readers must
   * skip the others. With a range, only the files of timeline+log directories (segments, backup
   * history, partial) in it, found by the key layout: one level listing of the WAL directories,
   * then only the directories of the range, so a question about recent WAL costs what it asks.
   * In key order.
   */
  async *listWal(cluster: string, range?: WalListRange): AsyncIterable<ArchivedWal> {
    const parse = this.walParser(cluster);
    const root = `${clusterDir(cluster)}/wal/`;
    if (!range) {
      for await (const o of this.driver.list(root)) {
        const w = parse(o.key, o.size);
        if (w) yield w;
      }
      return;
    }
    const tli = range.timeline === undefined ? undefined : range.timeline.toString(16).toUpperCase().padStart(8, '0');
    const from = range.fromPosition?.toUpperCase();
    const before = range.beforePosition?.toUpperCase();
    // A segment's position is the 16 hex digits after its timeline (a .backup or .partial file's, its segment's).
    const inRange = (position: string) =>
      (from === undefined || position >= from) && (before === undefined || position < before);
    const dirs = (await this.driver.listLevel(root)).levels.filter(
      (d) =>
        /^[0-9A-F]{16}$/.test(d) &&
        (tli === undefined || d.startsWith(tli)) &&
        (from === undefined || d.slice(8) >= from.slice(0, 8)) &&
        (before === undefined || d.slice(8) <= before.slice(0, 8)),
    );
    for (const dir of dirs) {
      for await (const o of this.driver.list(`${root}${dir}/`)) {
        const w = parse(o.key, o.size);
        if (w && inRange(w.name.slice(8, 24))) yield w;
      }
    }
  }

  /**
   * Every archived WAL file of the cluster as listWal gives them, but without a size where a size
   * costs a call per object (RepositoryDriver.listKeys: posix, a stat each): storedSize is then
   * undefined. For verify, which reads every file anyway and learns its size there; on a million
   * segments the stats were a large part of its planning (docs/benchmarks.md). In key order, in
   * batches (a directory's files at a time): an async generator step per object cost as much as
   * parsing its key.
   */
  async *listWalUnsized(cluster: string): AsyncIterable<ListedWal[]> {
    const driver = this.driver;
    if (!driver.listKeys) {
      for await (const w of this.listWal(cluster)) yield [w];
      return;
    }
    const parse = this.walParser(cluster);
    for await (const keys of driver.listKeys(`${clusterDir(cluster)}/wal/`)) {
      const batch: ListedWal[] = [];
      for (const key of keys) {
        const w = parse(key, undefined);
        if (w) batch.push(w);
      }
      if (batch.length > 0) yield batch;
    }
  }

  /**
   * The keys of the cluster's archived segments, backup history and partial files (everything
   * under `wal/` but the timeline histories: listWalHistories), in key order, in batches (a
   * directory's files at a time), nothing parsed or authenticated yet: for verify, which parses
   * and authenticates each key as its own check starts (walKeyParser), so that it starts checking
   * after one directory read instead of after a million MACs (docs/benchmarks.md, issue 16).
   * Sizes where the listing has them for free (S3), else undefined (posix: no stat per object).
   */
  async *listWalKeys(cluster: string): AsyncIterable<WalKeyBatch> {
    const root = `${clusterDir(cluster)}/wal/`;
    const histories = `${root}${WAL_HISTORY_DIR}/`;
    const driver = this.driver;
    if (driver.listKeys) {
      for await (const keys of driver.listKeys(root)) {
        const own = keys.filter((k) => !k.startsWith(histories));
        if (own.length > 0) yield { keys: own, sizes: undefined };
      }
      return;
    }
    let batch: WalKeyBatch & { sizes: number[] } = { keys: [], sizes: [] };
    for await (const o of driver.list(root)) {
      if (o.key.startsWith(histories)) continue;
      batch.keys.push(o.key);
      batch.sizes.push(o.size);
      if (batch.keys.length >= WAL_KEY_BATCH) {
        yield batch;
        batch = { keys: [], sizes: [] };
      }
    }
    if (batch.keys.length > 0) yield batch;
  }

  /** The cluster's archived timeline history files (`wal/timelines/`), parsed and authenticated, with their sizes. */
  async listWalHistories(cluster: string): Promise<ArchivedWal[]> {
    const parse = this.walParser(cluster);
    const out: ArchivedWal[] = [];
    for await (const o of this.driver.list(`${clusterDir(cluster)}/wal/${WAL_HISTORY_DIR}/`)) {
      const w = parse(o.key, o.size);
      if (w) out.push(w);
    }
    return out;
  }

  /**
   * Parses one WAL object key of the cluster (listWalKeys) and judges its MAC under the cluster's
   * key: undefined when the key is not a WAL object's, `authentic` false when the MAC is missing
   * or does not match (such a copy is reported, never read).
   */
  walKeyParser(cluster: string): (key: string, size: number | undefined) => ListedWal | undefined {
    return this.walParser(cluster);
  }

  /**
   * Archives one WAL file whose content checksum is already known (the caller hashed it while
   * validating). Idempotent per repository: where the same name with the same checksum is
   * stored, durable and intact (confirmWal) nothing is written; the same name with another
   * checksum in any repository is refused and never overwritten; repositories lacking it get it
   * (read and compressed once for all), and so do those whose copy vanished or fails its checksum.
   *
   * The key names the checksum, so bytes with another checksum must never appear under it: the
   * content is hashed again as it is uploaded and a mismatch fails the upload before its end,
   * so the driver never commits it (a failed put leaves nothing, driver.ts). Nothing but a copy
   * proven damaged is deleted afterwards: anything else could be the same object stored
   * meanwhile by a correct writer.
   */
  async pushWal(
    cluster: string,
    name: string,
    sha256: string,
    open: () => Readable,
    codec: Codec,
  ): Promise<'stored' | 'exists'> {
    return (await this.pushWalStream(cluster, name, sha256, open, codec)).result;
  }

  private async pushWalStream(
    cluster: string,
    name: string,
    sha256: string,
    open: () => Readable,
    codec: Codec,
  ): Promise<WalArchiveOutcome> {
    this.requireWalMacKey(cluster);
    const { target, replaced } = await this.walTarget(name, sha256, await this.findWalInMembers(cluster, name));
    if (!target) return { result: 'exists', sha256, replaced: [] };
    const key = this.walKey(cluster, name, sha256, codec);
    // The file changed between hashing and upload: PostgreSQL never does that to a ready segment.
    const content = new ExpectedContent(
      sha256,
      (got, bytes) =>
        new PgfleetError(
          'WalFileInvalid',
          `WAL file ${name} changed while it was being archived (sha256 ${sha256} when hashed, ${got} over ${bytes} bytes when uploaded); nothing was stored`,
        ),
    );
    await target.repo.objects.storeStream(key, open(), codec, { content });
    await this.storedWal(target, key, replaced);
    return { result: 'stored', sha256, replaced };
  }

  /**
   * Archives the local WAL file `path` of `size` bytes, reading it once: the content is hashed
   * and compressed in the same pass (object-io.ts encodeFile) and the stored bytes wait in memory
   * until the checksum names the key, while the repositories are searched for the name. For
   * files of up to ONE_PASS_WAL_BYTES (a 16 MiB segment stores ~2 MB); larger ones, and gzip, are
   * hashed first and then streamed (pushWal). Same outcomes as pushWal.
   */
  async archiveWal(
    cluster: string,
    name: string,
    path: string,
    codec: Codec,
    size: number,
  ): Promise<WalArchiveOutcome> {
    this.requireWalMacKey(cluster);
    if (size > ONE_PASS_WAL_BYTES || !hasBlockForm(codec)) {
      const content = new HashingStream();
      await pipeline(fileStream(path), content, new Writable({ write: (_c, _e, cb) => cb() }));
      return this.pushWalStream(cluster, name, content.sha256, () => fileStream(path), codec);
    }
    const searching = this.findWalInMembers(cluster, name);
    searching.catch(() => {}); // awaited below
    const { sha256, stored } = await encodeFile(path, codec);
    const { target, replaced } = await this.walTarget(name, sha256, await searching);
    if (!target) return { result: 'exists', sha256, replaced: [] };
    const key = this.walKey(cluster, name, sha256, codec);
    await target.repo.objects.storeEncoded(key, stored);
    await this.storedWal(target, key, replaced);
    return { result: 'stored', sha256, replaced };
  }

  /** The authenticated key of `name` with content `sha256` (wal-auth.ts). */
  private walKey(cluster: string, name: string, sha256: string, codec: Codec): string {
    const mac = walMac(this.requireWalMacKey(cluster), cluster, name, sha256);
    return `${this.walDir(cluster, name)}/${name}-${sha256}-${mac}${codecExtension(codec)}`;
  }

  private findWalInMembers(cluster: string, name: string): Promise<{ member: Repository; found: ArchivedWal[] }[]> {
    const members = this.members();
    return settleAll(members.map(async (member) => ({ member, found: await member.findWal(cluster, name) })));
  }

  /**
   * Where `name` with `sha256` must still be written (no target: everywhere already, durable and
   * intact); a member holding other content refuses it. A member's copy with the same checksum
   * counts only once confirmWal made it durable and read it back intact; a copy that fails is
   * written again (the key names the content, so the right bytes may replace it). Only
   * authenticated copies count at all: an object planted under the name by someone without the
   * key neither stands for "archived" nor blocks the genuine file (it stays, for verify to report).
   */
  private async walTarget(
    name: string,
    sha256: string,
    found: { member: Repository; found: ArchivedWal[] }[],
  ): Promise<{ target?: { repo: Repository; members: Repository[] }; replaced: string[] }> {
    const missing: Repository[] = [];
    const replaced: string[] = [];
    for (const { member, found: all } of found) {
      const existing = all.filter((e) => e.authentic);
      const same = existing.filter((e) => e.sha256 === sha256);
      if (same.length === 0 && existing.length > 0) {
        throw new PgfleetError(
          'WalConflict',
          `WAL file ${name} is already archived in ${member.location} with different content (sha256 ${existing[0]!.sha256}, this one ${sha256})`,
        );
      }
      let intact = false;
      for (const copy of same) {
        if (await member.confirmWal(copy)) intact = true;
        else replaced.push(copy.key);
      }
      if (!intact) missing.push(member);
    }
    if (missing.length === 0) return { replaced };
    const repo =
      missing.length === 1
        ? missing[0]!
        : new Repository(new MirroredDriver(missing.map((m) => m.driver)), this.manifestKeys, this.keys);
    return { target: { repo, members: missing }, replaced };
  }

  /**
   * After a store: the new objects are durable (the driver's put guarantees it) and known good to
   * this process; damaged copies under other keys (another codec) go, so no reader picks them.
   */
  private async storedWal(
    target: { repo: Repository; members: Repository[] },
    key: string,
    replaced: readonly string[],
  ): Promise<void> {
    // An expire may have removed the directory's key object since this process took the key.
    await target.repo.objects.keys?.keepWriteKey(key);
    for (const m of target.members) rememberConfirmed(`${m.location}\0${key}`);
    const stale = replaced.filter((k) => k !== key);
    if (stale.length > 0) await settleAll(target.members.map((m) => m.driver.delete(stale)));
  }

  /**
   * Whether an archived copy found by a listing may stand for "archived": made durable (posix:
   * the file and its directories fsynced, since its writer may have died before doing so; S3
   * shows only completed uploads) and its content read back against the checksum its key names.
   * False when it vanished or fails the checksum (a torn or damaged copy). Once per process per object.
   */
  async confirmWal(copy: ArchivedWal): Promise<boolean> {
    const id = `${this.location}\0${copy.key}`;
    if (confirmedWal.has(id)) return true;
    try {
      await this.driver.syncObjects?.([copy.key]);
      await this.readObject(
        copy.key,
        copy.codec,
        { sha256: copy.sha256 },
        new Writable({ write: (_c, _e, cb) => cb() }),
      );
    } catch (err) {
      // A damaged encrypted copy fails authentication instead of the checksum: damaged all the same, so
      // it is replaced rather than failing every push of the segment (archive_command would never succeed).
      if (
        PgfleetError.is(err, 'RepoFileMissing') ||
        PgfleetError.is(err, 'RepoChecksumMismatch') ||
        PgfleetError.is(err, 'RepoObjectTampered')
      )
        return false;
      throw err;
    }
    rememberConfirmed(id);
    return true;
  }

  /**
   * Makes the archived WAL files `names` durable in every repository (of a mirror), whoever
   * archived them: a backup calls it before its manifest, which declares them part of a
   * restorable backup. Returns the names some repository lacks (nothing is synced for them).
   */
  async syncWal(cluster: string, names: readonly string[]): Promise<string[]> {
    const lacking = new Set<string>();
    await settleAll(
      this.members().map(async (m) => {
        if (!m.driver.syncObjects) return;
        const keys: string[] = [];
        for (const name of names) {
          const found = (await m.findWal(cluster, name)).filter((w) => w.authentic);
          if (found.length === 0) lacking.add(name);
          keys.push(...found.map((w) => w.key));
        }
        if (keys.length > 0) await m.driver.syncObjects(keys);
      }),
    );
    return names.filter((n) => lacking.has(n));
  }

  /**
   * The one explicit route for WAL archived before WAL names carried a MAC (`catalog
   * sign-manifests`, like adoptManifest): `wal`, a copy without a MAC, is read back against its
   * checksum and stored again under its authenticated name, then removed. 'signed' (dry run: would
   * be); refused (thrown) when it carries a MAC that does not match (WalUnauthenticated: never
   * re-signed), when its content fails its checksum, or when its name already has an
   * authenticated copy of other content (WalConflict).
   */
  async adoptWal(cluster: string, wal: ArchivedWal, dryRun = false): Promise<'signed' | 'valid'> {
    if (wal.authentic) return 'valid';
    if (wal.mac !== undefined)
      throw new PgfleetError(
        'WalUnauthenticated',
        `archived WAL object ${wal.key} carries a MAC that does not match its cluster, name and checksum; it is not signed`,
      );
    const other = (await this.findWal(cluster, wal.name)).find((w) => w.authentic && w.sha256 !== wal.sha256);
    if (other)
      throw new PgfleetError(
        'WalConflict',
        `WAL file ${wal.name} has an authenticated copy with other content (${other.key}); ${wal.key} is not signed`,
      );
    if (dryRun) return 'signed';
    const key = this.walKey(cluster, wal.name, wal.sha256, wal.codec);
    const content = new PassThrough();
    await settleAll<unknown>([
      this.readObject(wal.key, wal.codec, { sha256: wal.sha256 }, content),
      this.objects.storeStream(key, content, wal.codec, {
        content: new ExpectedContent(
          wal.sha256,
          (got) =>
            new PgfleetError(
              'RepoChecksumMismatch',
              `${wal.key} holds content with sha256 ${got}, not the checksum its name says`,
            ),
        ),
      }),
    ]);
    // As every WAL write: an expire may have released the directory's key object meanwhile.
    await this.objects.keys?.keepWriteKey(key);
    await this.driver.delete([wal.key]);
    return 'signed';
  }

  /**
   * Removes archived WAL files (as listed by listWal or findWal); ones already gone are ignored.
   * A WAL directory left with nothing but data key objects loses those too (encrypted clusters:
   * repository-keys.ts releaseScopeKeys, which keeps them when anything is or arrives there).
   * Returns how many key objects went.
   */
  async deleteWal(files: readonly ArchivedWal[]): Promise<number> {
    if (files.length === 0) return 0;
    await this.driver.delete(files.map((w) => w.key));
    const dirs = new Set(files.map((w) => w.key.slice(0, w.key.lastIndexOf('/') + 1)));
    let released = 0;
    for (const dir of dirs) released += await releaseScopeKeys(this.driver, dir);
    return released;
  }

  /** True when `name` is archived, authenticated, in every repository (of a mirror): what a backup waits for. */
  async isWalArchived(cluster: string, name: string): Promise<boolean> {
    const found = await settleAll(this.members().map((m) => m.authenticWal(cluster, name)));
    return found.every((f) => f !== undefined);
  }

  /**
   * The authenticated timeline history files of the cluster (a listing of their own folder
   * only): a history planted without the key is never followed. WalKeyMissing without a key.
   */
  async listTimelineHistories(cluster: string): Promise<ArchivedWal[]> {
    this.requireWalMacKey(cluster);
    const parse = this.walParser(cluster);
    const out: ArchivedWal[] = [];
    for await (const o of this.driver.list(`${clusterDir(cluster)}/wal/timelines/`)) {
      const w = parse(o.key, o.size);
      if (w?.authentic && w.name.endsWith('.history')) out.push(w);
    }
    return out;
  }

  /**
   * The content of a small archived WAL file (a timeline history, or one segment), checked
   * against its checksum; undefined when it is not archived; WalUnauthenticated when no copy is
   * authenticated (readableWal). Refuses more than `maxBytes`.
   */
  async readWalFile(cluster: string, name: string, maxBytes = 1 << 20): Promise<Buffer | undefined> {
    const wal = await this.readableWal(cluster, name);
    if (!wal) return undefined;
    const chunks: Buffer[] = [];
    let bytes = 0;
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        if (bytes > maxBytes)
          cb(new PgfleetError('RepoManifestInvalid', `archived WAL file ${name} holds more than ${maxBytes} bytes`));
        else {
          chunks.push(chunk);
          cb();
        }
      },
    });
    await this.readObject(wal.key, wal.codec, { sha256: wal.sha256 }, sink);
    return Buffer.concat(chunks);
  }

  /** Per repository (of a mirror, in restore preference order): whether it holds `name`, so a check can name the one that lacks it. */
  async walArchivedIn(cluster: string, name: string): Promise<{ location: string; archived: boolean }[]> {
    const members = this.members();
    const found = await settleAll(members.map((m) => m.authenticWal(cluster, name)));
    return members.map((m, i) => ({ location: m.location, archived: found[i] !== undefined }));
  }

  /**
   * Writes a small object under the cluster's prefix in every repository (of a mirror) and removes
   * it again: proof that this process can write there now, with the failure of each that refused.
   * The key is unique per call and outside backup/ and wal/, so no listing of backups or WAL ever
   * sees it, even when the removal fails.
   */
  async probeWritable(cluster: string): Promise<{ location: string; error?: Error }[]> {
    const key = `${clusterDir(cluster)}/.pgfleet-probe-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
    return Promise.all(
      this.members().map(async (m) => {
        try {
          await m.driver.put(key, Buffer.from('pgfleet check probe\n'));
          await m.driver.delete([key]);
          return { location: m.location };
        } catch (err) {
          return { location: m.location, error: err instanceof Error ? err : new Error(String(err)) };
        }
      }),
    );
  }

  /**
   * Writes the authenticated copy of the archived WAL file `name` to `dest` and returns it;
   * WalNotInRepository when it is not there, WalUnauthenticated when no copy is authenticated.
   */
  async fetchWal(cluster: string, name: string, dest: Writable): Promise<ArchivedWal> {
    const wal = await this.readableWal(cluster, name);
    if (!wal) throw new PgfleetError('WalNotInRepository', `WAL file ${name} is not in repository ${this.location}`);
    await this.readObject(wal.key, wal.codec, { sha256: wal.sha256 }, dest);
    return wal;
  }
}

/**
 * A content stage that knows the checksum the content must have: at the end of the content it
 * fails the stream instead of ending it, so nothing downstream sees an end and no driver commits
 * the object.
 */
class ExpectedContent extends HashingStream {
  constructor(
    private readonly expected: string,
    private readonly mismatch: (sha256: string, bytes: number) => Error,
  ) {
    super();
  }

  override _flush(cb: TransformCallback): void {
    super._flush((err) => {
      if (err) cb(err);
      else cb(this.sha256 === this.expected ? null : this.mismatch(this.sha256, this.bytes));
    });
  }
}

export function isCodec(value: string): value is Codec {
  return (CODECS as readonly string[]).includes(value);
}
