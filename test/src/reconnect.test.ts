/**
 * Agents and the controller are separate processes that come and go: an agent must notice a
 * controller restart, reconnect with backoff, and be usable again without a human.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startFleet, waitFor, type Fleet } from './harness.js';

describe('agent reconnects after a controller restart', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  before(async () => {
    fleet = await startFleet({ cluster: 'ledger' });
    await fleet.pg.query('CREATE TABLE entries AS SELECT g AS id FROM generate_series(1, 100) g');
  });
  after(async () => {
    await fleet?.stop();
  });

  it('is listed as connected again and runs a backup', async () => {
    await fleet.restartController();
    await waitFor('agent to reconnect', () => fleet.agentConnected(), 120_000);
    const r = await fleet.cli('backup', 'ledger', '--wait');
    assert.equal(r.code, 0, `${r.stderr}\n${await fleet.logs()}`);
    const list = JSON.parse((await fleet.cli('backups', 'ledger', '--output', 'json')).stdout) as { label: string }[];
    assert.equal(list.length, 1);
  });

  it('a controller that is down for a while is retried, not given up on', async () => {
    // Each round of the agent's reconnect loop logs this line (a lost session, then each failed attempt).
    const rounds = async () => (await fleet.agent!.log()).split('reconnecting to controller').length - 1;
    const before = await rounds();
    await fleet.controller.stop();
    // "A while" is counted in the agent's own retries, not in seconds: the lost session and two
    // attempts that found no controller, each followed by another one.
    await waitFor(
      'the agent to retry twice while the controller is down',
      async () => (await rounds()) >= before + 3,
      120_000,
    );
    assert.equal(fleet.agent!.child.exitCode, null, 'agent must keep running while the controller is away');
    await fleet.restartController();
    await waitFor('agent to reconnect after downtime', () => fleet.agentConnected(), 120_000);
  });
});
