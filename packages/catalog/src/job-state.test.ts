// The job state machine both stores share: the table of legal moves, checked exhaustively.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import { FAILABLE_JOB_STATES, JOB_STATES, checkJobTransition, isLegalJobTransition } from './index.js';

const legal = new Set([
  'queued>dispatched',
  'queued>failed',
  'queued>cancelled',
  'dispatched>running',
  'dispatched>succeeded',
  'dispatched>failed',
  'dispatched>cancelled',
  'running>succeeded',
  'running>failed',
  'running>cancelled',
]);

test('the transition table', () => {
  assert.deepEqual([...JOB_STATES], ['queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled']);
  for (const from of JOB_STATES)
    for (const to of JOB_STATES) {
      if (from === to) continue;
      assert.equal(isLegalJobTransition(from, to), legal.has(`${from}>${to}`), `${from} -> ${to}`);
    }
  assert.deepEqual([...FAILABLE_JOB_STATES], ['queued', 'dispatched', 'running']);
});

test('checkJobTransition: repeat is a no-op, legal is true, illegal is JobStateConflict naming both states', () => {
  for (const s of JOB_STATES) assert.equal(checkJobTransition('j', s, s), false);
  assert.equal(checkJobTransition('j', 'queued', 'dispatched'), true);
  assert.throws(
    () => checkJobTransition('j7', 'succeeded', 'failed'),
    (err: unknown) =>
      PgfleetError.is(err, 'JobStateConflict') && /j7 is succeeded and cannot become failed/.test(err.message),
  );
});
