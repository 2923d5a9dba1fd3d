/**
 * Resumable backups (docs/repository-format.md "Resumable backups"), with real processes and an
 * encrypted posix repository (the taken-over objects stay sealed under their backup's data key):
 *
 * - a full killed -9 during its copy leaves a journal and stored files, never a listed backup;
 *   the next full continues it under its label, takes over every journaled file that did not
 *   change, and copies only the rest;
 * - an incr and a diff killed -9 after their copy (waiting for WAL, archiving held): an expire
 *   keeps the incr (inside its resume window) and removes the diff (killed under
 *   --resume-window 1s, past it); `pgfleet backup --resume` continues the incr, copying next to
 *   nothing, and fails with PGF-2080 for the diff;
 * - both continued backups restore exactly the rows they were taken from.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ErrorCodes, sleep } from '@pgfleet/core';
import type { PgInstance } from '@pgfleet/testkit';
import type { JournalBatch } from '@pgfleet/storage';
import { agentCommand, startFleet, waitFor, type Fleet } from './harness.js';
import { figures, notJournaled, restoreExactly, tableDigests, TABLES, type JobJson } from './resume-fixtures.js';

const C = 'resume';
/** The agent copies with one worker: a kill finds the copy under way, and "one file per worker" is one file. */
const AGENT_ARGS = ['--workers', '1'];

describe('resumable backups: kill -9, then the next backup continues', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  const started: PgInstance[] = [];
  const cli = async (...args: string[]) => fleet.cli(...args);

  async function job(id: string): Promise<JobJson> {
    const r = await cli('job', id, '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as JobJson;
  }

  async function backup(...args: string[]): Promise<JobJson> {
    const r = await cli('backup', C, ...args, '--wait', '--output', 'json');
    assert.equal(r.code, 0, `backup ${args.join(' ')}:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    return JSON.parse(r.stdout) as JobJson;
  }

  async function startBackup(type: string): Promise<string> {
    const r = await cli('backup', C, '--type', type, '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as JobJson).id;
  }

  /** The unfinished backup the running one writes, once its journal has `batches` batches (a file of a MiB or more each). */
  async function journaledLeftover(type: 'F' | 'D' | 'I', batches: number): Promise<string> {
    return waitFor(
      `${batches} progress journal batch(es)`,
      async () =>
        (await fleet.repo.listUnfinishedBackups(C)).find((u) => u.label.endsWith(type) && u.journalBatches >= batches)
          ?.label,
      120_000,
      10,
    );
  }

  /** kill -9 of the agent, a look at what is listed, then a new agent (the killed job ended first). */
  async function killAgent(jobId: string, restartArgs: string[] = AGENT_ARGS): Promise<void> {
    const agent = fleet.agent!;
    agent.child.kill('SIGKILL');
    await new Promise((r) => (agent.child.exitCode !== null ? r(undefined) : agent.child.once('exit', r)));
    await fleet.startAgent(restartArgs);
    await waitFor('the killed job to end', async () =>
      ['succeeded', 'failed', 'cancelled'].includes((await job(jobId)).state),
    );
  }

  /** The agent's lines about what it continued (for failure messages). */
  async function resumeLog(): Promise<string> {
    const lines = (await fleet.agent!.log()).split('\n');
    return lines.filter((l) => /interrupted|journal|continu/.test(l)).join('\n');
  }

  async function listed(): Promise<string[]> {
    const r = await cli('backups', C, '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { label: string }[]).map((b) => b.label).sort();
  }

  async function holdArchiving(hold: boolean): Promise<void> {
    const command = hold ? '/bin/false' : agentCommand(`wal-push "%p" ${fleet.walArgs}`);
    await fleet.pg.query(`ALTER SYSTEM SET archive_command = '${command.replaceAll("'", "''")}'`);
    await fleet.pg.query('SELECT pg_reload_conf()');
  }

  /** Dirty pages on disk now, and mtimes old enough for the next listing to trust (prior.ts MTIME_GUARD_MS). */
  async function settle(): Promise<void> {
    await fleet.pg.query('CHECKPOINT');
    await sleep(2100);
  }

  const restored = (label: string, expected: Record<string, string>) =>
    restoreExactly(fleet, C, label, expected, started);

  before(async () => {
    fleet = await startFleet({
      cluster: C,
      startAgent: false,
      encryptionKey: randomBytes(32),
      controllerArgs: ['--schedule-interval', '3600'],
      // Files change between two runs only when the test changes them (autovacuum would at any time).
      pg: { settings: { autovacuum: 'off' } },
    });
    await fleet.startAgent(AGENT_ARGS);
    for (const t of TABLES.slice(0, 4)) {
      await fleet.pg.query(`CREATE TABLE ${t} (id int PRIMARY KEY, v int NOT NULL, pad text NOT NULL)`);
      await fleet.pg.query(
        `INSERT INTO ${t} SELECT g, g, md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) FROM generate_series(1, 120000) g`,
      );
    }
    await fleet.pg.query(`CREATE TABLE small (id int PRIMARY KEY, v int NOT NULL, pad text NOT NULL)`);
    await fleet.pg.query(`INSERT INTO small SELECT g, g, md5(g::text) FROM generate_series(1, 2000) g`);
    await fleet.pg.query('VACUUM (FREEZE, ANALYZE)');
    // Retention keeps every backup this test takes; its expire removes only WAL from before the first.
    const policy = await fleet.cli('policy', 'set', C, '--min-full', '3', '--pitr-window-days', '0');
    assert.equal(policy.code, 0, policy.stderr);
  });
  after(async () => {
    for (const p of started) await p.stop().catch(() => {});
    await fleet?.stop();
  });

  let l1 = '';
  let l1Journal: JournalBatch[] = [];
  let l1Digests: Record<string, string> = {};

  it('a full killed during its copy is never listed; its journal holds part of its files', async () => {
    // Reading every row sets hint bits: their pages are written by the checkpoint settle() makes.
    l1Digests = await tableDigests(fleet.pg);
    await settle();
    const id = await startBackup('full');
    // Killed once three of the four big tables are stored: the rest (a big table, indexes, ~1000 small files) is under way.
    l1 = await journaledLeftover('F', 3);
    await killAgent(id);
    l1Journal = (await fleet.repo.readJournal(C, l1)).batches;
    const journaled = l1Journal.reduce((n, b) => n + b.files.length, 0);
    assert.ok(journaled >= 3, 'the journal names stored files');
    assert.ok(
      !l1Journal.some((b) => b.files.some((f) => f.path === 'global/pg_control')),
      'killed during the copy (pg_control goes last)',
    );
    assert.equal(await fleet.repo.hasManifest(C, l1), false);
    assert.deepEqual(await listed(), [], 'nothing partial is listed');
  });

  it('the next full continues it: same label, copies only what was missing or changed', async (t) => {
    const done = await backup('--type', 'full');
    assert.equal(done.backup!.label, l1, 'the interrupted full is continued under its label');
    const manifest = await fleet.repo.readManifest(C, l1);
    const { copiedBytes, takenFiles, takenBytes } = figures(done);
    assert.ok(takenFiles > 0 && takenBytes > 0, `${done.progress?.message}\n${await resumeLog()}`);
    const own = manifest.files.filter((f) => f.backup === l1).reduce((n, f) => n + f.size, 0);
    t.diagnostic(`resumed full: ${done.progress?.message}; may copy ${notJournaled(manifest, l1Journal)} of ${own}`);
    assert.equal(copiedBytes + takenBytes, own, 'every file copied or taken over');
    assert.ok(
      copiedBytes <= notJournaled(manifest, l1Journal),
      `copied ${copiedBytes} bytes, at most ${notJournaled(manifest, l1Journal)} were missing or changed: ${done.progress?.message}`,
    );
    assert.equal((await fleet.repo.readJournal(C, l1)).batches.length, 0, 'its journal went with the manifest');
    assert.deepEqual(await listed(), [l1]);
  });

  let l2 = '';
  let l2Journal: JournalBatch[] = [];
  let l2Digests: Record<string, string> = {};
  let l3 = '';

  it('an incr and a diff killed after their copy are never listed; an expire keeps the one inside its window', async () => {
    await fleet.pg.query('UPDATE big2 SET v = v + 1 WHERE id % 97 = 0');
    await fleet.pg.query('INSERT INTO small SELECT g, g, md5(g::text) FROM generate_series(2001, 2500) g');
    l2Digests = await tableDigests(fleet.pg);
    await settle();
    // Both wait for WAL that does not come, and are killed there.
    await holdArchiving(true);
    const killedWaiting = async (type: 'incr' | 'diff', restartArgs: string[]): Promise<string> => {
      const id = await startBackup(type);
      await waitFor(`the ${type} to wait for WAL`, async () => (await job(id)).progress?.phase === 'wait-wal');
      const label = (await fleet.repo.listUnfinishedBackups(C)).find((u) => u.label.endsWith(type[0]!.toUpperCase()))!;
      await killAgent(id, restartArgs);
      return label.label;
    };
    // The incr's agent keeps the default window (24 h); the diff's lets its leftovers be continued for 1 s.
    l2 = await killedWaiting('incr', [...AGENT_ARGS, '--resume-window', '1s']);
    l3 = await killedWaiting('diff', AGENT_ARGS);
    await holdArchiving(false);
    l2Journal = (await fleet.repo.readJournal(C, l2)).batches;
    assert.deepEqual(await listed(), [l1], 'nothing partial is listed');
    const written = Math.max(...(await fleet.repo.readJournal(C, l3)).batches.map((b) => Date.parse(b.writtenAt)));
    await sleep(Math.max(0, written + 1100 - Date.now()));

    const r = await cli('retention', 'apply', C, '--wait', '--output', 'json');
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    assert.equal(await fleet.repo.labelInUse(C, l2), true, `${l2} (window 24 h) stays`);
    assert.equal(await fleet.repo.labelInUse(C, l3), false, `${l3} (window 1 s, past) is removed`);
    assert.deepEqual(await listed(), [l1]);
  });

  it('--resume continues the incr, copying next to nothing; with nothing to continue it fails', async (t) => {
    const refused = await cli('backup', C, '--type', 'diff', '--resume', '--wait');
    assert.equal(refused.code, 4, refused.stderr);
    assert.match(refused.stderr, new RegExp(ErrorCodes.NothingToResume.code));

    const done = await backup('--type', 'incr', '--resume');
    assert.equal(done.backup!.label, l2);
    const manifest = await fleet.repo.readManifest(C, l2);
    assert.equal(manifest.priorLabel, l1);
    const { copiedBytes, takenFiles } = figures(done);
    t.diagnostic(`resumed incr: ${done.progress?.message}; may copy ${notJournaled(manifest, l2Journal)}`);
    assert.ok(takenFiles > 0, `${done.progress?.message}\n${await resumeLog()}`);
    assert.ok(
      copiedBytes <= notJournaled(manifest, l2Journal),
      `copied ${copiedBytes} bytes, at most ${notJournaled(manifest, l2Journal)} were missing or changed: ${done.progress?.message}`,
    );
    assert.ok(
      manifest.files.some((f) => f.backup === l2 && f.blocks?.changed),
      'block-incremental entries survive the resume',
    );
    assert.deepEqual(await listed(), [l1, l2].sort());
  });

  it('both continued backups restore exactly the rows they were taken from', async () => {
    await Promise.all([restored(l1, l1Digests), restored(l2, l2Digests)]);
  });
});
