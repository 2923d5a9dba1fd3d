export * from './backup/backup.js';
export * from './restore/restore.js';
export * from './wal/archive.js';
export * from './wal/fetch.js';
export * from './options.js';
export * from './pgdata/pgdata.js';
export * from './verify/verify.js';
export * from './wal/continuity.js';
