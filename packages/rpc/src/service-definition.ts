/**
 * protobuf-es v2 generates service descriptors but no grpc-js stubs. This turns a descriptor into
 * the grpc-js ServiceDefinition (paths and codecs) that both the server and the client use, so the
 * wire names come from the .proto file and never from hand-written strings.
 */
import * as grpc from '@grpc/grpc-js';
import {
  create,
  fromBinary,
  isMessage,
  toBinary,
  type DescMessage,
  type DescMethod,
  type DescService,
} from '@bufbuild/protobuf';

/** `/pgfleet.v1.AdminService/ListBackups`: the HTTP/2 path gRPC routes on. */
export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

function toBuffer(bytes: Uint8Array): Buffer {
  // grpc-js wants a Buffer; wrap the encoder's bytes instead of copying them.
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Encodes either a message or an init object (plain object the caller built). */
export function serializer(schema: DescMessage): (value: unknown) => Buffer {
  return (value) => {
    const msg = isMessage(value, schema) ? value : create(schema, value as never);
    return toBuffer(toBinary(schema, msg));
  };
}

/**
 * Bytes a server could not decode. grpc-js answers a throwing deserializer with INTERNAL and no
 * PGF code, as if the server were broken; the server's deserializer hands this on instead, and
 * server.ts fails the call with MalformedMessage (INVALID_ARGUMENT): the client sent garbage.
 */
export class UndecodableMessage {
  constructor(
    readonly typeName: string,
    readonly cause: unknown,
  ) {}
}

export function deserializer(schema: DescMessage, side: 'client' | 'server' = 'client'): (bytes: Buffer) => unknown {
  if (side === 'client') return (bytes) => fromBinary(schema, bytes);
  return (bytes) => {
    try {
      return fromBinary(schema, bytes);
    } catch (err) {
      return new UndecodableMessage(schema.typeName, err);
    }
  };
}

/** Keyed by the method's localName (camelCase), matching the generated GenService type. */
export function serviceDefinition<S extends DescService>(
  service: S,
  side: 'client' | 'server' = 'client',
): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    def[method.localName] = {
      path: methodPath(method),
      originalName: method.name,
      requestStream: method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming',
      responseStream: method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming',
      requestSerialize: serializer(method.input),
      requestDeserialize: deserializer(method.input, side),
      responseSerialize: serializer(method.output),
      responseDeserialize: deserializer(method.output),
    };
  }
  return def;
}
