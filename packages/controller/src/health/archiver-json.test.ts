// The archiver figures read back from the catalog's JSON without protobuf's JSON parser: always
// the message fromJson returns, whatever the agent reported, and fromJson's own answer (or error)
// for any form the fast path does not read.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { create, equals, fromJson, toJson, type JsonValue } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { ArchiverStatsSchema } from '@pgfleet/proto';
import { archiverStatsFromCanonicalJson } from './archiver-json.js';
import { archiverStatsFromJson } from './health.js';

const fromJsonOf = (json: JsonValue) => fromJson(ArchiverStatsSchema, json, { ignoreUnknownFields: true });

test('what heartbeats store reads back as fromJson reads it', () => {
  const times = [
    undefined,
    timestampFromMs(Date.parse('2026-03-04T10:17:30Z')),
    timestampFromMs(Date.parse('2026-03-04T10:17:30.123Z')),
    { ...timestampFromMs(Date.parse('2026-03-04T10:17:30Z')), nanos: 123_456 },
    { ...timestampFromMs(Date.parse('2026-03-04T10:17:30Z')), nanos: 1 },
    timestampFromMs(Date.parse('1970-01-01T00:00:00Z')),
    timestampFromMs(Date.parse('9999-12-31T23:59:59Z')),
  ];
  for (const lastArchivedTime of times)
    for (const lastFailedTime of [undefined, lastArchivedTime]) {
      for (const counts of [
        [0n, 0n],
        [12n, 3n],
        [2n ** 64n - 1n, 2n ** 53n + 1n],
      ]) {
        const stats = create(ArchiverStatsSchema, {
          archivedCount: counts[0]!,
          failedCount: counts[1]!,
          lastArchivedWal: counts[0] ? '000000010000000000000003' : '',
          lastFailedWal: counts[1] ? '000000010000000000000004.partial' : '',
          ...(lastArchivedTime ? { lastArchivedTime } : {}),
          ...(lastFailedTime ? { lastFailedTime } : {}),
        });
        const json = toJson(ArchiverStatsSchema, stats) as object;
        const fast = archiverStatsFromCanonicalJson(json);
        assert.ok(fast, JSON.stringify(json));
        assert.ok(equals(ArchiverStatsSchema, fast, fromJsonOf(json as JsonValue)), JSON.stringify(json));
        assert.ok(equals(ArchiverStatsSchema, fast, stats));
      }
    }
});

test('other forms are left to fromJson, which gives the same answer or error as before', () => {
  const others: JsonValue[] = [
    { archived_count: '5' }, // proto field name
    { archivedCount: 5 }, // a number
    { archivedCount: '-1' },
    { lastArchivedTime: '2026-03-04T10:17:30+01:00' }, // an offset
    { lastArchivedTime: '2026-13-04T10:17:30Z' }, // no such month
    { lastArchivedTime: 'yesterday' },
    { lastArchivedWal: null },
    { lastArchivedWal: 'x', somethingNew: 1 },
    { archivedCount: '100000000000000000000' }, // above 2^64
  ];
  for (const json of others) {
    assert.equal(archiverStatsFromCanonicalJson(json as object), undefined, JSON.stringify(json));
    let expected: unknown;
    try {
      expected = fromJsonOf(json);
    } catch (err) {
      assert.throws(() => archiverStatsFromJson(json), { message: (err as Error).message });
      continue;
    }
    assert.ok(equals(ArchiverStatsSchema, archiverStatsFromJson(json), expected as never), JSON.stringify(json));
  }
});
