export * from './driver.js';
export * from './posix-driver.js';
export * from './codec.js';
export * from './object-io.js';
export * from './manifest.js';
export * from './backup-lease.js';
export * from './repository.js';
// The S3 driver module imports no SDK code; createS3Driver loads it lazily (see s3-driver.ts).
export * from './s3-like.js';
export * from './s3-driver.js';
export * from './mirrored-driver.js';
export * from './repository-url.js';
export * from './open-repository.js';
export * from './manifest-auth.js';
export * from './manifest-paths.js';
export * from './repository-keys.js';
export * from './key-source.js';
export * from './block-map.js';
