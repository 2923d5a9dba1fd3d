export * from './backup.js';
export * from './restore.js';
export * from './wal.js';
export * from './options.js';
export * from './pgdata.js';
export * from './verify.js';
export * from './wal-continuity.js';
