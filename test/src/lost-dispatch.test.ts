/**
 * A job whose controller is killed between creating it and sending it (issue 16), end to end, with
 * real processes: three controllers on one real PostgreSQL catalog, the agent of `shop` held by
 * the first. The second and third run with a kill point (PGFLEET_TEST_KILL_AT, jobs/kill-points.ts):
 * each SIGKILLs itself inside its first backup's dispatch, the second right after the job's row
 * is committed and before anything is sent, the third right after the job was left in the catalog
 * for the first (which holds the agent's stream) and before it recorded the send. No mock: the
 * catalog, the agent and the surviving controller see a real kill -9.
 *
 * What a user checks:
 * - killed before the send: the job stays queued, names its dead controller, and holds the
 *   cluster's backup gate (a manual backup is refused, naming it) only until the scheduler leader
 *   fails it with DispatcherLost and a backup.failed event, after the dead controller's lease and
 *   the reclaim grace; the agent never saw it; the next backup then runs and succeeds;
 * - killed after the send: the agent got the job from the controller holding its stream, claimed
 *   it with its progress, and the job succeeded once (one backup, one run in the agent's log),
 *   never failed as lost.
 * Every wait is on observable state, with a deadline for a loaded machine.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes } from '@pgfleet/core';
import { startPostgres, type PgInstance } from '@pgfleet/testkit';
import { startFleet, waitFor, type Fleet } from './harness.js';
import {
  agentConnections,
  cliAt,
  controllersAt,
  controllersListening,
  controllersTimeline,
} from './controller-fleet.js';

/** A backup job of shop as the catalog holds it. */
interface JobRow {
  id: string;
  state: string;
  error_code: string | null;
  dispatcher: string | null;
}

const KILL_AT = ['', 'dispatch-before-send:backup', 'dispatch-after-send:backup'];

describe('a controller killed -9 between creating a job and sending it', { timeout: 900_000 }, () => {
  let catalog: PgInstance;
  let fleet: Fleet;
  /** Controller ids by address (status). */
  const ids = new Map<string, string>();
  const jobsOf = (dispatcher: string) =>
    catalog.query<JobRow>(
      `SELECT id, state, error_code, dispatcher FROM jobs WHERE cluster = 'shop' AND kind = 'backup' AND dispatcher = $1 ORDER BY created_at, seq`,
      [dispatcher],
    );
  const timeline = (): Promise<string> =>
    controllersTimeline(
      fleet,
      /kill point|leading|stopped beating|queued job|still queued|job dispatched|job finished/,
    );

  before(async () => {
    catalog = await startPostgres();
    fleet = await startFleet({
      cluster: 'shop',
      catalog: catalog.connectionString,
      controllers: 3,
      controllerArgs: ['--schedule-interval', '1'],
      controllerEnv: (i) => (KILL_AT[i] ? { PGFLEET_TEST_KILL_AT: KILL_AT[i] } : undefined),
      startAgent: false,
    });
    await controllersListening(fleet);
    // The agent held by the first controller, the one no kill point stops.
    fleet.agentControllers = [...fleet.controllerAddresses];
    await fleet.startAgent();
    await waitFor(
      'the agent on the first controller',
      async () => agentConnections(await fleet.agent!.log()).at(-1) === fleet.controllerAddress,
    );
    const listed = await waitFor('every controller listed with its id', async () => {
      const list = await controllersAt(fleet.controllerAddress);
      return list.filter((c) => c.alive && c.id).length === 3 ? list : undefined;
    });
    for (const c of listed) ids.set(c.address, c.id!);
  });
  after(async () => {
    await fleet?.stop();
    await catalog?.stop();
  });

  /** Starts a backup on the controller of index i, which kills itself in the dispatch; its job as the catalog holds it. */
  async function killedInDispatch(i: number): Promise<JobRow> {
    const address = fleet.controllerAddresses[i]!;
    const daemon = fleet.controllers[i]!;
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      daemon.child.exitCode !== null || daemon.child.signalCode !== null
        ? resolve(daemon.child.signalCode)
        : daemon.child.once('exit', (_code, signal) => resolve(signal)),
    );
    const r = await cliAt(address, 'backup', 'shop', '--output', 'json');
    assert.notEqual(r.code, 0, `the backup call on ${address} cannot have been answered: ${r.stdout}`);
    assert.equal(await exited, 'SIGKILL', `controller ${address} killed itself`);
    // Its last words (the log may be written out after the exit).
    const point = new RegExp(`kill point reached.*${KILL_AT[i]!.split(':')[0]}`);
    await waitFor(`${address} to log its kill point`, async () => point.test(await daemon.log()));
    const [job] = await jobsOf(ids.get(address)!);
    assert.ok(job, `the job ${address} created before it died is in the catalog, naming it`);
    return job;
  }

  it('killed before the send: the job fails as lost (PGF-2340) and the next backup runs', async (t) => {
    try {
      const lost = await killedInDispatch(1);
      assert.equal(lost.state, 'queued', 'nothing moved the job: nobody sent it');

      // Meanwhile it holds the cluster's one-backup gate. (On a machine slow enough for the lease
      // and grace to pass before this call, it was already failed, and the call started a backup.)
      const busy = await cliAt(fleet.controllerAddress, 'backup', 'shop', '--output', 'json');
      let early: string | undefined;
      if (busy.code !== 0) {
        assert.match(busy.stderr, new RegExp(ErrorCodes.BackupInProgress.code));
        assert.match(busy.stderr, new RegExp(lost.id));
      } else {
        assert.equal((await jobsOf(lost.dispatcher!))[0]!.state, 'failed');
        early = (JSON.parse(busy.stdout) as { id: string }).id;
      }

      // The scheduler leader fails it once its controller is dead (lease 10 s + grace 5 s).
      const failed = await waitFor(
        `the lost job ${lost.id} to fail`,
        async () => (await jobsOf(lost.dispatcher!)).find((j) => j.id === lost.id && j.state !== 'queued'),
        300_000,
        500,
      );
      assert.deepEqual([failed.state, failed.error_code], ['failed', ErrorCodes.DispatcherLost.code]);
      // Its kind's failure event, as for any failed backup.
      const events = await cliAt(
        fleet.controllerAddress,
        'events',
        '--cluster',
        'shop',
        '--output',
        'json',
        '--limit',
        '1000',
      );
      assert.equal(events.code, 0, events.stderr);
      const failure = events.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { kind: string; backupFailed?: { jobId: string; error?: { code: string } } })
        .find((e) => e.kind === 'backup.failed' && e.backupFailed?.jobId === lost.id);
      assert.equal(failure?.backupFailed?.error?.code, ErrorCodes.DispatcherLost.code);
      // The agent never had it.
      assert.doesNotMatch(await fleet.agent!.log(), new RegExp(lost.id));

      // The gate is open: a backup runs and succeeds.
      if (early) {
        const state = await waitFor(
          `backup ${early} to end`,
          async () => {
            const [row] = await catalog.query<{ state: string }>('SELECT state FROM jobs WHERE id = $1', [early]);
            return row && !['queued', 'dispatched', 'running'].includes(row.state) ? row.state : undefined;
          },
          300_000,
          500,
        );
        assert.equal(state, 'succeeded');
      } else {
        const next = await cliAt(fleet.controllerAddress, 'backup', 'shop', '--wait', '--output', 'json');
        assert.equal(next.code, 0, `${next.stdout}\n${next.stderr}`);
      }
      console.log(`# lost job ${lost.id} failed with ${failed.error_code}; the next backup succeeded`);
    } catch (err) {
      t.diagnostic(`controllers' timeline:\n${await timeline()}\n--- agent\n${await fleet.agent!.log()}`);
      throw err;
    }
  });

  it('killed after the send: the agent claims the job, which succeeds once and is never failed as lost', async (t) => {
    try {
      const sent = await killedInDispatch(2);
      const ended = await waitFor(
        `the sent job ${sent.id} to end`,
        async () =>
          (await jobsOf(sent.dispatcher!)).find(
            (j) => j.id === sent.id && !['queued', 'dispatched', 'running'].includes(j.state),
          ),
        300_000,
        500,
      );
      assert.deepEqual([ended.state, ended.error_code], ['succeeded', null]);
      const [backups] = await catalog.query<{ n: string }>('SELECT count(*) AS n FROM backups WHERE job_id = $1', [
        sent.id,
      ]);
      assert.equal(Number(backups!.n), 1, 'one backup for the job');
      // The agent ran it once: no copy refused, one result.
      const lines = (await fleet.agent!.log()).split('\n').filter((l) => l.includes(sent.id));
      assert.equal(lines.filter((l) => l.includes('sent again')).length, 0, lines.join('\n'));
      // Its dispatcher is recorded as the controller that died: the job ended by its agent's
      // claim, not by anything that controller recorded.
      assert.equal(sent.dispatcher, ids.get(fleet.controllerAddresses[2]!));
    } catch (err) {
      t.diagnostic(`controllers' timeline:\n${await timeline()}\n--- agent\n${await fleet.agent!.log()}`);
      throw err;
    }
  });
});
