// The decoder across a timeline switch, the way `wal search` reads an archive after a failover:
// the old timeline's segments up to the one holding the switch, then the new timeline's from
// that one (its first pages are a copy of the old timeline's, with the old timeline id in their
// headers). Nothing is lost or doubled: the new timeline's segments decode as pg_waldump -t 2
// reads them, and a transaction committed after the promotion is found with its table's name.
import { strict as assert } from 'node:assert';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startStandby, startWalCluster, waldump, type StandbyInstance, type WalCluster } from '@pgfleet/testkit';
import { sleep } from '@pgfleet/core/async';
import { RelationNames } from './relation-names.js';
import { TransactionTracker, type TransactionSummary } from './transaction-tracker.js';
import { decodeWalSegments, type WalRecord, type WalSegmentBytes } from './wal-reader.js';
import { lsnNumber, lsnText } from './wal-format.js';

let cluster: WalCluster;
let standby: StandbyInstance;
let records: WalRecord[];
let switchLsn = 0;
let afterXid = 0;
let beforeXid = 0;
const summaries = new Map<number, TransactionSummary>();
const seen = new Map<number, number>();
let tli2: { name: string; bytes: Buffer; startLsn: number }[] = [];

before(async () => {
  cluster = await startWalCluster();
  const size = cluster.segmentSize;
  await cluster.pg.query('create table moved (id int primary key, v text)');
  await cluster.pg.query("insert into moved select g, 'before' from generate_series(1, 1000) g");
  const first = String(
    (await cluster.pg.query<{ f: string }>('select pg_walfile_name(pg_current_wal_insert_lsn()) as f'))[0]!.f,
  );
  standby = await startStandby(cluster.pg, { archiveCommand: `cp %p ${cluster.archiveDir}/%f` });
  const [b] = await cluster.pg.query<{ xid: string }>(
    'with d as (delete from moved where id <= 10 returning 1) select txid_current()::text as xid from (select count(*) from d) c',
  );
  beforeXid = Number(b!.xid);
  // The standby has replayed everything the primary wrote before it is promoted.
  const target = String((await cluster.pg.query<{ l: string }>('select pg_current_wal_insert_lsn()::text as l'))[0]!.l);
  for (;;) {
    const [r] = await standby.query<{ ok: boolean }>(`select pg_last_wal_replay_lsn() >= '${target}'::pg_lsn as ok`);
    if (r!.ok) break;
    await sleep(100);
  }
  await standby.promote();
  const [t] = await standby.query<{ f: string }>('select pg_walfile_name(pg_current_wal_insert_lsn()) as f');
  assert.ok(t!.f.startsWith('00000002'), `the promoted standby writes timeline 2 (${t!.f})`);
  const [a] = await standby.query<{ xid: string }>(
    'with d as (delete from moved where id between 11 and 30 returning 1) select txid_current()::text as xid from (select count(*) from d) c',
  );
  afterXid = Number(a!.xid);
  const [last] = await standby.query<{ name: string }>('select pg_walfile_name(pg_current_wal_insert_lsn()) as name');
  await standby.query('select pg_switch_wal()');
  for (;;) {
    const [r] = await standby.query<{ last: string | null }>('select last_archived_wal as last from pg_stat_archiver');
    if (r!.last && r!.last.length === 24 && r!.last >= last!.name) break;
    await sleep(100);
  }
  // The switch point: where timeline 2 begins, from its history file.
  const history = await readFile(path.join(cluster.archiveDir, '00000002.history'), 'utf8');
  switchLsn = lsnNumber(history.trim().split('\n').at(-1)!.split('\t')[1]!);
  const all = await cluster.segments('0'.repeat(24), 'F'.repeat(24));
  const switchSeg = Math.floor(switchLsn / size) * size;
  // What wal search reads: timeline 1 before the switch segment, timeline 2 from it.
  const tli1 = all.filter((s) => s.name.startsWith('00000001') && s.startLsn < switchSeg && s.name >= first);
  tli2 = all.filter((s) => s.name.startsWith('00000002') && s.startLsn >= switchSeg);
  assert.ok(tli1.length > 0 && tli2.length > 0, 'segments of both timelines');
  const segs: WalSegmentBytes[] = [...tli1, ...tli2];
  const r = decodeWalSegments(segs, { segmentSize: size });
  assert.notEqual(r.end.reason, 'end-of-wal', `decoding went on to the end of the input: ${r.end.detail}`);
  records = r.records;
  const tracker = new TransactionTracker(new RelationNames({ lsn: '0/0', databases: [] }));
  for (const rec of records) {
    const s = tracker.observe(rec);
    if (s) {
      summaries.set(s.xid, s);
      seen.set(s.xid, (seen.get(s.xid) ?? 0) + 1);
    }
  }
});

after(async () => {
  await standby?.stop();
  await cluster?.stop();
});

test("records run without a gap or a repeat across the switch, and the new timeline begins at the history file's switch point", () => {
  for (let i = 1; i < records.length; i++) {
    assert.equal(records[i]!.prevLsn, records[i - 1]!.lsn, `prev-link of ${lsnText(records[i]!.lsn)}`);
  }
  assert.ok(
    records.some((r) => r.lsn === switchLsn),
    `a record starts at the switch point ${lsnText(switchLsn)}`,
  );
});

test('the new timeline decodes as pg_waldump -t 2 reads it', async () => {
  const first = tli2[0]!;
  const dump = await waldump(cluster, first.name, tli2.at(-1)!.name);
  const mine = records.filter((r) => r.lsn >= first.startLsn);
  assert.ok(dump.length > 10);
  assert.deepEqual(
    mine.slice(0, dump.length).map((r) => [lsnText(r.lsn), r.totLen, r.xid]),
    dump.map((w) => [lsnText(lsnNumber(w.lsn)), w.totLen, w.xid]),
  );
});

test('the deletes before and after the promotion are both found, each once', () => {
  const before = summaries.get(beforeXid);
  const after = summaries.get(afterXid);
  assert.ok(before && after);
  assert.deepEqual([seen.get(beforeXid), seen.get(afterXid)], [1, 1]);
  assert.deepEqual(
    before.tables.map((t) => t.deleted),
    [10],
  );
  assert.deepEqual(
    after.tables.map((t) => t.deleted),
    [20],
  );
});
