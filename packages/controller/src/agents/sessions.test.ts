// An agent is (cluster, agent id): a session of one cluster never replaces, hides or answers for
// an agent of another cluster with the same id; a reconnect of the same agent replaces its stream.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { AgentSessions, type AgentSession } from './sessions.js';

function session(cluster: string, agentId: string, connectedAt = 1): AgentSession & { closed: number } {
  const s = {
    agentId,
    cluster,
    hostname: `${agentId}.host`,
    systemIdentifier: `sys-${cluster}`,
    connectedAt,
    closed: 0,
    send: () => undefined,
    close: () => {
      s.closed++;
    },
  };
  return s;
}

test('the same agent id in two clusters is two agents', () => {
  const sessions = new AgentSessions();
  const b = session('b', 'x');
  const a = session('a', 'x', 2);
  assert.equal(sessions.register(b), undefined);
  assert.equal(sessions.register(a), undefined, 'cluster a registering x does not replace b/x');
  assert.equal(b.closed, 0, "b's stream stays open");
  assert.equal(sessions.get('b', 'x'), b);
  assert.equal(sessions.get('a', 'x'), a);
  assert.deepEqual(sessions.ofCluster('b'), [b]);
  assert.equal(sessions.get('b', 'y'), undefined);
  // a/x going away leaves b/x alone.
  assert.equal(sessions.unregister(a), true);
  assert.equal(sessions.unregister(a), false);
  assert.equal(sessions.get('b', 'x'), b);
  assert.deepEqual(sessions.all(), [b]);
});

test('a reconnect of the same agent closes its older stream; the old one cannot unregister the new', () => {
  const sessions = new AgentSessions();
  const old = session('b', 'x', 1);
  const fresh = session('b', 'x', 2);
  sessions.register(old);
  assert.equal(sessions.register(fresh), old);
  assert.equal(old.closed, 1);
  assert.equal(sessions.unregister(old), false);
  assert.equal(sessions.get('b', 'x'), fresh);
});

test('names that would run together are kept apart', () => {
  const sessions = new AgentSessions();
  const one = session('ab', 'c');
  const two = session('a', 'bc');
  sessions.register(one);
  sessions.register(two);
  assert.equal(sessions.get('ab', 'c'), one);
  assert.equal(sessions.get('a', 'bc'), two);
  assert.equal(one.closed + two.closed, 0);
});
