export * from './wal-format.js';
export * from './wal-reader.js';
export { crc32c } from './crc32c.js';
export { pglzDecompress } from './block-image.js';
export * from './rmgr-records.js';
export * from './relation-names.js';
export * from './transaction-tracker.js';
export * from './catalog-snapshot.js';
