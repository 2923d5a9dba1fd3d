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

export interface PgdataListing {
  directories: { path: string; mode: number }[];
  files: PgdataEntry[];
  links: { path: string; target: string }[];
}

export async function listPgdata(pgdata: string): Promise<PgdataListing> {
  const out: PgdataListing = { directories: [], files: [], links: [] };
  // A tablespace location may hold other clusters' version directories (several majors share it
  // after pg_upgrade): only this cluster's PG_<major>_<catversion> is ours, as in pg_basebackup.
  const major = await readFile(join(pgdata, 'PG_VERSION'), 'utf8').then(
    (v) => v.trim(),
    () => undefined,
  );
  const walk = async (rel: string): Promise<void> => {
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
          out.directories.push({ path: 'pg_wal', mode }, { path: 'pg_wal/archive_status', mode });
          continue;
        }
        // A tablespace: its files are part of the cluster and are backed up under
        // pg_tblspc/<oid>/..., read through the link. No other link is recorded: a restore
        // creates links only where PostgreSQL has them (storage manifest-paths.ts).
        if (!TABLESPACE_LINK_RE.test(path)) continue;
        out.links.push({ path, target });
        await walk(path);
      } else if (st.isDirectory()) {
        out.directories.push({ path, mode: st.mode & 0o7777 });
        if (EXCLUDE_CONTENTS.has(path)) {
          // pg_wal/archive_status must exist in a restored directory or the archiver complains.
          if (path === 'pg_wal') out.directories.push({ path: 'pg_wal/archive_status', mode: st.mode & 0o7777 });
          continue;
        }
        await walk(path);
      } else if (st.isFile()) {
        if (EXCLUDE_FILES.has(e.name)) continue;
        out.files.push({ path, size: st.size, mtimeMs: st.mtimeMs, mode: st.mode & 0o7777 });
      }
    }
  };
  await walk('');
  return out;
}
