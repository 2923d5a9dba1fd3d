// Real-server test of startStandby: a streaming standby follows its primary and a promotion starts timeline 2.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { startPostgres, startStandby, type PgInstance, type StandbyInstance } from './index.js';
import { sleep } from '@pgfleet/core/async';

describe('startStandby', { timeout: 180_000 }, () => {
  let primary: PgInstance;
  let standby: StandbyInstance;
  before(async () => {
    primary = await startPostgres();
    await primary.query('create table t (v int); insert into t values (1), (2)');
    standby = await startStandby(primary);
  });
  after(async () => {
    await standby?.stop();
    await primary?.stop();
  });

  test('replays the primary, then promotes to timeline 2 and takes writes; stop removes its data dir', async () => {
    const [rec] = await standby.query<{ r: boolean }>('select pg_is_in_recovery() as r');
    assert.equal(rec!.r, true);
    await primary.query('insert into t values (3)');
    const lsn = (await primary.query<{ lsn: string }>('select pg_current_wal_lsn()::text as lsn'))[0]!.lsn;
    for (let i = 0; ; i++) {
      const [r] = await standby.query<{ ok: boolean }>(`select pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn as ok`);
      if (r!.ok) break;
      assert.ok(i < 600, 'standby did not catch up in 60 s');
      await sleep(100);
    }
    assert.deepEqual(
      (await standby.query('select v from t order by v')).map((r) => r.v),
      [1, 2, 3],
    );
    await standby.promote();
    const [tl] = await standby.query<{ t: number }>('select timeline_id as t from pg_control_checkpoint()');
    await standby.query('insert into t values (4)');
    assert.deepEqual(
      (await standby.query('select count(*)::int as n from t')).map((r) => r.n),
      [4],
    );
    assert.ok(tl!.t === 2 || tl!.t === 1, 'checkpoint timeline is 1 or 2 right after promotion');
    const tli = (
      await standby.query<{ tli: number }>('select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)::int as tli')
    )[0]!.tli;
    assert.equal(tli, 2);
    const dir = standby.dataDir;
    await standby.stop();
    assert.equal(existsSync(dir), false);
  });
});
