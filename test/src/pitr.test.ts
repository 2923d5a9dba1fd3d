/**
 * The promise pgfleet makes, end to end with real processes: after someone runs `DELETE FROM
 * orders` without a WHERE, the data comes back exactly as it was at the chosen moment.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startPostgres, type PgInstance } from '@pgfleet/testkit';
import { startFleet, type Fleet } from './harness.js';
import { ErrorCodes, sleep } from '@pgfleet/core';

type Order = { id: number; note: string };

describe('backup -> DELETE without WHERE -> PITR restore', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  let rowsAtT: Order[];
  let rowsAtRestorePoint: Order[];
  let rowsAtLsn: Order[];
  let rowsAtBackup: Order[];
  let targetTime: string;
  let targetLsn: string;
  let deleteXid: string;
  const started: PgInstance[] = [];

  const orders = (pg: PgInstance) => pg.query<Order>('SELECT id, note FROM orders ORDER BY id');

  before(async () => {
    fleet = await startFleet({ cluster: 'shop' });
    const pg = fleet.pg;
    await pg.query('CREATE TABLE orders (id int PRIMARY KEY, note text NOT NULL)');
    await pg.query(`INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 1000) g`);
    rowsAtBackup = await orders(pg);

    const backup = await fleet.cli('backup', 'shop', '--wait');
    assert.equal(backup.code, 0, `backup failed:\n${backup.stdout}\n${backup.stderr}\n${await fleet.logs()}`);

    await pg.query(`INSERT INTO orders SELECT g, 'later ' || g FROM generate_series(1001, 1500) g`);
    await pg.query(`UPDATE orders SET note = 'changed' WHERE id <= 10`);
    rowsAtT = await orders(pg);
    // T is read from the server's clock after the commits above, so every one of them is before T.
    targetTime = (
      await pg.query<{ t: string }>(
        `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
      )
    )[0]!.t;
    await sleep(50);

    await pg.query(`INSERT INTO orders SELECT g, 'after T ' || g FROM generate_series(1501, 1600) g`);
    targetLsn = (await pg.query<{ l: string }>('SELECT pg_current_wal_insert_lsn()::text AS l'))[0]!.l;
    rowsAtLsn = await orders(pg);
    await pg.query(`INSERT INTO orders VALUES (1601, 'just before the restore point')`);
    rowsAtRestorePoint = await orders(pg);
    await pg.query(`SELECT pg_create_restore_point('before_delete')`);

    // The mistake, with its transaction id as the DBA would capture it (txid_current() in the same transaction).
    deleteXid = (
      await pg.query<{ x: string }>(
        'WITH d AS (DELETE FROM orders RETURNING 1) SELECT txid_current()::text AS x FROM d LIMIT 1',
      )
    )[0]!.x;
    assert.equal((await orders(pg)).length, 0);
    // Recovery must see WAL past each target, so make sure the DELETE's segment reached the repository.
    await fleet.switchAndArchive();
  });

  after(async () => {
    for (const p of started) await p.stop();
    await fleet?.stop();
  });

  async function restoreAndStart(name: string, ...targetArgs: string[]): Promise<PgInstance> {
    const dir = join(fleet.dir, `restore-${name}`);
    const r = await fleet.cli('restore', 'shop', '--to', dir, ...targetArgs, '--wait');
    assert.equal(r.code, 0, `restore failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    // The restored copy must not archive into the source's repository: it is a scratch copy.
    const pg = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
    started.push(pg);
    return pg;
  }

  it('lists the backup with its LSNs', async () => {
    const r = await fleet.cli('backups', 'shop', '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    const list = Array.isArray(doc) ? doc : doc.backups;
    assert.equal(list.length, 1);
    assert.match(list[0].label, /^\d{8}-\d{6}F$/);
    assert.match(list[0].stopLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
  });

  it('restores to a time: exactly the rows committed before T', async () => {
    const pg = await restoreAndStart('time', '--target-time', targetTime);
    assert.deepEqual(await orders(pg), rowsAtT);
  });

  it('restores to a named restore point', async () => {
    const pg = await restoreAndStart('name', '--target-name', 'before_delete');
    assert.deepEqual(await orders(pg), rowsAtRestorePoint);
  });

  it('restores to an LSN', async () => {
    const pg = await restoreAndStart('lsn', '--target-lsn', targetLsn);
    assert.deepEqual(await orders(pg), rowsAtLsn);
  });

  it('restores to just before the DELETE (--before-xid): every row it removed', async () => {
    const pg = await restoreAndStart('before-xid', '--before-xid', deleteXid);
    assert.deepEqual(await orders(pg), rowsAtRestorePoint);
    // restore.completed says to what the cluster went back: that xid, exclusive.
    const r = await fleet.cli('events', '--cluster', 'shop', '--output', 'json', '--limit', '500');
    assert.equal(r.code, 0, r.stderr);
    const targets = r.stdout
      .trim()
      .split('\n')
      .map(
        (l) => JSON.parse(l) as { kind: string; restoreCompleted?: { target?: { xid?: string; inclusive?: boolean } } },
      )
      .filter((e) => e.kind === 'restore.completed')
      .map((e) => e.restoreCompleted?.target);
    assert.ok(
      targets.some((t) => t?.xid === deleteXid && t.inclusive === false),
      `restore.completed targets: ${JSON.stringify(targets)}`,
    );
  });

  it("--before-lsn at the backup's own stop LSN: consistent there, so it restores the backup's rows", async () => {
    const r = await fleet.cli('backups', 'shop', '--output', 'json');
    const doc = JSON.parse(r.stdout);
    const stopLsn = (Array.isArray(doc) ? doc : doc.backups)[0].stopLsn as string;
    const pg = await restoreAndStart('before-stop-lsn', '--before-lsn', stopLsn);
    assert.deepEqual(await orders(pg), rowsAtBackup);
    // One byte earlier the backup is not consistent yet: refused before anything is restored.
    const [hi, lo] = stopLsn.split('/').map((h) => BigInt(`0x${h}`)) as [bigint, bigint];
    const before = ((hi << 32n) | lo) - 1n;
    const earlier = `${(before >> 32n).toString(16).toUpperCase()}/${(before & 0xffffffffn).toString(16).toUpperCase()}`;
    const refused = await fleet.cli('restore', 'shop', '--to', join(fleet.dir, 'never'), '--before-lsn', earlier);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, new RegExp(ErrorCodes.TargetBeforeOldestBackup.code));
  });

  it('restores to the end of the backup (--target immediate)', async () => {
    const pg = await restoreAndStart('immediate', '--target', 'immediate');
    assert.deepEqual(await orders(pg), rowsAtBackup);
  });
});
