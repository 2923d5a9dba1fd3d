// The calling side only (errors, client, TLS): what an agent needs. The package index adds the
// server, health and reflection, whose modules (@grpc/reflection, grpc-health-check and the
// protobufjs they load) cost an agent ~10 MB of memory for nothing.
export * from './errors.js';
export * from './client.js';
export * from './tls.js';
