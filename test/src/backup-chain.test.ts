/**
 * A backup chain as a DBA runs it: full, then incremental, then differential, with rows written
 * between each. The incr and diff copy only what changed (the rest is referenced), and every
 * backup of the chain restores exactly the rows it should, to its end and to a PITR target
 * between two backups. A page damaged on disk before the full is found and reported with its file
 * and block, and a delta restore repairs a damaged copy of the data directory in place. All of it
 * on a posix and on an S3 repository.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { open, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCodes } from '@pgfleet/core';
import { runAsPostgres, startPostgres, type PgInstance } from '@pgfleet/testkit';
import { REPOSITORY_KINDS, startFleet, waitFor, type Fleet } from './harness.js';
import { sleep } from '@pgfleet/core';

type Order = { id: number; note: string };
type JobJson = {
  id: string;
  progress?: { message?: string; bytesDone?: number; bytesTotal?: number };
  backup?: { label: string; type: string; priorLabel?: string };
};
type ManifestJson = {
  label: string;
  type: string;
  priorLabel?: string;
  files: { path: string; size: number; backup: string; pageChecksumErrors?: number[] }[];
};

for (const kind of REPOSITORY_KINDS)
  describe(
    `full -> incr -> diff chain, page checksums and delta restore (${kind} repository)`,
    { timeout: 900_000 },
    () => {
      let fleet: Fleet;
      const started: PgInstance[] = [];
      const jobs: Record<'full' | 'incr' | 'diff', JobJson> = {} as never;
      const rows: Record<'full' | 'incr' | 'atT' | 'diff' | 'latest', Order[]> = {} as never;
      let targetTime: string;
      let damagedPath: string;
      let ordersPath: string;
      let ordersIndexPath: string;

      const orders = (pg: PgInstance) => pg.query<Order>('SELECT id, note FROM orders ORDER BY id');
      const manifest = async (label: string): Promise<ManifestJson> => fleet.repo.readManifest('chain', label);
      const copiedBytes = (m: ManifestJson) =>
        m.files.filter((f) => f.backup === m.label).reduce((s, f) => s + f.size, 0);

      async function backup(type: 'full' | 'incr' | 'diff'): Promise<JobJson> {
        const r = await fleet.cli('backup', 'chain', '--type', type, '--wait', '--output', 'json');
        assert.equal(r.code, 0, `${type} backup failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
        return JSON.parse(r.stdout) as JobJson;
      }

      before(async () => {
        fleet = await startFleet({ cluster: 'chain', repository: kind });
        const pg = fleet.pg;
        await pg.query('CREATE TABLE orders (id int PRIMARY KEY, note text NOT NULL)');
        await pg.query(`INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 1000) g`);
        // A table that never changes after the full: the bulk of what the incr and diff must not copy.
        // Vacuumed and frozen up front and kept away from autovacuum, so no hint bit rewrites its pages later.
        await pg.query(
          `CREATE TABLE bulk WITH (autovacuum_enabled = off) AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 200000) g`,
        );
        await pg.query('VACUUM (FREEZE, ANALYZE) bulk');
        await pg.query(`CREATE TABLE damaged (id int, pad text) WITH (autovacuum_enabled = off)`);
        await pg.query(`INSERT INTO damaged SELECT g, repeat('d', 200) FROM generate_series(1, 300) g`);
        await pg.query('VACUUM (FREEZE) damaged');
        await pg.query('CHECKPOINT');
        const paths = (
          await pg.query<{ d: string; o: string; i: string }>(
            `SELECT pg_relation_filepath('damaged') AS d, pg_relation_filepath('orders') AS o, pg_relation_filepath('orders_pkey') AS i`,
          )
        )[0]!;
        damagedPath = paths.d;
        ordersPath = paths.o;
        ordersIndexPath = paths.i;

        // Storage corruption while the server is down: bytes in the middle of block 2 (not its header,
        // so pd_lsn stays old and the page must be judged). Nothing reads that table afterwards.
        await runAsPostgres(join(pg.binDir, 'pg_ctl'), ['-D', pg.dataDir, '-m', 'fast', '-w', 'stop'], { cwd: '/tmp' });
        const fh = await open(join(pg.dataDir, damagedPath), 'r+');
        await fh.write(Buffer.from('CORRUPTED!'), 0, 10, 2 * 8192 + 4096);
        await fh.close();
        await pg.restart();
        // Files last written more than the same-second guard before the full are referenced by the incr/diff.
        await sleep(2100);

        jobs.full = await backup('full');
        rows.full = await orders(pg);

        await pg.query(`INSERT INTO orders SELECT g, 'incr ' || g FROM generate_series(1001, 1500) g`);
        jobs.incr = await backup('incr');
        rows.incr = await orders(pg);

        await pg.query(`INSERT INTO orders SELECT g, 'before T ' || g FROM generate_series(1501, 2000) g`);
        await pg.query(`UPDATE orders SET note = 'changed' WHERE id <= 10`);
        rows.atT = await orders(pg);
        targetTime = (
          await pg.query<{ t: string }>(
            `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
          )
        )[0]!.t;
        await sleep(50);
        await pg.query(`INSERT INTO orders SELECT g, 'after T ' || g FROM generate_series(2001, 2200) g`);
        jobs.diff = await backup('diff');
        rows.diff = await orders(pg);

        await pg.query(`INSERT INTO orders SELECT g, 'latest ' || g FROM generate_series(2201, 2300) g`);
        await pg.query(`DELETE FROM orders WHERE id BETWEEN 100 AND 110`);
        rows.latest = await orders(pg);
        await fleet.switchAndArchive();
      });

      after(async () => {
        for (const p of started) await p.stop();
        await fleet?.stop();
      });

      async function restoreAndStart(dir: string, ...args: string[]): Promise<PgInstance> {
        const r = await fleet.cli('restore', 'chain', '--to', dir, ...args, '--wait', '--output', 'json');
        assert.equal(r.code, 0, `restore failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
        const pg = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
        started.push(pg);
        return pg;
      }

      it('lists F, I and D with the backups they build on', async () => {
        const r = await fleet.cli('backups', 'chain', '--output', 'json');
        assert.equal(r.code, 0, r.stderr);
        const doc = JSON.parse(r.stdout);
        const list = (Array.isArray(doc) ? doc : doc.backups) as { label: string; type: string; priorLabel?: string }[];
        assert.deepEqual(
          list.map((b) => b.label.at(-1)),
          ['F', 'I', 'D'],
        );
        assert.deepEqual(
          list.map((b) => b.type),
          ['full', 'incr', 'diff'],
        );
        const [full, incr, diff] = list;
        assert.equal(full!.priorLabel ?? '', '');
        assert.equal(incr!.priorLabel, full!.label, 'an incr builds on the last backup');
        assert.equal(diff!.priorLabel, full!.label, 'a diff builds on the last full, not on the incr');
        const table = await fleet.cli('backups', 'chain');
        assert.match(table.stdout, new RegExp(`${incr!.label}\\s+incr\\s+${full!.label}`));
      });

      it('the incr and diff copy only what changed and reference the rest from the full', async (t) => {
        const full = await manifest(jobs.full.backup!.label);
        const incr = await manifest(jobs.incr.backup!.label);
        const diff = await manifest(jobs.diff.backup!.label);
        assert.equal(incr.priorLabel, full.label);
        assert.equal(diff.priorLabel, full.label);
        const fullBytes = copiedBytes(full);
        for (const m of [incr, diff]) {
          const referenced = m.files.filter((f) => f.backup !== m.label);
          assert.ok(
            referenced.length > m.files.length / 2,
            `${m.label}: most files referenced (${referenced.length}/${m.files.length})`,
          );
          assert.ok(copiedBytes(m) < fullBytes / 4, `${m.label} copied ${copiedBytes(m)} bytes, the full ${fullBytes}`);
          t.diagnostic(
            `${m.label}: copied ${m.files.length - referenced.length} file(s), ${copiedBytes(m)} bytes; referenced ${referenced.length}; the full copied ${fullBytes} bytes`,
          );
          // The orders table changed since the full: copied, not referenced.
          assert.equal(m.files.find((f) => f.path === ordersPath)?.backup, m.label);
          // Every reference names the backup that holds the bytes; a diff never depends on the incr.
          for (const f of referenced) assert.equal(f.backup, full.label, `${m.label}: ${f.path}`);
          // Reported progress counts only the bytes actually copied and says how many files were referenced.
          const job = m.label === incr.label ? jobs.incr : jobs.diff;
          // (Within 1 MiB: the total is taken from the listing, a file may grow a little before it is read.)
          assert.ok(
            Math.abs(Number(job.progress?.bytesTotal) - copiedBytes(m)) <= 1 << 20,
            `progress total ${job.progress?.bytesTotal} vs copied ${copiedBytes(m)}`,
          );
          assert.match(
            job.progress?.message ?? '',
            new RegExp(`${referenced.length} unchanged file\\(s\\) referenced from ${full.label}`),
          );
        }
      });

      it('a page damaged on disk before the full is reported with its file and block', async () => {
        const full = await manifest(jobs.full.backup!.label);
        const withErrors = full.files.filter((f) => f.pageChecksumErrors?.length);
        // Exactly the damaged page: every other relation page of the cluster passes its checksum.
        assert.deepEqual(
          withErrors.map((f) => [f.path, f.pageChecksumErrors]),
          [[damagedPath, [2]]],
        );
        assert.match(
          jobs.full.progress?.message ?? '',
          new RegExp(`${ErrorCodes.PageChecksumMismatch.code} page checksum errors: ${damagedPath} block\\(s\\) 2`),
        );
        const show = await fleet.cli('job', jobs.full.id);
        assert.match(show.stdout, new RegExp(`${damagedPath} block\\(s\\) 2`));
        assert.match(await fleet.agent!.log(), new RegExp(`page checksum mismatch in ${damagedPath}, block\\(s\\) 2`));
        // The diff references the damaged file and carries the finding along.
        const diff = await manifest(jobs.diff.backup!.label);
        assert.deepEqual(diff.files.find((f) => f.path === damagedPath)?.pageChecksumErrors, [2]);
      });

      it('restores the diff (full + diff files) to latest: exactly the latest rows', async () => {
        const dir = join(fleet.dir, 'restore-latest');
        const pg = await restoreAndStart(dir, '--target', 'latest');
        assert.deepEqual(await orders(pg), rows.latest);

        // A delta restore over a running server is refused and changes nothing.
        const busy = await fleet.cli('restore', 'chain', '--to', dir, '--target', 'latest', '--delta', '--wait');
        assert.notEqual(busy.code, 0);
        assert.match(busy.stderr, /PGF-3007/);
        await pg.stop();

        // Damage the stopped copy: one file changed (same size and mtime), one removed, one added.
        const changed = join(dir, ordersPath);
        const st = await stat(changed);
        const fh = await open(changed, 'r+');
        await fh.write(Buffer.from('garbage!'), 0, 8, 4096);
        await fh.close();
        await utimes(changed, st.atime, st.mtime);
        await unlink(join(dir, ordersIndexPath));
        const extra = join(dir, ordersPath.replace(/\d+$/, '999999'));
        await writeFile(extra, 'not part of any backup');

        const r = await fleet.cli(
          'restore',
          'chain',
          '--to',
          dir,
          '--target',
          'latest',
          '--delta',
          '--wait',
          '--output',
          'json',
        );
        assert.equal(r.code, 0, `delta restore failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
        const job = JSON.parse(r.stdout) as { progress?: { message?: string } };
        const m = /delta: (\d+) file\(s\) kept, (\d+) fetched/.exec(job.progress?.message ?? '');
        assert.ok(m, `delta summary in ${job.progress?.message}`);
        assert.ok(Number(m![1]) > Number(m![2]), 'most files kept');
        assert.equal(existsSync(extra), false, 'extra file removed');
        const again = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
        started.push(again);
        assert.deepEqual(await orders(again), rows.latest);
        // The index was restored too (an index scan would fail on a missing file).
        await again.query('SET enable_seqscan = off');
        assert.deepEqual(await again.query<Order>('SELECT id, note FROM orders WHERE id = 1500'), [
          { id: 1500, note: 'incr 1500' },
        ]);
      });

      it('restores to a time between the incr and the diff: exactly the rows committed before it', async () => {
        const pg = await restoreAndStart(join(fleet.dir, 'restore-time'), '--target-time', targetTime);
        assert.deepEqual(await orders(pg), rows.atT);
      });

      it('checksum mode (agent --checksum-delta): a touched but unchanged file is referenced by content', async () => {
        await fleet.agent!.stop();
        await waitFor('the controller to see the agent go', async () => !(await fleet.agentConnected()));
        await fleet.startAgent(['--checksum-delta']);
        const bulkPath = (await fleet.pg.query<{ p: string }>(`SELECT pg_relation_filepath('bulk') AS p`))[0]!.p;
        const now = new Date();
        await utimes(join(fleet.pg.dataDir, bulkPath), now, now);
        const job = await backup('incr');
        const m = await manifest(job.backup!.label);
        assert.equal(m.priorLabel, jobs.diff.backup!.label);
        const bulk = m.files.find((f) => f.path === bulkPath)!;
        assert.equal(bulk.backup, jobs.full.backup!.label, 'same content: still the bytes of the full');
        assert.ok(copiedBytes(m) < copiedBytes(await manifest(jobs.full.backup!.label)) / 4);
      });

      it('restores the incr and the diff to their own end (--target immediate)', async () => {
        const incr = await restoreAndStart(
          join(fleet.dir, 'restore-incr'),
          '--backup',
          jobs.incr.backup!.label,
          '--target',
          'immediate',
        );
        assert.deepEqual(await orders(incr), rows.incr);
        const diff = await restoreAndStart(
          join(fleet.dir, 'restore-diff'),
          '--backup',
          jobs.diff.backup!.label,
          '--target',
          'immediate',
        );
        assert.deepEqual(await orders(diff), rows.diff);
      });
    },
  );
