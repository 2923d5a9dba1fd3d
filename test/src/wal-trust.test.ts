/**
 * Archived WAL is trusted only with its MAC (issue 13, WAL and timeline history authentication).
 * An attacker who can write to the repository but does not hold the cluster's key replaces the
 * WAL segment a PITR needs with other bytes under a name it computes, and plants a timeline
 * history with WAL of its own (from a copy it restored and promoted: real WAL PostgreSQL would
 * replay). No restore replays any of it: the PITR that needs the replaced segment fails with the
 * code in the server's log and starts nothing; with the genuine object back (the planted copies
 * still beside it) the same PITR restores exactly; the planted timeline is never followed and
 * verify names every planted object. The normal archive + PITR path restores exactly.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCodes } from '@pgfleet/core';
import type { ArchivedWal } from '@pgfleet/storage';
import { chownToPostgres, startPostgres, type PgInstance } from '@pgfleet/testkit';
import { startFleet, waitFor, type Fleet } from './harness.js';

const CLUSTER = 'waltrust';
const ROWS = 'SELECT id, note FROM ledger ORDER BY id';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('archived WAL is trusted only with its MAC', { timeout: 900_000 }, () => {
  let fleet: Fleet;
  const started: PgInstance[] = [];
  /** Where the PITR stops, a segment recovery must replay on its way there, and the rows the cluster had there. */
  let targetLsn: string;
  let midSegment: string;
  let rowsAtTarget: unknown[];

  const restore = (to: string, ...args: string[]) => fleet.cli('restore', CLUSTER, '--to', to, ...args, '--wait');
  const pitr = (to: string) => restore(to, '--target-lsn', targetLsn, '--target-action', 'promote');
  const start = async (dir: string) => {
    const pg = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
    started.push(pg);
    return pg;
  };
  /** Puts an object into the repository as an attacker with write access (as root: given back to the agent's user). */
  const plant = async (key: string, body: Buffer) => {
    await fleet.repo.driver.put(key, body);
    await chownToPostgres(join(fleet.repoDir, CLUSTER, 'wal'), { recursive: true });
  };
  const fresh = (what: string) => join(fleet.dir, `${what}-${Math.random().toString(36).slice(2, 8)}`);

  before(async () => {
    fleet = await startFleet({ cluster: CLUSTER });
    await fleet.pg.query('CREATE TABLE ledger (id int PRIMARY KEY, note text NOT NULL)');
    await fleet.pg.query(`INSERT INTO ledger SELECT g, 'row ' || g FROM generate_series(1, 1000) g`);
    const b = await fleet.cli('backup', CLUSTER, '--type', 'full', '--wait');
    assert.equal(b.code, 0, `backup failed:\n${b.stdout}\n${b.stderr}\n${await fleet.logs()}`);
    // Rows in a segment of their own after the backup's WAL, then the target in the next one.
    await fleet.pg.query(`INSERT INTO ledger SELECT g, 'more ' || g FROM generate_series(1001, 1200) g`);
    const [mid] = await fleet.pg.query<{ f: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS f');
    midSegment = mid!.f;
    await fleet.pg.query(`INSERT INTO ledger SELECT g, 'more ' || g FROM generate_series(1201, 1500) g`);
    const [at] = await fleet.pg.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn');
    targetLsn = at!.lsn;
    rowsAtTarget = await fleet.pg.query(ROWS);
    await fleet.pg.query(`INSERT INTO ledger SELECT g, 'late ' || g FROM generate_series(1501, 2000) g`);
    await fleet.switchAndArchive();
  });

  after(async () => {
    for (const p of started) await p.stop();
    await fleet?.stop();
  });

  it("the agent receives its cluster's key with the controller's Welcome and keeps it in its key file (0600)", async () => {
    const expected = await readFile(fleet.clusterKeyFile, 'utf8');
    await fleet.agent!.stop();
    await rm(fleet.clusterKeyFile);
    await fleet.startAgent();
    const written = await waitFor('the agent to write its cluster key file', async () =>
      readFile(fleet.clusterKeyFile, 'utf8').catch(() => undefined),
    );
    assert.equal(written, expected);
    assert.equal((await stat(fleet.clusterKeyFile)).mode & 0o777, 0o600);
  });

  it('archived WAL is named with its MAC, and a PITR restores exactly the rows at the target', async () => {
    let count = 0;
    for await (const w of fleet.repo.listWal(CLUSTER)) {
      assert.ok(w.authentic && w.mac !== undefined, `${w.key} carries a matching MAC`);
      count++;
    }
    assert.ok(count > 0);
    const dir = fresh('pitr');
    const r = await pitr(dir);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    assert.deepEqual(await (await start(dir)).query(ROWS), rowsAtTarget);
  });

  it('a replaced segment is never replayed; with the genuine object back, planted copies beside it block nothing', async () => {
    const [genuine] = await fleet.repo.findWal(CLUSTER, midSegment);
    assert.ok(genuine?.authentic, `${midSegment} is archived`);
    const stored = await readFile(join(fleet.repoDir, genuine.key));
    let restored = false;
    // Other bytes (another genuine segment's) under this segment's name, without a MAC and with a made-up one.
    let other: ArchivedWal | undefined;
    for await (const w of fleet.repo.listWal(CLUSTER))
      if (!other && /^[0-9A-F]{24}$/.test(w.name) && w.name !== midSegment) other = w;
    const forged = await readFile(join(fleet.repoDir, other!.key));
    const ext = other!.key.endsWith('.zst') ? '.zst' : '';
    const dir = genuine.key.slice(0, genuine.key.lastIndexOf('/'));
    const planted = [
      `${dir}/${midSegment}-${sha(forged)}${ext}`,
      `${dir}/${midSegment}-${sha(forged)}-${'0'.repeat(32)}${ext}`,
    ];
    await fleet.repo.driver.delete([genuine.key]);
    try {
      for (const key of planted) await plant(key, forged);
      const refused = fresh('pitr-forged');
      const r = await pitr(refused);
      assert.equal(r.code, 0, `the restore itself sets up recovery:\n${r.stdout}\n${r.stderr}`);
      // Recovery cannot reach the target without the segment: the server never opens, and its log says why.
      await assert.rejects(
        start(refused),
        (err: Error) => err.message.includes(ErrorCodes.WalUnauthenticated.code) && err.message.includes(midSegment),
      );

      await plant(genuine.key, stored);
      restored = true;
      const dir2 = fresh('pitr-genuine');
      const ok = await pitr(dir2);
      assert.equal(ok.code, 0, `${ok.stdout}\n${ok.stderr}`);
      assert.deepEqual(await (await start(dir2)).query(ROWS), rowsAtTarget);
    } finally {
      await fleet.repo.driver.delete(planted);
      if (!restored) await plant(genuine.key, stored);
    }
  });

  it('a planted timeline history with real WAL of its own is never followed, and verify names it', async () => {
    // The attacker restores the backup, promotes it (timeline 2) and writes rows of its own.
    const copyDir = fresh('attacker');
    const r = await restore(copyDir, '--target', 'immediate');
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const copy = await start(copyDir);
    await copy.query(`INSERT INTO ledger SELECT g, 'forged ' || g FROM generate_series(9001, 9100) g`);
    await copy.query('SELECT pg_switch_wal()');
    await copy.query('CHECKPOINT');
    await copy.stop();
    started.splice(started.indexOf(copy), 1);
    const walDir = join(copyDir, 'pg_wal');
    const files = (await readdir(walDir)).filter((f) => /^00000002(\.history|[0-9A-F]{16})$/.test(f));
    assert.ok(files.includes('00000002.history'), `the copy wrote a history: ${files.join(', ')}`);
    const planted: string[] = [];
    for (const f of files) {
      const body = await readFile(join(walDir, f));
      const key = f.endsWith('.history')
        ? `${CLUSTER}/wal/timelines/${f}-${sha(body)}`
        : `${CLUSTER}/wal/${f.slice(0, 16)}/${f}-${sha(body)}`;
      await plant(key, body);
      planted.push(key);
    }
    try {
      const dir = fresh('latest');
      const latest = await restore(dir, '--target', 'latest');
      assert.equal(latest.code, 0, `${latest.stdout}\n${latest.stderr}\n${await fleet.logs()}`);
      assert.match(await readFile(join(dir, 'postgresql.auto.conf'), 'utf8'), /recovery_target_timeline = '1'/);
      assert.deepEqual(await (await start(dir)).query(ROWS), await fleet.pg.query(ROWS), 'no forged row');

      const asked = await restore(fresh('timeline-2'), '--target', 'latest', '--target-timeline', '2');
      assert.notEqual(asked.code, 0, 'timeline 2 is not in the archive: only its planted copies are');

      const v = await fleet.cli('verify', CLUSTER, '--wait', '--output', 'json');
      assert.notEqual(v.code, 0);
      for (const key of planted) assert.ok(v.stdout.includes(key), `verify names ${key}`);
      assert.match(v.stdout, /wal-unauthenticated/);
    } finally {
      await fleet.repo.driver.delete(planted);
    }
  });
});
