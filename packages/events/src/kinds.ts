/**
 * Event kinds and NATS subjects: the one table that maps a kind string ("backup.completed") to
 * the case of Event.payload that carries it ("backupCompleted"), and the subject rule
 * `pgfleet.events.<cluster>.<kind>`. Every other module derives kinds, cases and subjects from
 * here, so a kind is spelled exactly once.
 */
import { randomUUID } from 'node:crypto';
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { PgfleetError } from '@pgfleet/core';
import { EventSchema, type Event } from '@pgfleet/proto';

/** The TypeScript names of Event.payload's cases. */
export type PayloadCase = NonNullable<Event['payload']['case']>;

/**
 * Kind -> payload case. The proto field of each case is the kind with '.' replaced by '_'
 * (`wal.archive_failed` -> `wal_archive_failed`), which a test checks against the descriptor.
 */
export const EVENT_KINDS = {
  'agent.connected': 'agentConnected',
  'agent.disconnected': 'agentDisconnected',
  'agent.silent': 'agentSilent',
  'backup.started': 'backupStarted',
  'backup.completed': 'backupCompleted',
  'backup.failed': 'backupFailed',
  'backup.stale': 'backupStale',
  'wal.archive_failed': 'walArchiveFailed',
  'wal.archive_recovered': 'walArchiveRecovered',
  'wal.gap_detected': 'walGapDetected',
  'rpo.breached': 'rpoBreached',
  'rpo.recovered': 'rpoRecovered',
  'retention.planned': 'retentionPlanned',
  'retention.expired': 'retentionExpired',
  'restore.completed': 'restoreCompleted',
  'restore.failed': 'restoreFailed',
  'verify.completed': 'verifyCompleted',
  'drill.completed': 'drillCompleted',
  'drill.failed': 'drillFailed',
  'key.rotated': 'keyRotated',
  'dump.completed': 'dumpCompleted',
  'dump.failed': 'dumpFailed',
  'dump.stale': 'dumpStale',
} as const satisfies Record<string, PayloadCase>;

export type EventKind = keyof typeof EVENT_KINDS;

/** The payload case of a kind, e.g. CaseOfKind<'rpo.breached'> = 'rpoBreached'. */
export type CaseOfKind<K extends EventKind> = (typeof EVENT_KINDS)[K];
/** The kind of a payload case, e.g. KindOfCase<'rpoBreached'> = 'rpo.breached'. */
export type KindOfCase<C extends PayloadCase> = { [K in EventKind]: CaseOfKind<K> extends C ? K : never }[EventKind];

// Compile-time completeness: a payload case added to events.proto without a kind here fails the build.
type CasesWithoutKind = Exclude<PayloadCase, CaseOfKind<EventKind>>;
const everyCaseHasAKind: [CasesWithoutKind] extends [never] ? true : CasesWithoutKind = true;
void everyCaseHasAKind;

const kindByCase = new Map<string, EventKind>(
  (Object.keys(EVENT_KINDS) as EventKind[]).map((kind) => [EVENT_KINDS[kind], kind]),
);

/** Every kind, in table order. */
export const ALL_EVENT_KINDS: readonly EventKind[] = Object.freeze(Object.keys(EVENT_KINDS) as EventKind[]);

export function isEventKind(kind: string): kind is EventKind {
  return Object.hasOwn(EVENT_KINDS, kind);
}

export function caseOfKind<K extends EventKind>(kind: K): CaseOfKind<K> {
  return EVENT_KINDS[kind];
}

export function kindOfCase<C extends PayloadCase>(payloadCase: C): KindOfCase<C> {
  const kind = kindByCase.get(payloadCase);
  if (kind === undefined) throw new PgfleetError('Internal', `payload case ${payloadCase} has no event kind`);
  return kind as KindOfCase<C>;
}

/** The payload message of one kind, e.g. PayloadOf<'rpo.breached'> = RpoBreached. */
export type PayloadOf<K extends EventKind> = Extract<Event['payload'], { case: CaseOfKind<K> }>['value'];

/** What newEvent takes: one case of Event.payload with its value as a plain init object. */
export type EventPayloadInit = Exclude<
  NonNullable<MessageInitShape<typeof EventSchema>['payload']>,
  { case: undefined }
>;

export interface NewEventOptions {
  /** Default: a random UUID. */
  id?: string;
  /** When the state change happened; default now. */
  time?: Date;
}

/**
 * Builds an Event with a fresh UUID id and time, its kind derived from the payload's case:
 *   newEvent('main', { case: 'rpoBreached', value: { rpoSeconds: 930, thresholdSeconds: 900 } })
 * The outbox stores what this returns; the id stays the event's identity through every retry.
 */
export function newEvent(cluster: string, payload: EventPayloadInit, options: NewEventOptions = {}): Event {
  if (cluster === '') throw new PgfleetError('InvalidArgument', 'an event needs a cluster name');
  const kind = kindOfCase(payload.case);
  return create(EventSchema, {
    id: options.id ?? randomUUID(),
    time: timestampFromDate(options.time ?? new Date()),
    cluster,
    kind,
    payload,
  });
}

/**
 * The kind of an event, checked against its payload. Throws EventInvalid for an event whose
 * kind is unknown, missing, or disagrees with the payload's case (only a bug produces those).
 */
export function eventKind(event: Event): EventKind {
  const payloadCase = event.payload.case;
  if (!isEventKind(event.kind))
    throw new PgfleetError('EventInvalid', `event ${event.id}: unknown kind '${event.kind}'`);
  if (payloadCase === undefined || EVENT_KINDS[event.kind] !== payloadCase) {
    throw new PgfleetError(
      'EventInvalid',
      `event ${event.id}: kind '${event.kind}' does not match its payload (${payloadCase ?? 'none'})`,
    );
  }
  return event.kind;
}

/** The common prefix of every event subject. */
export const SUBJECT_PREFIX = 'pgfleet.events';
/** The subjects the PGFLEET_EVENTS stream captures. */
export const EVENTS_SUBJECTS = `${SUBJECT_PREFIX}.>`;

/**
 * A cluster name as one NATS subject token. '.' separates tokens and '*' and '>' are wildcards,
 * and whitespace is not allowed in a subject, so each of these becomes '_'; an empty name
 * becomes '_'. Everything else is kept. Two names can map to the same token ("db.1", "db_1"):
 * the Event's `cluster` field always holds the real name.
 */
export function clusterToken(cluster: string): string {
  const token = cluster.replace(/[.*>\s]/g, '_');
  return token === '' ? '_' : token;
}

/** `pgfleet.events.<cluster token>.<kind>`, e.g. pgfleet.events.main.backup.completed. */
export function subjectFor(cluster: string, kind: EventKind): string {
  return `${SUBJECT_PREFIX}.${clusterToken(cluster)}.${kind}`;
}

/**
 * A subscription filter: one cluster or all ('*'), one kind, a family ('backup.*') or all.
 *   filterSubject({ kind: 'backup.failed' }) = pgfleet.events.*.backup.failed
 *   filterSubject({ cluster: 'main' })      = pgfleet.events.main.>
 */
export function filterSubject(filter: { cluster?: string; kind?: EventKind | `${string}.*` } = {}): string {
  const cluster = filter.cluster === undefined ? '*' : clusterToken(filter.cluster);
  return `${SUBJECT_PREFIX}.${cluster}.${filter.kind ?? '>'}`;
}

/** Splits an event subject into its cluster token and kind; undefined if it is not one. */
export function parseSubject(subject: string): { clusterToken: string; kind: EventKind } | undefined {
  const prefix = `${SUBJECT_PREFIX}.`;
  if (!subject.startsWith(prefix)) return undefined;
  const rest = subject.slice(prefix.length);
  const dot = rest.indexOf('.');
  if (dot <= 0) return undefined;
  const kind = rest.slice(dot + 1);
  return isEventKind(kind) ? { clusterToken: rest.slice(0, dot), kind } : undefined;
}
