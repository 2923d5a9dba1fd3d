/**
 * Publishing events to NATS JetStream.
 *
 * `EventPublisher` is the seam the outbox relay (and any test) works against: one call that
 * resolves once the event is durably stored, or rejects so the caller retries the same event.
 * The JetStream implementation connects lazily (the controller may start before NATS does),
 * lets the NATS client reconnect by itself, creates the PGFLEET_EVENTS stream if it is missing,
 * and publishes with `Nats-Msg-Id` = event id so a retried publish whose first ack was lost is
 * dropped by the server instead of stored twice.
 */
import { readFileSync } from 'node:fs';
import {
  connect,
  credsAuthenticator,
  headers as natsHeaders,
  nanos,
  type NatsConnection,
  type NodeConnectionOptions,
} from '@nats-io/transport-node';
import {
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
import { PgfleetError, redactCredentials, silentLogger, type Logger } from '@pgfleet/core';
import type { Event } from '@pgfleet/proto';
import { ENCODING_HEADER, encodeEvent, type EventEncoding } from './encoding.js';
import { EVENTS_SUBJECTS, eventKind, subjectFor } from './kinds.js';

/** What the relay needs from an event bus. */
export interface EventPublisher {
  /**
   * Resolves once the event is stored; an event stored before under the same id counts (that
   * is what makes retrying safe). Rejects with a PgfleetError (EventPublishFailed when the bus
   * is unreachable or refuses, EventInvalid for an event no retry can publish).
   */
  publish(event: Event): Promise<void>;
  /** Releases the connection; publish() rejects afterwards. Idempotent. */
  close(): Promise<void>;
}

/** The JetStream stream holding every event. */
export const EVENTS_STREAM = 'PGFLEET_EVENTS';

export interface EventStreamOptions {
  /** Events older than this are dropped. Default 7 days; 0 keeps them until maxBytes says otherwise. */
  maxAgeSeconds?: number;
  /** The oldest events are dropped beyond this size. Default 1 GiB; -1 means no limit. */
  maxBytes?: number;
  /**
   * How long JetStream remembers event ids: a copy republished within this window is dropped.
   * Default 1 hour, never more than maxAgeSeconds. It bounds how long a NATS outage may hide a
   * publish whose ack was lost and still stay duplicate-free (docs/events.md).
   */
  duplicateWindowSeconds?: number;
  /** Replicas in a clustered NATS; default 1. */
  replicas?: number;
}

export const DEFAULT_STREAM_OPTIONS = {
  maxAgeSeconds: 7 * 24 * 3600,
  maxBytes: 1024 ** 3,
  duplicateWindowSeconds: 3600,
  replicas: 1,
} as const satisfies Required<EventStreamOptions>;

/** The configuration pgfleet creates PGFLEET_EVENTS with: file storage, limits retention. */
export function eventStreamConfig(opts: EventStreamOptions = {}): Partial<StreamConfig> & { name: string } {
  const maxAge = opts.maxAgeSeconds ?? DEFAULT_STREAM_OPTIONS.maxAgeSeconds;
  let window = opts.duplicateWindowSeconds ?? DEFAULT_STREAM_OPTIONS.duplicateWindowSeconds;
  if (maxAge > 0) window = Math.min(window, maxAge); // the server refuses a window beyond max_age
  for (const [key, v] of Object.entries({ maxAgeSeconds: maxAge, duplicateWindowSeconds: window })) {
    if (!Number.isFinite(v) || v < 0)
      throw new PgfleetError('InvalidConfig', `events stream ${key} must be a number >= 0, got ${v}`);
  }
  return {
    name: EVENTS_STREAM,
    subjects: [EVENTS_SUBJECTS],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(maxAge * 1000),
    max_bytes: opts.maxBytes ?? DEFAULT_STREAM_OPTIONS.maxBytes,
    duplicate_window: nanos(window * 1000),
    num_replicas: opts.replicas ?? DEFAULT_STREAM_OPTIONS.replicas,
  };
}

/**
 * Creates PGFLEET_EVENTS if it does not exist. An existing stream is left exactly as it is (an
 * operator may have tuned it), with a warning if it does not capture pgfleet.events.>.
 */
export async function ensureEventStream(
  jsm: JetStreamManager,
  opts: EventStreamOptions = {},
  logger: Logger = silentLogger(),
): Promise<'created' | 'exists'> {
  try {
    const info = await jsm.streams.info(EVENTS_STREAM);
    if (!(info.config.subjects ?? []).includes(EVENTS_SUBJECTS)) {
      logger.warn(
        { stream: EVENTS_STREAM, subjects: info.config.subjects },
        `stream ${EVENTS_STREAM} exists but does not capture ${EVENTS_SUBJECTS}; publishes may be refused`,
      );
    }
    return 'exists';
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound)) throw err;
  }
  const config = eventStreamConfig(opts);
  try {
    await jsm.streams.add(config);
  } catch (err) {
    // Another controller created it between our info and add: theirs stands.
    if (err instanceof JetStreamApiError && err.code === STREAM_NAME_IN_USE) return 'exists';
    throw err;
  }
  logger.info(
    { stream: EVENTS_STREAM, maxAge: opts.maxAgeSeconds, maxBytes: config.max_bytes },
    `created stream ${EVENTS_STREAM}`,
  );
  return 'created';
}

/** JSStreamNameExistErr: "stream name already in use with a different configuration". */
const STREAM_NAME_IN_USE = 10058;

export interface JetStreamPublisherOptions {
  /** NATS server URL(s), e.g. nats://127.0.0.1:4222. */
  url: string | string[];
  /** Message body encoding; default 'json' (canonical protobuf JSON). */
  encoding?: EventEncoding;
  /** Retention of PGFLEET_EVENTS when this publisher creates it. */
  stream?: EventStreamOptions;
  /** How long one publish (or stream lookup) waits for the server's answer; default 5 s. */
  ackTimeoutMs?: number;
  /** How long one connection attempt may take; default 5 s. */
  connectTimeoutMs?: number;
  /** Connection name shown by NATS monitoring; default 'pgfleet-events'. */
  connectionName?: string;
  /** Credentials, TLS and the like, passed to the NATS client as they are. */
  natsOptions?: Omit<NodeConnectionOptions, 'servers'>;
  logger?: Logger;
}

/** How the controller proves itself to NATS and verifies it (options --nats-*). */
export interface NatsSecurity {
  user?: string;
  password?: string;
  /** A NATS credentials file (JWT and NKey seed, from nsc). */
  credsFile?: string;
  /** CA that signed the server's certificate: TLS required and verified against it. */
  tlsCa?: string;
  /** Client certificate and key for servers that verify clients (tls verify). */
  tlsCert?: string;
  tlsKey?: string;
}

/** NATS client options for NatsSecurity: credentials read once here, TLS files read by the client. */
export function natsSecurityOptions(s: NatsSecurity): Omit<NodeConnectionOptions, 'servers'> {
  if ((s.tlsCert === undefined) !== (s.tlsKey === undefined)) {
    throw new PgfleetError('InvalidConfig', 'options nats-tls-cert and nats-tls-key go together: set both or neither');
  }
  if (s.credsFile && s.user) {
    throw new PgfleetError('InvalidConfig', 'options nats-creds-file and nats-user are two ways to log in: choose one');
  }
  let creds: Uint8Array | undefined;
  if (s.credsFile) {
    try {
      creds = readFileSync(s.credsFile);
    } catch (err) {
      throw new PgfleetError(
        'InvalidConfig',
        `option 'nats-creds-file': cannot read ${s.credsFile}: ${describe(err)}`,
        {
          cause: err,
        },
      );
    }
  }
  const tls =
    s.tlsCa || s.tlsCert
      ? {
          ...(s.tlsCa ? { caFile: s.tlsCa } : {}),
          ...(s.tlsCert ? { certFile: s.tlsCert, keyFile: s.tlsKey! } : {}),
        }
      : undefined;
  return {
    ...(s.user ? { user: s.user, ...(s.password !== undefined ? { pass: s.password } : {}) } : {}),
    ...(creds ? { authenticator: credsAuthenticator(creds) } : {}),
    ...(tls ? { tls } : {}),
  };
}

interface Connected {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
}

/**
 * EventPublisher on NATS JetStream. Nothing happens at construction: the first publish (or
 * connect()) opens the connection, and a failed attempt is simply made again by the next call.
 */
export class JetStreamPublisher implements EventPublisher {
  readonly encoding: EventEncoding;
  private readonly opts: JetStreamPublisherOptions;
  private readonly log: Logger;
  private connecting: Promise<Connected> | undefined;
  private streamReady: Promise<void> | undefined;
  /** The connection in use, so a late 'closed' of an older one changes nothing. */
  private current: NatsConnection | undefined;
  private closed = false;

  constructor(opts: JetStreamPublisherOptions) {
    this.opts = opts;
    this.encoding = opts.encoding ?? 'json';
    this.log = (opts.logger ?? silentLogger()).child({ component: 'event-publisher' });
    eventStreamConfig(opts.stream); // validate the retention settings now, not at the first publish
  }

  /** Connects and makes sure the stream exists; for callers that want NATS problems at startup. */
  async connect(): Promise<void> {
    await this.ready();
  }

  async publish(event: Event): Promise<void> {
    const kind = eventKind(event);
    if (event.id === '')
      throw new PgfleetError('EventInvalid', `a ${kind} event for cluster ${event.cluster} has no id`);
    const subject = subjectFor(event.cluster, kind);
    const { js } = await this.ready();
    const h = natsHeaders();
    h.set(ENCODING_HEADER, this.encoding);
    try {
      // msgID sets Nats-Msg-Id; expect.streamName makes the server refuse the message if some
      // other stream captures the subject. A duplicate ack means an earlier attempt was stored.
      const ack = await js.publish(subject, encodeEvent(event, this.encoding), {
        msgID: event.id,
        headers: h,
        timeout: this.opts.ackTimeoutMs ?? 5000,
        expect: { streamName: EVENTS_STREAM },
      });
      if (ack.duplicate)
        this.log.debug(
          { eventId: event.id, kind, seq: ack.seq },
          'event was already in the stream (republished after a lost ack)',
        );
    } catch (err) {
      // The stream may be gone (a new, empty server): check it again before the next publish.
      this.streamReady = undefined;
      throw new PgfleetError(
        'EventPublishFailed',
        `publishing event ${event.id} to ${subject} failed: ${describe(err)}`,
        { cause: err },
      );
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const c = this.connecting;
    this.connecting = undefined;
    const conn = await c?.catch(() => undefined);
    if (conn && !conn.nc.isClosed()) await conn.nc.close();
  }

  private async ready(): Promise<Connected> {
    if (this.closed) throw new PgfleetError('EventPublishFailed', 'the event publisher is closed');
    this.connecting ??= this.open().catch((err: unknown) => {
      this.connecting = undefined;
      throw err;
    });
    const conn = await this.connecting;
    this.streamReady ??= ensureEventStream(conn.jsm, this.opts.stream, this.log).then(
      () => undefined,
      (err: unknown) => {
        this.streamReady = undefined;
        throw new PgfleetError(
          'EventPublishFailed',
          `cannot create or find stream ${EVENTS_STREAM}: ${describe(err)}`,
          { cause: err },
        );
      },
    );
    await this.streamReady;
    return conn;
  }

  private async open(): Promise<Connected> {
    const servers = this.opts.url;
    let nc: NatsConnection;
    try {
      nc = await connect({
        // Once connected, the client reconnects forever; publishes time out meanwhile and the
        // relay retries them.
        maxReconnectAttempts: -1,
        reconnectTimeWait: 1000,
        name: this.opts.connectionName ?? 'pgfleet-events',
        ...this.opts.natsOptions,
        servers,
        timeout: this.opts.connectTimeoutMs ?? 5000,
      });
    } catch (err) {
      throw new PgfleetError(
        'EventPublishFailed',
        `cannot connect to NATS at ${redactCredentials(String(servers))}: ${describe(err)}`,
        {
          cause: err,
        },
      );
    }
    if (this.closed) {
      await nc.close();
      throw new PgfleetError('EventPublishFailed', 'the event publisher is closed');
    }
    void this.watch(nc);
    try {
      // Stream lookups share the publish ack timeout, so a retry during an outage fails as fast.
      const timeout = this.opts.ackTimeoutMs ?? 5000;
      const jsm = await jetstreamManager(nc, { timeout });
      this.current = nc;
      return { nc, js: jetstream(nc, { timeout }), jsm };
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw new PgfleetError(
        'EventPublishFailed',
        `JetStream is not available at ${redactCredentials(String(servers))}: ${describe(err)}`,
        { cause: err },
      );
    }
  }

  /** Logs connection changes and forgets a connection that closed for good. */
  private async watch(nc: NatsConnection): Promise<void> {
    void nc.closed().then((err) => {
      if (this.closed || this.current !== nc) return;
      this.current = undefined;
      this.log.warn({ err }, 'NATS connection closed; the next publish reconnects');
      this.connecting = undefined;
      this.streamReady = undefined;
    });
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') this.log.warn({ server: s.server }, 'NATS disconnected; the client reconnects');
      else if (s.type === 'reconnect') this.log.info({ server: s.server }, 'NATS reconnected');
    }
  }
}

export function createJetStreamPublisher(opts: JetStreamPublisherOptions): JetStreamPublisher {
  return new JetStreamPublisher(opts);
}

function describe(err: unknown): string {
  if (err instanceof PgfleetError) return err.message;
  if (err instanceof Error) return err.cause instanceof Error ? `${err.message} (${err.cause.message})` : err.message;
  return String(err);
}
