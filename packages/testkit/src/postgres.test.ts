// Real-server tests of startPostgres: data, checksums, WAL archiving, restore + promote, existing data dirs, cleanup.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  chownToPostgres,
  isPortListening,
  makeTempDir,
  removeDir,
  runAsPostgres,
  startPostgres,
  type PgInstance,
} from './index.js';
import { tail } from './os-user.js';
import { sleep } from '@pgfleet/core/async';

const WAL_SEGMENT = /^[0-9A-F]{24}$/;

async function waitFor<T>(
  what: string,
  timeoutMs: number,
  fn: () => Promise<T | undefined>,
  context: () => Promise<string>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`${what} (waited ${timeoutMs} ms)\n${await context()}`);
    await sleep(100);
  }
}

describe('startPostgres: a fresh cluster with WAL archiving', { timeout: 300_000 }, () => {
  let pg: PgInstance;
  let archiveDir: string;
  const logTail = async () => `--- server log tail ---\n${tail(await pg.log())}`;

  before(async () => {
    archiveDir = await makeTempDir('archive');
    pg = await startPostgres({ archiveCommand: `cp %p ${archiveDir}/%f` });
  });
  after(async () => {
    await pg?.stop();
    await removeDir(archiveDir);
  });

  test('stores and returns rows on its own port (not 5432)', async () => {
    assert.notEqual(pg.port, 5432);
    assert.equal(pg.connectionString, `postgres://postgres@127.0.0.1:${pg.port}/postgres`);
    await pg.query('create table t (id int primary key, v text)');
    await pg.query('insert into t values ($1, $2), ($3, $4)', [1, 'one', 2, 'two']);
    const rows = await pg.query<{ id: number; v: string }>('select id, v from t order by id');
    assert.deepEqual(rows, [
      { id: 1, v: 'one' },
      { id: 2, v: 'two' },
    ]);
  });

  test('has data checksums on and wal_level replica', async () => {
    const [cs] = await pg.query<{ data_checksums: string }>('show data_checksums');
    assert.equal(cs?.data_checksums, 'on', await logTail());
    const [wl] = await pg.query<{ wal_level: string }>('show wal_level');
    assert.equal(wl?.wal_level, 'replica');
    const [sd] = await pg.query<{ unix_socket_directories: string }>('show unix_socket_directories');
    assert.equal(sd?.unix_socket_directories, pg.socketDir);
  });

  test('archive_command archives a segment after pg_switch_wal()', async () => {
    await pg.query('insert into t select g, md5(g::text) from generate_series(10, 1000) g');
    const [sw] = await pg.query<{ walfile: string }>('select pg_walfile_name(pg_switch_wal()) as walfile');
    assert.ok(sw && WAL_SEGMENT.test(sw.walfile));
    await waitFor(
      `segment ${sw.walfile} did not appear in ${archiveDir}`,
      120_000,
      async () => ((await readdir(archiveDir)).includes(sw.walfile) ? true : undefined),
      async () => `archive dir: ${(await readdir(archiveDir)).join(', ')}\n${await logTail()}`,
    );
  });

  test('a base backup restored with restoreCommand recovers and promotes (waitForRecovery)', async () => {
    const restoreRoot = await makeTempDir('restore');
    const target = path.join(restoreRoot, 'data');
    await runAsPostgres(path.join(pg.binDir, 'pg_basebackup'), [
      '-d',
      pg.connectionString,
      '-D',
      target,
      '-X',
      'stream',
      '-c',
      'fast',
    ]);
    // Rows written after the backup reach the restored server only through the WAL archive.
    await pg.query(`insert into t values (5000, 'after backup')`);
    const [sw] = await pg.query<{ walfile: string }>('select pg_walfile_name(pg_switch_wal()) as walfile');
    await waitFor(
      `segment ${sw?.walfile} not archived`,
      120_000,
      async () => ((await readdir(archiveDir)).includes(sw!.walfile) ? true : undefined),
      logTail,
    );
    await writeFile(path.join(target, 'recovery.signal'), '');
    await chownToPostgres(path.join(target, 'recovery.signal'));

    const restored = await startPostgres({
      dataDir: target,
      restoreCommand: `cp ${archiveDir}/%f %p`,
      settings: { archive_mode: 'off' },
      waitForRecovery: true,
    });
    try {
      assert.notEqual(restored.port, pg.port);
      const [r] = await restored.query<{ r: boolean }>('select pg_is_in_recovery() as r');
      assert.equal(r?.r, false);
      const [c] = await restored.query<{ n: string }>('select count(*) as n from t where id = 5000');
      assert.equal(c?.n, '1', `row written after the backup is missing\n${tail(await restored.log())}`);
      assert.match(await restored.log(), /restored log file/);
    } finally {
      await restored.stop();
    }
    assert.ok(existsSync(target), 'an existing dataDir is not removed by stop()');
    await removeDir(restoreRoot);
  });

  test('stop() removes its dirs, frees the port and is idempotent', async () => {
    const { port, dataDir, socketDir } = pg;
    await Promise.all([pg.stop(), pg.stop()]);
    await pg.stop();
    assert.equal(existsSync(dataDir), false, 'data dir removed');
    assert.equal(existsSync(socketDir), false, 'socket dir removed');
    assert.equal(await isPortListening(port), false, `port ${port} still in use`);
    assert.match(await pg.log(), /database system is shut down/, 'log() still works after stop()');
  });
});

test(
  'startPostgres: keepDataDir, then starting that existing dataDir again, restart()',
  { timeout: 300_000 },
  async (t) => {
    const first = await startPostgres({ keepDataDir: true, settings: { max_connections: '30' } });
    t.after(() => first.stop());
    await first.query('create table kept (v text)');
    await first.query(`insert into kept values ('survives')`);
    await first.stop();
    const dataDir = first.dataDir;
    t.after(() => removeDir(path.dirname(dataDir)));
    assert.ok(existsSync(dataDir), 'keepDataDir leaves the data dir');
    assert.equal(existsSync(first.socketDir), false, 'run dir still removed');

    const second = await startPostgres({ dataDir });
    t.after(() => second.stop());
    assert.notEqual(second.port, first.port);
    assert.deepEqual(await second.query('select v from kept'), [{ v: 'survives' }]);
    const [mc] = await second.query<{ max_connections: string }>('show max_connections');
    assert.equal(mc?.max_connections, '30', 'settings written by the first launch still apply');

    const startTime = async () =>
      (await second.query<{ t: Date }>('select pg_postmaster_start_time() as t'))[0]!.t.getTime();
    const startedAt = await startTime();
    await second.restart();
    assert.ok((await startTime()) > startedAt, 'postmaster was restarted');
    assert.deepEqual(await second.query('select v from kept'), [{ v: 'survives' }]);
    assert.match(await second.log(), /received fast shutdown request/);
    await second.stop();
    assert.ok(existsSync(dataDir), 'a dataDir the launcher did not create is never removed');
  },
);

test(
  'startPostgres: clusters copied from the initdb template each have a system identifier of their own',
  { timeout: 300_000 },
  async (t) => {
    const [a, b] = await Promise.all([startPostgres(), startPostgres()]);
    t.after(() => Promise.all([a.stop(), b.stop()]));
    const sysid = async (pg: PgInstance) =>
      (await pg.query<{ id: string }>('select system_identifier::text as id from pg_control_system()'))[0]!.id;
    const [ida, idb] = [await sysid(a), await sysid(b)];
    assert.notEqual(ida, idb, 'two new clusters, two systems');
    // pg_control and the WAL agree (the server starts after a restart, reading its checkpoint from
    // the WAL whose page header carries the identifier), and pg_controldata reads the new one.
    await a.restart();
    assert.equal(await sysid(a), ida);
    await a.query('select pg_switch_wal()');
    await a.query('checkpoint');
    await a.restart();
    const { stdout, stderr } = await runAsPostgres(path.join(a.binDir, 'pg_controldata'), ['-D', a.dataDir]);
    assert.match(stdout, new RegExp(`Database system identifier:\\s+${ida}\\b`));
    assert.doesNotMatch(stdout + stderr, /CRC/, 'the CRC written with the new identifier is the right one');
    const [cs] = await b.query<{ data_checksums: string }>('show data_checksums');
    assert.equal(cs?.data_checksums, 'on');
  },
);
