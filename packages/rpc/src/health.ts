/**
 * Standard gRPC health checking and server reflection, so load balancers, Kubernetes probes,
 * grpcurl and `buf curl` work against the controller without our .proto files.
 *
 * @grpc/reflection only reads `fileDescriptorProtos` (serialized FileDescriptorProto) from the
 * proto-loader package definition it is given. protobuf-es keeps the FileDescriptorProto of every
 * generated file at `DescFile.proto`, so we serialize those (with their imports) and hand them
 * over in that shape, plus a descriptor of grpc.health.v1 (see healthFileDescriptor).
 */
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, type ServingStatusMap } from 'grpc-health-check';
import { create, toBinary, type DescFile, type DescService } from '@bufbuild/protobuf';
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FileDescriptorProtoSchema,
  type FileDescriptorProto,
} from '@bufbuild/protobuf/wkt';

export const HEALTH_SERVICE_NAME = 'grpc.health.v1.Health';

export interface HealthStatus {
  /** `''` is the whole server; otherwise a fully qualified service name. */
  setStatus(service: string, status: 'SERVING' | 'NOT_SERVING'): void;
}

/** The files declaring these services and everything they import, imports first. */
export function fileClosure(services: DescService[]): DescFile[] {
  const seen = new Set<string>();
  const out: DescFile[] = [];
  const visit = (file: DescFile): void => {
    if (seen.has(file.name)) return;
    seen.add(file.name);
    for (const dep of file.dependencies) visit(dep);
    out.push(file);
  };
  for (const s of services) visit(s.file);
  return out;
}

const { OPTIONAL, REPEATED } = FieldDescriptorProto_Label;
const { STRING, MESSAGE, ENUM } = FieldDescriptorProto_Type;

/**
 * grpc/health/v1/health.proto as served by grpc-health-check. Written out rather than taken from
 * the package: the descriptor proto-loader builds (via protobuf.js) has unqualified type names and
 * a map entry not named `StatusesEntry`, which strict clients (`buf curl`, Go protodesc) reject.
 */
export const healthFileDescriptor: FileDescriptorProto = create(FileDescriptorProtoSchema, {
  name: 'grpc/health/v1/health.proto',
  package: 'grpc.health.v1',
  syntax: 'proto3',
  messageType: [
    {
      name: 'HealthCheckRequest',
      field: [{ name: 'service', jsonName: 'service', number: 1, label: OPTIONAL, type: STRING }],
    },
    {
      name: 'HealthCheckResponse',
      field: [
        {
          name: 'status',
          jsonName: 'status',
          number: 1,
          label: OPTIONAL,
          type: ENUM,
          typeName: '.grpc.health.v1.HealthCheckResponse.ServingStatus',
        },
      ],
      enumType: [
        {
          name: 'ServingStatus',
          value: [
            { name: 'UNKNOWN', number: 0 },
            { name: 'SERVING', number: 1 },
            { name: 'NOT_SERVING', number: 2 },
            { name: 'SERVICE_UNKNOWN', number: 3 },
          ],
        },
      ],
    },
    { name: 'HealthListRequest' },
    {
      name: 'HealthListResponse',
      field: [
        {
          name: 'statuses',
          jsonName: 'statuses',
          number: 1,
          label: REPEATED,
          type: MESSAGE,
          typeName: '.grpc.health.v1.HealthListResponse.StatusesEntry',
        },
      ],
      nestedType: [
        {
          name: 'StatusesEntry',
          field: [
            { name: 'key', jsonName: 'key', number: 1, label: OPTIONAL, type: STRING },
            {
              name: 'value',
              jsonName: 'value',
              number: 2,
              label: OPTIONAL,
              type: MESSAGE,
              typeName: '.grpc.health.v1.HealthCheckResponse',
            },
          ],
          options: { mapEntry: true },
        },
      ],
    },
  ],
  service: [
    {
      name: 'Health',
      method: [
        {
          name: 'Check',
          inputType: '.grpc.health.v1.HealthCheckRequest',
          outputType: '.grpc.health.v1.HealthCheckResponse',
        },
        {
          name: 'List',
          inputType: '.grpc.health.v1.HealthListRequest',
          outputType: '.grpc.health.v1.HealthListResponse',
        },
        {
          name: 'Watch',
          inputType: '.grpc.health.v1.HealthCheckRequest',
          outputType: '.grpc.health.v1.HealthCheckResponse',
          serverStreaming: true,
        },
      ],
    },
  ],
});

/** Serves grpc.health.v1.Health (every service starts SERVING) and reflection for `services`. */
export function addHealthAndReflection(server: grpc.Server, services: DescService[]): HealthStatus {
  const initial: ServingStatusMap = { '': 'SERVING' };
  for (const s of services) initial[s.typeName] = 'SERVING';
  const health = new HealthImplementation(initial);
  health.addToServer(server);

  const fileDescriptorProtos = [
    ...fileClosure(services).map((f) => Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto))),
    Buffer.from(toBinary(FileDescriptorProtoSchema, healthFileDescriptor)),
  ];
  const pkg = {
    'pgfleet.reflection': { format: 'Protocol Buffer 3 DescriptorProto', type: {}, fileDescriptorProtos },
  } as unknown as ConstructorParameters<typeof ReflectionService>[0];
  new ReflectionService(pkg).addToServer(server);

  return { setStatus: (service, status) => health.setStatus(service, status) };
}
