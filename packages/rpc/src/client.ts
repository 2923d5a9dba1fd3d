/**
 * Calling protobuf-es services with grpc-js. The CLI and the agent get one typed object per
 * service whose methods take init objects and give back protobuf-es messages, and whose failures
 * are always PgfleetError (mapped in errors.ts), so callers never handle grpc-js errors.
 *
 * Deadlines: `defaultDeadlineMs` applies to unary calls only; streams such as the agent's
 * long-lived Connect get a deadline only when the call passes `deadlineMs`.
 * Cancellation: aborting `signal` fails the call with PgfleetError Cancelled; calling `cancel()`
 * on a bidi stream ends its iteration quietly, since the caller asked for it.
 */
import type { Readable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from '@bufbuild/protobuf';
import { PgfleetError, type ErrorName } from '@pgfleet/core';
import { fromServiceError, transportDetails } from './errors.js';
import { deserializer, methodPath, serializer } from './service-definition.js';

export interface CallOptions {
  deadlineMs?: number;
  /** Request headers (ASCII values). */
  metadata?: Record<string, string>;
  signal?: AbortSignal;
}

export interface ClientBidiStream<In, Out extends DescMessage> extends AsyncIterable<In> {
  /** Queues a message. Throws the call's PgfleetError if it already failed. */
  send(msg: MessageInitShape<Out>): void;
  /** Half-closes: tells the server no more messages follow; responses can still be read. */
  end(): void;
  /** Abandons the call; the server's ctx.signal aborts and iteration here ends without error. */
  cancel(): void;
  /** Resolves once queued messages have been handed to the transport (or the call ended). */
  drained?(): Promise<void>;
}

export type ClientMethod<M> = M extends {
  methodKind: 'unary';
  input: infer I extends DescMessage;
  output: infer O extends DescMessage;
}
  ? (req: MessageInitShape<I>, opts?: CallOptions) => Promise<MessageShape<O>>
  : M extends {
        methodKind: 'server_streaming';
        input: infer I extends DescMessage;
        output: infer O extends DescMessage;
      }
    ? (req: MessageInitShape<I>, opts?: CallOptions) => AsyncIterable<MessageShape<O>>
    : M extends {
          methodKind: 'bidi_streaming';
          input: infer I extends DescMessage;
          output: infer O extends DescMessage;
        }
      ? (opts?: CallOptions) => ClientBidiStream<MessageShape<O>, I>
      : never;

export type Client<S extends DescService> = {
  [K in keyof S['method']]: ClientMethod<S['method'][K]>;
};

export interface ClientOptions {
  /** Default: insecure (plain-text HTTP/2). */
  credentials?: grpc.ChannelCredentials;
  /** Deadline for unary calls that pass none. */
  defaultDeadlineMs?: number;
  /** What UNAVAILABLE (nothing listening, connection lost) becomes; default ControllerUnreachable. */
  unavailableError?: ErrorName;
  channelOptions?: grpc.ChannelOptions;
  /** Headers sent with every call (e.g. `authorization`); a call's own metadata wins per key. */
  metadata?: Record<string, string>;
}

interface ClientInternals {
  grpc: grpc.Client;
  address: string;
  unavailableError: ErrorName;
}

// Kept out of the client object so a service method can never collide with these names.
const internals = new WeakMap<object, ClientInternals>();

function toMetadata(headers: Record<string, string> | undefined): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers ?? {})) md.set(k, v);
  return md;
}

function callOptions(deadlineMs: number | undefined): grpc.CallOptions {
  return deadlineMs === undefined ? {} : { deadline: new Date(Date.now() + deadlineMs) };
}

/**
 * Failure of a client stream. grpc-js pushes end-of-stream before emitting 'error', and a plain
 * emitted 'error' is not remembered by the stream, so a reader that starts late would see a clean
 * end; recording it here makes the iterators below rethrow it.
 */
function trackFailure(call: grpc.ClientReadableStream<unknown> | grpc.ClientDuplexStream<unknown, unknown>): {
  error?: unknown;
} {
  const state: { error?: unknown } = {};
  call.on('error', (err) => {
    state.error ??= err;
  });
  return state;
}

export function createClient<S extends DescService>(
  service: S,
  address: string,
  opts: ClientOptions = {},
): Client<S> & { close(): void } {
  const channel = new grpc.Client(address, opts.credentials ?? grpc.credentials.createInsecure(), opts.channelOptions);
  const unavailableError = opts.unavailableError ?? 'ControllerUnreachable';
  const client: Record<string, unknown> = {};

  for (const method of service.methods) {
    if (method.localName === 'close')
      throw new PgfleetError('Internal', `${methodPath(method)} clashes with client.close()`);
    const path = methodPath(method);
    const mapError = (err: unknown): PgfleetError => fromServiceError(err, { address, method: path, unavailableError });
    switch (method.methodKind) {
      case 'unary':
        client[method.localName] = unaryCall(channel, method, opts.defaultDeadlineMs, mapError, opts.metadata);
        break;
      case 'server_streaming':
        client[method.localName] = serverStreamingCall(channel, method, mapError, opts.metadata);
        break;
      case 'bidi_streaming':
        client[method.localName] = bidiCall(channel, method, mapError, opts.metadata);
        break;
      default:
        // Fails on use rather than at construction so a service gaining such a method breaks nobody.
        client[method.localName] = () => {
          throw new PgfleetError('Internal', `${path}: ${method.methodKind} methods are not supported`);
        };
    }
  }
  client.close = () => channel.close();
  internals.set(client, { grpc: channel, address, unavailableError });
  return client as Client<S> & { close(): void };
}

function cancelledBeforeStart(method: DescMethod): PgfleetError {
  return new PgfleetError('Cancelled', `${methodPath(method)} was cancelled before it started`);
}

function unaryCall(
  channel: grpc.Client,
  method: DescMethod,
  defaultDeadlineMs: number | undefined,
  mapError: (err: unknown) => PgfleetError,
  defaults: Record<string, string> | undefined,
) {
  return (req: unknown, opts: CallOptions = {}): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const { signal } = opts;
      if (signal?.aborted) {
        reject(cancelledBeforeStart(method));
        return;
      }
      const onAbort = (): void => call.cancel();
      const call = channel.makeUnaryRequest(
        methodPath(method),
        serializer(method.input),
        deserializer(method.output),
        req,
        toMetadata({ ...defaults, ...opts.metadata }),
        callOptions(opts.deadlineMs ?? defaultDeadlineMs),
        (err, res) => {
          signal?.removeEventListener('abort', onAbort);
          if (err) reject(mapError(err));
          else resolve(res);
        },
      );
      signal?.addEventListener('abort', onAbort, { once: true });
    });
}

/**
 * Yields the call's messages, reading on demand (gRPC flow control holds the server back while
 * the consumer is slow), and throws the mapped failure after the last message.
 */
async function* readAll(
  call: Readable,
  failure: { error?: unknown },
  mapError: (err: unknown) => PgfleetError,
  quiet: () => boolean,
): AsyncGenerator<unknown> {
  try {
    for await (const msg of call.iterator({ destroyOnReturn: false })) yield msg;
  } catch (err) {
    if (quiet()) return;
    throw mapError(err);
  }
  if (failure.error !== undefined && !quiet()) throw mapError(failure.error);
}

function serverStreamingCall(
  channel: grpc.Client,
  method: DescMethod,
  mapError: (err: unknown) => PgfleetError,
  defaults: Record<string, string> | undefined,
) {
  // A generator so the call starts on the first next(): an iterable nobody reads opens no stream.
  return async function* (req: unknown, opts: CallOptions = {}): AsyncGenerator<unknown> {
    const { signal } = opts;
    if (signal?.aborted) throw cancelledBeforeStart(method);
    const call = channel.makeServerStreamRequest(
      methodPath(method),
      serializer(method.input),
      deserializer(method.output),
      req,
      toMetadata({ ...defaults, ...opts.metadata }),
      callOptions(opts.deadlineMs),
    );
    const failure = trackFailure(call);
    let finished = false;
    call.on('status', () => {
      finished = true;
    });
    const onAbort = (): void => call.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      yield* readAll(call, failure, mapError, () => false);
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // The consumer broke out early: tell the server to stop producing.
      if (!finished) call.cancel();
    }
  };
}

function bidiCall(
  channel: grpc.Client,
  method: DescMethod,
  mapError: (err: unknown) => PgfleetError,
  defaults: Record<string, string> | undefined,
) {
  return (opts: CallOptions = {}): ClientBidiStream<unknown, DescMessage> => {
    const { signal } = opts;
    const call = channel.makeBidiStreamRequest(
      methodPath(method),
      serializer(method.input),
      deserializer(method.output),
      toMetadata({ ...defaults, ...opts.metadata }),
      callOptions(opts.deadlineMs),
    );
    const failure = trackFailure(call);
    let cancelled = false;
    let halfClosed = false;
    const onAbort = (): void => call.cancel();
    if (signal?.aborted) queueMicrotask(onAbort);
    else signal?.addEventListener('abort', onAbort, { once: true });
    call.on('status', () => signal?.removeEventListener('abort', onAbort));
    // Only a cancel() of our own is quiet; an aborted signal is reported as Cancelled.
    const quiet = (): boolean => cancelled && !signal?.aborted;
    return {
      [Symbol.asyncIterator]: () => readAll(call, failure, mapError, quiet),
      send(msg) {
        if (failure.error !== undefined) throw mapError(failure.error);
        if (cancelled || signal?.aborted)
          throw new PgfleetError('Cancelled', `${methodPath(method)}: send() after cancel`);
        if (halfClosed) throw new PgfleetError('Internal', `${methodPath(method)}: send() after end()`);
        // create() here so a bad init object throws at the caller, not inside grpc-js.
        call.write(create(method.input, msg as never));
      },
      end() {
        if (halfClosed || cancelled) return;
        halfClosed = true;
        call.end();
      },
      cancel() {
        if (cancelled) return;
        cancelled = true;
        call.cancel();
      },
      drained() {
        if (!call.writableNeedDrain || call.destroyed || failure.error !== undefined) return Promise.resolve();
        return new Promise<void>((resolve) => {
          const done = (): void => {
            call.removeListener('drain', done);
            call.removeListener('status', done);
            resolve();
          };
          call.once('drain', done);
          call.once('status', done);
        });
      },
    };
  };
}

/**
 * Waits until the channel is connected, so a daemon fails fast at start with a clear message
 * instead of on its first call. Throws the client's unavailableError (ControllerUnreachable by
 * default) naming the address.
 */
export function waitForReady(client: object, deadlineMs: number): Promise<void> {
  const inner = internals.get(client);
  if (!inner)
    return Promise.reject(new PgfleetError('Internal', 'waitForReady() needs a client made by createClient()'));
  return new Promise((resolve, reject) => {
    inner.grpc.waitForReady(Date.now() + deadlineMs, (err) => {
      if (!err) {
        resolve();
        return;
      }
      reject(
        new PgfleetError(
          inner.unavailableError,
          `cannot reach ${inner.address} within ${deadlineMs} ms: ${transportDetails(err.message)}`,
          {
            cause: err,
          },
        ),
      );
    });
  });
}
