/**
 * The knobs a pgBackRest user reaches for, end to end on a real cluster (issue 14, part 3):
 * - `pgfleet info`: the repository's backups with their chains, sizes (of a block-incremental
 *   file, the changed blocks stored), LSNs and times, and its WAL per timeline, read from the
 *   repository;
 * - `pgfleet backup delete`: refused for a backup others depend on and for pinned ones, then
 *   with --with-dependents the chain above it goes too, and what remains still restores exactly;
 * - `pgfleet restore-points`: the names pg_create_restore_point made, with LSN and time, and a
 *   restore to a name that does not exist says which names do;
 * - the agent's --compress-level (refused per codec with its code) and --max-rate (every byte a
 *   backup reads and a restore writes went through the bucket; no timing is asserted here, the
 *   wall-clock figure is bench/max-rate.mjs's).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ErrorCodes } from '@pgfleet/core';
import { startPostgres, type PgInstance } from '@pgfleet/testkit';
import {
  AGENT_BIN,
  agentRunArgs,
  assertRefused,
  INSECURE_ARGS,
  runNode,
  startFleet,
  type Fleet,
  type RunResult,
} from './harness.js';

type Item = { id: number; note: string };
const items = (pg: PgInstance) => pg.query<Item>('SELECT id, note FROM items ORDER BY id');

interface BackupJson {
  label: string;
  type: string;
  priorLabel?: string;
  startLsn: string;
  stopLsn: string;
  startTime: string;
  stopTime: string;
  timeline: number;
  sizeBytes: number;
  storedBytes: number;
  walStart: string;
  walStop: string;
}
interface InfoJson {
  cluster: string;
  location: string;
  backups: {
    backup: BackupJson;
    dependsOn?: string[];
    dependents?: string[];
    codec: string;
    compressLevel?: number;
    ownSizeBytes: number;
  }[];
  wal: { timeline: number; oldestSegment: string; newestSegment: string; segments: number; storedBytes: number }[];
  backupStoredBytes: number;
  walStoredBytes: number;
  backupOwnSizeBytes: number;
}
interface RestorePointsJson {
  points?: { name: string; lsn: string; time?: string; timeline: number }[];
  fromSegment: string;
  toSegment: string;
  segmentsRead: number;
}

function json<T>(r: RunResult, what: string): T {
  assert.equal(r.code, 0, `${what} failed:\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

const MAX_RATE = 64 * 1024 * 1024;

/** An LSN as a number ('0/3000060'). */
const lsnValue = (lsn: string): bigint => {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
};

describe('info, backup delete, restore points, compress level and max rate', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  const started: PgInstance[] = [];
  const rows: Record<string, Item[]> = {};
  const labels: Record<'full' | 'incr' | 'diff' | 'incr2' | 'full2', string> = {} as never;
  const points: { name: string; lsn: string; before: number; after: number }[] = [];

  async function backup(type: 'full' | 'incr' | 'diff'): Promise<string> {
    const r = await fleet.cli('backup', 'knobs', '--type', type, '--wait', '--output', 'json');
    const job = json<{ backup: { label: string } }>(r, `${type} backup`);
    return job.backup.label;
  }

  async function info(): Promise<InfoJson> {
    return json<InfoJson>(await fleet.cli('info', 'knobs', '--output', 'json'), 'info');
  }

  async function catalogLabels(): Promise<string[]> {
    const list = json<BackupJson[]>(await fleet.cli('backups', 'knobs', '--output', 'json'), 'backups');
    return list.map((b) => b.label);
  }

  async function restoreAndStart(dir: string, ...args: string[]): Promise<PgInstance> {
    const r = await fleet.cli('restore', 'knobs', '--to', dir, ...args, '--wait', '--output', 'json');
    assert.equal(r.code, 0, `restore failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const pg = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
    started.push(pg);
    return pg;
  }

  async function restorePoint(name: string): Promise<void> {
    const before = Date.now();
    const [row] = await fleet.pg.query<{ lsn: string }>(`SELECT pg_create_restore_point($1)::text AS lsn`, [name]);
    points.push({ name, lsn: row!.lsn, before, after: Date.now() });
  }

  before(async () => {
    fleet = await startFleet({ cluster: 'knobs', startAgent: false });
    // zstd at level 9 and a rate limit for every backup and restore this agent runs.
    await fleet.startAgent(['--compress-level', '9', '--max-rate', '64MB']);
    const pg = fleet.pg;
    await pg.query('CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL)');
    const batch = async (name: string, from: number) =>
      pg.query(`INSERT INTO items SELECT g, '${name} ' || g FROM generate_series(${from}, ${from + 499}) g`);
    await batch('first', 1);
    // A relation above --block-min-size (256 KiB) that the incrementals change a few rows of: its
    // file is block-incremental in them (only the changed blocks stored, docs/block-incremental.md).
    await pg.query(
      `CREATE TABLE filler AS SELECT g AS id, md5(g::text) || repeat('f', 150) AS pad FROM generate_series(1, 6000) g`,
    );
    const touchFiller = (n: number) => pg.query(`UPDATE filler SET pad = md5(pad) WHERE id % 1000 = ${n}`);
    labels.full = await backup('full');
    rows.full = await items(pg);
    await batch('incr', 1000);
    await touchFiller(1);
    await restorePoint('after_incr_rows');
    labels.incr = await backup('incr');
    rows.incr = await items(pg);
    await batch('diff', 2000);
    await touchFiller(2);
    labels.diff = await backup('diff');
    rows.diff = await items(pg);
    await batch('incr2', 3000);
    await touchFiller(3);
    await restorePoint('before incr2 "quoted"');
    labels.incr2 = await backup('incr');
    await batch('full2', 4000);
    labels.full2 = await backup('full');
    rows.full2 = await items(pg);
    await restorePoint('nightly_check');
    await fleet.switchAndArchive();
  });

  after(async () => {
    for (const p of started) await p.stop();
    await fleet?.stop();
  });

  it('--compress-level and --max-rate are checked when the agent starts: the PGF code and exit status 2', async () => {
    const run = (...extra: string[]) =>
      runNode(AGENT_BIN, [
        ...agentRunArgs(fleet.controllerAddress, 'knobs', fleet.pg, [...INSECURE_ARGS, '--repo-path', fleet.repoDir]),
        ...extra,
      ]);
    for (const [args, says] of [
      [['--compress-level', '25'], /out of range for zstd: 1 to 19/],
      [['--compress', 'gzip', '--compress-level', '12'], /out of range for gzip: 1 to 9/],
      [['--compress', 'lz4', '--compress-level', '3'], /codec lz4 has no compression levels/],
    ] as const) {
      const r = await run(...args);
      assert.equal(r.code, ErrorCodes.CompressLevelInvalid.exit, `${args.join(' ')}: ${r.stderr}`);
      assertRefused(r, new RegExp(`${ErrorCodes.CompressLevelInvalid.code}.*`));
      assert.match(r.stderr, says);
    }
    const r = await run('--max-rate', '20 parsecs');
    assert.equal(r.code, ErrorCodes.SizeInvalid.exit);
    assertRefused(r, new RegExp(`${ErrorCodes.SizeInvalid.code}.*--max-rate '20 parsecs' is not a size`));
  });

  it('info lists every backup with its chain, sizes, LSNs and times, and the WAL per timeline, from the repository', async () => {
    const doc = await info();
    assert.equal(doc.cluster, 'knobs');
    assert.equal(doc.location, fleet.repoDir);
    const byLabel = new Map(doc.backups.map((b) => [b.backup.label, b]));
    assert.deepEqual(
      doc.backups.map((b) => b.backup.label),
      [labels.full, labels.incr, labels.diff, labels.incr2, labels.full2],
      'oldest first',
    );
    assert.deepEqual(
      doc.backups.map((b) => b.backup.type),
      ['full', 'incr', 'diff', 'incr', 'full'],
    );
    // The chains: the incr builds on the full, the diff on the full, the second incr on the diff.
    const chain = (l: string) => byLabel.get(l)!.dependsOn ?? [];
    const dependents = (l: string) => [...(byLabel.get(l)!.dependents ?? [])].sort();
    assert.deepEqual(chain(labels.full), []);
    assert.deepEqual(chain(labels.incr), [labels.full]);
    assert.deepEqual(chain(labels.diff), [labels.full]);
    assert.deepEqual(chain(labels.incr2), [labels.diff, labels.full]);
    assert.deepEqual(chain(labels.full2), []);
    assert.deepEqual(dependents(labels.full), [labels.incr, labels.diff, labels.incr2].sort());
    assert.deepEqual(dependents(labels.diff), [labels.incr2]);
    assert.deepEqual(dependents(labels.incr2), []);
    // The same LSNs, times and sizes the catalog recorded from each backup's report.
    const catalog = json<BackupJson[]>(await fleet.cli('backups', 'knobs', '--output', 'json'), 'backups');
    for (const c of catalog) {
      const b = byLabel.get(c.label)!.backup;
      for (const k of ['startLsn', 'stopLsn', 'startTime', 'stopTime', 'sizeBytes', 'storedBytes', 'walStart'] as const)
        assert.equal(b[k], c[k], `${c.label} ${k}`);
    }
    let blockIncremental = 0;
    for (const b of doc.backups) {
      assert.equal(b.codec, 'zstd');
      assert.equal(b.compressLevel, 9, 'the agent compressed at --compress-level 9');
      assert.ok(BigInt(b.ownSizeBytes) <= BigInt(b.backup.sizeBytes));
      // Own content: whole files, and of a block-incremental file only the changed blocks stored.
      const m = await fleet.repo.readManifest('knobs', b.backup.label);
      const own = m.files.filter((f) => f.backup === m.label);
      blockIncremental += own.filter((f) => f.blocks?.changed).length;
      assert.equal(BigInt(b.ownSizeBytes), BigInt(own.reduce((n, f) => n + (f.blocks?.changed?.size ?? f.size), 0)));
      // (Not for incrementals: their block maps, 14 bytes a block of a whole file, count in storedBytes too.)
      if (b.backup.type === 'full') assert.ok(BigInt(b.backup.storedBytes) < BigInt(b.ownSizeBytes), 'compressed');
    }
    assert.ok(blockIncremental >= 3, 'the incrementals stored the changed blocks of filler');
    // The incrementals store far less than they restore (the rest is referenced).
    const incr = byLabel.get(labels.incr)!;
    assert.ok(BigInt(incr.ownSizeBytes) * 4n < BigInt(incr.backup.sizeBytes));
    // WAL: one timeline, from before the first backup's first segment to after the last backup's last.
    assert.equal(doc.wal.length, 1);
    const [tl] = doc.wal;
    assert.equal(tl!.timeline, 1);
    assert.ok(tl!.oldestSegment <= byLabel.get(labels.full)!.backup.walStart);
    assert.ok(tl!.newestSegment >= byLabel.get(labels.full2)!.backup.walStop);
    const archived: string[] = [];
    for await (const w of fleet.repo.listWal('knobs')) if (/^[0-9A-F]{24}$/.test(w.name)) archived.push(w.name);
    assert.equal(Number(tl!.segments), archived.length, 'every archived segment counted once');
    assert.equal(tl!.oldestSegment, archived.sort()[0]);
    assert.equal(tl!.newestSegment, archived.at(-1));
    assert.equal(doc.walStoredBytes, tl!.storedBytes);
    assert.equal(
      BigInt(doc.backupStoredBytes),
      doc.backups.reduce((n, b) => n + BigInt(b.backup.storedBytes), 0n),
    );
    // Without a cluster: every cluster, as a list; the table names the chain.
    const all = json<InfoJson[]>(await fleet.cli('info', '--output', 'json'), 'info of every cluster');
    assert.deepEqual(
      all.map((i) => i.cluster),
      ['knobs'],
    );
    const table = await fleet.cli('info', 'knobs');
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`${labels.incr2}\\s+incr\\s+${labels.diff} <- ${labels.full}`));
    assert.match(table.stdout, /zstd:9/);
  });

  it('--max-rate: every byte the backups read and a restore writes went through the bucket, and the restore is exact', async () => {
    const log = await fleet.agent!.log();
    const lines = log
      .split('\n')
      .filter((l) => l.includes('"backup complete"') || l.includes('"restore copy rate-limited"'))
      .map((l) => JSON.parse(l) as { msg: string; label: string; pacedBytes: number; maxRate: number; bytes?: number });
    const doc = await info();
    for (const b of doc.backups) {
      const done = lines.find((l) => l.msg === 'backup complete' && l.label === b.backup.label);
      assert.ok(done, `backup ${b.backup.label} logged`);
      assert.equal(done.maxRate, MAX_RATE);
      // What the backup copied itself (referenced files are not read; a block-incremental file is
      // read whole though only its changed blocks are stored): each of those bytes was paced once.
      const m = await fleet.repo.readManifest('knobs', b.backup.label);
      const read = m.files.filter((f) => f.backup === m.label).reduce((n, f) => n + f.size, 0);
      assert.equal(done.pacedBytes, read, `${b.backup.label} paced`);
    }
    const pg = await restoreAndStart(
      join(fleet.dir, 'restore-full2'),
      '--backup',
      labels.full2,
      '--target',
      'immediate',
    );
    assert.deepEqual(await items(pg), rows.full2);
    const restored = (await fleet.agent!.log())
      .split('\n')
      .filter((l) => l.includes('"restore copy rate-limited"'))
      .map((l) => JSON.parse(l) as { label: string; pacedBytes: number; fetchedBytes: number; maxRate: number })
      .find((l) => l.label === labels.full2);
    assert.ok(restored, 'the restore logged its rate-limited copy');
    assert.equal(restored.maxRate, MAX_RATE);
    assert.equal(restored.fetchedBytes, Number(doc.backups.at(-1)!.backup.sizeBytes), 'every file restored');
    assert.equal(restored.pacedBytes, restored.fetchedBytes, 'every restored byte paced once');
  });

  it('restore-points lists the names pg_create_restore_point made, with their LSN and time', async () => {
    const list = json<RestorePointsJson>(
      await fleet.cli('restore-points', 'knobs', '--output', 'json'),
      'restore-points',
    );
    const found = list.points ?? [];
    assert.deepEqual(
      found.map((p) => p.name),
      points.map((p) => p.name),
    );
    for (const p of points) {
      const f = found.find((x) => x.name === p.name)!;
      // pg_create_restore_point returns the end of its record; the listed LSN is the record's start, just before.
      const gap = lsnValue(p.lsn) - lsnValue(f.lsn);
      assert.ok(gap > 0n && gap < 200n, `${p.name}: listed at ${f.lsn}, created ending at ${p.lsn}`);
      assert.equal(f.timeline, 1);
      const t = Date.parse(f.time!);
      assert.ok(t >= p.before - 1000 && t <= p.after + 1000, `${p.name} at ${f.time}`);
    }
    assert.ok(list.segmentsRead > 0);
    const table = await fleet.cli('restore-points', 'knobs');
    assert.match(table.stdout, /before incr2 "quoted"/);
    // --since: from the newest backup started before then, so the first point (before the incr) is not read.
    const since = json<RestorePointsJson>(
      await fleet.cli(
        'restore-points',
        'knobs',
        '--since',
        new Date(points[1]!.after).toISOString(),
        '--output',
        'json',
      ),
      'restore-points --since',
    );
    assert.ok(!(since.points ?? []).some((p) => p.name === 'after_incr_rows'));
    assert.ok((since.points ?? []).some((p) => p.name === 'nightly_check'));
    const bad = await fleet.cli('restore-points', 'knobs', '--since', 'yesterday');
    assert.equal(bad.code, ErrorCodes.TargetInvalid.exit);
    assert.match(bad.stderr, /--since 'yesterday' is not a time/);
  });

  it('a restore to a restore point that does not exist names the ones that do', async () => {
    const r = await fleet.cli(
      'restore',
      'knobs',
      '--to',
      join(fleet.dir, 'restore-nosuch'),
      '--target-name',
      'no_such_point',
      '--wait',
    );
    assert.equal(r.code, ErrorCodes.RestorePointNotFound.exit, r.stderr);
    assert.match(r.stderr, new RegExp(ErrorCodes.RestorePointNotFound.code));
    assert.match(r.stderr, /'no_such_point' is not in the archived WAL/);
    for (const p of points) assert.ok(r.stderr.includes(`'${p.name}'`), `${p.name} named in: ${r.stderr}`);
    assert.match(r.stderr, /pgfleet restore-points knobs/);
  });

  it('backup delete refuses a backup others depend on, and pinned ones, deleting nothing', async () => {
    const before = await catalogLabels();
    let r = await fleet.cli('backup', 'delete', 'knobs', labels.diff);
    assert.equal(r.code, ErrorCodes.BackupHasDependents.exit);
    assertRefused(r, new RegExp(`${ErrorCodes.BackupHasDependents.code}.*${labels.incr2}`));
    assert.equal(await fleet.cli('pin', 'knobs', labels.incr2).then((x) => x.code), 0);
    r = await fleet.cli('backup', 'delete', 'knobs', labels.diff, '--with-dependents');
    assert.equal(r.code, ErrorCodes.BackupPinned.exit);
    assertRefused(r, new RegExp(`${ErrorCodes.BackupPinned.code}.*${labels.incr2}.*is pinned`));
    assert.equal(await fleet.cli('pin', 'knobs', labels.incr2, '--unpin').then((x) => x.code), 0);
    r = await fleet.cli('backup', 'delete', 'knobs', '20990101-000000F');
    assertRefused(r, new RegExp(ErrorCodes.UnknownBackup.code));
    assert.deepEqual(await catalogLabels(), before);
    assert.deepEqual(
      (await info()).backups.map((b) => b.backup.label),
      before,
      'the repository still holds every backup',
    );
  });

  it('backup delete --with-dependents removes the backup and its dependents, newest first, from the repository and the catalog', async () => {
    const r = await fleet.cli('backup', 'delete', 'knobs', labels.diff, '--with-dependents', '--output', 'json');
    const job = json<{
      kind: string;
      expire: { deletedLabels: string[]; backupFilesDeleted: number; walFilesDeleted?: number };
    }>(r, 'backup delete --with-dependents');
    assert.equal(job.kind, 'expire');
    assert.deepEqual(job.expire.deletedLabels, [labels.incr2, labels.diff], 'newest first');
    assert.ok(job.expire.backupFilesDeleted > 0);
    assert.equal(job.expire.walFilesDeleted ?? 0, 0, 'no WAL deleted');
    const remaining = [labels.full, labels.incr, labels.full2];
    assert.deepEqual(await catalogLabels(), remaining);
    const doc = await info();
    assert.deepEqual(
      doc.backups.map((b) => b.backup.label),
      remaining,
    );
    assert.deepEqual([...(doc.backups[0]!.dependents ?? [])], [labels.incr]);
    for (const gone of [labels.diff, labels.incr2])
      assert.equal(await fleet.repo.labelInUse('knobs', gone), false, `nothing of ${gone} is left`);
    // The usual event: retention.expired naming what went.
    const events = await fleet.cli('events', '--cluster', 'knobs', '--output', 'json', '--limit', '500');
    const expired = events.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { retentionExpired?: { expiredBackupLabels: string[] } })
      .filter((e) => e.retentionExpired);
    assert.deepEqual(expired.at(-1)?.retentionExpired?.expiredBackupLabels, [labels.incr2, labels.diff]);
  });

  it('what remains still restores exactly: the incr whose sibling chain went, and PITR to latest', async () => {
    const pg = await restoreAndStart(join(fleet.dir, 'restore-incr'), '--backup', labels.incr, '--target', 'immediate');
    assert.deepEqual(await items(pg), rows.incr);
    const expected = await items(fleet.pg);
    const latest = await restoreAndStart(join(fleet.dir, 'restore-latest'), '--target', 'latest');
    assert.deepEqual(await items(latest), expected);
  });
});
