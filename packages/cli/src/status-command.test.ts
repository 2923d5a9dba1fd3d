import assert from 'node:assert/strict';
import { test } from 'node:test';
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { ControllerInfoSchema, ListClustersResponseSchema, ListControllersResponseSchema } from '@pgfleet/proto';
import { describeControllers, statusCommand } from './status-command.js';
import type { Admin } from './output.js';

test('status lists the controllers of a shared catalog: the answering one, the leader, a dead one', () => {
  const now = 1_000_000;
  const c = (address: string, fields: MessageInitShape<typeof ControllerInfoSchema>) =>
    create(ControllerInfoSchema, {
      address,
      started: timestampFromMs(now - 3_600_000),
      lastSeen: timestampFromMs(now - 1000),
      alive: true,
      ...fields,
    });
  const text = describeControllers(
    [
      c('10.0.0.1:7420', { leads: ['health', 'scheduler'], agentsHeld: 2 }),
      c('10.0.0.2:7420', { answering: true }),
      c('10.0.0.3:7420', { alive: false, lastSeen: timestampFromMs(now - 120_000) }),
    ],
    now,
  );
  const lines = text.trim().split('\n');
  assert.match(lines[0]!, /CONTROLLER\s+STATE\s+UP\s+AGENTS\s+LEADS/);
  assert.match(lines[1]!, /10\.0\.0\.1:7420\s+alive\s+\S+\s+2\s+health,scheduler/);
  assert.match(lines[2]!, /10\.0\.0\.2:7420 \*\s+alive\s+\S+\s+0\s+-/);
  assert.match(lines[3]!, /10\.0\.0\.3:7420\s+DEAD \(silent 2m\S*\)/);
  // One controller: nothing to tell apart, no table.
  assert.equal(describeControllers([c('10.0.0.1:7420', {})], now), '');
});

test('status --output json gives the clusters and every controller with what it leads', async (t) => {
  const now = Date.now();
  const admin = {
    listClusters: () =>
      Promise.resolve(create(ListClustersResponseSchema, { clusters: [{ name: 'shop', agentConnected: true }] })),
    listControllers: () =>
      Promise.resolve(
        create(ListControllersResponseSchema, {
          controllers: [
            {
              address: '10.0.0.1:7420',
              alive: true,
              leads: ['health', 'outbox', 'scheduler'],
              agentsHeld: 1,
              answering: true,
              lastSeen: timestampFromMs(now),
            },
            { address: '10.0.0.2:7420', alive: false, lastSeen: timestampFromMs(now - 60_000) },
          ],
        }),
      ),
  } as unknown as Admin;
  let printed = '';
  t.mock.method(process.stdout, 'write', (chunk: string) => {
    printed += chunk;
    return true;
  });
  assert.equal(await statusCommand(admin, undefined, true), 0);
  t.mock.restoreAll();
  const json = JSON.parse(printed) as {
    clusters: { name: string; agentConnected: boolean }[];
    controllers: { address: string; alive: boolean; leads: string[]; answering: boolean }[];
  };
  assert.deepEqual(
    json.clusters.map((c) => [c.name, c.agentConnected]),
    [['shop', true]],
  );
  assert.deepEqual(
    json.controllers.map((c) => [c.address, c.alive, c.leads, c.answering]),
    [
      ['10.0.0.1:7420', true, ['health', 'outbox', 'scheduler'], true],
      ['10.0.0.2:7420', false, [], false],
    ],
  );
});
