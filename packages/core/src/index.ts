export * from './errors.js';
export * from './logger.js';
export * from './ids.js';
export * from './duration.js';
export * from './options.js';
export * from './process-alive.js';
export * from './async.js';
export * from './fsync.js';
