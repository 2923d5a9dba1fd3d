export * from './lsn.js';
export * from './wal-segment-name.js';
export * from './wal-header.js';
export * from './connection.js';
export * from './backup-label.js';
export * from './page-checksum.js';
export * from './replication.js';
export * from './server-log.js';
