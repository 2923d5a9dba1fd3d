// The wire encoding: canonical JSON and binary round trips for every kind, tolerance and refusal.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { equals } from '@bufbuild/protobuf';
import { PgfleetError } from '@pgfleet/core';
import { EventSchema } from '@pgfleet/proto';
import { decodeEvent, decodeMessage, encodeEvent, ENCODING_HEADER } from './encoding.js';
import { ALL_EVENT_KINDS } from './kinds.js';
import { sampleEvent } from './test-fakes.js';

test('every kind survives JSON and binary round trips', () => {
  for (const kind of ALL_EVENT_KINDS) {
    const e = sampleEvent(kind);
    for (const enc of ['json', 'binary'] as const) {
      const back = decodeEvent(encodeEvent(e, enc), enc);
      assert.ok(equals(EventSchema, back, e), `${kind} via ${enc}`);
    }
  }
});

test('JSON is canonical protobuf JSON: camelCase, oneof case as a field, 64-bit as strings, enums by name, RFC 3339 times', () => {
  const json = JSON.parse(new TextDecoder().decode(encodeEvent(sampleEvent('backup.completed'))));
  assert.deepEqual(Object.keys(json), ['id', 'time', 'cluster', 'kind', 'backupCompleted']);
  assert.equal(json.kind, 'backup.completed');
  assert.equal(json.time, '2026-11-24T15:30:12Z');
  assert.equal(json.backupCompleted.backup.type, 'BACKUP_TYPE_FULL');
  assert.equal(json.backupCompleted.backup.sizeBytes, '52428800');
  assert.equal(json.backupCompleted.durationSeconds, 42.5);
  assert.equal('pinned' in json.backupCompleted.backup, false, 'zero values are left out');

  const rpo = JSON.parse(new TextDecoder().decode(encodeEvent(sampleEvent('rpo.breached'))));
  assert.deepEqual(rpo.rpoBreached, {
    rpoSeconds: 930,
    thresholdSeconds: 900,
    lastArchivedWal: '000000010000000000000029',
    lastArchivedTime: '2026-11-24T15:14:42Z',
  });
});

test('decodeEvent: no header means JSON; unknown fields and unknown kinds are tolerated', () => {
  const e = sampleEvent('backup.failed');
  assert.ok(equals(EventSchema, decodeEvent(encodeEvent(e)), e));
  assert.ok(
    equals(
      EventSchema,
      decodeMessage({
        data: encodeEvent(e, 'binary'),
        headers: { get: (k) => (k === ENCODING_HEADER ? 'binary' : '') },
      }),
      e,
    ),
  );
  assert.ok(equals(EventSchema, decodeMessage({ data: encodeEvent(e), headers: { get: () => '' } }), e));

  const newer = {
    ...JSON.parse(new TextDecoder().decode(encodeEvent(e))),
    addedLater: 1,
    kind: 'backup.teleported',
    backupTeleported: { to: 'mars' },
  };
  delete newer.backupFailed;
  const read = decodeEvent(new TextEncoder().encode(JSON.stringify(newer)));
  assert.equal(read.kind, 'backup.teleported');
  assert.equal(read.payload.case, undefined);
});

test('decodeEvent refuses garbage and unknown encodings with EventInvalid', () => {
  const isInvalid = (err: unknown) => PgfleetError.is(err, 'EventInvalid');
  assert.throws(() => decodeEvent(new TextEncoder().encode('{not json')), isInvalid);
  assert.throws(() => decodeEvent(new Uint8Array([0xff, 0xfe])), isInvalid);
  assert.throws(() => decodeEvent(new Uint8Array([0xff, 0xff, 0xff]), 'binary'), isInvalid);
  assert.throws(
    () => decodeEvent(encodeEvent(sampleEvent('rpo.breached')), 'xml'),
    (err: unknown) => isInvalid(err) && /unknown pgfleet-encoding 'xml'/.test((err as Error).message),
  );
});
