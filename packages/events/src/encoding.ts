/**
 * How an Event travels in a NATS message. Canonical protobuf JSON by default, so any NATS client
 * in any language reads events with a JSON parser (docs/events.md); binary protobuf on request.
 * The `pgfleet-encoding` header says which, the way Content-Type would in HTTP, and
 * `Nats-Msg-Id` carries the event id so JetStream drops a redelivered copy.
 */
import { fromBinary, fromJsonString, toBinary, toJsonString } from '@bufbuild/protobuf';
import { PgfleetError } from '@pgfleet/core';
import { EventSchema, type Event } from '@pgfleet/proto';

export type EventEncoding = 'json' | 'binary';

export const EVENT_ENCODINGS: readonly EventEncoding[] = ['json', 'binary'];

/** Header naming the encoding of the message body: `json` or `binary`. */
export const ENCODING_HEADER = 'pgfleet-encoding';
/** JetStream's de-duplication header; pgfleet sets it to the event id. */
export const MSG_ID_HEADER = 'Nats-Msg-Id';

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

export function isEventEncoding(s: string): s is EventEncoding {
  return (EVENT_ENCODINGS as readonly string[]).includes(s);
}

/** The message body for an event. JSON is canonical proto3 JSON (what toJson produces). */
export function encodeEvent(event: Event, encoding: EventEncoding = 'json'): Uint8Array {
  return encoding === 'binary' ? toBinary(EventSchema, event) : utf8.encode(toJsonString(EventSchema, event));
}

/**
 * Reads a message body back into an Event. `encoding` is the pgfleet-encoding header's value;
 * a message without the header is taken as JSON. Unknown JSON fields are ignored, so a consumer
 * built against an older events.proto keeps reading events a newer controller adds fields to
 * (a kind it does not know arrives with its `kind` set and no payload).
 */
export function decodeEvent(data: Uint8Array, encoding: string | undefined = 'json'): Event {
  const enc = encoding === undefined || encoding === '' ? 'json' : encoding;
  if (!isEventEncoding(enc)) {
    throw new PgfleetError(
      'EventInvalid',
      `unknown ${ENCODING_HEADER} '${enc}' (expected ${EVENT_ENCODINGS.join(' or ')})`,
    );
  }
  try {
    return enc === 'binary'
      ? fromBinary(EventSchema, data)
      : fromJsonString(EventSchema, utf8Decoder.decode(data), { ignoreUnknownFields: true });
  } catch (err) {
    throw new PgfleetError('EventInvalid', `cannot decode a ${enc} event: ${(err as Error).message}`, { cause: err });
  }
}

/** The part of a NATS message decodeMessage needs (nats.js Msg and JsMsg both fit). */
export interface EventMessage {
  readonly data: Uint8Array;
  readonly headers?: { get(key: string): string } | undefined;
}

/** Decodes a NATS or JetStream message carrying an event, honouring its pgfleet-encoding header. */
export function decodeMessage(msg: EventMessage): Event {
  return decodeEvent(msg.data, msg.headers?.get(ENCODING_HEADER));
}
