/**
 * Agents and the controller are separate processes that come and go: an agent must notice a
 * controller restart, reconnect with backoff, and be usable again without a human.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startFleet, waitFor, type Fleet } from './harness.js';
import { sleep } from '@pgfleet/core';

describe('agent reconnects after a controller restart', { timeout: 180_000 }, () => {
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
    await waitFor('agent to reconnect', () => fleet.agentConnected(), 60_000);
    const r = await fleet.cli('backup', 'ledger', '--wait');
    assert.equal(r.code, 0, `${r.stderr}\n${await fleet.logs()}`);
    const list = JSON.parse((await fleet.cli('backups', 'ledger', '--output', 'json')).stdout) as { label: string }[];
    assert.equal(list.length, 1);
  });

  it('a controller that is down for a while is retried, not given up on', async () => {
    await fleet.controller.stop();
    await sleep(3000);
    assert.equal(fleet.agent!.child.exitCode, null, 'agent must keep running while the controller is away');
    await fleet.restartController();
    await waitFor('agent to reconnect after downtime', () => fleet.agentConnected(), 60_000);
  });
});
