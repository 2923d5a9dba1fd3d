/**
 * Lists what a physical backup copies from PGDATA. The exclusions are PostgreSQL's own
 * (src/backend/backup/basebackup.c): directories whose contents are rebuilt at start-up or are
 * useless in a copy (pg_wal: WAL comes from the archive; pg_replslot: slots would pin WAL on the
 * restored copy), and files that must not be restored (postmaster.pid would make the copy look
 * like a running server; backup_label/tablespace_map come from pg_backup_stop instead).
 * Tablespaces are followed through their pg_tblspc links, as PostgreSQL's own base backup does.
 */
import { lstat, readdir, readFile, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';

const EXCLUDE_CONTENTS = new Set([
  'pg_wal',
  'pg_replslot',
  'pg_dynshmem',
  'pg_notify',
  'pg_serial',
  'pg_snapshots',
  'pg_stat_tmp',
  'pg_subtrans',
]);
const EXCLUDE_FILES = new Set([
  'postmaster.pid',
  'postmaster.opts',
  'backup_label',
  'tablespace_map',
  'backup_manifest',
  'postgresql.auto.conf.tmp',
  'current_logfiles.tmp',
  'pg_internal.init',
  'recovery.signal',
  'standby.signal',
]);

/** pg_tblspc/<oid>: where PostgreSQL links each tablespace (or, for an in-place one, its directory). */
export const TABLESPACE_LINK_RE = /^pg_tblspc\/\d+$/;

export interface PgdataEntry {
  path: string;
  size: number;
  mtimeMs: number;
  mode: number;
}

/** What a walk of PGDATA records besides its files: few (directories and tablespace links), so kept in memory. */
export interface PgdataTree {
  directories: { path: string; mode: number }[];
  links: { path: string; target: string }[];
}

export interface PgdataListing extends PgdataTree {
  files: PgdataEntry[];
}

/** Every file at once: for small directories and tests (a backup walks with walkPgdata instead). */
export async function listPgdata(pgdata: string): Promise<PgdataListing> {
  const out: PgdataListing = { directories: [], files: [], links: [] };
  for await (const f of walkPgdata(pgdata, out)) out.files.push(f);
  return out;
}

/**
 * The files a backup copies, yielded as the walk finds them, one directory read at a time, so
 * that memory does not grow with the number of files (issue 16: held as objects, the listing of
 * a 100k-file PGDATA cost ~21 MB). Directories and tablespace links are added to `tree` as they
 * are met. Each entry is stat'ed just before it is yielded: a file removed after its directory
 * was read is left out (ENOENT), one created in a directory not yet read is included; either way
 * WAL replay brings the file to its state at the backup's end.
 */
export async function* walkPgdata(pgdata: string, tree: PgdataTree): AsyncGenerator<PgdataEntry> {
  // A tablespace location may hold other clusters' version directories (several majors share it
  // after pg_upgrade): only this cluster's PG_<major>_<catversion> is ours, as in pg_basebackup.
  const major = await readFile(join(pgdata, 'PG_VERSION'), 'utf8').then(
    (v) => v.trim(),
    () => undefined,
  );
  async function* walk(rel: string): AsyncGenerator<PgdataEntry> {
    let entries;
    try {
      entries = await readdir(rel ? join(pgdata, rel) : pgdata, { withFileTypes: true });
    } catch (err) {
      // A directory dropped during the backup (DROP DATABASE) is fine: WAL replay recreates the state.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries) {
      const path = rel ? `${rel}/${e.name}` : e.name;
      if (e.name.startsWith('pgsql_tmp')) continue;
      if (e.name.includes('.pgfleet-tmp')) continue;
      if (major !== undefined && TABLESPACE_LINK_RE.test(rel) && !e.name.startsWith(`PG_${major}_`)) continue;
      let st;
      try {
        st = await lstat(join(pgdata, path));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw err;
      }
      if (st.isSymbolicLink()) {
        const target = await readlink(join(pgdata, path));
        if (path === 'pg_wal') {
          // initdb --waldir: the WAL directory lives elsewhere. Its contents come from the archive;
          // a restore makes it a plain directory, never a link into the source's WAL.
          const dir = await stat(join(pgdata, path)).catch(() => undefined);
          const mode = (dir?.mode ?? 0o700) & 0o7777;
          tree.directories.push({ path: 'pg_wal', mode }, { path: 'pg_wal/archive_status', mode });
          continue;
        }
        // A tablespace: its files are part of the cluster and are backed up under
        // pg_tblspc/<oid>/..., read through the link. No other link is recorded: a restore
        // creates links only where PostgreSQL has them (storage manifest-paths.ts).
        if (!TABLESPACE_LINK_RE.test(path)) continue;
        tree.links.push({ path, target });
        yield* walk(path);
      } else if (st.isDirectory()) {
        tree.directories.push({ path, mode: st.mode & 0o7777 });
        if (EXCLUDE_CONTENTS.has(path)) {
          // pg_wal/archive_status must exist in a restored directory or the archiver complains.
          if (path === 'pg_wal') tree.directories.push({ path: 'pg_wal/archive_status', mode: st.mode & 0o7777 });
          continue;
        }
        yield* walk(path);
      } else if (st.isFile()) {
        if (EXCLUDE_FILES.has(e.name)) continue;
        yield { path, size: st.size, mtimeMs: st.mtimeMs, mode: st.mode & 0o7777 };
      }
    }
  }
  yield* walk('');
}
