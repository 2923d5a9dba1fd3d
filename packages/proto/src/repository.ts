/**
 * The Repository message and the repository specs of @pgfleet/storage (repository-url.ts),
 * mapped once here for the agent and the controller. A spec has the shape of the message's
 * `kind` oneof; going back, the received message's generated fields ($typeName) are dropped
 * and only the fields a spec has are copied, so what a controller sends can never carry more
 * into the agent's repository configuration than a URL could. Hand-written.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Repository, RepositorySchema } from './gen/pgfleet/v1/common_pb.js';

/** The spec shapes (structurally storage's RepositorySpec; proto depends on nothing but protobuf). */
export type RepositorySpecShape =
  | { case: 'posix'; value: { path: string } }
  | {
      case: 's3';
      value: { bucket: string; prefix: string; endpoint: string; region: string; forcePathStyle: boolean };
    };

/** The message naming a repository. */
export function repositoryMessage(spec: RepositorySpecShape): MessageInitShape<typeof RepositorySchema> {
  return { kind: spec };
}

/** The spec a received Repository names; undefined when its oneof is unset. */
export function repositorySpecFromMessage(r: Repository): RepositorySpecShape | undefined {
  const k = r.kind;
  switch (k.case) {
    case 'posix':
      return { case: 'posix', value: { path: k.value.path } };
    case 's3': {
      const { bucket, prefix, endpoint, region, forcePathStyle } = k.value;
      return { case: 's3', value: { bucket, prefix, endpoint, region, forcePathStyle } };
    }
    default:
      return undefined;
  }
}
