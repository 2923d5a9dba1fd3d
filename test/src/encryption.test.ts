/**
 * Encryption at rest as an operator sees it: a cluster whose repository is encrypted (posix and
 * S3) takes a full and an incr backup and archives WAL; a PITR restore gives exactly the rows of
 * the target; verify passes; a drill passes with the source's row counts; no repository object
 * holds a row's value in the clear; a flipped ciphertext byte and a wrong key fail with their
 * codes; rotate-key re-wraps the keys and the old key then opens nothing while the new one
 * restores.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCodes, sleep } from '@pgfleet/core';
import { fixedKeys, openRepository, parseRepositoryUrl, type Repository } from '@pgfleet/storage';
import { chownToPostgres, startPostgres, type PgInstance } from '@pgfleet/testkit';
import { AGENT_BIN, REPOSITORY_KINDS, runNode, startFleet, type Fleet } from './harness.js';

const MARKER = 'secret-row-8f3a2b71';
type Row = { id: number; note: string };

async function readRaw(repo: Repository, key: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await repo.driver.get(key)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

for (const kind of REPOSITORY_KINDS)
  describe(`an encrypted repository (${kind})`, { timeout: 420_000 }, () => {
    const kek = randomBytes(32);
    let fleet: Fleet;
    let targetTime: string;
    let atTarget: Row[];
    const started: PgInstance[] = [];
    const rows = (pg: PgInstance) => pg.query<Row>('SELECT id, note FROM notes ORDER BY id');

    async function cli(...args: string[]) {
      const r = await fleet.cli(...args);
      return { ...r, all: `${r.stdout}\n${r.stderr}` };
    }

    async function keyFile(name: string, key: Buffer): Promise<string> {
      const path = join(fleet.dir, name);
      await writeFile(path, key.toString('base64'), { mode: 0o600 });
      await chownToPostgres(path);
      return path;
    }

    /** The agent's repository options with another key file (wal-fetch / rotate-key run by hand). */
    async function archivedSegment(): Promise<string> {
      for await (const w of fleet.repo.listWal('vault')) if (/^[0-9A-F]{24}$/.test(w.name)) return w.name;
      throw new Error('no archived segment');
    }

    function repoArgs(keyPath: string): string[] {
      const config = /--config "([^"]+)"/.exec(fleet.walArgs)?.[1];
      return [
        ...(config ? ['--config', config] : ['--repo-path', fleet.repoDir]),
        '--encryption-key-file',
        keyPath,
        '--cluster-key-file',
        fleet.clusterKeyFile,
      ];
    }

    before(async () => {
      fleet = await startFleet({ cluster: 'vault', repository: kind, encryptionKey: kek });
      const pg = fleet.pg;
      await pg.query('CREATE TABLE notes (id int PRIMARY KEY, note text NOT NULL)');
      await pg.query(`INSERT INTO notes SELECT g, '${MARKER} ' || g FROM generate_series(1, 2000) g`);
      let r = await cli('backup', 'vault', '--type', 'full', '--wait');
      assert.equal(r.code, 0, `full backup failed:\n${r.all}\n${await fleet.logs()}`);
      await pg.query(`INSERT INTO notes SELECT g, '${MARKER} incr ' || g FROM generate_series(2001, 2500) g`);
      r = await cli('backup', 'vault', '--type', 'incr', '--wait');
      assert.equal(r.code, 0, `incr backup failed:\n${r.all}\n${await fleet.logs()}`);
      await pg.query(`UPDATE notes SET note = '${MARKER} changed' WHERE id <= 10`);
      atTarget = await rows(pg);
      targetTime = (
        await pg.query<{ t: string }>(
          `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
        )
      )[0]!.t;
      await sleep(50);
      await pg.query(`DELETE FROM notes WHERE id > 2400`);
      await fleet.switchAndArchive();
    });

    after(async () => {
      for (const p of started) await p.stop();
      await fleet?.stop();
    });

    it('restores to a PITR target between the backups with exactly its rows', async () => {
      const dir = join(fleet.dir, 'restored');
      const r = await cli('restore', 'vault', '--to', dir, '--target-time', targetTime, '--wait');
      assert.equal(r.code, 0, `restore failed:\n${r.all}\n${await fleet.logs()}`);
      const pg = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
      started.push(pg);
      assert.deepEqual(await rows(pg), atTarget);
    });

    it('verify passes on the encrypted repository', async () => {
      const r = await cli('verify', 'vault', '--full', '--wait');
      assert.equal(r.code, 0, `verify failed:\n${r.all}`);
    });

    it('a drill of the encrypted backup passes: restored, recovered, amcheck clean, row counts equal', async () => {
      // The drill restores the latest (incr) backup and the WAL to its restore point through the
      // same encrypted reads as a restore, then counts rows in the copy against the source's.
      const r = await cli('drill', 'vault', '--wait', '--output', 'json');
      assert.equal(r.code, 0, `drill failed:\n${r.all}\n${await fleet.logs()}`);
      const job = JSON.parse(r.stdout) as {
        state: string;
        drill?: {
          ok: boolean;
          amcheckFindings: unknown[];
          countsCompared: boolean;
          countsEqual: boolean;
          countChangeBound: number;
          source?: { tables: { schema: string; table: string; rows: number }[] };
        };
      };
      const d = job.drill!;
      assert.equal(job.state, 'succeeded');
      assert.equal(d.ok, true);
      assert.deepEqual(d.amcheckFindings, []);
      assert.equal(d.countsCompared, true);
      assert.equal(d.countsEqual, true, "the copy has the source's row counts");
      assert.equal(d.countChangeBound, 0, 'a quiet source: exact comparison');
      assert.equal(d.source?.tables.find((t) => t.table === 'notes')?.rows, 2400);
    });

    it('holds no row value, cluster.json or manifest in the clear', async () => {
      let objects = 0;
      for await (const o of fleet.repo.driver.list('vault/')) {
        objects++;
        const raw = await readRaw(fleet.repo, o.key);
        assert.ok(!raw.includes(MARKER), `${o.key} holds a row value in the clear`);
        if (o.key.endsWith('backup.manifest') || o.key.endsWith('backup.summary') || o.key.endsWith('cluster.json'))
          assert.ok(!raw.includes('systemIdentifier'), `${o.key} is plaintext JSON`);
      }
      assert.ok(objects > 50, `only ${objects} objects listed`);
    });

    it('a flipped ciphertext byte fails the restore with the tampered-object code', async () => {
      const manifests = (await fleet.repo.listBackups('vault')).map((m) => m.label);
      const m = await fleet.repo.readManifest('vault', manifests.at(-1)!);
      const f = m.files.find((x) => x.path.startsWith('base/') && x.size >= 8192 && !x.chunks && x.backup === m.label)!;
      const key = fleet.repo.backupFileKey('vault', f.backup, f.path, f.codec);
      const good = await readRaw(fleet.repo, key);
      const bad = Buffer.from(good);
      bad[good.length >> 1]! ^= 0x01;
      // Written back as root: the object must stay its agent's (posix objects are 0600 since part 3).
      const put = async (bytes: Buffer) => {
        await fleet.repo.driver.put(key, bytes);
        if (kind === 'posix') await chownToPostgres(join(fleet.repoDir, key));
      };
      await put(bad);
      try {
        const r = await cli('restore', 'vault', '--to', join(fleet.dir, 'tampered'), '--target', 'latest', '--wait');
        assert.notEqual(r.code, 0);
        assert.ok(r.all.includes(ErrorCodes.RepoObjectTampered.code), `no tampered code:\n${r.all}`);
        assert.ok(r.all.includes(key), `the object is not named:\n${r.all}`);
      } finally {
        await put(good);
      }
    });

    it('a wrong key fails wal-fetch with the wrong-key code', async () => {
      const wrong = await keyFile('wrong.key', randomBytes(32));
      const r = await runNode(
        AGENT_BIN,
        ['wal-fetch', await archivedSegment(), join(fleet.dir, 'seg'), '--cluster', 'vault', ...repoArgs(wrong)],
        { asPg: true },
      );
      assert.notEqual(r.code, 0);
      assert.ok(`${r.stdout}${r.stderr}`.includes(ErrorCodes.EncryptionKeyWrong.code), r.stderr);
    });

    it('rotate-key re-wraps the data keys: the old key stops working, the new one restores', async () => {
      const oldKey = await keyFile('old.key', kek);
      const newKek = randomBytes(32);
      const newKey = await keyFile('new.key', newKek);
      const r = await runNode(
        AGENT_BIN,
        ['rotate-key', '--cluster', 'vault', ...repoArgs(oldKey), '--new-encryption-key-file', newKey],
        { asPg: true },
      );
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /re-wrapped/);
      const segment = await archivedSegment();
      const fetchWith = (path: string) =>
        runNode(
          AGENT_BIN,
          ['wal-fetch', segment, join(fleet.dir, `seg-${Date.now()}`), '--cluster', 'vault', ...repoArgs(path)],
          { asPg: true },
        );
      const old = await fetchWith(oldKey);
      assert.notEqual(old.code, 0);
      assert.ok(`${old.stdout}${old.stderr}`.includes(ErrorCodes.EncryptionKeyWrong.code), old.stderr);
      // The same repository opened with the new key reads as before.
      const credentials = fleet.s3
        ? { accessKeyId: fleet.s3.accessKeyId, secretAccessKey: fleet.s3.secretAccessKey }
        : undefined;
      const repo = await openRepository(
        fleet.repoUrls.map((u) => parseRepositoryUrl(u)),
        credentials,
        fixedKeys({ vault: newKek }),
      );
      try {
        // cluster.json is encrypted under the cluster's own data key, now wrapped by the new KEK.
        assert.equal((await repo.readClusterInfo('vault'))?.walSegmentSize, 16 << 20);
      } finally {
        repo.close();
      }
      const fresh = await fetchWith(newKey);
      assert.equal(fresh.code, 0, fresh.stderr);
    });
  });
