// An agent is (cluster, agent id): the same id in two clusters is two agents. A real controller
// and fake agents: the namesake in another cluster neither fails, receives nor cancels the other's
// jobs, and its heartbeats and its disconnect touch only its own catalog row.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { isTerminalJobState, type AgentRef } from '@pgfleet/catalog';
import { FakeAgent, waitFor } from '../testing/fake-agent.js';
import { useTestController } from '../testing/test-controller.js';

const t = useTestController('agent-identity');

/** Sends a heartbeat and waits until the catalog holds it (the agent's Hello was handled by then). */
async function beat(agent: FakeAgent, ref: AgentRef, currentLsn: string): Promise<void> {
  agent.stream.send({ msg: { case: 'heartbeat', value: { pgUp: true, currentLsn } } });
  await waitFor(`${ref.cluster}/${ref.agentId} at ${currentLsn}`, async () =>
    (await t.controller.context.store.getAgent(ref))?.currentLsn === currentLsn ? true : undefined,
  );
}

test("the same agent id in two clusters is two agents: neither touches the other's session, jobs or row", async () => {
  const store = t.controller.context.store;
  const mainRef = { cluster: 'main', agentId: 'db1' };
  const secondRef = { cluster: 'second', agentId: 'db1' };
  const main = new FakeAgent(t.controller.address);
  main.hello(mainRef);
  assert.equal((await main.receive()).msg.case, 'welcome');
  await beat(main, mainRef, '0/3000060');
  const job = (await t.admin.startBackup({ cluster: 'main' })).job!;
  assert.equal((await main.receiveJob()).jobId, job.id);

  // An agent of another cluster under the same id connects (and would have failed main's job as
  // "no longer run by its restarted agent" if agents were one namespace).
  const namesake = new FakeAgent(t.controller.address);
  namesake.hello({ ...secondRef, systemIdentifier: '7300000000000000002' });
  assert.equal((await namesake.receive()).msg.case, 'welcome');
  await beat(namesake, secondRef, 'FF/FFFFFFFF');
  const running = await store.getJob(job.id);
  assert.ok(running && !isTerminalJobState(running.state), `main's job is ${running?.state}`);
  assert.equal((await store.getAgent(mainRef))?.currentLsn, '0/3000060');

  // A cancel of main's job goes to main's agent.
  await t.admin.cancelJob({ id: job.id });
  const cancel = await main.receive();
  assert.equal(cancel.msg.case, 'cancel');
  assert.equal(cancel.msg.value.jobId, job.id);

  // The namesake leaves: its row only is disconnected.
  namesake.stream.end();
  await waitFor('second/db1 disconnected', async () =>
    (await store.getAgent(secondRef))?.connected ? undefined : true,
  );
  assert.equal((await store.getAgent(mainRef))?.connected, true);
  assert.deepEqual(
    (await store.listAgents()).map((a) => [a.cluster, a.id, a.connected]),
    [
      ['main', 'db1', true],
      ['second', 'db1', false],
    ],
  );
});
