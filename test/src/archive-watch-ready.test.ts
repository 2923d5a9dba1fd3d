/**
 * Push-ahead from PostgreSQL's .ready files (`pgfleet-agent run --archive-watch-ready`), with a
 * real PostgreSQL, agent and controller. With the flag, the daemon stores a segment as soon as
 * PostgreSQL marks it ready, even while archive_command fails, and archive_command later finds it
 * stored; without it (the default), a failing archive_command holds archiving, which DBAs use to
 * pause it and which the crash-safety and cancel scenarios rely on. The installed launcher
 * (scripts/agent-launcher.mjs) answers archive_command for a segment the daemon pushed ahead from
 * the daemon's marker, without starting Node.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, realpath, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { run } from '@pgfleet/testkit';
import { REPO_ROOT, startFleet, waitFor, type Fleet } from './harness.js';
import { assertRepoSegmentsSound, repoWal } from './repo-inspect.js';

async function archiver(fleet: Fleet): Promise<{ archived: number; failed: number; last: string | null }> {
  const [a] = await fleet.pg.query<{ archived: string; failed: string; last: string | null }>(
    'SELECT archived_count AS archived, failed_count AS failed, last_archived_wal AS last FROM pg_stat_archiver',
  );
  return { archived: Number(a!.archived), failed: Number(a!.failed), last: a!.last };
}

async function setArchiveCommand(fleet: Fleet, command: string): Promise<void> {
  await fleet.pg.query(`ALTER SYSTEM SET archive_command = '${command.replaceAll("'", "''")}'`);
  await fleet.pg.query('SELECT pg_reload_conf()');
}

/** Writes some rows and switches to a new segment; returns the name of the segment just completed. */
async function completeSegment(fleet: Fleet): Promise<string> {
  await fleet.pg.query(`INSERT INTO t (filler) SELECT repeat('x', 100) FROM generate_series(1, 1000)`);
  const [r] = await fleet.pg.query<{ f: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS f');
  return r!.f;
}

/** The repository's recorded content checksum of each segment is that of the pg_wal file. */
async function assertStoredAsWritten(fleet: Fleet, segments: string[]): Promise<void> {
  const recorded = new Map<string, string>();
  for await (const w of fleet.repo.listWal('ahead')) recorded.set(w.name, w.sha256);
  for (const s of segments) {
    const onDisk = createHash('sha256')
      .update(await readFile(join(fleet.pg.dataDir, 'pg_wal', s)))
      .digest('hex');
    assert.equal(recorded.get(s), onDisk, `${s} stored as PostgreSQL wrote it`);
  }
}

describe('push-ahead from .ready files', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  let pushCommand = '';

  before(async () => {
    fleet = await startFleet({ cluster: 'ahead', startAgent: false });
    const [c] = await fleet.pg.query<{ archive_command: string }>('SHOW archive_command');
    pushCommand = c!.archive_command;
    await fleet.pg.query('CREATE TABLE t (id serial PRIMARY KEY, filler text)');
  });
  after(async () => {
    await fleet?.stop();
  });

  it('without --archive-watch-ready a failing archive_command holds archiving: nothing is stored', async () => {
    await fleet.startAgent();
    await setArchiveCommand(fleet, '/bin/false');
    const before = await archiver(fleet);
    const held = await completeSegment(fleet);
    // The archiver has tried (and failed) twice: the segment had its chances to be pushed.
    await waitFor('the archiver to fail twice', async () => (await archiver(fleet)).failed >= before.failed + 2);
    assert.equal((await repoWal(fleet.repo, 'ahead')).has(held), false, `${held} stored while archiving was held`);
    await fleet.agent!.stop();
  });

  it('with --archive-watch-ready the ready segments are stored while archive_command fails, and archive_command then finds them stored', async () => {
    // The segment held by the previous case is still .ready: the new daemon finds it at start.
    await fleet.startAgent(['--archive-watch-ready']);
    const held = [await completeSegment(fleet), await completeSegment(fleet)];
    await waitFor('the ready segments to be pushed ahead', async () => {
      const stored = await repoWal(fleet.repo, 'ahead');
      return held.every((s) => stored.has(s));
    });
    const now = await archiver(fleet);
    assert.ok(now.last === null || now.last < held[0]!, `archive_command archived nothing yet (last ${now.last})`);
    // Byte for byte what PostgreSQL wrote: the recorded content checksum is the pg_wal file's,
    // and every stored object decodes to its recorded checksum.
    await assertRepoSegmentsSound(fleet.repo, 'ahead');
    await assertStoredAsWritten(fleet, held);
    // archive_command back: PostgreSQL archives them, and the daemon answers from the repository.
    await setArchiveCommand(fleet, pushCommand);
    await waitFor('PostgreSQL to mark them archived', async () => ((await archiver(fleet)).last ?? '') >= held[1]!);
    const log = await fleet.agent!.log();
    for (const s of held)
      assert.match(log, new RegExp(`"wal":"${s}"[^\\n]*"result":"exists"`), `${s} found stored on request\n${log}`);
    assert.equal((await repoWal(fleet.repo, 'ahead')).get(held[0]!)?.length, 1, 'stored once');
  });

  it('the installed launcher answers archive_command from the markers of pushed segments, without the Node client', async () => {
    // The daemon of the previous case is still running with --archive-watch-ready. archive_command
    // held first, so the daemon has pushed the segments ahead (and linked them) before it asks.
    const before = (await archiver(fleet)).failed;
    await setArchiveCommand(fleet, '/bin/false');
    // pg_reload_conf() returns before the archiver reads it: segments go on until one fails.
    await waitFor('archive_command /bin/false in effect', async () => {
      await completeSegment(fleet);
      return (await archiver(fleet)).failed > before;
    });
    const held = [await completeSegment(fleet), await completeSegment(fleet), await completeSegment(fleet)];
    const pgdata = await realpath(fleet.pg.dataDir);
    const markers = join(dirname(pgdata), `${basename(pgdata)}.pgfleet-agent.pushed`);
    await waitFor('the held segments pushed ahead and marked', async () => {
      const marked = new Set(await readdir(markers));
      return held.every((s) => marked.has(s));
    });
    const launcher = join(fleet.dir, 'pgfleet-agent');
    const { stdout } = await run(process.execPath, [
      join(REPO_ROOT, 'scripts/agent-launcher.mjs'),
      process.execPath,
      REPO_ROOT,
    ]);
    await writeFile(launcher, stdout, { mode: 0o755 });
    // The documented form: everything else about the cluster is in the config file.
    const config = join(fleet.dir, 'wal-push.yaml');
    await writeFile(
      config,
      `cluster: ahead\nrepo-path: ${JSON.stringify(fleet.repoDir)}\ncluster-key-file: ${JSON.stringify(fleet.clusterKeyFile)}\n`,
    );
    await setArchiveCommand(fleet, `'${launcher}' wal-push %p --config '${config}'`);
    await waitFor('PostgreSQL to mark them archived', async () => ((await archiver(fleet)).last ?? '') >= held[2]!);
    // Answered by the launcher: the daemon was never asked for them, and the markers are used up.
    const log = await fleet.agent!.log();
    for (const s of held)
      assert.doesNotMatch(log, new RegExp(`"wal":"${s}"[^\\n]*"via":"socket"`), `${s} asked over the socket`);
    assert.deepEqual(
      (await readdir(markers)).filter((f) => !f.startsWith('.')),
      [],
    );
    // What PostgreSQL counts as archived is in the repository byte for byte.
    await assertRepoSegmentsSound(fleet.repo, 'ahead');
    await assertStoredAsWritten(fleet, held);
  });
});
