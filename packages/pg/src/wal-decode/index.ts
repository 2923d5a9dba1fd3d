export * from './wal-format.js';
export * from './wal-reader.js';
export { crc32c } from './crc32c.js';
export { pglzDecompress } from './block-image.js';
