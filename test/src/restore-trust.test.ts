/**
 * A restore trusts nothing it reads (issue 13, part 2). Tampered manifests of each kind the
 * issue names — a link out of the data directory with a file stored "through" it, entries with
 * `..`, a link named backup_label, an absolute path — never make a restore, a delta restore or a
 * drill write outside its target: the job fails with the code, and a canary directory outside
 * stays empty. They are signed with the cluster's own key here (an attacker holding it: a
 * compromised agent of the same cluster), so the path rules are what stops them. A manifest whose
 * MAC does not match (an edited field, a genuine manifest of another backup copied over) is
 * refused by restore and verify. A genuine backup still restores exactly.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCodes } from '@pgfleet/core';
import type { BackupManifest } from '@pgfleet/storage';
import { chownToPostgres, startPostgres, type PgInstance } from '@pgfleet/testkit';
import { startFleet, type Fleet } from './harness.js';

const CLUSTER = 'trust';
type JobJson = { backup?: { label: string } };

describe('restore trusts nothing it reads', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  let canary: string;
  let scratch: string;
  const labels: string[] = [];
  const started: PgInstance[] = [];
  let genuine: BackupManifest;
  let genuineText: string;
  const manifestPath = (label: string) => join(fleet.repoDir, fleet.repo.backupManifestKey(CLUSTER, label));
  /** `pgfleet restore` of the first backup to its consistent point into `to` (extra flags such as --delta before). */
  const restoreFirst = (to: string, ...extra: string[]) =>
    fleet.cli('restore', CLUSTER, '--to', to, ...extra, '--backup', labels[0]!, '--target', 'immediate', '--wait');

  async function backup(): Promise<string> {
    const r = await fleet.cli('backup', CLUSTER, '--type', 'full', '--wait', '--output', 'json');
    assert.equal(r.code, 0, `backup failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const label = (JSON.parse(r.stdout) as JobJson).backup!.label;
    labels.push(label);
    return label;
  }

  async function canaryEmpty(): Promise<void> {
    assert.deepEqual(await readdir(canary), [], 'nothing written outside the target');
  }

  before(async () => {
    fleet = await startFleet({ cluster: CLUSTER, startAgent: false });
    scratch = join(fleet.dir, 'scratch');
    await mkdir(scratch, { mode: 0o700 });
    await chownToPostgres(scratch);
    await fleet.startAgent(['--scratch-dir', scratch]);
    canary = join(fleet.dir, 'canary');
    await mkdir(canary, { mode: 0o777 });
    await fleet.pg.query('CREATE TABLE ledger (id int PRIMARY KEY, note text NOT NULL)');
    await fleet.pg.query(`INSERT INTO ledger SELECT g, 'row ' || g FROM generate_series(1, 2000) g`);
    await backup();
    await fleet.pg.query(`INSERT INTO ledger SELECT g, 'more ' || g FROM generate_series(2001, 2500) g`);
    await backup();
    await fleet.switchAndArchive();
    genuine = await fleet.repo.readManifest(CLUSTER, labels[0]!);
    genuineText = await readFile(manifestPath(labels[0]!), 'utf8');
  });

  after(async () => {
    for (const p of started) await p.stop();
    await fleet?.stop();
  });

  /** A stored file entry of the genuine backup under another path (real bytes the restore can fetch). */
  const storedAt = (path: string) => ({ ...genuine.files.find((f) => f.path === 'PG_VERSION')!, path });

  const tampered: [string, () => BackupManifest][] = [
    [
      'a link out of the data directory and a file stored through it',
      () => ({
        ...genuine,
        links: [...genuine.links, { path: 'base/evil', target: canary }],
        files: [...genuine.files, storedAt('base/evil/payload')],
      }),
    ],
    [
      'a directory entry with ..',
      () => ({ ...genuine, directories: [...genuine.directories, { path: 'base/../../canary/dir', mode: 0o700 }] }),
    ],
    [
      'a link entry with ..',
      () => ({ ...genuine, links: [...genuine.links, { path: 'pg_tblspc/../../canary/l', target: canary }] }),
    ],
    [
      'a link named backup_label',
      () => ({ ...genuine, links: [...genuine.links, { path: 'backup_label', target: join(canary, 'label') }] }),
    ],
    ['an absolute path', () => ({ ...genuine, files: [...genuine.files, storedAt(join(canary, 'abs'))] })],
  ];

  async function withManifest<T>(m: BackupManifest, run: () => Promise<T>): Promise<T> {
    await fleet.repo.writeManifest(m); // signed with the cluster's key: the path rules must stop it
    // Written as root: the object must stay the agent's (posix objects are 0600 since part 3).
    await chownToPostgres(manifestPath(m.label));
    try {
      return await run();
    } finally {
      await writeFile(manifestPath(labels[0]!), genuineText);
    }
  }

  for (const [what, make] of tampered) {
    it(`${what}: restore, delta restore and drill fail with the path code and write nothing outside`, async () => {
      const fresh = join(fleet.dir, `restore-${labels.length}-${Math.random().toString(36).slice(2, 8)}`);
      const delta = `${fresh}-delta`;
      const ok = await restoreFirst(delta);
      assert.equal(ok.code, 0, `genuine restore failed:\n${ok.stdout}\n${ok.stderr}`);
      await withManifest(make(), async () => {
        const runs = [
          await restoreFirst(fresh),
          await restoreFirst(delta, '--delta'),
          await fleet.cli('drill', CLUSTER, '--backup', labels[0]!, '--target', 'immediate', '--wait'),
        ];
        for (const [i, r] of runs.entries()) {
          assert.notEqual(r.code, 0, `run ${i} succeeded:\n${r.stdout}`);
          assert.ok(
            (r.stdout + r.stderr).includes(ErrorCodes.ManifestPathRejected.code),
            `run ${i} fails with the path code:\n${r.stdout}\n${r.stderr}`,
          );
        }
      });
      await canaryEmpty();
      assert.deepEqual(await readdir(fresh).catch(() => []), [], 'the refused restore wrote nothing');
    });
  }

  it('a tablespace link pointing outside restores its files into the directory the restore chose, never through the link', async () => {
    const dir = join(fleet.dir, 'restore-tablespace-link');
    // The payload's bytes stored under its own key (an attacker with the repository can do that).
    const src = storedAt('pg_tblspc/99999/PG_X/payload');
    const bytes = await readFile(
      join(fleet.repoDir, fleet.repo.backupFileKey(CLUSTER, src.backup, 'PG_VERSION', src.codec)),
    );
    await fleet.repo.driver.put(fleet.repo.backupFileKey(CLUSTER, src.backup, src.path, src.codec), bytes);
    // Written as root: the new directories and object must stay the agent's (0700/0600 since part 3).
    await chownToPostgres(join(fleet.repoDir, CLUSTER, 'backup', src.backup, 'pg_data', 'pg_tblspc'), {
      recursive: true,
    });
    const m: BackupManifest = {
      ...genuine,
      links: [...genuine.links, { path: 'pg_tblspc/99999', target: canary }],
      directories: [...genuine.directories, { path: 'pg_tblspc/99999/PG_X', mode: 0o700 }],
      files: [...genuine.files, storedAt('pg_tblspc/99999/PG_X/payload')],
    };
    await withManifest(m, async () => {
      const r = await restoreFirst(dir);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    });
    await canaryEmpty();
    assert.deepEqual(await readdir(join(`${dir}.tablespaces`, '99999', 'PG_X')), ['payload']);
  });

  it('a manifest whose MAC does not match (an edited field, another backup copied over) is refused by restore and verify', async () => {
    const edited = genuineText.replace(genuine.stopLsn, 'FF/FFFFFFFF');
    assert.notEqual(edited, genuineText);
    const otherText = await readFile(manifestPath(labels[1]!), 'utf8');
    for (const text of [edited, otherText]) {
      await writeFile(manifestPath(labels[0]!), text);
      try {
        const dir = join(fleet.dir, `restore-mac-${Math.random().toString(36).slice(2, 8)}`);
        const r = await restoreFirst(dir);
        assert.notEqual(r.code, 0);
        assert.ok((r.stdout + r.stderr).includes(ErrorCodes.ManifestUnauthenticated.code), `${r.stdout}\n${r.stderr}`);
        assert.ok((r.stdout + r.stderr).includes(labels[0]!), 'the error names the backup');
        assert.deepEqual(await readdir(dir).catch(() => []), []);
        const v = await fleet.cli('verify', CLUSTER, '--wait', '--output', 'json');
        assert.notEqual(v.code, 0);
        assert.match(v.stdout, /manifest-corrupt/);
        assert.match(v.stdout, /fails its authentication check/);
      } finally {
        await writeFile(manifestPath(labels[0]!), genuineText);
      }
    }
  });

  it('a genuine backup still restores exactly', async () => {
    const dir = join(fleet.dir, 'restore-latest');
    const r = await fleet.cli('restore', CLUSTER, '--to', dir, '--target', 'latest', '--wait');
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const restored = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
    started.push(restored);
    const rows = 'SELECT id, note FROM ledger ORDER BY id';
    assert.deepEqual(await restored.query(rows), await fleet.pg.query(rows));
  });
});
