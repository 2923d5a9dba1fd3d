import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { controllerAddresses, reconnectDelayMs } from './controllers.js';

test('--controller: one address, a comma list (spaces and repeats tolerated), gRPC schemes kept', () => {
  assert.deepEqual(controllerAddresses('127.0.0.1:7420'), ['127.0.0.1:7420']);
  assert.deepEqual(controllerAddresses('c1.example:7420, c2.example:7420,c3.example:7420,c1.example:7420'), [
    'c1.example:7420',
    'c2.example:7420',
    'c3.example:7420',
  ]);
  assert.deepEqual(controllerAddresses('[::1]:7420,dns:controllers.internal:7420'), [
    '[::1]:7420',
    'dns:controllers.internal:7420',
  ]);
});

test('--controller: a malformed entry is refused with its own code, naming it', () => {
  for (const [value, says] of [
    ['', /no controller address/],
    ['a:1,,b:2', /empty entry/],
    ['a:1,', /empty entry/],
    ['controller.example', /'controller.example' is not host:port/],
    ['a:1,b:70000', /port 70000/],
    ['a b:1', /not host:port/],
  ] as const) {
    assert.throws(
      () => controllerAddresses(value),
      (err: unknown) =>
        PgfleetError.is(err, 'ControllerAddressInvalid') &&
        err.code === ErrorCodes.ControllerAddressInvalid.code &&
        says.test(err.message),
      value,
    );
  }
});

test('reconnect delay: moving along the list is quick; the wait grows only after every controller failed', () => {
  const max = (failures: number, count: number): number => reconnectDelayMs(failures, count, () => 1);
  const min = (failures: number, count: number): number => reconnectDelayMs(failures, count, () => 0);
  // Three controllers: the first round tries each within half a second.
  assert.deepEqual(
    [0, 1, 2].map((f) => max(f, 3)),
    [500, 500, 500],
  );
  assert.equal(max(3, 3), 1000);
  assert.equal(max(6, 3), 2000);
  // One controller: the backoff doubles at every failure, as before lists existed.
  assert.deepEqual(
    [0, 1, 2, 3].map((f) => max(f, 1)),
    [500, 1000, 2000, 4000],
  );
  assert.equal(max(100, 1), 30_000);
  // Jitter: half to all of the wait.
  assert.equal(min(0, 3), 250);
});
