/**
 * Key rotation from the admin CLI, as a fleet admin does it (docs/security.md, "Rotating the
 * key"): `pgfleet repo rotate-key` without a previous key on the agent, and with a previous key
 * that is not the repository's, fails with its code; then the new key goes into the key file,
 * the old one becomes the previous key, the controller and the agent restart, and backups and a
 * restore work before the rotation (under the previous key); an interrupted rotation is finished
 * by running the command again; afterwards the old key is refused (PGF-8010), a new backup and a
 * restore give exactly the rows, and key.rotated was published.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes } from '@pgfleet/core';
import { rotateClusterKey, type RepositoryDriver } from '@pgfleet/storage';
import { chownToPostgres, startPostgres, type PgInstance } from '@pgfleet/testkit';
import { AGENT_BIN, runNode, startFleet, type Fleet } from './harness.js';

type Row = { id: number; note: string };

describe('pgfleet repo rotate-key (posix)', { timeout: 600_000 }, () => {
  const oldKek = randomBytes(32);
  const newKek = randomBytes(32);
  let fleet: Fleet;
  let keysDir: string;
  let oldKeyFile: string;
  const started: PgInstance[] = [];
  const rows = (pg: PgInstance) => pg.query<Row>('SELECT id, note FROM notes ORDER BY id');

  async function cli(...args: string[]) {
    const r = await fleet.cli(...args);
    return { ...r, all: `${r.stdout}\n${r.stderr}` };
  }

  async function keyFile(path: string, key: Buffer): Promise<string> {
    await writeFile(path, key.toString('base64'), { mode: 0o600 });
    await chownToPostgres(path);
    return path;
  }

  async function restartAgent(extraArgs: string[]): Promise<void> {
    await fleet.agent?.stop();
    await fleet.startAgent(extraArgs);
  }

  async function rotate(): Promise<{ code: number; all: string; result?: Record<string, number | string> }> {
    const r = await cli('repo', 'rotate-key', 'vault', '--wait', '--output', 'json');
    if (r.code !== 0) return r;
    const job = JSON.parse(r.stdout) as { state: string; rotateKey?: Record<string, number | string> };
    assert.equal(job.state, 'succeeded');
    return { ...r, result: job.rotateKey ?? {} };
  }

  async function restoreLatest(name: string): Promise<Row[]> {
    const dir = join(fleet.dir, name);
    const r = await cli('restore', 'vault', '--to', dir, '--target', 'latest', '--wait');
    assert.equal(r.code, 0, `restore failed:\n${r.all}\n${await fleet.logs()}`);
    const pg = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
    started.push(pg);
    try {
      return await rows(pg);
    } finally {
      await pg.stop();
    }
  }

  async function backup(type: string): Promise<void> {
    const r = await cli('backup', 'vault', '--type', type, '--wait');
    assert.equal(r.code, 0, `${type} backup failed:\n${r.all}\n${await fleet.logs()}`);
  }

  before(async () => {
    // The old key as a file of its own, for the controller's and the agent's --previous-encryption-key-file.
    keysDir = await mkdtemp(join(tmpdir(), 'pgfleet-rotate-keys-'));
    await chownToPostgres(keysDir);
    oldKeyFile = await keyFile(join(keysDir, 'old.key'), oldKek);
    fleet = await startFleet({
      cluster: 'vault',
      repository: 'posix',
      encryptionKey: oldKek,
      // The controller reads reported manifests; after its restart below its key file holds the new key.
      controllerArgs: ['--previous-encryption-key-file', oldKeyFile],
    });
    await fleet.pg.query('CREATE TABLE notes (id int PRIMARY KEY, note text NOT NULL)');
    await fleet.pg.query(`INSERT INTO notes SELECT g, 'before ' || g FROM generate_series(1, 1000) g`);
    await backup('full');
  });

  after(async () => {
    for (const p of started) await p.stop().catch(() => undefined);
    await fleet?.stop();
    await rm(keysDir, { recursive: true, force: true });
  });

  it('refuses without a previous key on the agent (PGF-8050)', async () => {
    const r = await rotate();
    assert.notEqual(r.code, 0);
    assert.ok(r.all.includes(ErrorCodes.EncryptionPreviousKeyMissing.code), r.all);
  });

  it("refuses a previous key that is not the repository's (PGF-8051)", async () => {
    const stranger = await keyFile(join(keysDir, 'stranger.key'), randomBytes(32));
    await restartAgent(['--previous-encryption-key-file', stranger]);
    const r = await rotate();
    assert.notEqual(r.code, 0);
    assert.ok(r.all.includes(ErrorCodes.EncryptionPreviousKeyWrong.code), r.all);
  });

  it('works under the previous key after the restart with the new one: backup and exact restore', async () => {
    // The operator's procedure: the new key in the key file, the old one as previous, restart.
    await keyFile(fleet.keyFile!, newKek);
    await fleet.restartController();
    await restartAgent(['--previous-encryption-key-file', oldKeyFile]);
    await fleet.pg.query(`INSERT INTO notes SELECT g, 'window ' || g FROM generate_series(1001, 1500) g`);
    await backup('incr');
    await fleet.switchAndArchive();
    assert.deepEqual(await restoreLatest('restored-window'), await rows(fleet.pg));
  });

  it('an interrupted rotation is finished by running it again; a second run finds everything new', async () => {
    // Interrupted as a killed agent leaves it: the record names the new key, a few key objects are re-wrapped.
    let puts = 0;
    const driver = fleet.repo.driver;
    const cut = new Proxy(driver, {
      get(target, prop, receiver) {
        if (prop === 'put')
          return async (...args: Parameters<RepositoryDriver['put']>) => {
            if (++puts > 3) throw new Error('interrupted');
            await target.put(...args);
            // Written as root: the objects must stay the agent's (posix objects are 0600).
            await chownToPostgres(join(fleet.repoDir, args[0]));
          };
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    await assert.rejects(rotateClusterKey(cut, 'vault', oldKek, newKek), /interrupted/);
    const first = await rotate();
    assert.equal(first.code, 0, `${first.all}\n${await fleet.logs()}`);
    assert.ok(Number(first.result!.rewrapped) > 0, JSON.stringify(first.result));
    assert.ok(Number(first.result!.alreadyNew ?? 0) >= 2, JSON.stringify(first.result));
    const second = await rotate();
    assert.equal(second.code, 0, second.all);
    assert.equal(Number(second.result!.rewrapped ?? 0), 0);
    assert.equal(Number(second.result!.alreadyNew), Number(first.result!.rewrapped) + Number(first.result!.alreadyNew));
    const r = await cli('events', '--cluster', 'vault', '--output', 'json', '--limit', '500');
    const rotated = r.stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { kind: string; keyRotated?: { ok?: boolean } })
      .filter((e) => e.kind === 'key.rotated');
    assert.ok(rotated.length >= 4, `key.rotated for each job:\n${r.stdout}`);
    assert.ok(rotated.some((e) => e.keyRotated?.ok === true));
  });

  it('afterwards the old key is refused (PGF-8010); backup and restore are exact', async () => {
    let segment: string | undefined;
    for await (const w of fleet.repo.listWal('vault'))
      if (/^[0-9A-F]{24}$/.test(w.name)) {
        segment = w.name;
        break;
      }
    const old = await runNode(
      AGENT_BIN,
      [
        'wal-fetch',
        segment!,
        join(fleet.dir, 'seg-old'),
        '--cluster',
        'vault',
        '--repo-path',
        fleet.repoDir,
        '--encryption-key-file',
        oldKeyFile,
        '--cluster-key-file',
        fleet.clusterKeyFile,
      ],
      { asPg: true },
    );
    assert.notEqual(old.code, 0);
    assert.ok(`${old.stdout}${old.stderr}`.includes(ErrorCodes.EncryptionKeyWrong.code), old.stderr);
    // The operator drops the previous key: the agent runs on the new key alone.
    await restartAgent([]);
    await fleet.pg.query(`INSERT INTO notes SELECT g, 'after ' || g FROM generate_series(1501, 2000) g`);
    await fleet.pg.query(`UPDATE notes SET note = 'changed' WHERE id <= 10`);
    await backup('incr');
    await fleet.switchAndArchive();
    assert.deepEqual(await restoreLatest('restored-after'), await rows(fleet.pg));
    const again = await rotate();
    assert.notEqual(again.code, 0);
    assert.ok(again.all.includes(ErrorCodes.EncryptionPreviousKeyMissing.code), again.all);
    assert.match(again.all, /nothing to rotate/);
  });
});
