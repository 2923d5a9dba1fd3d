import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PgfleetError } from './errors.js';
import { parseSize } from './size.js';

test('sizes: bare bytes, PostgreSQL/pgBackRest units as powers of 1024, MB and MiB alike', () => {
  assert.equal(parseSize('65536', 'max-rate'), 65536);
  assert.equal(parseSize('512kB', 'max-rate'), 512 * 1024);
  assert.equal(parseSize('20MB', 'max-rate'), 20 * 1024 * 1024);
  assert.equal(parseSize('20MiB', 'max-rate'), 20 * 1024 * 1024);
  assert.equal(parseSize('1GiB', 'max-rate'), 1024 ** 3);
  assert.equal(parseSize('1.5 GB', 'max-rate'), 1.5 * 1024 ** 3);
  assert.equal(parseSize('2t', 'max-rate'), 2 * 1024 ** 4);
});

test('sizes: anything else is SizeInvalid naming the option', () => {
  for (const bad of ['', 'MB', '0', '-5MB', '20 parsecs', '1e6', '0.0001B']) {
    assert.throws(
      () => parseSize(bad, 'max-rate'),
      (e: unknown) => PgfleetError.is(e, 'SizeInvalid') && e.message.includes('--max-rate'),
      bad,
    );
  }
});
