/**
 * @pgfleet/events: event kinds and subjects, the wire encoding, JetStream publishing and the
 * outbox relay (docs/events.md). Used by the controller; the agent never imports it (it must
 * not carry a NATS client).
 */
export {
  EVENT_KINDS,
  ALL_EVENT_KINDS,
  SUBJECT_PREFIX,
  EVENTS_SUBJECTS,
  isEventKind,
  caseOfKind,
  kindOfCase,
  eventKind,
  newEvent,
  clusterToken,
  subjectFor,
  filterSubject,
  parseSubject,
  type EventKind,
  type PayloadCase,
  type CaseOfKind,
  type KindOfCase,
  type PayloadOf,
  type EventPayloadInit,
  type NewEventOptions,
} from './kinds.js';
export {
  ENCODING_HEADER,
  MSG_ID_HEADER,
  EVENT_ENCODINGS,
  isEventEncoding,
  encodeEvent,
  decodeEvent,
  decodeMessage,
  type EventEncoding,
  type EventMessage,
} from './encoding.js';
export {
  EVENTS_STREAM,
  DEFAULT_STREAM_OPTIONS,
  JetStreamPublisher,
  createJetStreamPublisher,
  natsSecurityOptions,
  type NatsSecurity,
  ensureEventStream,
  eventStreamConfig,
  type EventPublisher,
  type EventStreamOptions,
  type JetStreamPublisherOptions,
} from './publisher.js';
export {
  OutboxRelay,
  backoffDelay,
  type Outbox,
  type OutboxEntry,
  type OutboxRelayOptions,
  type RelayRound,
  type RelayState,
  type RelayStatus,
} from './relay.js';
