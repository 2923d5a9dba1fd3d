import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import type { JobKind, JobRecord } from '@pgfleet/catalog';
import { jobOfKind, typedJob } from './params.js';

const record = (kind: JobKind, params: unknown): JobRecord => ({
  id: 'j1',
  cluster: 'main',
  kind,
  state: 'queued',
  agentId: 'agent-1',
  params,
  createdAt: 1,
  startedAt: null,
  finishedAt: null,
  error: null,
  progress: null,
  result: null,
});

test('params written by this controller read back as they were written', () => {
  const backup = { type: 'incr', from: 'standby', scheduledAt: '2026-03-01T01:00:00.000Z' };
  assert.deepEqual(typedJob(record('backup', backup)).params, backup);
  for (const resume of ['fresh', 'required'] as const)
    assert.deepEqual(typedJob(record('backup', { type: 'full', resume })).params, { type: 'full', resume });
  const expire = {
    labels: ['a', 'b'],
    walKeepFrom: '000000010000000000000009',
    keepRanges: [
      { label: 'a', timeline: 1, walStart: '000000010000000000000002', walStop: '000000010000000000000003' },
    ],
    reason: 'periodic',
  };
  assert.deepEqual(typedJob(record('expire', expire)).params, expire);
  const drill = { backupLabel: '', captureJobId: 'c1', keep: true };
  assert.deepEqual(typedJob(record('drill', drill)).params, drill);
  const restore = { targetDir: '/srv/r', backupLabel: 'L', target: { latest: true }, delta: true, archive: 'off' };
  assert.deepEqual(typedJob(record('restore', restore)).params, restore);
});

test('missing, null or mistyped params take the defaults older jobs imply, never an error', () => {
  for (const raw of [null, undefined, ['x', 1], 'text', { type: 7, labels: 'no', full: 'yes', resume: 'maybe' }]) {
    assert.deepEqual(typedJob(record('backup', raw)).params, { type: 'full' });
    assert.deepEqual(typedJob(record('expire', raw)).params, {
      labels: [],
      walKeepFrom: '',
      keepRanges: [],
      reason: '',
    });
    assert.deepEqual(typedJob(record('verify', raw)).params, { full: false });
    assert.deepEqual(typedJob(record('drill', raw)).params, { backupLabel: '' });
    assert.deepEqual(typedJob(record('capture', raw)).params, { drillJobId: '', restorePoint: '' });
    assert.deepEqual(typedJob(record('restore', raw)).params, { targetDir: '', backupLabel: '' });
    assert.deepEqual(typedJob(record('check', raw)).params, { timeoutSeconds: 0 });
  }
  // Any recorded fire time means "scheduled", as the events always read it.
  const scheduled = jobOfKind('drill', record('drill', { scheduledAt: 1234 }));
  assert.equal(scheduled.params.scheduledAt, '1234');
});

test('jobOfKind refuses a job of another kind (Internal): a caller that knows the kind got the wrong job', () => {
  assert.throws(() => jobOfKind('backup', record('restore', {})), /is a restore job, not a backup job/);
});
