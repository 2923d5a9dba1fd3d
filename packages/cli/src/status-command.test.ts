import assert from 'node:assert/strict';
import { test } from 'node:test';
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { ControllerInfoSchema } from '@pgfleet/proto';
import { describeControllers } from './status-command.js';

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
