// grpc-js <-> protobuf-es v2 adapter: serve and call pgfleet services, with errors mapped in one place.
export * from './errors.js';
export * from './service-definition.js';
export * from './server.js';
export * from './client.js';
export * from './health.js';
export * from './tls.js';
