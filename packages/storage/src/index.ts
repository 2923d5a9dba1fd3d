export * from './driver.js';
export * from './posix-driver.js';
export * from './codec.js';
export * from './manifest.js';
export * from './repository.js';
