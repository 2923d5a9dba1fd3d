import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@pgfleet/core';
import {
  cleanDrillLeftovers,
  DRILL_KEPT_FILE,
  DRILL_OWNER_FILE,
  drillServerSettings,
  markDrillKept,
  processStart,
  RECOVERY_CHECKED_SETTINGS,
  writeDrillOwner,
} from './scratch-postgres.js';

const settingsOf = (major: number) =>
  new Map(
    drillServerSettings({
      port: 5999,
      socketDir: '/run/d',
      hbaFile: '/run/d/hba',
      identFile: '/run/d/ident',
      externalPidFile: '/run/d/external.pid',
      major,
      jobId: 'job-1234567890',
    }),
  );

test('the throwaway server: nothing reaches outside the copy, the host is spared, recovery checks keep the source values', () => {
  for (const major of [14, 15, 16, 17, 18]) {
    const s = settingsOf(major);
    for (const [k, v] of [
      ['listen_addresses', ''],
      ['archive_mode', 'off'],
      ['archive_command', ''],
      ['recovery_end_command', ''],
      ['archive_cleanup_command', ''],
      ['primary_conninfo', ''],
      ['max_logical_replication_workers', '0'],
      ['max_sync_workers_per_subscription', '0'],
      ['cron.launch_active_jobs', 'off'],
      ['shared_buffers', '128MB'],
      ['huge_pages', 'off'],
      ['min_dynamic_shared_memory', '0'],
      ['hot_standby', 'on'],
      ['autovacuum', 'off'],
      // The log the drill reads when it fails: English severities, a known prefix.
      ['lc_messages', 'C'],
      ['external_pid_file', '/run/d/external.pid'],
      ['log_line_prefix', '%m [%p] '],
    ] as const) {
      assert.equal(s.get(k), v, `PostgreSQL ${major}: ${k}`);
    }
    for (const name of RECOVERY_CHECKED_SETTINGS)
      assert.equal(s.has(name), false, `${name} keeps the source's value (recovery checks it)`);
    assert.equal(s.has('shared_preload_libraries'), false, 'extensions may need their preloaded libraries');
    assert.equal(s.has('wal_level'), false);
    // Settings that exist only in some majors: an unknown name in postgresql.conf stops the server.
    assert.equal(s.has('archive_library'), major >= 15);
    assert.equal(s.has('promote_trigger_file'), major < 16);
    assert.equal(s.has('max_parallel_apply_workers_per_subscription'), major >= 16);
    assert.equal(s.has('sync_replication_slots'), major >= 17);
    assert.equal(s.has('transaction_timeout'), major >= 17);
  }
});

/** A process that is not PostgreSQL; `name` copies sleep under that name so /proc/<pid>/comm says it. */
async function sleeper(cwd: string, binDir: string, name = 'sleep'): Promise<ChildProcess> {
  const bin = join(binDir, name);
  if (!existsSync(bin)) {
    await copyFile('/usr/bin/sleep', bin);
    await chmod(bin, 0o755);
  }
  const child = spawn(bin, ['60'], { cwd, stdio: 'ignore' });
  await new Promise((r) => child.once('spawn', r));
  return child;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function drillDir(root: string, name: string, owner?: object): Promise<string> {
  const dir = join(root, name);
  await mkdir(join(dir, 'data'), { recursive: true });
  if (owner) await writeFile(join(dir, DRILL_OWNER_FILE), JSON.stringify(owner));
  return dir;
}

test('leftover drill directories are removed, their postmaster stopped; running drills and foreign processes are left alone', async () => {
  const root = await mkdtemp(join(tmpdir(), 'pgfleet-scratch-'));
  const bins = await mkdtemp(join(tmpdir(), 'pgfleet-bins-'));
  const children: ChildProcess[] = [];
  try {
    const deadPid = spawnSync('true').pid!;
    // Owner gone; its "postmaster" runs from the copy (a process named postgres whose working directory is the data directory).
    const crashed = await drillDir(root, 'pgfleet-drill-crashed', { pid: deadPid });
    const postmaster = await sleeper(join(crashed, 'data'), bins, 'postgres');
    children.push(postmaster);
    await writeFile(join(crashed, 'data', 'postmaster.pid'), `${postmaster.pid}\n${join(crashed, 'data')}\n`);
    const socketDir = await mkdtemp(join(tmpdir(), 'pgfleet-sock-'));
    await writeFile(join(crashed, DRILL_OWNER_FILE), JSON.stringify({ pid: deadPid, socketDir }));
    // Owner gone; postmaster.pid names a live process that is not PostgreSQL (the pid was reused): never signalled.
    const stale = await drillDir(root, 'pgfleet-drill-stale', { pid: deadPid });
    const bystander = await sleeper(tmpdir(), bins);
    children.push(bystander);
    await writeFile(join(stale, 'data', 'postmaster.pid'), `${bystander.pid}\n`);
    // A postgres-named process in another directory: not this copy's postmaster.
    const elsewhere = await drillDir(root, 'pgfleet-drill-elsewhere', { pid: deadPid });
    const otherPostgres = await sleeper(tmpdir(), bins, 'postgres');
    children.push(otherPostgres);
    await writeFile(join(elsewhere, 'data', 'postmaster.pid'), `${otherPostgres.pid}\n`);
    // Another live agent's drill (pid and start time match): kept.
    const agent = await sleeper(tmpdir(), bins);
    children.push(agent);
    await drillDir(root, 'pgfleet-drill-foreign', { pid: agent.pid, start: await processStart(agent.pid!) });
    // The same pid with another start time: the owner died and its pid was given to a new process.
    const recycled = await drillDir(root, 'pgfleet-drill-recycled', { pid: agent.pid, start: '1' });
    // Ours: one running (active), one whose drill is over.
    const running = await drillDir(root, 'pgfleet-drill-running');
    await writeDrillOwner(running, undefined);
    const over = await drillDir(root, 'pgfleet-drill-over');
    await writeDrillOwner(over, undefined);
    // No owner file: being created when young, a leftover of an older agent when old.
    await drillDir(root, 'pgfleet-drill-young');
    const old = await drillDir(root, 'pgfleet-drill-old');
    const past = new Date(Date.now() - 3_600_000);
    await utimes(old, past, past);
    await mkdir(join(root, 'unrelated'));
    // Kept for a DBA (pgfleet drill --keep), its owner gone and old: left alone, marker and all.
    const kept = await drillDir(root, 'pgfleet-drill-kept', { pid: deadPid });
    await markDrillKept(kept, 'kept');
    await utimes(kept, past, past);

    const removed = await cleanDrillLeftovers(root, { log: silentLogger(), active: new Set([running]) });
    assert.deepEqual(removed.sort(), [crashed, elsewhere, old, over, recycled, stale].sort());
    assert.deepEqual((await readdir(root)).sort(), [
      'pgfleet-drill-foreign',
      'pgfleet-drill-kept',
      'pgfleet-drill-running',
      'pgfleet-drill-young',
      'unrelated',
    ]);
    assert.deepEqual((await readdir(kept)).sort(), [DRILL_KEPT_FILE, 'data', DRILL_OWNER_FILE].sort());
    // Its marker removed, the directory is a leftover like any other.
    await rm(join(kept, DRILL_KEPT_FILE));
    assert.deepEqual(await cleanDrillLeftovers(root, { log: silentLogger(), active: new Set([running]) }), [kept]);
    assert.equal(alive(postmaster.pid!), false, "the leftover's postmaster was stopped");
    assert.equal(postmaster.signalCode, 'SIGQUIT', 'with an immediate shutdown');
    assert.equal(alive(bystander.pid!), true, 'a process that is not PostgreSQL is never signalled');
    assert.equal(alive(otherPostgres.pid!), true, 'PostgreSQL running elsewhere is never signalled');
    assert.equal(alive(agent.pid!), true);
    assert.equal(
      await readdir(socketDir).then(
        () => true,
        () => false,
      ),
      false,
      "the leftover's socket directory is removed too",
    );
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await rm(root, { recursive: true, force: true });
    await rm(bins, { recursive: true, force: true });
  }
});

test('a missing scratch area has no leftovers', async () => {
  assert.deepEqual(
    await cleanDrillLeftovers(join(tmpdir(), 'pgfleet-no-such-scratch'), { log: silentLogger(), active: new Set() }),
    [],
  );
});
