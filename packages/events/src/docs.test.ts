// Keeps docs/events.md true: every JSON example decodes strictly (no unknown field) as an Event
// whose kind matches its payload, and equals this package's sample of that kind.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { equals, fromJsonString } from '@bufbuild/protobuf';
import { EventSchema } from '@pgfleet/proto';
import { ALL_EVENT_KINDS, eventKind, subjectFor } from './kinds.js';
import { sampleEvent } from './test-fakes.js';

const doc = readFileSync(new URL('../../../docs/events.md', import.meta.url), 'utf8');

test('docs/events.md: every JSON example is a valid event and matches the sample of its kind', () => {
  const blocks = [...doc.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1]!);
  assert.ok(blocks.length >= 8, `found ${blocks.length} examples`);
  for (const text of blocks) {
    const event = fromJsonString(EventSchema, text); // strict: unknown fields throw
    const kind = eventKind(event);
    assert.ok(
      equals(EventSchema, event, sampleEvent(kind, event.cluster, event.id)),
      `example of ${kind} differs from the sample`,
    );
  }
});

test('docs/events.md: the kinds table lists every kind and the subject rule matches subjectFor', () => {
  for (const kind of ALL_EVENT_KINDS) assert.ok(doc.includes(`| \`${kind}\``), `${kind} missing from the kinds table`);
  assert.ok(doc.includes(`(subject \`${subjectFor('main', 'backup.completed')}\`)`));
  assert.ok(doc.includes('`eu.db 7` -> `eu_db_7`'));
  assert.equal(subjectFor('eu.db 7', 'rpo.breached'), 'pgfleet.events.eu_db_7.rpo.breached');
});
