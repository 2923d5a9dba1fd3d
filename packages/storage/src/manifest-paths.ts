/**
 * The rules a manifest's paths must follow before anything restores from it. A restore writes
 * each entry below its target directory as the PostgreSQL OS user; a manifest is data read from a
 * repository that other hosts can write, so every path is checked here, once, when the manifest
 * is parsed, and a manifest breaking any rule is refused as a whole (a partly trusted manifest
 * would restore a partial data directory).
 *
 * The rules follow what PostgreSQL's own data directory holds (basebackup.c): relative,
 * normalised '/'-separated paths; symbolic links only for tablespaces (pg_tblspc/<oid>) and, in
 * manifests of older pgfleet versions, pg_wal (restored as a plain directory); nothing stored
 * "through" a link except the files of a tablespace, which the restore writes into the tablespace
 * directory it chose itself, never through a link it finds.
 */
import { PgfleetError } from '@pgfleet/core/errors';

/** PostgreSQL's MAXPGPATH is 1024 bytes for a whole path; relative paths inside PGDATA are shorter. */
export const MAX_MANIFEST_PATH_BYTES = 1024;
/** NAME_MAX of the filesystems PostgreSQL runs on. */
const MAX_SEGMENT_BYTES = 255;
/** pg_tblspc/<oid>: where PostgreSQL links each tablespace. */
export const TABLESPACE_LINK_PATH_RE = /^pg_tblspc\/\d{1,10}$/;
/** Files the restore writes itself: a manifest entry with one of these names would let the backup decide them. */
const RESERVED_TOP_LEVEL = new Set(['backup_label', 'tablespace_map', 'recovery.signal', 'standby.signal']);
/** A backup label as a repository key segment: never '.', '..' or anything with a '/'. */
const LABEL_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export interface ManifestEntries {
  label: string;
  cluster: string;
  directories: readonly { path: string }[];
  links: readonly { path: string; target: string }[];
  files: readonly { path: string; backup: string; chunks?: readonly { key: string }[] }[];
}

function refuse(where: string, what: string, path: string, why: string): PgfleetError {
  const shown = JSON.stringify(path.length > 200 ? `${path.slice(0, 200)}...` : path);
  return new PgfleetError(
    'ManifestPathRejected',
    `manifest ${where}: ${what} ${shown} ${why}; the manifest is refused`,
  );
}

/** Why `path` is not a relative, normalised path (undefined when it is). */
export function relativePathProblem(path: unknown): string | undefined {
  if (typeof path !== 'string' || path === '') return 'is empty or not a string';
  if (Buffer.byteLength(path) > MAX_MANIFEST_PATH_BYTES) return `is longer than ${MAX_MANIFEST_PATH_BYTES} bytes`;
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(path)) return 'holds a control character';
  if (path.startsWith('/')) return 'is absolute';
  return segmentsProblem(path.split('/'));
}

/** Why `target` is not an absolute, normalised path (undefined when it is). */
export function absolutePathProblem(target: unknown): string | undefined {
  if (typeof target !== 'string' || !target.startsWith('/')) return 'is not an absolute path';
  if (Buffer.byteLength(target) > MAX_MANIFEST_PATH_BYTES) return `is longer than ${MAX_MANIFEST_PATH_BYTES} bytes`;
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(target)) return 'holds a control character';
  if (target === '/') return 'is the root directory';
  return segmentsProblem(target.slice(1).split('/'));
}

function segmentsProblem(segments: readonly string[]): string | undefined {
  for (const s of segments) {
    if (s === '') return 'has an empty segment (a doubled or trailing /)';
    if (s === '.' || s === '..') return `has a '${s}' segment`;
    if (Buffer.byteLength(s) > MAX_SEGMENT_BYTES) return `has a segment longer than ${MAX_SEGMENT_BYTES} bytes`;
  }
  return undefined;
}

/** Whether `label` can name a backup (a key segment of the repository). */
export function isBackupLabel(label: unknown): label is string {
  return typeof label === 'string' && LABEL_RE.test(label);
}

/**
 * Checks every path of a manifest (see the module header); ManifestPathRejected naming the first
 * entry that breaks a rule. `where` names the manifest in the message.
 */
export function validateManifestEntries(m: ManifestEntries, where: string): void {
  const file = manifestEntryChecker(m, where);
  for (const f of m.files) file(f);
}

/**
 * Checks a manifest's label, links and directories now and returns the check of one file entry,
 * for readers that see the entries one at a time (manifest-stream.ts). It remembers every path
 * seen (a path listed twice is refused): the one thing a reader keeps per file.
 */
export function manifestEntryChecker(
  m: Omit<ManifestEntries, 'files'>,
  where: string,
): (f: ManifestEntries['files'][number]) => void {
  if (!isBackupLabel(m.label)) throw refuse(where, 'label', String(m.label), 'is not a backup label');
  if (!Array.isArray(m.links)) throw refuse(where, 'links', '', 'is not a list');
  const seen = new Set<string>();
  const unique = (kind: string, path: string) => {
    if (seen.has(path)) throw refuse(where, kind, path, 'is listed twice');
    seen.add(path);
  };
  const links = new Map<string, string>();
  for (const l of m.links) {
    const problem = relativePathProblem(l?.path);
    if (problem) throw refuse(where, 'link', String(l?.path), problem);
    if (!TABLESPACE_LINK_PATH_RE.test(l.path) && l.path !== 'pg_wal')
      throw refuse(where, 'link', l.path, 'is not where PostgreSQL has links (pg_tblspc/<oid> or pg_wal)');
    const targetProblem = absolutePathProblem(l.target);
    if (targetProblem) throw refuse(where, 'link', l.path, `has a target that ${targetProblem}`);
    unique('link', l.path);
    links.set(l.path, l.target);
  }
  const entry = (kind: string, path: unknown) => {
    const problem = relativePathProblem(path);
    if (problem) throw refuse(where, kind, String(path), problem);
    const p = path as string;
    if (RESERVED_TOP_LEVEL.has(p)) throw refuse(where, kind, p, 'is written by the restore itself');
    unique(kind, p);
    const under = linkAbove(p, links);
    // A tablespace's files are stored under its link and restored into the directory the restore
    // chooses for it; pg_wal's old link only ever had its archive_status directory listed.
    if (
      under !== undefined &&
      !TABLESPACE_LINK_PATH_RE.test(under) &&
      !(under === 'pg_wal' && p === 'pg_wal/archive_status')
    )
      throw refuse(where, kind, p, `lies under the link ${under}`);
    return p;
  };
  if (!Array.isArray(m.directories)) throw refuse(where, 'directories', '', 'is not a list');
  for (const d of m.directories) entry('directory', d?.path);
  const prefixOf = (backup: string) => `${m.cluster}/backup/${backup}/pg_chunks/`;
  return (f) => {
    const path = entry('file', f?.path);
    if (!isBackupLabel(f.backup))
      throw refuse(where, 'file', path, `names backup ${JSON.stringify(f.backup)}, not a label`);
    const prefix = prefixOf(f.backup);
    for (const c of f.chunks ?? []) {
      if (typeof c?.key !== 'string' || !c.key.startsWith(prefix) || relativePathProblem(c.key) !== undefined)
        throw refuse(where, 'file', path, `has a chunk key outside ${prefix}`);
    }
  };
}

/** The link whose path is a proper prefix of `path`, if any. */
function linkAbove(path: string, links: ReadonlyMap<string, string>): string | undefined {
  for (let i = path.indexOf('/'); i > 0; i = path.indexOf('/', i + 1)) {
    const prefix = path.slice(0, i);
    if (links.has(prefix)) return prefix;
  }
  return undefined;
}
