/**
 * Backup summaries (backup-summary.ts) and listings by the key layout: listing a cluster's
 * backups reads one small object per backup and never a backup's files; a summary is trusted for
 * choosing only; repositories without summaries keep working and are never written to.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import type { KeyLevel, ObjectInfo, PutOptions, RepositoryDriver } from './driver.js';
import type { BackupManifest, ManifestFile } from './manifest.js';
import { sealManifest, secretManifestKeys } from './manifest-auth.js';
import { summarizeManifest, summaryMacName } from './backup-summary.js';
import { PosixDriver } from './posix-driver.js';
import { Repository } from './repository.js';
import { sha } from './driver-suite.js';
import { testManifest } from './test-manifest.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
const KEYS = secretManifestKeys(Buffer.alloc(32, 3));
const C = 'shop';

/** Every call the repository makes at the driver interface, by method, with its key or prefix. */
class CountingDriver implements RepositoryDriver {
  readonly calls: { op: string; key: string }[] = [];
  constructor(private readonly d: RepositoryDriver) {}
  get kind() {
    return this.d.kind;
  }
  get location() {
    return this.d.location;
  }
  private note(op: string, key: string) {
    this.calls.push({ op, key });
  }
  ops(op: string): string[] {
    return this.calls.filter((c) => c.op === op).map((c) => c.key);
  }
  reset() {
    this.calls.length = 0;
  }
  put(key: string, body: Readable | Buffer, options?: PutOptions) {
    this.note('put', key);
    return this.d.put(key, body, options);
  }
  get(key: string) {
    this.note('get', key);
    return this.d.get(key);
  }
  getRange(key: string, start: number, end: number) {
    this.note('getRange', key);
    return this.d.getRange(key, start, end);
  }
  stat(key: string) {
    this.note('stat', key);
    return this.d.stat(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    this.note('list', prefix);
    return this.d.list(prefix);
  }
  listLevel(prefix: string): Promise<KeyLevel> {
    this.note('listLevel', prefix);
    return this.d.listLevel(prefix);
  }
  delete(keys: readonly string[]) {
    this.note('delete', keys.join(','));
    return this.d.delete(keys);
  }
  deletePrefix(prefix: string) {
    this.note('deletePrefix', prefix);
    return this.d.deletePrefix(prefix);
  }
}

async function setup(): Promise<{ root: string; driver: CountingDriver; repo: Repository }> {
  const root = await mkdtemp(join(tmpdir(), 'pgfleet-summary-'));
  dirs.push(root);
  const driver = new CountingDriver(new PosixDriver(root));
  return { root, driver, repo: new Repository(driver, KEYS) };
}

/** Stores a backup of `files` tiny files (their objects and a manifest) the way a backup does. */
async function storeBackup(
  repo: Repository,
  label: string,
  stop: number,
  over: Partial<BackupManifest> = {},
  files = 3,
): Promise<BackupManifest> {
  const entries: ManifestFile[] = [];
  for (let n = 0; n < files; n++) {
    const content = Buffer.from(`${label} file ${n}`);
    const path = `base/1/${1000 + n}`;
    const stored = await repo.writeObject(repo.backupFileKey(C, label, path, 'none'), Readable.from([content]), 'none');
    entries.push({
      path,
      size: stored.size,
      mtimeMs: 0,
      mode: 0o600,
      sha256: stored.sha256,
      storedSize: stored.storedSize,
      storedSha256: stored.storedSha256,
      codec: 'none',
      backup: label,
    });
  }
  const m = testManifest({
    label,
    cluster: C,
    startLsn: `0/${(stop * 2).toString(16).toUpperCase()}000028`,
    stopLsn: `0/${(stop * 2).toString(16).toUpperCase()}000100`,
    startTime: new Date(Date.UTC(2026, 0, 1) + stop * 60_000).toISOString(),
    stopTime: new Date(Date.UTC(2026, 0, 1) + stop * 60_000 + 1000).toISOString(),
    directories: [{ path: 'base', mode: 0o700 }],
    files: entries,
    sizeBytes: 1,
    storedBytes: 1,
    ...over,
  });
  await repo.writeManifest(m);
  return m;
}

test('a backup stores a summary beside its manifest, and listBackups returns it without reading a manifest or listing a file', async () => {
  const { driver, repo } = await setup();
  const full = await storeBackup(repo, 'L1F', 1);
  await storeBackup(repo, 'L3I', 3, { type: 'incr', priorLabel: 'L2D' });
  // A diff whose files are partly the full's: it reads from the full.
  const diff = await storeBackup(repo, 'L2D', 2, { type: 'diff', priorLabel: 'L1F' });
  diff.files.push({ ...full.files[0]!, path: 'base/1/999', backup: 'L1F' });
  await repo.writeManifest(diff);
  // An unfinished backup: files and a summary but no manifest; it is not listed.
  await storeBackup(repo, 'L4F', 4);
  await repo.deleteBackupManifest(C, 'L4F');

  driver.reset();
  const listed = await repo.listBackups(C);
  assert.deepEqual(
    listed.map((s) => [s.label, s.type, s.fileCount, s.readsFrom]),
    [
      ['L1F', 'full', 3, []],
      ['L2D', 'diff', 4, ['L1F']],
      ['L3I', 'incr', 3, []],
    ],
  );
  assert.equal(listed[1]!.priorLabel, 'L1F');
  assert.deepEqual(driver.ops('list'), [], 'no recursive listing');
  assert.deepEqual(driver.ops('listLevel').sort(), [
    'shop/backup/',
    'shop/backup/L1F/',
    'shop/backup/L2D/',
    'shop/backup/L3I/',
    'shop/backup/L4F/',
  ]);
  assert.deepEqual(
    driver.ops('get').sort(),
    ['L1F', 'L2D', 'L3I'].map((l) => `shop/backup/${l}/backup.summary`),
    'one small read per complete backup, no manifest',
  );
  assert.deepEqual(
    driver.calls.filter((c) => c.key.includes('/pg_data/')),
    [],
    'no per-file key touched',
  );
  // The chosen backup's manifest is read in full, and checked against its summary.
  const m = await repo.manifestFor(listed[1]!);
  assert.equal(m.files.length, 4);
  assert.deepEqual(summarizeManifest(m), listed[1]);
});

test('a repository written before summaries is listed from its manifests, read once each, and nothing is written', async () => {
  const { root, driver, repo } = await setup();
  await storeBackup(repo, 'OLD1', 1);
  await storeBackup(repo, 'OLD2', 2);
  for (const l of ['OLD1', 'OLD2']) await rm(join(root, C, 'backup', l, 'backup.summary'));
  driver.reset();
  const listed = await repo.listBackups(C);
  assert.deepEqual(
    listed.map((s) => [s.label, s.fileCount]),
    [
      ['OLD1', 3],
      ['OLD2', 3],
    ],
  );
  assert.deepEqual(driver.ops('get').sort(), ['shop/backup/OLD1/backup.manifest', 'shop/backup/OLD2/backup.manifest']);
  assert.deepEqual(driver.ops('put'), [], 'a read-only repository stays untouched');
  assert.equal(await repo.hasBackups(C), true);
});

test('a tampered or copied summary is not trusted: the backup is listed from its verified manifest', async () => {
  const { root, repo } = await setup();
  await storeBackup(repo, 'T1', 1);
  await storeBackup(repo, 'T2', 2);
  const summary = (l: string) => join(root, C, 'backup', l, 'backup.summary');
  // Edited: T1 claims to be the newest backup.
  const text = await readFile(summary('T1'), 'utf8');
  await writeFile(summary('T1'), text.replace(/"stopTime": "[^"]+"/, '"stopTime": "2030-01-01T00:00:00.000Z"'));
  // Copied: T2's directory holds T1's (original, genuinely signed) summary.
  await writeFile(summary('T2'), text);
  const listed = await repo.listBackups(C);
  assert.deepEqual(
    listed.map((s) => [s.label, s.stopTime]),
    [
      ['T1', '2026-01-01T00:01:01.000Z'],
      ['T2', '2026-01-01T00:02:01.000Z'],
    ],
  );
  // A summary carrying a valid MAC but disagreeing with its manifest (a key holder's bug or
  // forgery) may steer a choice, never a restore: the manifest read refuses it.
  const m = await repo.readManifest(C, 'T1');
  const forged = { ...summarizeManifest(m), stopLsn: '0/FF000000', stopTime: '2030-01-01T00:00:00.000Z' };
  await writeFile(
    summary('T1'),
    sealManifest(JSON.stringify(forged, null, 1), KEYS.keyFor(C)!, C, summaryMacName('T1')),
  );
  const chosen = (await repo.listBackups(C)).at(-1)!;
  assert.equal(chosen.label, 'T1');
  await assert.rejects(
    repo.manifestFor(chosen),
    (e: unknown) => PgfleetError.is(e, 'BackupSummaryMismatch') && e.message.includes('stopLsn'),
  );
});

test('leases and unfinished backups are found by directory levels too', async () => {
  const { driver, repo } = await setup();
  await storeBackup(repo, 'D1', 1);
  await storeBackup(repo, 'U1', 2);
  await repo.deleteBackupManifest(C, 'U1');
  await repo.writeBackupLease({
    format: 1,
    cluster: C,
    label: 'U1',
    chain: [],
    host: 'h',
    pid: 1,
    startedAt: new Date().toISOString(),
    refreshedAt: new Date().toISOString(),
    staleAfterMs: 60_000,
  });
  driver.reset();
  assert.deepEqual(
    (await repo.listUnfinishedBackups(C)).map((u) => [u.label, u.leased]),
    [['U1', true]],
  );
  const leases = await repo.listBackupLeases(C, Date.now());
  assert.deepEqual(
    leases.map((l) => l.label),
    ['U1'],
  );
  assert.deepEqual(driver.ops('list'), [], 'no recursive listing');
});

test('listWal with a range lists only the WAL directories of the range', async () => {
  const { driver, repo } = await setup();
  const names: string[] = [];
  for (const tli of [1, 2])
    for (const log of [0, 1, 2])
      for (const seg of [0x10, 0x20]) {
        const name =
          `${tli.toString(16).padStart(8, '0')}${log.toString(16).padStart(8, '0')}${seg.toString(16).padStart(8, '0')}`.toUpperCase();
        const body = Buffer.from(name);
        await repo.pushWal(C, name, sha(body), () => Readable.from([body]), 'none');
        names.push(name);
      }
  const listed = async (range?: Parameters<Repository['listWal']>[1]) => {
    const out: string[] = [];
    for await (const w of repo.listWal(C, range)) if (w.authentic) out.push(w.name);
    return out;
  };
  assert.deepEqual(await listed(), names.sort());
  driver.reset();
  assert.deepEqual(await listed({ fromPosition: '0000000100000020' }), [
    '000000010000000100000020',
    '000000010000000200000010',
    '000000010000000200000020',
    '000000020000000100000020',
    '000000020000000200000010',
    '000000020000000200000020',
  ]);
  assert.deepEqual(driver.ops('list'), [
    'shop/wal/0000000100000001/',
    'shop/wal/0000000100000002/',
    'shop/wal/0000000200000001/',
    'shop/wal/0000000200000002/',
  ]);
  driver.reset();
  assert.deepEqual(await listed({ timeline: 2, fromPosition: '0000000200000000' }), [
    '000000020000000200000010',
    '000000020000000200000020',
  ]);
  assert.deepEqual(driver.ops('list'), ['shop/wal/0000000200000002/']);
  // One segment: one listing of its directory, by the segment's name.
  driver.reset();
  assert.equal((await repo.authenticWal(C, '000000020000000100000010'))?.name, '000000020000000100000010');
  assert.deepEqual(driver.calls, [{ op: 'list', key: 'shop/wal/0000000200000001/000000020000000100000010-' }]);
  driver.reset();
  assert.deepEqual(await listed({ beforePosition: '0000000100000010' }), [
    '000000010000000000000010',
    '000000010000000000000020',
    '000000020000000000000010',
    '000000020000000000000020',
  ]);
  assert.deepEqual(driver.ops('list'), [
    'shop/wal/0000000100000000/',
    'shop/wal/0000000100000001/',
    'shop/wal/0000000200000000/',
    'shop/wal/0000000200000001/',
  ]);
});
