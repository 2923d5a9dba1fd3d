// Generated protobuf-es code for proto/pgfleet/v1 (see scripts/generate.sh), plus backup.ts (the backup
// type and a manifest's BackupInfo) and repository.ts (Repository <-> spec), mapped once for the agent and the controller.
export * from './gen/pgfleet/v1/common_pb.js';
export * from './gen/pgfleet/v1/agent_pb.js';
export * from './gen/pgfleet/v1/admin_pb.js';
export * from './gen/pgfleet/v1/events_pb.js';
export * from './backup.js';
export * from './repository.js';
