// catalog rebuild against a real posix repository and a real SQLite catalog: what the manifests
// say ends up in the catalog, a second run changes nothing, rows whose manifest is gone go (not
// with --dry-run), and what is not this repository's business is left alone.
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { openCatalog, type CatalogStore } from '@pgfleet/catalog';
import { PosixDriver, Repository, secretManifestKeys, type BackupManifest } from '@pgfleet/storage';
import { backupRecordFromManifest } from '../jobs/backup.js';
import { describeRebuild, rebuildCatalog } from './rebuild.js';
import { catalogCommand } from './command.js';

const SYSID = '7300000000000000001';
const NOW = Date.parse('2026-03-10T12:00:00Z');

function manifest(
  cluster: string,
  label: string,
  stopIso: string,
  extra: Partial<BackupManifest> = {},
): BackupManifest {
  const stop = Date.parse(stopIso);
  return {
    format: 1,
    label,
    cluster,
    type: 'full',
    systemIdentifier: SYSID,
    pgVersionNum: 150010,
    walSegmentSize: 16 * 1024 * 1024,
    timeline: 1,
    startLsn: '0/2000028',
    stopLsn: '0/2000138',
    startTime: new Date(stop - 5000).toISOString(),
    stopTime: new Date(stop).toISOString(),
    walStart: '000000010000000000000002',
    walStop: '000000010000000000000002',
    backupLabel: 'START WAL LOCATION: 0/2000028\n',
    directories: [{ path: 'base', mode: 0o700 }],
    links: [],
    files: [
      {
        path: 'PG_VERSION',
        size: 3,
        mtimeMs: stop,
        mode: 0o600,
        sha256: 'a'.repeat(64),
        storedSize: 12,
        storedSha256: 'b'.repeat(64),
        codec: 'zstd',
        backup: label,
      },
    ],
    sizeBytes: 3,
    storedBytes: 12,
    agentVersion: '0.1.0',
    ...extra,
  };
}

const SECRET = Buffer.alloc(32, 0x5a);
let dir: string;
let repo: Repository;
let store: CatalogStore;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'pgfleet-rebuild-'));
  // The controller's secret beside its SQLite catalog (the default place), as the command finds it.
  writeFileSync(join(dir, 'manifest.secret'), `${SECRET.toString('hex')}\n`, { mode: 0o600 });
  repo = new Repository(new PosixDriver(join(dir, 'repo')), secretManifestKeys(SECRET));
  await repo.ensureClusterInfo('main', {
    systemIdentifier: SYSID,
    pgVersionNum: 150010,
    walSegmentSize: 16 * 1024 * 1024,
  });
  await repo.writeManifest(manifest('main', '20260301-010000F', '2026-03-01T01:00:05Z'));
  await repo.writeManifest(
    manifest('main', '20260302-010000I', '2026-03-02T01:00:05Z', {
      type: 'incr',
      priorLabel: '20260301-010000F',
      stopLsn: '0/4000100',
    }),
  );
  // A cluster without cluster.json: its identity comes from the manifest.
  await repo.writeManifest(
    manifest('other', '20260303-010000F', '2026-03-03T01:00:05Z', { systemIdentifier: '7300000000000000002' }),
  );
  store = await openCatalog(join(dir, 'catalog.db'));
});

after(async () => {
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('catalog rebuild', () => {
  test('a dry run reports and changes nothing', async () => {
    const r = await rebuildCatalog(store, repo, { now: NOW, dryRun: true });
    assert.deepEqual(
      r.clusters.map((c) => [c.cluster, c.created, c.added.length]),
      [
        ['main', true, 2],
        ['other', true, 1],
      ],
    );
    assert.deepEqual(await store.listClusters(), []);
  });

  test('unknown clusters are created from the repository; every manifest becomes its catalog row', async () => {
    const r = await rebuildCatalog(store, repo, { now: NOW });
    assert.deepEqual(
      r.clusters.map((c) => [c.cluster, c.created, c.added, c.removed]),
      [
        ['main', true, ['20260301-010000F', '20260302-010000I'], []],
        ['other', true, ['20260303-010000F'], []],
      ],
    );
    assert.deepEqual(
      (await store.listClusters()).map((c) => [c.name, c.systemIdentifier, c.pgVersion]),
      [
        ['main', SYSID, 150010],
        ['other', '7300000000000000002', 150010],
      ],
    );
    const rows = await store.listBackups('main');
    assert.deepEqual(rows, [
      { ...backupRecordFromManifest(await repo.readManifest('main', '20260301-010000F')), pinned: false },
      { ...backupRecordFromManifest(await repo.readManifest('main', '20260302-010000I')), pinned: false },
    ]);
    assert.deepEqual(
      [rows[1]!.type, rows[1]!.priorLabel, rows[1]!.stopTime, rows[1]!.fileCount],
      ['incr', '20260301-010000F', Date.parse('2026-03-02T01:00:05Z'), 1],
    );
  });

  test('a second run changes nothing', async () => {
    const r = await rebuildCatalog(store, repo, { now: NOW });
    assert.deepEqual(
      r.clusters.map((c) => [c.cluster, c.created, c.added.length, c.updated.length, c.removed.length, c.unchanged]),
      [
        ['main', false, 0, 0, 0, 2],
        ['other', false, 0, 0, 0, 1],
      ],
    );
  });

  test('manifests are read as streams, their heads kept, never whole (a 100k-file manifest is tens of MB)', async () => {
    const whole = repo.readManifest;
    repo.readManifest = () => Promise.reject(new Error('rebuild read a manifest whole'));
    try {
      const r = await rebuildCatalog(store, repo, { now: NOW, dryRun: true });
      assert.deepEqual(
        r.clusters.map((c) => [c.cluster, c.skipped, c.unchanged]),
        [
          ['main', [], 2],
          ['other', [], 1],
        ],
      );
    } finally {
      repo.readManifest = whole;
    }
  });

  test('a row that disagrees with its manifest is corrected (its pin kept); a row without manifest is removed', async () => {
    await store.setBackupPinned('main', '20260301-010000F', true);
    await store.deleteBackups('main', ['20260301-010000F']);
    await store.insertBackup({
      ...backupRecordFromManifest(await repo.readManifest('main', '20260301-010000F')),
      stopLsn: '0/9999999',
      pinned: true,
      jobId: 'job-1',
    });
    await store.insertBackup(backupRecordFromManifest(manifest('main', '20260228-010000F', '2026-02-28T01:00:05Z')));
    const dry = await rebuildCatalog(store, repo, { now: NOW, cluster: 'main', dryRun: true });
    assert.deepEqual(
      [dry.clusters[0]!.updated, dry.clusters[0]!.removed],
      [['20260301-010000F'], ['20260228-010000F']],
    );
    assert.equal((await store.listBackups('main')).length, 3);

    const r = await rebuildCatalog(store, repo, { now: NOW, cluster: 'main' });
    assert.deepEqual(
      r.clusters.map((c) => c.cluster),
      ['main'],
    );
    assert.deepEqual([r.clusters[0]!.updated, r.clusters[0]!.removed], [['20260301-010000F'], ['20260228-010000F']]);
    const fixed = await store.getBackup('main', '20260301-010000F');
    assert.deepEqual([fixed?.stopLsn, fixed?.pinned, fixed?.jobId], ['0/2000138', true, 'job-1']);
    assert.deepEqual(
      (await store.listBackups('main')).map((b) => b.label),
      ['20260301-010000F', '20260302-010000I'],
    );
    assert.match(
      describeRebuild(r),
      /main: 0 added, 1 updated, 1 removed, 1 unchanged\n {4}updated: 20260301-010000F\n {4}removed \(no manifest in the repository\): 20260228-010000F/,
    );
  });

  test('a cluster the catalog holds under another system identifier, and clusters not in the repository, are left alone', async () => {
    await store.upsertCluster({ name: 'elsewhere', systemIdentifier: '1', pgVersion: 150010 }, NOW);
    await store.insertBackup(
      backupRecordFromManifest(
        manifest('elsewhere', '20260301-010000F', '2026-03-01T01:00:05Z', { systemIdentifier: '1' }),
      ),
    );
    await repo.writeManifest(manifest('clash', '20260301-010000F', '2026-03-01T01:00:05Z'));
    await store.upsertCluster({ name: 'clash', systemIdentifier: '42', pgVersion: 150010 }, NOW);
    const r = await rebuildCatalog(store, repo, { now: NOW });
    const clash = r.clusters.find((c) => c.cluster === 'clash')!;
    assert.deepEqual(clash.added, []);
    assert.match(clash.skipped[0]!, /system 42, the repository's is 7300000000000000001/);
    assert.equal(
      r.clusters.some((c) => c.cluster === 'elsewhere'),
      false,
    );
    assert.equal((await store.listBackups('elsewhere')).length, 1);
  });

  test('an unreadable or tampered manifest keeps its row and is reported with its code', async () => {
    const path = join(dir, 'repo', 'main', 'backup', '20260302-010000I', 'backup.manifest');
    const genuine = await readFile(path, 'utf8');
    // A forged stop LSN (what --target latest would pick), the MAC left as it was.
    await writeFile(path, genuine.replace('0/4000100', 'FF/FFFFFFFF'));
    let r = await rebuildCatalog(store, repo, { now: NOW, cluster: 'main' });
    assert.deepEqual(r.clusters[0]!.removed, []);
    assert.ok(
      r.clusters[0]!.skipped[0]!.includes(`backup 20260302-010000I: ${ErrorCodes.ManifestUnauthenticated.code} `),
    );
    assert.equal((await store.getBackup('main', '20260302-010000I'))?.stopLsn, '0/4000100');
    // A genuine manifest of another backup copied over it.
    await writeFile(path, await readFile(join(dir, 'repo', 'main', 'backup', '20260301-010000F', 'backup.manifest')));
    r = await rebuildCatalog(store, repo, { now: NOW, cluster: 'main' });
    assert.ok(r.clusters[0]!.skipped[0]!.includes(ErrorCodes.ManifestUnauthenticated.code));
    await writeFile(path, '{ not json');
    r = await rebuildCatalog(store, repo, { now: NOW, cluster: 'main' });
    assert.deepEqual(r.clusters[0]!.removed, []);
    assert.ok(r.clusters[0]!.skipped[0]!.includes(ErrorCodes.ManifestUnsigned.code));
    assert.equal((await store.listBackups('main')).length, 2);
    await repo.writeManifest(
      manifest('main', '20260302-010000I', '2026-03-02T01:00:05Z', {
        type: 'incr',
        priorLabel: '20260301-010000F',
        stopLsn: '0/4000100',
      }),
    );
  });

  test('a directory that is not a repository changes nothing', async () => {
    const empty = new Repository(new PosixDriver(join(dir, 'nothing-here')), secretManifestKeys(SECRET));
    await assert.rejects(
      rebuildCatalog(store, empty, { now: NOW }),
      (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && /is not a pgfleet repository/.test(err.message),
    );
  });

  test('the command: --repo-path, --output json', async () => {
    await rm(join(dir, 'repo', 'clash'), { recursive: true });
    let printed = '';
    const io = { out: (t: string) => (printed += t), err: () => undefined, now: () => NOW };
    const code = await catalogCommand(
      'rebuild',
      { catalog: join(dir, 'catalog.db'), 'repo-path': join(dir, 'repo'), cluster: 'other', output: 'json' },
      io,
    );
    assert.equal(code, 0);
    const report = JSON.parse(printed) as { clusters: { cluster: string; unchanged: number }[] };
    assert.deepEqual(report.clusters, [
      {
        cluster: 'other',
        created: false,
        added: [],
        updated: [],
        removed: [],
        unchanged: 1,
        dumpsAdded: [],
        dumpsRemoved: [],
        skipped: [],
      },
    ]);
    // An unsigned (older) manifest: refused until `catalog sign-manifests` adopts it, once.
    const key = repo.backupManifestKey('other', '20260303-010000F');
    const signed = await readFile(join(dir, 'repo', key), 'utf8');
    await writeFile(join(dir, 'repo', key), signed.replace(/,\n "mac": "[^"]+"\n\}\n$/, '\n}'));
    await assert.rejects(repo.readManifest('other', '20260303-010000F'), (e: unknown) =>
      PgfleetError.is(e, 'ManifestUnsigned'),
    );
    // WAL archived before WAL names carried a MAC: refused by readers until signed the same way.
    const segment = Buffer.alloc(4096, 3);
    const name = '000000010000000000000002';
    const oldKey = `other/wal/0000000100000000/${name}-${createHash('sha256').update(segment).digest('hex')}`;
    await repo.driver.put(oldKey, segment);
    await assert.rejects(repo.readWalFile('other', name, 1 << 20), (e: unknown) =>
      PgfleetError.is(e, 'WalUnauthenticated'),
    );
    // Unsigned WAL older than the oldest backup's first segment: no manifest vouches for it.
    const before = '000000010000000000000001';
    const beforeKey = `other/wal/0000000100000000/${before}-${createHash('sha256').update(segment).digest('hex')}`;
    await repo.driver.put(beforeKey, segment);
    printed = '';
    assert.equal(
      await catalogCommand(
        'sign-manifests',
        { catalog: join(dir, 'catalog.db'), 'repo-path': join(dir, 'repo'), cluster: 'other', 'dry-run': true },
        io,
      ),
      1,
      'a refused object: exit 1',
    );
    assert.match(printed, /^dry run: would sign 1 manifest\(s\)/);
    assert.match(printed, /\ndry run: would sign 1 archived WAL file\(s\); 0 already signed, 1 refused\n/);
    assert.equal((await repo.findWal('other', name))[0]!.key, oldKey, 'a dry run changes nothing');
    printed = '';
    assert.equal(
      await catalogCommand(
        'sign-manifests',
        { catalog: join(dir, 'catalog.db'), 'repo-path': join(dir, 'repo'), cluster: 'other' },
        io,
      ),
      1,
    );
    assert.match(printed, /^signed 1 manifest\(s\)/);
    assert.match(
      printed,
      /\nsigned 1 archived WAL file\(s\); 0 already signed, 1 refused\n {2}signed WAL other\/000000010000000000000002\n/,
    );
    assert.ok(
      printed.includes(
        `refused WAL ${beforeKey}: ${ErrorCodes.WalUnauthenticated.code} not signed: older than the oldest backup's first WAL segment 000000010000000000000002`,
      ),
      printed,
    );
    assert.deepEqual(
      (await repo.findWal('other', before)).map((w) => [w.key, w.authentic]),
      [[beforeKey, false]],
      'left unsigned',
    );
    assert.deepEqual(await repo.readWalFile('other', name, 1 << 20), segment);
    assert.equal((await repo.findWal('other', name)).length, 1, 'the unsigned object is gone');
    assert.equal((await repo.readManifest('other', '20260303-010000F')).label, '20260303-010000F');
    await assert.rejects(
      catalogCommand('rebuild', { catalog: join(dir, 'catalog.db') }, io),
      (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && /--repo URL or --repo-path/.test(err.message),
    );
  });
});

describe('catalog rebuild: logical dumps', () => {
  let ddir: string;
  let drepo: Repository;
  let dstore: CatalogStore;
  const dumpJson = (label: string, finished: string) =>
    Buffer.from(
      JSON.stringify({
        label,
        databases: [
          { name: 'shop', dir: '16384', size: '1000', storedSize: '300' },
          { name: 'crm', dir: '16385', size: '24', storedSize: '10' },
        ],
        started: new Date(Date.parse(finished) - 4000).toISOString(),
        finished,
        seconds: 4,
        codec: 'none',
      }),
    );

  before(async () => {
    ddir = mkdtempSync(join(tmpdir(), 'pgfleet-rebuild-dumps-'));
    drepo = new Repository(new PosixDriver(join(ddir, 'repo')), secretManifestKeys(SECRET));
    await drepo.ensureClusterInfo('dm', {
      systemIdentifier: SYSID,
      pgVersionNum: 150010,
      walSegmentSize: 16 * 1024 * 1024,
    });
    for (const [label, at] of [
      ['20260301-010000-000L', '2026-03-01T01:00:04Z'],
      ['20260302-010000-000L', '2026-03-02T01:00:04Z'],
    ] as const) {
      await drepo.objects.storeSmall(`${drepo.dumpPrefix('dm', label)}/16384/toc.dat`, Buffer.from('toc'));
      await drepo.objects.storeSmall(`${drepo.dumpPrefix('dm', label)}/dump.json`, dumpJson(label, at));
    }
    // A dump whose dump.json never came (a failed or half-deleted one) is no dump.
    await drepo.objects.storeSmall(`${drepo.dumpPrefix('dm', '20260303-010000-000L')}/16384/toc.dat`, Buffer.from('x'));
    dstore = await openCatalog(join(ddir, 'catalog.db'));
  });

  after(async () => {
    await dstore?.close();
    rmSync(ddir, { recursive: true, force: true });
  });

  test('every dump.json becomes a dump row; a row whose dump.json is gone is marked expired; a second run changes nothing', async () => {
    const first = await rebuildCatalog(dstore, drepo, { now: NOW });
    assert.deepEqual(first.clusters[0]!.dumpsAdded, ['20260301-010000-000L', '20260302-010000-000L']);
    assert.deepEqual(
      (await dstore.listDumps('dm')).map((d) => [d.label, d.stopTime, d.sizeBytes, d.storedBytes]),
      [
        ['20260301-010000-000L', Date.parse('2026-03-01T01:00:04Z'), 1024, 310],
        ['20260302-010000-000L', Date.parse('2026-03-02T01:00:04Z'), 1024, 310],
      ],
    );
    await drepo.deleteDump('dm', '20260301-010000-000L');
    const second = await rebuildCatalog(dstore, drepo, { now: NOW + 1 });
    assert.deepEqual(
      [second.clusters[0]!.dumpsAdded, second.clusters[0]!.dumpsRemoved],
      [[], ['20260301-010000-000L']],
    );
    assert.match(describeRebuild(second), /dumps: 0 added, 1 marked expired/);
    assert.deepEqual(
      (await dstore.listDumps('dm')).map((d) => d.label),
      ['20260302-010000-000L'],
    );
    const third = await rebuildCatalog(dstore, drepo, { now: NOW + 2 });
    assert.deepEqual([third.clusters[0]!.dumpsAdded, third.clusters[0]!.dumpsRemoved], [[], []]);
  });
});
