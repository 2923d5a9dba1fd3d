import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pgTimestamp } from './jobs/recovery-target.js';
import { listPgdata } from './pgdata/walk.js';

test('recovery_target_time keeps microseconds (a Date would cut them)', () => {
  assert.equal(pgTimestamp(1795000000n, 123456789), '2026-11-18 11:06:40.123456+00');
  assert.equal(pgTimestamp(0n, 0), '1970-01-01 00:00:00.000000+00');
});

test('PGDATA listing skips what PostgreSQL rebuilds or must not see restored', async () => {
  const d = await mkdtemp(join(tmpdir(), 'pgfleet-walk-'));
  try {
    for (const dir of [
      'base/1',
      'global',
      'pg_wal/archive_status',
      'pg_replslot/slot1',
      'pg_stat_tmp',
      'base/pgsql_tmp',
    ])
      await mkdir(join(d, dir), { recursive: true });
    const files = [
      'PG_VERSION',
      'base/1/1259',
      'global/pg_control',
      'pg_wal/000000010000000000000001',
      'pg_replslot/slot1/state',
      'pg_stat_tmp/x',
      'postmaster.pid',
      'postmaster.opts',
      'base/1/pg_internal.init',
      'base/pgsql_tmp/t1',
      'postgresql.auto.conf',
    ];
    for (const f of files) await writeFile(join(d, f), 'x');
    const l = await listPgdata(d);
    assert.deepEqual(l.files.map((f) => f.path).sort(), [
      'PG_VERSION',
      'base/1/1259',
      'global/pg_control',
      'postgresql.auto.conf',
    ]);
    const dirs = l.directories.map((x) => x.path);
    for (const must of ['pg_wal', 'pg_wal/archive_status', 'pg_replslot', 'pg_stat_tmp', 'base/1'])
      assert.ok(dirs.includes(must), `${must} kept as an empty directory`);
    assert.ok(!dirs.includes('pg_replslot/slot1'));
  } finally {
    await rm(d, { recursive: true, force: true });
  }
});

test('PGDATA listing: tablespaces are followed through pg_tblspc links; a linked pg_wal (initdb --waldir) becomes a plain directory; other links are not recorded', async () => {
  const root = await mkdtemp(join(tmpdir(), 'pgfleet-walk-'));
  try {
    const d = join(root, 'data');
    // ts also holds another major's version directory (a location shared across pg_upgrade): not ours.
    for (const dir of [
      'data/base/1',
      'data/pg_tblspc',
      'ts/PG_15_202209061/5',
      'ts/PG_14_202107181/5',
      'wal/archive_status',
      'logs',
    ])
      await mkdir(join(root, dir), { recursive: true });
    for (const f of [
      'ts/PG_15_202209061/5/16390',
      'ts/PG_14_202107181/5/16390',
      'wal/000000010000000000000001',
      'logs/server.log',
    ])
      await writeFile(join(root, f), 'x');
    await writeFile(join(d, 'PG_VERSION'), '15\n');
    await symlink(join(root, 'ts'), join(d, 'pg_tblspc', '16389'));
    await symlink(join(root, 'wal'), join(d, 'pg_wal'));
    await symlink(join(root, 'logs'), join(d, 'log'));
    const l = await listPgdata(d);
    assert.deepEqual(l.files.map((f) => f.path).sort(), ['PG_VERSION', 'pg_tblspc/16389/PG_15_202209061/5/16390']);
    assert.deepEqual(
      l.links.sort((a, b) => a.path.localeCompare(b.path)),
      // Only tablespace links are recorded: a restore refuses a link anywhere else (manifest path rules).
      [{ path: 'pg_tblspc/16389', target: join(root, 'ts') }],
    );
    const dirs = l.directories.map((x) => x.path);
    for (const must of [
      'pg_wal',
      'pg_wal/archive_status',
      'pg_tblspc/16389/PG_15_202209061',
      'pg_tblspc/16389/PG_15_202209061/5',
    ])
      assert.ok(dirs.includes(must), must);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
