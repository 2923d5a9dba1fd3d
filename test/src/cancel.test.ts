/**
 * `pgfleet cancel` end to end: a full backup is held in its last phase (archive_command fails, so
 * the backup waits for its WAL), cancelled from the CLI, and must end CANCELLED with nothing in
 * the repository that looks like a backup (no manifest, no files under its label) and nothing in
 * the catalog; once archiving works again the next backup succeeds and restores the rows. A first
 * backup is taken while archiving works: a cluster's first backup proves archiving before it copies
 * anything and would fail at once instead of waiting for its WAL.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes } from '@pgfleet/core';
import { startFleet, waitFor, type Fleet, type JobJson } from './harness.js';

const CLUSTER = 'cancel';

describe('cancel: a running backup stops and leaves nothing that looks complete', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  let archiveCommand: string;
  /** The backup taken while archiving worked: the only one that must stay. */
  let first: string;

  before(async () => {
    fleet = await startFleet({ cluster: CLUSTER });
    await fleet.pg.query('CREATE TABLE t (id int PRIMARY KEY)');
    await fleet.pg.query('INSERT INTO t SELECT generate_series(1, 5000)');
    archiveCommand = (await fleet.pg.query<{ archive_command: string }>('SHOW archive_command'))[0]!.archive_command;
    const r = await fleet.cli('backup', CLUSTER, '--wait', '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    first = (JSON.parse(r.stdout) as JobJson).backup!.label;
  });

  after(async () => {
    await fleet?.stop();
  });

  async function job(id: string): Promise<JobJson> {
    const r = await fleet.cli('job', id, '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as JobJson;
  }

  it('cancel --wait ends the job CANCELLED; no manifest, no files, no catalog row', async () => {
    // Archiving fails from now on: the backup copies its files, then waits for WAL that never comes.
    await fleet.pg.query(`ALTER SYSTEM SET archive_command = '/bin/false'`);
    await fleet.pg.query('SELECT pg_reload_conf()');
    const started = await fleet.cli('backup', CLUSTER, '--output', 'json');
    assert.equal(started.code, 0, started.stderr);
    const id = (JSON.parse(started.stdout) as JobJson).id;
    await waitFor(
      'the backup to wait for its WAL',
      async () => ((await job(id)).progress?.phase === 'wait-wal' ? true : undefined),
      120_000,
      200,
    );
    // One backup per cluster at a time: a second one is refused while this one runs.
    const second = await fleet.cli('backup', CLUSTER, '--type', 'incr');
    assert.equal(second.code, 4, second.stderr);
    assert.match(
      second.stderr,
      new RegExp(`${ErrorCodes.BackupInProgress.code}.*already has a backup job running \\(${id}`),
    );

    const cancelled = await fleet.cli('cancel', id, '--wait', '--output', 'json');
    assert.equal(cancelled.code, 0, `${cancelled.stdout}\n${cancelled.stderr}`);
    const final = JSON.parse(cancelled.stdout) as JobJson;
    assert.equal(final.state, 'cancelled');
    assert.equal(final.error?.code, ErrorCodes.JobCancelled.code);

    // Nothing in the repository under the cluster's backups but the first one, and nothing in the catalog.
    assert.deepEqual(
      (await fleet.repo.listBackups(CLUSTER)).map((m) => m.label),
      [first],
    );
    const leftovers: string[] = [];
    for await (const o of fleet.repo.driver.list(`${CLUSTER}/backup/`))
      if (!o.key.startsWith(`${CLUSTER}/backup/${first}/`)) leftovers.push(o.key);
    assert.deepEqual(leftovers, []);
    const listed = await fleet.cli('backups', CLUSTER, '--output', 'json');
    assert.deepEqual(
      (JSON.parse(listed.stdout) as { label: string }[]).map((b) => b.label),
      [first],
    );

    // Cancelling it again is refused with a stable code; so is an unknown job.
    const again = await fleet.cli('cancel', id);
    assert.equal(again.code, 4, again.stderr);
    assert.match(again.stderr, /PGF-2008.*already ended/s);
    const unknown = await fleet.cli('cancel', 'job-does-not-exist');
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /does not exist/);
  });

  it('after archiving is fixed the next backup succeeds and restores every row', async () => {
    await fleet.pg.query(`ALTER SYSTEM SET archive_command = '${archiveCommand.replace(/'/g, "''")}'`);
    await fleet.pg.query('SELECT pg_reload_conf()');
    const r = await fleet.cli('backup', CLUSTER, '--wait', '--output', 'json');
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const label = (JSON.parse(r.stdout) as JobJson).backup!.label;
    assert.deepEqual(
      (await fleet.repo.listBackups(CLUSTER)).map((m) => m.label),
      [first, label],
    );
  });
});
