// The kind table against the proto descriptor, subject rules, newEvent.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { PgfleetError } from '@pgfleet/core';
import { EventSchema } from '@pgfleet/proto';
import {
  ALL_EVENT_KINDS,
  EVENT_KINDS,
  clusterToken,
  eventKind,
  filterSubject,
  isEventKind,
  kindOfCase,
  newEvent,
  parseSubject,
  subjectFor,
} from './kinds.js';

test('every payload case of Event has exactly one kind, named after its proto field', () => {
  const oneof = EventSchema.oneofs.find((o) => o.name === 'payload');
  assert.ok(oneof);
  const fromProto = oneof.fields
    .map((f) => ({ field: f.name, case: f.localName }))
    .sort((a, b) => a.field.localeCompare(b.field));
  const fromTable = ALL_EVENT_KINDS.map((k) => ({ field: k.replace('.', '_'), case: EVENT_KINDS[k] })).sort((a, b) =>
    a.field.localeCompare(b.field),
  );
  assert.deepEqual(fromTable, fromProto);
  assert.equal(ALL_EVENT_KINDS.length, 23);
  for (const k of ALL_EVENT_KINDS) assert.match(k, /^[a-z]+\.[a-z_]+$/, 'a kind is two subject tokens');
});

test('isEventKind and kindOfCase', () => {
  assert.equal(isEventKind('rpo.breached'), true);
  assert.equal(isEventKind('rpo'), false);
  assert.equal(isEventKind('toString'), false, 'no prototype keys');
  assert.equal(kindOfCase('walArchiveFailed'), 'wal.archive_failed');
});

test('subjectFor: pgfleet.events.<cluster>.<kind>, cluster names sanitised into one token', () => {
  assert.equal(subjectFor('main', 'backup.completed'), 'pgfleet.events.main.backup.completed');
  assert.equal(subjectFor('eu-west/db-01', 'rpo.breached'), 'pgfleet.events.eu-west/db-01.rpo.breached');
  assert.equal(clusterToken('prod.db 1*>'), 'prod_db_1__');
  assert.equal(clusterToken('a\tb\nc'), 'a_b_c');
  assert.equal(clusterToken(''), '_');
  assert.equal(clusterToken('Ünïcode-ok'), 'Ünïcode-ok');
});

test('filterSubject and parseSubject', () => {
  assert.equal(filterSubject(), 'pgfleet.events.*.>');
  assert.equal(filterSubject({ kind: 'backup.failed' }), 'pgfleet.events.*.backup.failed');
  assert.equal(filterSubject({ cluster: 'db.1', kind: 'rpo.*' }), 'pgfleet.events.db_1.rpo.*');
  assert.equal(filterSubject({ cluster: 'main' }), 'pgfleet.events.main.>');
  assert.deepEqual(parseSubject('pgfleet.events.db_1.wal.archive_failed'), {
    clusterToken: 'db_1',
    kind: 'wal.archive_failed',
  });
  assert.equal(parseSubject('pgfleet.events.db_1.wal.nope'), undefined);
  assert.equal(parseSubject('other.events.db_1.rpo.breached'), undefined);
});

test('newEvent: uuid id, time now, kind from the payload case', () => {
  const before = Date.now();
  const e = newEvent('main', { case: 'rpoBreached', value: { rpoSeconds: 930, thresholdSeconds: 900 } });
  assert.match(e.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.ok(e.time);
  const t = timestampDate(e.time).getTime();
  assert.ok(t >= before - 1 && t <= Date.now() + 1);
  assert.equal(e.cluster, 'main');
  assert.equal(e.kind, 'rpo.breached');
  assert.equal(e.payload.case, 'rpoBreached');
  assert.equal(e.payload.value?.rpoSeconds, 930);
  assert.equal(eventKind(e), 'rpo.breached');
  assert.notEqual(newEvent('main', { case: 'rpoBreached', value: {} }).id, e.id);

  const fixed = newEvent('main', { case: 'agentSilent', value: {} }, { id: 'x', time: new Date(0) });
  assert.equal(fixed.id, 'x');
  assert.equal(timestampDate(fixed.time!).getTime(), 0);
  assert.throws(
    () => newEvent('', { case: 'agentSilent', value: {} }),
    (e: unknown) => PgfleetError.is(e, 'InvalidArgument'),
  );
});

test('eventKind refuses an event whose kind and payload disagree', () => {
  const e = newEvent('main', { case: 'backupFailed', value: {} });
  e.kind = 'backup.completed';
  assert.throws(
    () => eventKind(e),
    (err: unknown) => PgfleetError.is(err, 'EventInvalid') && /does not match/.test(err.message),
  );
  e.kind = 'backup.exploded';
  assert.throws(
    () => eventKind(e),
    (err: unknown) => PgfleetError.is(err, 'EventInvalid') && /unknown kind/.test(err.message),
  );
});
