/**
 * The backup manifest: the self-describing record of one backup. It is written last and
 * atomically, so a backup without a manifest is, by definition, incomplete and never listed.
 * The format is versioned (docs/repository-format.md); readers refuse formats they do not know.
 */
import { createHash } from 'node:crypto';
import { PgfleetError } from '@pgfleet/core/errors';
import { isBackupLabel, isClusterName, quoteInput } from '@pgfleet/core/names';
import type { Codec } from './codec.js';
import { manifestEntryChecker } from './manifest-paths.js';

/**
 * Format 2: entries may store only changed blocks (ManifestFile.blocks.changed); format 1 has
 * none. A manifest is written as format 1 unless one of its entries needs 2, so agents that read
 * only format 1 still restore every backup without block-incremental files.
 */
export const MANIFEST_FORMAT = 2;
export const MANIFEST_FORMATS: readonly number[] = [1, 2];

export interface ManifestFile {
  /** Path relative to PGDATA, '/'-separated. */
  path: string;
  size: number;
  mtimeMs: number;
  mode: number;
  /** sha256 of the file's content as PostgreSQL wrote it. */
  sha256: string;
  /** Size and sha256 of the bytes stored in the repository (after compression). */
  storedSize: number;
  storedSha256: string;
  codec: Codec;
  /** Label of the backup whose directory holds the bytes (this one, or a prior one for diff/incr). */
  backup: string;
  /**
   * Block numbers (segment * RELSEG_SIZE + page) whose data checksum failed, twice, when the
   * backup read the file; absent when every page passed or the file has no page checksums.
   */
  pageChecksumErrors?: number[];
  /**
   * Large files are stored as independently compressed chunks (so several cores work on one
   * big relation segment, in backup and in restore); absent for files stored as one object.
   * When present, `storedSize`/`storedSha256` describe the chunks taken together (sum of sizes,
   * sha256 of the chunks' stored sha256s) and `sha256` is the chunked content digest
   * (see chunkedContentDigest); the file's bytes are the chunks' contents at their offsets.
   */
  chunks?: ManifestChunk[];
  /**
   * A relation file with a block map (docs/block-incremental.md): the map object
   * `pg_blocks/<path>/map` of the backup `backup` gives each block's checksum and the object
   * that holds it. Without `changed` the file is stored whole as above and the map only serves
   * the next block-incremental backup; with it, this backup stored only the changed blocks
   * (`pg_blocks/<path>/data`, whose stored figures are the entry's `storedSize`/`storedSha256`
   * together with the map's) and the file is rebuilt from the objects the map names.
   */
  blocks?: ManifestBlocks;
}

/** The block map and changed blocks of one relation file in one backup. */
export interface ManifestBlocks {
  map: ObjectFigures;
  /** This backup stored only these blocks (their count and their object's figures). */
  changed?: ObjectFigures & { count: number };
  /** The other backups whose objects the map names: a restore reads them, an expire keeps them. */
  from?: string[];
}

/** An object's content size and sha256 and its stored bytes' size and sha256. */
export interface ObjectFigures {
  size: number;
  sha256: string;
  storedSize: number;
  storedSha256: string;
}

/** Every backup whose objects a restore of this entry reads: the one it names and those its block map names. */
export function entryBackups(f: Pick<ManifestFile, 'backup' | 'blocks'>): string[] {
  return f.blocks?.changed && f.blocks.from?.length ? [f.backup, ...f.blocks.from] : [f.backup];
}

/** One independently compressed piece of a large file (docs/repository-format.md, "Chunked files"). */
export interface ManifestChunk {
  /** Byte offset of the chunk's content in the file. */
  offset: number;
  /** Content bytes of the chunk. */
  size: number;
  /** sha256 of the chunk's content. */
  sha256: string;
  storedSize: number;
  storedSha256: string;
  /** Repository key (from the repository root) of the chunk's stored bytes. */
  key: string;
}

/**
 * The content checksum of a chunked file: sha256 over the binary sha256 digests of its chunks'
 * contents, in offset order. Each chunk is hashed by whoever compresses it, so the digest covers
 * exactly the bytes stored even when PostgreSQL writes to the file while it is backed up.
 */
export function chunkedContentDigest(chunkSha256s: readonly string[]): string {
  const h = createHash('sha256');
  for (const c of chunkSha256s) h.update(Buffer.from(c, 'hex'));
  return h.digest('hex');
}

export interface ManifestDirectory {
  path: string;
  mode: number;
}

export interface ManifestLink {
  path: string;
  target: string;
}

export type BackupKind = 'full' | 'diff' | 'incr';

export interface BackupManifest {
  format: number;
  label: string;
  cluster: string;
  type: BackupKind;
  priorLabel?: string;
  systemIdentifier: string;
  pgVersionNum: number;
  walSegmentSize: number;
  timeline: number;
  startLsn: string;
  stopLsn: string;
  /** ISO-8601 times taken from the agent's clock around pg_backup_start/stop. */
  startTime: string;
  stopTime: string;
  /** First and last WAL segment needed to make the backup consistent. */
  walStart: string;
  walStop: string;
  /** Content of backup_label (and tablespace_map) returned by pg_backup_stop. */
  backupLabel: string;
  tablespaceMap?: string;
  directories: ManifestDirectory[];
  links: ManifestLink[];
  files: ManifestFile[];
  /** Content bytes of every file (what a restore writes), referenced ones included. */
  sizeBytes: number;
  /** Bytes this backup stored in its own directory (files referenced from a prior backup excluded). */
  storedBytes: number;
  agentVersion: string;
  /**
   * The compression level this backup's own files were stored with (zstd, gzip); absent for lz4
   * and none, and in manifests written before --compress-level. Informational: a reader needs
   * only each file's codec.
   */
  compressLevel?: number;
  /**
   * Where the backup was taken: the primary or a standby of the cluster, the host and its data
   * directory. Absent in manifests written before HA clusters (all taken on the primary).
   */
  source?: BackupSource;
  /**
   * The catalog snapshot object (Repository.catalogSnapshotKey): per database the relations'
   * file numbers and names at the backup's start, which `pgfleet wal search` starts from to name
   * the tables of the WAL after it. Absent in backups taken before it existed (and when no
   * database could be read); never needed to restore.
   */
  catalogSnapshot?: CatalogSnapshotEntry;
}

/** The manifest's record of the catalog snapshot object: what verify checks, and who was left out. */
export interface CatalogSnapshotEntry extends ObjectFigures {
  codec: Codec;
  /** Databases snapshotted. */
  databases: number;
  /** Databases that allow connections but could not be read (the search names their relations from the WAL only). */
  skipped: { database: string; reason: string }[];
}

export interface BackupSource {
  role: 'primary' | 'standby';
  host: string;
  pgdata: string;
}

export function parseManifest(text: string, where: string): BackupManifest {
  const doc = parseManifestHead(text, where);
  const check = manifestFileChecker(doc, where);
  for (const f of doc.files) check(f);
  return doc;
}

/** A manifest without its file list: what a reader keeps while the entries stream by (manifest-stream.ts). */
export type ManifestHead = Omit<BackupManifest, 'files'>;

/**
 * Parses a manifest and checks its format and the fields every reader relies on; the rest (links,
 * directories, the summary fields, then each file entry) is checked by manifestFileChecker.
 */
export function parseManifestHead(text: string, where: string): BackupManifest {
  let doc: BackupManifest;
  try {
    doc = JSON.parse(text) as BackupManifest;
  } catch (err) {
    throw new PgfleetError('RepoManifestInvalid', `manifest ${where} is not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (doc === null || typeof doc !== 'object' || !MANIFEST_FORMATS.includes(doc.format)) {
    throw new PgfleetError(
      'RepoManifestInvalid',
      `manifest ${where} has unknown format ${String((doc as { format?: unknown })?.format)} (this agent reads formats ${MANIFEST_FORMATS.join(' and ')})`,
    );
  }
  for (const key of ['label', 'cluster', 'startLsn', 'stopLsn', 'walStart', 'walStop', 'backupLabel'] as const) {
    if (typeof doc[key] !== 'string' || doc[key] === '')
      throw new PgfleetError('RepoManifestInvalid', `manifest ${where} lacks '${key}'`);
  }
  if (!Array.isArray(doc.files) || !Array.isArray(doc.directories))
    throw new PgfleetError('RepoManifestInvalid', `manifest ${where} lacks its file list`);
  // Older manifests may lack the link list; an empty one means no links.
  doc.links ??= [];
  return doc;
}

/**
 * Checks the label, links, directories and summary fields of the manifest `head` and returns the
 * check of one of its file entries (paths, labels, chunk keys, block figures), which remembers
 * the paths it saw.
 */
export function manifestFileChecker(head: ManifestHead, where: string): (f: ManifestFile) => void {
  const paths = manifestEntryChecker(head, where);
  checkManifestSummary(head, where);
  return (f) => {
    if (f === null || typeof f !== 'object')
      throw new PgfleetError('RepoManifestInvalid', `manifest ${where} holds a file entry that is not an object`);
    paths(f);
    checkBlockEntry(head, f, where);
  };
}

const MAX_MANIFEST_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59);

/**
 * The fields a catalog row and a BackupInfo are made of (catalog rebuild reads them from any
 * manifest a repository holds): names by the one rule, known types, real times, counts that are
 * numbers. A manifest that fails is damaged or forged, never half-used.
 */
export function checkManifestSummary(
  doc: Pick<
    BackupManifest,
    'cluster' | 'label' | 'priorLabel' | 'type' | 'systemIdentifier' | 'pgVersionNum' | 'timeline' | 'sizeBytes'
  > &
    Pick<BackupManifest, 'storedBytes' | 'startTime' | 'stopTime'>,
  where: string,
): void {
  const bad = (what: string): never => {
    throw new PgfleetError('RepoManifestInvalid', `manifest ${where}: ${what}`);
  };
  if (!isClusterName(doc.cluster)) bad(`cluster ${quoteInput(doc.cluster)} is not a cluster name`);
  if (!isBackupLabel(doc.label)) bad(`label ${quoteInput(doc.label)} is not a backup label`);
  if (doc.priorLabel !== undefined && (typeof doc.priorLabel !== 'string' || !isBackupLabel(doc.priorLabel)))
    bad('priorLabel is not a backup label');
  if (!['full', 'diff', 'incr'].includes(doc.type))
    bad(`type ${quoteInput(String(doc.type))} is not full, diff or incr`);
  if (typeof doc.systemIdentifier !== 'string' || !/^\d{1,20}$/.test(doc.systemIdentifier))
    bad('systemIdentifier is not a decimal number');
  // Version and timeline travel as uint32, byte counts as uint64 (safe integers in JavaScript).
  for (const [key, max] of [
    ['pgVersionNum', 0xffffffff],
    ['timeline', 0xffffffff],
    ['sizeBytes', Number.MAX_SAFE_INTEGER],
    ['storedBytes', Number.MAX_SAFE_INTEGER],
  ] as const) {
    const v = doc[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max)
      bad(`${key} is not a count up to ${max}`);
  }
  for (const key of ['startTime', 'stopTime'] as const) {
    const ms = typeof doc[key] === 'string' ? Date.parse(doc[key]) : Number.NaN;
    if (!(ms >= 0 && ms <= MAX_MANIFEST_TIME_MS)) bad(`${key} is not a time between 1970 and 9999`);
  }
}

/** Block-incremental entries only in format 2, with figures that are figures. */
function checkBlockEntry(doc: Pick<BackupManifest, 'format'>, f: ManifestFile, where: string): void {
  const figures = (o: Partial<ObjectFigures> | undefined): boolean =>
    o !== null &&
    typeof o === 'object' &&
    Number.isSafeInteger(o.size) &&
    Number.isSafeInteger(o.storedSize) &&
    typeof o.sha256 === 'string' &&
    typeof o.storedSha256 === 'string';
  if (f.blocks === undefined) return;
  const bad = (why: string): never => {
    throw new PgfleetError('RepoManifestInvalid', `manifest ${where}: file ${f.path} ${why}`);
  };
  if (!figures(f.blocks.map)) bad('has a block map without its figures');
  if (f.blocks.changed !== undefined) {
    if (doc.format < 2) bad('stores changed blocks in a format-1 manifest');
    if (!figures(f.blocks.changed) || !Number.isSafeInteger(f.blocks.changed.count))
      bad('has changed blocks without their figures');
    if (f.chunks) bad('has both chunks and changed blocks');
  }
  for (const b of f.blocks.from ?? []) if (!isBackupLabel(b)) bad(`names backup ${quoteInput(String(b))}, not a label`);
}
