/**
 * Tablespaces, as a DBA has them: tables and indexes in a tablespace outside the data directory.
 * Their files are backed up (full and incremental, unchanged ones referenced), a restore brings
 * back exactly the rows, and the restored copy never touches the source's tablespace, even on the
 * same host: its tablespace is restored beside it (<dir>.tablespaces/<oid>), and a delta restore
 * over the copy updates that tablespace too.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chownToPostgres, startPostgres, type PgInstance } from '@pgfleet/testkit';
import { startFleet, type Fleet } from './harness.js';
import { sleep } from '@pgfleet/core';

type Row = { id: number; note: string };
type ManifestJson = {
  label: string;
  links: { path: string; target: string }[];
  files: { path: string; backup: string }[];
};
type JobJson = { backup?: { label: string } };

/** Every file under `dir` with its size and mtime: what must not change in the source's tablespace. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
      const p = join(rel, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        const st = await stat(join(dir, p));
        out.set(p, `${st.size}@${st.mtimeMs}`);
      }
    }
  };
  await walk('');
  return out;
}

describe('tablespaces: backed up, restored exactly, restored copy self-contained', { timeout: 300_000 }, () => {
  let fleet: Fleet;
  let tsDir: string;
  let tsOid: string;
  const started: PgInstance[] = [];
  const labels: string[] = [];
  const rows = (pg: PgInstance) => pg.query<Row>('SELECT id, note FROM ledger ORDER BY id');

  async function backup(type: 'full' | 'incr'): Promise<string> {
    const r = await fleet.cli('backup', 'tbs', '--type', type, '--wait', '--output', 'json');
    assert.equal(r.code, 0, `${type} backup failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const label = (JSON.parse(r.stdout) as JobJson).backup!.label;
    labels.push(label);
    return label;
  }

  before(async () => {
    fleet = await startFleet({ cluster: 'tbs' });
    tsDir = join(fleet.dir, 'tablespace-ts1');
    await mkdir(tsDir, { mode: 0o700 });
    await chownToPostgres(tsDir);
    const pg = fleet.pg;
    await pg.query(`CREATE TABLESPACE ts1 LOCATION '${tsDir}'`);
    tsOid = (await pg.query<{ oid: string }>(`SELECT oid::text AS oid FROM pg_tablespace WHERE spcname = 'ts1'`))[0]!
      .oid;
    await pg.query(
      'CREATE TABLE ledger (id int PRIMARY KEY USING INDEX TABLESPACE ts1, note text NOT NULL) TABLESPACE ts1',
    );
    // Never changes after the full: the incremental references it instead of copying it.
    await pg.query(
      'CREATE TABLE archive WITH (autovacuum_enabled = off) TABLESPACE ts1 AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 50000) g',
    );
    await pg.query('VACUUM (FREEZE) archive');
    await pg.query(`INSERT INTO ledger SELECT g, 'full ' || g FROM generate_series(1, 3000) g`);
    await pg.query('CHECKPOINT');
    await sleep(2100); // past the same-second mtime guard
    await backup('full');
    await pg.query(`INSERT INTO ledger SELECT g, 'incr ' || g FROM generate_series(3001, 4000) g`);
    await pg.query(`UPDATE ledger SET note = 'changed' WHERE id <= 10`);
    await backup('incr');
    await pg.query(`INSERT INTO ledger SELECT g, 'after ' || g FROM generate_series(4001, 4500) g`);
    await fleet.switchAndArchive();
  });

  after(async () => {
    for (const p of started) await p.stop();
    await fleet?.stop();
  });

  it('the backups hold the tablespace files; the incremental copies only what changed there', async () => {
    const full = (await fleet.repo.readManifest('tbs', labels[0]!)) as unknown as ManifestJson;
    const incr = (await fleet.repo.readManifest('tbs', labels[1]!)) as unknown as ManifestJson;
    assert.deepEqual(
      full.links.filter((l) => l.path.startsWith('pg_tblspc/')),
      [{ path: `pg_tblspc/${tsOid}`, target: tsDir }],
    );
    const archivePath = (await fleet.pg.query<{ p: string }>(`SELECT pg_relation_filepath('archive') AS p`))[0]!.p;
    const ledgerPath = (await fleet.pg.query<{ p: string }>(`SELECT pg_relation_filepath('ledger') AS p`))[0]!.p;
    assert.match(archivePath, new RegExp(`^pg_tblspc/${tsOid}/PG_\\d+_\\d+/\\d+/\\d+$`));
    const inFull = new Set(full.files.map((f) => f.path));
    assert.ok(
      inFull.has(archivePath) && inFull.has(ledgerPath),
      `tablespace files in the full: ${[...inFull].filter((p) => p.startsWith('pg_tblspc/')).join(', ')}`,
    );
    const byPath = new Map(incr.files.map((f) => [f.path, f.backup]));
    assert.equal(byPath.get(archivePath), labels[0], 'unchanged tablespace file referenced from the full');
    assert.equal(byPath.get(ledgerPath), labels[1], 'changed tablespace file copied by the incr');
  });

  it('restores to latest with exactly the source rows; its tablespace is restored beside it, the source tablespace is never written; a delta restore over the copy repairs it', async () => {
    const before = await snapshot(tsDir);
    const dir = join(fleet.dir, 'restore-latest');
    const r = await fleet.cli('restore', 'tbs', '--to', dir, '--target', 'latest', '--wait', '--output', 'json');
    assert.equal(r.code, 0, `restore failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    assert.equal(
      await readlink(join(dir, 'pg_tblspc', tsOid)),
      join(`${dir}.tablespaces`, tsOid),
      'the tablespace is restored beside the copy',
    );
    const restored = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
    started.push(restored);
    assert.deepEqual(await rows(restored), await rows(fleet.pg));
    assert.equal(Number((await restored.query<{ n: string }>('SELECT count(*) AS n FROM archive'))[0]!.n), 50000);
    // The index in the tablespace works (an index scan reads its file).
    await restored.query('SET enable_seqscan = off');
    assert.deepEqual(await restored.query<Row>('SELECT id, note FROM ledger WHERE id = 4242'), [
      { id: 4242, note: 'after 4242' },
    ]);
    // Writes in the copy stay in the copy.
    await restored.query(`INSERT INTO ledger SELECT g, 'copy only' FROM generate_series(10001, 20000) g`);
    await restored.query('CHECKPOINT');
    assert.deepEqual(await snapshot(tsDir), before, "the source's tablespace directory is untouched");
    assert.equal(
      Number((await fleet.pg.query<{ n: string }>(`SELECT count(*) AS n FROM ledger WHERE note = 'copy only'`))[0]!.n),
      0,
    );

    // Delta restore over the stopped copy: the rows written in it are gone, a damaged tablespace file is repaired.
    await restored.stop();
    started.splice(started.indexOf(restored), 1);
    const ledgerPath = (await fleet.pg.query<{ p: string }>(`SELECT pg_relation_filepath('ledger') AS p`))[0]!.p;
    await writeFile(join(dir, ledgerPath), Buffer.alloc(8192, 0x55));
    await rm(join(dir, 'postmaster.pid'), { force: true });
    const d = await fleet.cli('restore', 'tbs', '--to', dir, '--target', 'latest', '--delta', '--wait');
    assert.equal(d.code, 0, `delta restore failed:\n${d.stdout}\n${d.stderr}\n${await fleet.logs()}`);
    const again = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
    started.push(again);
    assert.deepEqual(await rows(again), await rows(fleet.pg));
  });

  it('a restore whose tablespace directory is not empty is refused and writes nothing there', async () => {
    const dir = join(fleet.dir, 'restore-busy');
    await mkdir(join(`${dir}.tablespaces`, tsOid), { recursive: true });
    await writeFile(join(`${dir}.tablespaces`, tsOid, 'someone-elses-file'), 'x');
    const r = await fleet.cli('restore', 'tbs', '--to', dir, '--target', 'latest', '--wait');
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /PGF-3006.*tablespace.*not empty/s);
    assert.deepEqual(await readdir(join(`${dir}.tablespaces`, tsOid)), ['someone-elses-file']);
  });

  it('restores the full to its own end (--target immediate) with --tablespace-dir: exactly the rows it held', async () => {
    const dir = join(fleet.dir, 'restore-full');
    const tablespaces = join(fleet.dir, 'elsewhere', 'tablespaces');
    const relative = await fleet.cli(
      'restore',
      'tbs',
      '--to',
      dir,
      '--tablespace-dir',
      'relative/dir',
      '--target',
      'latest',
    );
    assert.equal(relative.code, 2);
    assert.match(relative.stderr, /PGF-1001.*--tablespace-dir 'relative\/dir' is not an absolute path/);
    const r = await fleet.cli(
      'restore',
      'tbs',
      '--to',
      dir,
      '--tablespace-dir',
      tablespaces,
      '--backup',
      labels[0]!,
      '--target',
      'immediate',
      '--wait',
    );
    assert.equal(r.code, 0, `restore failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    assert.equal(await readlink(join(dir, 'pg_tblspc', tsOid)), join(tablespaces, tsOid));
    const restored = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
    started.push(restored);
    const got = await rows(restored);
    assert.equal(got.length, 3000);
    assert.ok(got.every((x) => x.note === `full ${x.id}`));
  });
});
