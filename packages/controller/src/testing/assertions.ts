/**
 * Test support: assertions the controller's integration tests share. Not exported from the package.
 */
import { strict as assert } from 'node:assert';
import { PgfleetError, type ErrorName } from '@pgfleet/core';

/** Asserts that p rejects with the named PgfleetError (its message matching pattern, when given) and returns it. */
export async function rejectsWith(p: Promise<unknown>, name: ErrorName, pattern?: RegExp): Promise<PgfleetError> {
  let caught: unknown;
  await p.then(
    () => assert.fail(`expected ${name}`),
    (err: unknown) => (caught = err),
  );
  assert.ok(PgfleetError.is(caught, name), `expected ${name}, got ${String(caught)}`);
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}
