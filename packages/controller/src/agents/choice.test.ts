// Which agent of an HA cluster runs a job: the primary's for primary work, a fit standby for
// standby backups, any for repository-only work; the errors a user sees when none fits.
import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import { chooseAgent, standbyLag, type AgentCandidate, type AgentNeed } from './choice.js';

const NOW = 1_000_000;
const LIMITS = { now: NOW, maxLagBytes: 64 * 1024 * 1024, maxSilenceMs: 30_000 };

function agent(id: string, fields: Partial<AgentCandidate> = {}): AgentCandidate {
  return {
    agentId: id,
    hostname: `${id}.example`,
    connectedAt: 100,
    role: null,
    lastSeen: NOW - 1000,
    currentLsn: null,
    replay: null,
    ...fields,
  };
}
const primary = (id: string, lsn = '0/9000000', more: Partial<AgentCandidate> = {}) =>
  agent(id, { role: 'primary', currentLsn: lsn, ...more });
const standby = (id: string, replayLsn: string, more: Partial<AgentCandidate> = {}) =>
  agent(id, {
    role: 'standby',
    currentLsn: replayLsn,
    replay: {
      receiveLsn: replayLsn,
      replayLsn,
      receiveReplayBytes: 0,
      lastReplayTime: NOW - 2000,
      replayLagSeconds: 0,
    },
    ...more,
  });

const pick = (need: AgentNeed, ...candidates: AgentCandidate[]) =>
  chooseAgent('shop', candidates, need, LIMITS).agentId;

function rejects(fn: () => unknown, name: 'AgentNotConnected' | 'StandbyNotConnected', message: RegExp): void {
  assert.throws(fn, (err: unknown) => PgfleetError.is(err, name) && message.test((err as Error).message));
}

describe('chooseAgent', () => {
  test('primary work goes to the primary, whichever connected first', () => {
    const s = standby('db2', '0/9000000', { connectedAt: 10 });
    assert.equal(pick('primary', s, primary('db1', '0/9000000', { connectedAt: 50 })), 'db1');
    assert.equal(pick('primary', primary('db1'), s), 'db1');
  });

  test('two agents reporting primary (a switchover in flight, a split brain): the promoted one, on the newer timeline', () => {
    const old = primary('db1', '0/9000000', { connectedAt: 10, timeline: 1 });
    const promoted = primary('db2', '0/9100000', { connectedAt: 50, timeline: 2 });
    assert.equal(pick('primary', old, promoted), 'db2');
    assert.equal(pick('primary', promoted, old), 'db2');
  });

  test('one agent that has not reported a role yet is taken for the primary, as before HA clusters', () => {
    assert.equal(pick('primary', agent('only')), 'only');
    assert.equal(pick('any', agent('only')), 'only');
    // but never over an agent that says it is the primary
    assert.equal(pick('primary', agent('early', { connectedAt: 1 }), primary('db1')), 'db1');
  });

  test('no agent at all, or only standbys, for primary work: AgentNotConnected naming what is connected', () => {
    rejects(() => pick('primary'), 'AgentNotConnected', /no agent of cluster 'shop' is connected/);
    rejects(
      () => pick('primary', standby('db2', '0/9000000')),
      'AgentNotConnected',
      /primary of cluster 'shop'.*db2 \(standby\)/,
    );
  });

  test('repository-only work prefers the primary, and runs on a standby when the primary is away', () => {
    assert.equal(
      pick('any', standby('db2', '0/9000000', { connectedAt: 1 }), primary('db1', '0/9000000', { connectedAt: 5 })),
      'db1',
    );
    assert.equal(pick('any', standby('db2', '0/9000000')), 'db2');
  });

  test('standby: the fit standby with the least lag behind the primary', () => {
    const p = primary('db1', '0/9000000');
    const near = standby('db2', '0/8F00000', { connectedAt: 300 });
    const far = standby('db3', '0/8000000', { connectedAt: 1 });
    assert.equal(pick('standby', p, far, near), 'db2');
    assert.equal(pick('prefer-standby', p, far, near), 'db2');
  });

  test('standby: none connected is StandbyNotConnected; prefer-standby falls back to the primary', () => {
    rejects(
      () => pick('standby', primary('db1')),
      'StandbyNotConnected',
      /no agent of a standby is connected \(connected: db1 \(primary\)\)/,
    );
    assert.equal(pick('prefer-standby', primary('db1')), 'db1');
  });

  test('a standby too far behind or silent is not fit, and the error says why', () => {
    const p = primary('db1', '1/0');
    const lagging = standby('db2', '0/8000000'); // 3.9 GiB behind
    const silent = standby('db3', '0/FFFF0000', { lastSeen: NOW - 60_000 });
    rejects(
      () => pick('standby', p, lagging, silent),
      'StandbyNotConnected',
      /db2 \(db2\.example\) is 4160749568 bytes behind the primary.*db3 \(db3\.example\) has not reported for 60 s/,
    );
    assert.equal(pick('prefer-standby', p, lagging, silent), 'db1');
  });

  test('without a primary agent a standby is judged by what it received and has not replayed', () => {
    const behind = standby('db2', '0/8000000', {
      replay: {
        receiveLsn: '0/9000000',
        replayLsn: '0/8000000',
        receiveReplayBytes: 16 * 1024 * 1024,
        lastReplayTime: null,
        replayLagSeconds: 3,
      },
    });
    assert.equal(pick('standby', behind), 'db2');
    assert.deepEqual(standbyLag(behind, undefined), { bytes: 16 * 1024 * 1024, againstPrimary: false });
    assert.deepEqual(standbyLag(behind, '0/9000000'), { bytes: 16 * 1024 * 1024, againstPrimary: true });
    // a standby ahead of a stale primary figure is not behind
    assert.deepEqual(standbyLag(behind, '0/7000000'), { bytes: 0, againstPrimary: true });
  });
});
