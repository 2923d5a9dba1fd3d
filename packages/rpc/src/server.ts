/**
 * Serving protobuf-es services with grpc-js. Handlers are plain async functions over protobuf-es
 * messages (the controller never sees a grpc-js call object): unary handlers return the response,
 * server-streaming handlers return an async iterable, bidi handlers get a BidiStream. Everything a
 * handler throws goes through errors.ts, so status codes and PGF codes are decided in one place.
 *
 * Backpressure: responses of a server-streaming handler are pulled from its iterable only while
 * the transport accepts them; incoming messages of a bidi call are read on demand, so a slow
 * handler makes gRPC flow control slow the peer down instead of filling memory.
 */
import type { Http2Session } from 'node:http2';
import type { Readable, Writable } from 'node:stream';
import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from '@bufbuild/protobuf';
import { PgfleetError, type Logger } from '@pgfleet/core';
import { toServerStatus } from './errors.js';
import { DEFAULT_HANDSHAKE_TIMEOUT_MS } from './tls.js';
import { methodPath, serviceDefinition, UndecodableMessage } from './service-definition.js';

export interface CallContext {
  /** Request headers sent by the client. */
  metadata: grpc.Metadata;
  peer: string;
  /**
   * Aborted when the client cancels, disconnects or the call deadline passes; the reason is a
   * PgfleetError (Cancelled or Timeout). Long-running handlers must watch it.
   */
  signal: AbortSignal;
  deadline?: Date;
  /**
   * The client certificate, only when the connection is TLS and the certificate verified against
   * the server's CA (an untrusted or missing certificate leaves it unset).
   */
  peerCertificate?: PeerCertificate;
}

export interface BidiStream<In, Out extends DescMessage> extends AsyncIterable<In> {
  /** Queues a message. Throws PgfleetError Cancelled if the call is already gone. */
  send(msg: MessageInitShape<Out>): void;
  /** Ends the response side with status OK. Idempotent. */
  end(): void;
  /** Resolves once queued messages have been handed to the transport (or the call ended). */
  drained?(): Promise<void>;
}

type UnaryImpl<I extends DescMessage, O extends DescMessage> = (
  req: MessageShape<I>,
  ctx: CallContext,
) => Promise<MessageInitShape<O>>;
type ServerStreamingImpl<I extends DescMessage, O extends DescMessage> = (
  req: MessageShape<I>,
  ctx: CallContext,
) => AsyncIterable<MessageInitShape<O>>;
type BidiStreamingImpl<I extends DescMessage, O extends DescMessage> = (
  stream: BidiStream<MessageShape<I>, O>,
  ctx: CallContext,
) => Promise<void>;

/** Handler type for one method; client streaming is not used by pgfleet and not supported. */
export type MethodImpl<M> = M extends {
  methodKind: 'unary';
  input: infer I extends DescMessage;
  output: infer O extends DescMessage;
}
  ? UnaryImpl<I, O>
  : M extends {
        methodKind: 'server_streaming';
        input: infer I extends DescMessage;
        output: infer O extends DescMessage;
      }
    ? ServerStreamingImpl<I, O>
    : M extends {
          methodKind: 'bidi_streaming';
          input: infer I extends DescMessage;
          output: infer O extends DescMessage;
        }
      ? BidiStreamingImpl<I, O>
      : never;

export type ServiceImpl<S extends DescService> = {
  [K in keyof S['method']]: MethodImpl<S['method'][K]>;
};

export interface AddServiceOptions {
  /** Receives handler errors that are bugs (anything but a PgfleetError, or PgfleetError Internal). */
  logger?: Logger;
  /**
   * Runs before every handler of the service with the method and its call context; throwing (a
   * PgfleetError Unauthenticated or PermissionDenied) fails the call before the handler sees it.
   * One hook per service keeps access control in one place instead of in each handler.
   */
  authorize?: (method: DescMethod, ctx: CallContext) => void | Promise<void>;
  /**
   * Checks (and may clamp in place) the request of a unary or server-streaming call after
   * authorization, before the handler; throwing fails the call. Bounds on what clients send live
   * here once instead of in each handler. Bidi handlers check each message they read themselves,
   * since one bad message need not end a long-lived stream.
   */
  checkRequest?: (method: DescMethod, request: MessageShape<DescMessage>) => void;
}

/** The decoded request, or MalformedMessage when its bytes were not a message of the method's input. */
function decoded<T>(method: DescMethod, value: T | UndecodableMessage): T {
  if (!(value instanceof UndecodableMessage)) return value;
  const why = value.cause instanceof Error ? value.cause.message : String(value.cause);
  throw new PgfleetError(
    'MalformedMessage',
    `${methodPath(method)}: the request is not a valid ${value.typeName} message (${why.slice(0, 200)})`,
    { cause: value.cause },
  );
}

// setTimeout fires immediately for delays above 2^31-1 ms; such deadlines are as good as none.
const MAX_TIMER_MS = 2 ** 31 - 1;

interface ServerCall {
  metadata: grpc.Metadata;
  getPeer(): string;
  getDeadline(): grpc.Deadline;
  getAuthContext(): { sslPeerCertificate?: PeerCertificate } | null;
  on(event: 'cancelled', listener: () => void): unknown;
  removeListener(event: 'cancelled', listener: () => void): unknown;
}

function callContext(call: ServerCall, onAbort?: () => void): { ctx: CallContext; dispose(): void } {
  const controller = new AbortController();
  const onCancelled = (): void => {
    if (!controller.signal.aborted)
      controller.abort(new PgfleetError('Cancelled', 'the client cancelled the call or went away'));
  };
  call.on('cancelled', onCancelled);
  const raw = call.getDeadline();
  const deadlineMs = raw instanceof Date ? raw.getTime() : raw;
  let timer: NodeJS.Timeout | undefined;
  // grpc-js answers DEADLINE_EXCEEDED itself but does not tell the handler; this does.
  if (Number.isFinite(deadlineMs) && deadlineMs - Date.now() < MAX_TIMER_MS) {
    timer = setTimeout(
      () => {
        if (!controller.signal.aborted) controller.abort(new PgfleetError('Timeout', 'the call deadline passed'));
      },
      Math.max(0, deadlineMs - Date.now()),
    );
    timer.unref();
  }
  if (onAbort) controller.signal.addEventListener('abort', onAbort, { once: true });
  const ctx: CallContext = { metadata: call.metadata, peer: call.getPeer(), signal: controller.signal };
  if (Number.isFinite(deadlineMs)) ctx.deadline = new Date(deadlineMs);
  // grpc-js reports the certificate only for a verified (socket.authorized) TLS connection.
  const peerCertificate = call.getAuthContext()?.sslPeerCertificate;
  if (peerCertificate) ctx.peerCertificate = peerCertificate;
  return {
    ctx,
    dispose() {
      call.removeListener('cancelled', onCancelled);
      if (timer) clearTimeout(timer);
      if (onAbort) controller.signal.removeEventListener('abort', onAbort);
    },
  };
}

/** Waits for 'drain', or for the call to end; never rejects. */
function drained(stream: Writable, signal: AbortSignal): Promise<void> {
  if (!stream.writableNeedDrain || stream.destroyed || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      stream.removeListener('drain', done);
      stream.removeListener('close', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    stream.once('drain', done);
    stream.once('close', done);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Incoming messages, read on demand; a cancelled call ends iteration with the abort reason. */
async function* incoming<T>(method: DescMethod, stream: Readable, signal: AbortSignal): AsyncGenerator<T> {
  try {
    // destroyOnReturn false: a handler that stops reading must still be able to send.
    for await (const msg of stream.iterator({ destroyOnReturn: false })) yield decoded(method, msg as T);
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw err;
  }
  if (signal.aborted) throw signal.reason;
}

function unaryHandler(
  method: DescMethod,
  impl: UnaryImpl<DescMessage, DescMessage>,
  opts: AddServiceOptions,
): grpc.handleUnaryCall<MessageShape<DescMessage>, unknown> {
  return (call, callback) => {
    const { ctx, dispose } = callContext(call);
    void (async () => {
      try {
        await opts.authorize?.(method, ctx);
        const req = decoded(method, call.request);
        opts.checkRequest?.(method, req);
        const res = create(method.output, await impl(req, ctx));
        callback(null, res);
      } catch (err) {
        callback(toServerStatus(err, opts.logger, methodPath(method)));
      } finally {
        dispose();
      }
    })();
  };
}

function serverStreamingHandler(
  method: DescMethod,
  impl: ServerStreamingImpl<DescMessage, DescMessage>,
  opts: AddServiceOptions,
): grpc.handleServerStreamingCall<MessageShape<DescMessage>, unknown> {
  return (call) => {
    const { ctx, dispose } = callContext(call);
    void (async () => {
      try {
        await opts.authorize?.(method, ctx);
        const req = decoded(method, call.request);
        opts.checkRequest?.(method, req);
        // for-await calls return() on the handler's generator when we stop early, so its finally runs.
        for await (const item of impl(req, ctx)) {
          if (ctx.signal.aborted) break;
          if (!call.write(create(method.output, item))) await drained(call, ctx.signal);
          if (ctx.signal.aborted) break;
        }
        if (!ctx.signal.aborted) call.end();
      } catch (err) {
        if (!ctx.signal.aborted) call.emit('error', toServerStatus(err, opts.logger, methodPath(method)));
      } finally {
        dispose();
      }
    })();
  };
}

function bidiHandler(
  method: DescMethod,
  impl: BidiStreamingImpl<DescMessage, DescMessage>,
  opts: AddServiceOptions,
): grpc.handleBidiStreamingCall<MessageShape<DescMessage>, unknown> {
  return (call) => {
    // On abort the Node stream is destroyed so a handler blocked on reading wakes up.
    const { ctx, dispose } = callContext(call, () => {
      if (!call.destroyed) call.destroy();
    });
    let ended = false;
    const stream: BidiStream<MessageShape<DescMessage>, DescMessage> = {
      [Symbol.asyncIterator]: () => incoming<MessageShape<DescMessage>>(method, call, ctx.signal),
      send(msg) {
        if (ctx.signal.aborted) throw ctx.signal.reason;
        if (ended) throw new PgfleetError('Internal', `${methodPath(method)}: send() after end()`);
        call.write(create(method.output, msg));
      },
      end() {
        if (ended || ctx.signal.aborted) return;
        ended = true;
        call.end();
      },
      drained: () => drained(call, ctx.signal),
    };
    void (async () => {
      try {
        await opts.authorize?.(method, ctx);
        await impl(stream, ctx);
        stream.end();
      } catch (err) {
        if (!ended && !ctx.signal.aborted) {
          ended = true;
          call.emit('error', toServerStatus(err, opts.logger, methodPath(method)));
        } else if (!ctx.signal.aborted) {
          // The status went out already; the error can only be logged.
          toServerStatus(err, opts.logger, methodPath(method));
        }
      } finally {
        dispose();
      }
    })();
  };
}

export function addService<S extends DescService>(
  server: grpc.Server,
  service: S,
  impl: ServiceImpl<S>,
  opts: AddServiceOptions = {},
): void {
  const handlers: grpc.UntypedServiceImplementation = {};
  const table = impl as unknown as Record<string, (...args: never[]) => unknown>;
  for (const method of service.methods) {
    const fn = table[method.localName];
    if (typeof fn !== 'function') {
      throw new PgfleetError('Internal', `no handler for ${methodPath(method)} (expected impl.${method.localName})`);
    }
    const bound = fn.bind(impl) as never;
    switch (method.methodKind) {
      case 'unary':
        handlers[method.localName] = unaryHandler(method, bound, opts);
        break;
      case 'server_streaming':
        handlers[method.localName] = serverStreamingHandler(method, bound, opts);
        break;
      case 'bidi_streaming':
        handlers[method.localName] = bidiHandler(method, bound, opts);
        break;
      default:
        throw new PgfleetError('Internal', `${methodPath(method)}: ${method.methodKind} methods are not supported`);
    }
  }
  server.addService(serviceDefinition(service, 'server'), handlers);
}

/**
 * What one peer may hold of the server before and after it authenticates. Authentication happens
 * per call (a certificate or token checked by the service's authorize hook), so until its first
 * call a connection is anonymous: these bounds keep anonymous peers from holding sockets, streams
 * and memory without end.
 */
export interface ServerLimits {
  /**
   * A TLS handshake not finished within this is dropped (node's default is 120 s; see
   * serverTlsCredentials), and so is a connection that has not started a call within it.
   */
  handshakeTimeoutMs: number;
  /** A connection with no call open for this long is closed (GOAWAY); clients reconnect when they need to. */
  connectionIdleMs: number;
  /** Concurrent streams (calls) on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
  maxConcurrentStreams: number;
  /** Concurrent connections on one listening socket; more are refused at accept. */
  maxConnections: number;
  /** The largest message a peer may send. */
  maxReceiveMessageBytes: number;
  /** A connection older than this is asked to go away (unset: no limit: agents hold their stream for days). */
  connectionAgeMs?: number;
}

export const DEFAULT_SERVER_LIMITS: ServerLimits = {
  handshakeTimeoutMs: DEFAULT_HANDSHAKE_TIMEOUT_MS,
  connectionIdleMs: 120_000,
  maxConcurrentStreams: 100,
  maxConnections: 1024,
  maxReceiveMessageBytes: 4 * 1024 * 1024,
};

/** The grpc-js server with pgfleet's limits and keepalive settings. */
export function createServer(limits: ServerLimits = DEFAULT_SERVER_LIMITS): grpc.Server {
  const server = new grpc.Server({
    // Agents hold their stream for days; keepalive pings detect a dead host instead of waiting for TCP.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    'grpc.max_concurrent_streams': limits.maxConcurrentStreams,
    'grpc.max_connection_idle_ms': limits.connectionIdleMs,
    'grpc.max_receive_message_length': limits.maxReceiveMessageBytes,
    ...(limits.connectionAgeMs !== undefined
      ? { 'grpc.max_connection_age_ms': limits.connectionAgeMs, 'grpc.max_connection_age_grace_ms': 30_000 }
      : {}),
  });
  serverLimits.set(server, limits);
  return server;
}

const serverLimits = new WeakMap<grpc.Server, ServerLimits>();

/**
 * grpc-js keeps its node servers private; the connection cap is a node server setting, so it is
 * applied to what it created (checked by rpc.test.ts: a
 * grpc-js upgrade that renames the field fails the start here instead of silently dropping them).
 */
function applySocketLimits(server: grpc.Server, limits: ServerLimits): void {
  const nodeServers = (server as unknown as { http2Servers?: Map<NetServerLike, unknown> }).http2Servers;
  if (!(nodeServers instanceof Map)) {
    throw new PgfleetError('Internal', 'grpc-js no longer exposes its servers: connection limits cannot be applied');
  }
  for (const node of nodeServers.keys()) {
    node.maxConnections = limits.maxConnections;
    node.on('session', (session: Http2Session) => firstCallWithin(session, limits.handshakeTimeoutMs));
  }
}

/**
 * A connection is anonymous until its first call is authorised, and grpc-js's idle timeout only
 * asks it to go away (GOAWAY), which a peer that never speaks HTTP/2 ignores: a session that has
 * not opened a stream within the handshake timeout is destroyed.
 *
 * Not while the server itself is the one that is late: in a connect storm (10,000 agents at once,
 * bench/fleet-scale.mjs) or on a starved host the event loop runs this timer long after it was
 * due, with the peer's first call often already waiting in the socket, unread. The decision is
 * taken after the pending reads had their turn (setImmediate runs after the poll phase), and a
 * timer that fired more than half its length late gives the peer another period (a few times at
 * most): otherwise every such peer is reset and comes back later, which made storms longer.
 */
function firstCallWithin(session: Http2Session, ms: number): void {
  // The socket first: destroying only the session leaves a peer that never spoke HTTP/2 connected.
  const socket = session.socket;
  let called = false;
  let extensions = 0;
  let due = performance.now() + ms;
  const arm = (): NodeJS.Timeout => {
    const t = setTimeout(expire, ms);
    t.unref();
    return t;
  };
  const expire = (): void => {
    const late = performance.now() - due;
    setImmediate(() => {
      if (called) return;
      if (late > ms / 2 && extensions < MAX_LATE_EXTENSIONS) {
        extensions++;
        due = performance.now() + ms;
        timer = arm();
        return;
      }
      socket.destroy();
      if (!session.destroyed) session.destroy();
    });
  };
  let timer = arm();
  const clear = (): void => {
    called = true;
    clearTimeout(timer);
  };
  session.once('stream', clear);
  session.once('close', clear);
}

/** How many more periods a peer gets when the server ran its handshake timer late. */
const MAX_LATE_EXTENSIONS = 3;

interface NetServerLike {
  maxConnections: number;
  on(event: 'session', listener: (session: Http2Session) => void): unknown;
}

/** Binds and starts serving; resolves the bound port (useful with port 0 in tests). */
export function listen(
  server: grpc.Server,
  address: string,
  creds: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure(),
): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, creds, (err, port) => {
      if (err) {
        reject(
          new PgfleetError('InvalidConfig', `cannot listen on ${address}: ${err.message}`, {
            cause: err,
            hint: 'Choose another listen address, or stop the process that holds the port.',
          }),
        );
        return;
      }
      const limits = serverLimits.get(server);
      try {
        if (limits) applySocketLimits(server, limits);
      } catch (e) {
        server.forceShutdown();
        reject(e as Error);
        return;
      }
      resolve(port);
    });
  });
}
