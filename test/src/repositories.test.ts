/**
 * A cluster with two repositories, a local directory and an S3 bucket (the agent's own --repo
 * and --repo2; the controller names none): every backup and every archived WAL segment lands in
 * both, and a restore still gives exactly the right rows when the first repository has lost
 * objects it needs (a data file, a backup manifest, a WAL segment): it reads them from the second.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startPostgres, type PgInstance } from '@pgfleet/testkit';
import type { Repository } from '@pgfleet/storage';
import { startFleet, type Fleet } from './harness.js';
import { repoWal } from './repo-inspect.js';

type Row = { id: number; note: string };

/** Every object of the cluster in one repository: key -> size. */
async function objects(repo: Repository, cluster: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const o of repo.driver.list(`${cluster}/`)) out.set(o.key, o.size);
  return out;
}

describe(
  'two repositories (posix + S3): both hold everything, a restore falls back to the second',
  { timeout: 300_000 },
  () => {
    let fleet: Fleet;
    const started: PgInstance[] = [];
    const labels: string[] = [];
    let latest: Row[];
    const rows = (pg: PgInstance) => pg.query<Row>('SELECT id, note FROM ledger ORDER BY id');

    async function backup(type: 'full' | 'incr'): Promise<void> {
      const r = await fleet.cli('backup', 'twin', '--type', type, '--wait', '--output', 'json');
      assert.equal(r.code, 0, `${type} backup failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
      labels.push((JSON.parse(r.stdout) as { backup: { label: string } }).backup.label);
    }

    before(async () => {
      fleet = await startFleet({ cluster: 'twin', repository: 'both' });
      const pg = fleet.pg;
      await pg.query('CREATE TABLE ledger (id int PRIMARY KEY, note text NOT NULL)');
      await pg.query(`INSERT INTO ledger SELECT g, 'first ' || g FROM generate_series(1, 2000) g`);
      await backup('full');
      await pg.query(`INSERT INTO ledger SELECT g, 'second ' || g FROM generate_series(2001, 3000) g`);
      await fleet.switchAndArchive();
      await backup('incr');
      await pg.query(`UPDATE ledger SET note = 'after the incr' WHERE id % 7 = 0`);
      await fleet.switchAndArchive();
      await pg.query(`INSERT INTO ledger SELECT g, 'latest ' || g FROM generate_series(3001, 3100) g`);
      latest = await rows(pg);
      await fleet.switchAndArchive();
    });

    after(async () => {
      for (const p of started) await p.stop();
      await fleet?.stop();
    });

    it('both repositories hold every backup and every archived segment, object for object', async () => {
      const [local, offsite] = fleet.repoMembers;
      assert.equal(fleet.repoMembers.length, 2);
      for (const r of [local!, offsite!])
        assert.deepEqual(
          (await r.listBackups('twin')).map((m) => m.label),
          labels,
          r.location,
        );
      const a = await objects(local!, 'twin');
      const b = await objects(offsite!, 'twin');
      assert.ok(
        [...a.keys()].some((k) => k.includes('/pg_data/')) && [...a.keys()].some((k) => k.includes('/wal/')),
        'backups and WAL are there',
      );
      assert.deepEqual(
        [...b.entries()].sort(),
        [...a.entries()].sort(),
        'the same objects with the same sizes in both',
      );
      // Every segment PostgreSQL reports archived is in both.
      const [archived] = await fleet.pg.query<{ w: string }>('SELECT last_archived_wal AS w FROM pg_stat_archiver');
      for (const r of [local!, offsite!])
        assert.ok((await repoWal(r, 'twin')).has(archived!.w), `${archived!.w} in ${r.location}`);
    });

    it('restores the latest rows when the first repository lacks a data file, a manifest and a WAL segment', async () => {
      const [local, offsite] = fleet.repoMembers;
      // Lose objects from the first repository only: the full's copy of the ledger table (the incr
      // references it), the incr's manifest and the segment archived after the incr.
      const [{ path }] = (await fleet.pg.query<{ path: string }>(`SELECT pg_relation_filepath('ledger') AS path`)) as [
        { path: string },
      ];
      const incr = await offsite!.readManifest('twin', labels[1]!);
      const ledgerFiles = incr.files.filter((f) => f.path === path);
      assert.equal(ledgerFiles.length, 1);
      const f = ledgerFiles[0]!;
      const dataKeys = f.chunks
        ? Array.from({ length: f.chunks.length }, (_, i) => local!.backupChunkKey('twin', f.backup, f.path, i, f.codec))
        : [local!.backupFileKey('twin', f.backup, f.path, f.codec)];
      const next = [...(await repoWal(local!, 'twin')).entries()]
        .map(([name, keys]) => ({ name, key: keys[0]! }))
        .filter((x) => x.name > incr.walStop && !x.name.endsWith('.partial'))[0]!;
      assert.ok(next, 'segments after the incr are archived');
      const lost = [...dataKeys, `twin/backup/${labels[1]}/backup.manifest`, next.key];
      for (const k of lost) assert.ok(await local!.driver.stat(k), `${k} exists before`);
      await local!.driver.delete(lost);
      for (const k of lost)
        assert.equal(await local!.driver.stat(k), undefined, `${k} is gone from ${local!.location}`);

      const dir = join(fleet.dir, 'restore-fallback');
      const r = await fleet.cli('restore', 'twin', '--to', dir, '--target', 'latest', '--wait', '--output', 'json');
      assert.equal(r.code, 0, `restore failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
      assert.equal(
        (JSON.parse(r.stdout) as { restore?: { backupLabel?: string } }).restore?.backupLabel,
        labels[1],
        'the incr, whose manifest only the second repository has',
      );
      const pg = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
      started.push(pg);
      assert.deepEqual(await rows(pg), latest);
      // Recovery fetched the segment the first repository lost from the second one.
      assert.match(await pg.log(), new RegExp(`restored log file "${next.name}" from archive`));
    });
  },
);
