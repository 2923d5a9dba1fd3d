/**
 * `pgfleet restore-dump` (docs/logical.md): one database of a dump into a new database of this
 * agent's cluster with pg_restore --jobs. pg_restore runs in parallel only from a directory (it
 * seeks in toc.dat and opens table files by name), so the dump's files are read from the
 * repository into a spool directory first, each checked against the size and sha256 the
 * controller's catalog recorded (a damaged or swapped file fails here, before pg_restore reads
 * it), and the spool is removed afterwards whatever happens.
 *
 * The target database must not exist; with clean it is dropped first (WITH (FORCE): sessions on
 * it are ended) and the result says so. It is created from template0, then pg_restore
 * --exit-on-error loads it: a restore that fails drops the database it created, so nothing
 * half-loaded is left behind under the new name. pg_restore of the target's major version reads
 * dumps of the same or older versions (cross-version restores).
 *
 * With `globals` the dump's roles and tablespaces (globals.sql) are applied to the cluster first,
 * once the files are fetched and before any database is dropped or created (apply-globals.ts);
 * without them a pg_restore that fails on a missing role says --globals would create it.
 */
import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { type Logger, mapLimit, PgfleetError } from '@pgfleet/core';
import { connectPg, quoteIdentifier, type PgConnectionOptions } from '@pgfleet/pg';
import type { DumpedDatabase, DumpFile, RestoreDumpResultSchema } from '@pgfleet/proto';
import type { Codec, Repository } from '@pgfleet/storage';
import { libpqEnv, runClientProgram } from '../pg-tools.js';
import type { Progress } from '../progress.js';
import { applyGlobals, type RestoredGlobalsInit } from './apply-globals.js';
import { clientBinDir, programVersion, removeSpool, spoolName } from './dump.js';

export type RestoreDumpResultInit = MessageInitShape<typeof RestoreDumpResultSchema>;

export interface RestoreDumpOptions {
  jobId: string;
  /** The cluster whose repository holds the dump. */
  cluster: string;
  /** The cluster of the agent running the restore (its spool is named for it, see sweepDumpSpools). */
  agentCluster: string;
  label: string;
  database: DumpedDatabase;
  codec: Codec;
  toDatabase: string;
  tables: readonly string[];
  schemas: readonly string[];
  jobs: number;
  clean: boolean;
  /** Apply the dump's globals.sql (this record of it) before pg_restore. */
  globals?: { file: DumpFile; withPasswords: boolean };
  repo: Repository;
  pg: PgConnectionOptions;
  pgBinDir?: string;
  scratchDir: string;
  /** Files read at once. */
  downloads: number;
  log: Logger;
  progress: (p: Progress) => void;
  signal: AbortSignal;
}

const APP = 'pgfleet-restore-dump';

export async function runRestoreDump(o: RestoreDumpOptions): Promise<RestoreDumpResultInit> {
  const t0 = Date.now();
  const prefix = `${o.repo.dumpPrefix(o.cluster, o.label)}/${o.database.dir}`;
  const spool = join(o.scratchDir, spoolName('restore-dump', o.agentCluster, o.jobId));
  const maint = await connectPg({ ...o.pg, applicationName: APP });
  let created = false;
  let droppedExisting = false;
  const target = quoteIdentifier(o.toDatabase);
  try {
    const versionNum = Number(
      (await maint.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v,
    );
    const binDir = clientBinDir(o.pgBinDir, versionNum);
    const pgRestoreVersion = await programVersion(join(binDir, 'pg_restore'));
    // Refused before a byte is read: the existing database is the user's.
    const exists = (await maint.query('SELECT 1 FROM pg_database WHERE datname = $1', [o.toDatabase])).rows.length > 0;
    if (exists && !o.clean)
      throw new PgfleetError(
        'RestoreDumpTargetExists',
        `database '${o.toDatabase}' already exists on this cluster; give --clean to drop it and restore in its place`,
      );
    // With no globals to apply first and nothing to drop, the new database is created while the
    // files are fetched (CREATE DATABASE copies template0: off the serial path); its drop below
    // covers a fetch that fails.
    const createEarly = !o.globals && !exists;
    const [fetchedFiles, createdEarly] = await Promise.allSettled([
      fetchFiles(o, prefix, spool),
      createEarly
        ? maint.query(`CREATE DATABASE ${target} TEMPLATE template0`).then(() => (created = true))
        : undefined,
    ]);
    if (fetchedFiles.status === 'rejected') throw fetchedFiles.reason;
    if (createdEarly.status === 'rejected') throw createdEarly.reason;
    const bytes = fetchedFiles.value;
    const fetched = Date.now();
    let globals: RestoredGlobalsInit | undefined;
    if (o.globals)
      globals = await applyGlobals({
        repo: o.repo,
        codec: o.codec,
        prefix: o.repo.dumpPrefix(o.cluster, o.label),
        file: o.globals.file,
        withPasswords: o.globals.withPasswords,
        client: maint,
        log: o.log,
      });
    if (exists) {
      o.log.warn({ database: o.toDatabase }, 'dropping the existing database (--clean)');
      await maint.query(`DROP DATABASE ${target} WITH (FORCE)`);
      droppedExisting = true;
    }
    if (!createEarly) {
      await maint.query(`CREATE DATABASE ${target} TEMPLATE template0`);
      created = true;
    }
    await createSchemas(o);
    o.progress({
      phase: 'restore',
      bytesDone: 0,
      bytesTotal: bytes,
      filesDone: 0,
      filesTotal: 0,
      message: o.toDatabase,
    });
    const restoring = Date.now();
    await pgRestore(o, binDir, spool);
    created = false;
    // Where a restore's time goes (docs/benchmarks.md compares it with a bare pg_restore).
    o.log.info(
      {
        database: o.toDatabase,
        bytes,
        fetchSeconds: (fetched - t0) / 1000,
        createSeconds: (restoring - fetched) / 1000,
        pgRestoreSeconds: (Date.now() - restoring) / 1000,
      },
      'dump restored',
    );
    return {
      label: o.label,
      database: o.database.name,
      toDatabase: o.toDatabase,
      droppedExisting,
      bytes: BigInt(bytes),
      seconds: (Date.now() - t0) / 1000,
      pgRestoreVersion,
      tables: [...o.tables],
      schemas: [...o.schemas],
      ...(globals ? { globals } : {}),
    };
  } finally {
    if (created)
      await maint.query(`DROP DATABASE IF EXISTS ${target} WITH (FORCE)`).catch((err: unknown) => {
        o.log.warn({ err, database: o.toDatabase }, 'could not drop the half-restored database');
      });
    await maint.end().catch(() => {});
    await removeSpool(spool, o.log);
  }
}

/**
 * A selective restore (--table, --schema) restores no CREATE SCHEMA: pg_restore matches entries
 * by their namespace, and a schema's own entry has none. The schemas the chosen objects live in
 * (from the catalog's table list for --table) are created first, so the new database takes them.
 */
async function createSchemas(o: RestoreDumpOptions): Promise<void> {
  if (o.tables.length === 0 && o.schemas.length === 0) return;
  const schemas = new Set(
    o.schemas.length > 0 ? o.schemas : o.database.tables.filter((t) => o.tables.includes(t.name)).map((t) => t.schema),
  );
  schemas.delete('public');
  if (schemas.size === 0) return;
  const c = await connectPg({ ...o.pg, database: o.toDatabase, applicationName: APP });
  try {
    for (const s of schemas) await c.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdentifier(s)}`);
  } finally {
    await c.end().catch(() => {});
  }
}

/** The dump's files into the spool, each checked against the catalog's size and sha256; returns their bytes. */
export async function fetchFiles(
  o: Pick<RestoreDumpOptions, 'database' | 'downloads' | 'repo' | 'codec' | 'label' | 'progress' | 'signal'>,
  prefix: string,
  spool: string,
): Promise<number> {
  await mkdir(spool, { recursive: true, mode: 0o700 });
  const files = o.database.files;
  const total = files.reduce((a, f) => a + Number(f.size), 0);
  let done = 0;
  let filesDone = 0;
  await mapLimit(
    files,
    o.downloads,
    async (f) => {
      // A name from the catalog becomes a path: only pg_dump's own plain names are accepted.
      if (!/^[A-Za-z0-9_.-]+$/.test(f.name) || f.name.startsWith('.'))
        throw new PgfleetError('RestoreDumpFailed', `dump file name '${f.name}' is not one pg_dump writes`);
      try {
        await o.repo.readObject(
          `${prefix}/${f.name}`,
          o.codec,
          { sha256: f.sha256, size: Number(f.size) },
          createWriteStream(join(spool, f.name), { mode: 0o600 }),
        );
      } catch (err) {
        if (o.signal.aborted) throw err;
        throw new PgfleetError(
          'RestoreDumpFailed',
          `dump ${o.label} file ${o.database.dir}/${f.name}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      done += Number(f.size);
      filesDone++;
      o.progress({
        phase: 'fetch',
        bytesDone: done,
        bytesTotal: total,
        filesDone,
        filesTotal: files.length,
        message: o.database.name,
      });
    },
    o.signal,
  );
  return total;
}

async function pgRestore(o: RestoreDumpOptions, binDir: string, spool: string): Promise<void> {
  const args = [
    '--format=directory',
    `--jobs=${Math.max(1, o.jobs)}`,
    '--exit-on-error',
    '--no-password',
    ...o.schemas.flatMap((s) => ['--schema', s]),
    ...o.tables.flatMap((t) => ['--table', t]),
    spool,
  ];
  // pg_restore needs --dbname to restore (else it prints SQL); given as a quoted connection
  // string so a name holding '=' or spaces stays a name.
  const dbname = `dbname='${o.toDatabase.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
  const { code, stderr } = await runClientProgram(
    join(binDir, 'pg_restore'),
    ['--dbname', dbname, ...args],
    libpqEnv({ ...o.pg, database: o.toDatabase }, APP),
    o.signal,
  );
  if (code !== 0) {
    // The common first failure into another cluster: an owner or grantee the target lacks.
    const hint =
      !o.globals && /role "[^"]*" does not exist/.test(stderr)
        ? " (the dump's roles are not on this cluster: --globals creates them from the dump first)"
        : '';
    throw new PgfleetError(
      'RestoreDumpFailed',
      `pg_restore into '${o.toDatabase}' failed (exit ${code}): ${stderr}${hint}`,
    );
  }
}
