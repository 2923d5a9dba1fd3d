// Throughput of the page-checksum verification a backup runs over every relation page, against
// sha256 (which every backup pays anyway) on the same bytes. Run after `npx turbo run build`:
//   node bench/page-checksum.mjs
import { verifyPageAt, int32View, lsnHalves, pageChecksumAt } from '../packages/pg/dist/page-checksum.js';
import { createHash, randomFillSync } from 'node:crypto';
const MB = 64; // random pages with a non-zero pd_upper and pd_lsn 0: every page is checksummed

const buf = Buffer.alloc(MB << 20);
randomFillSync(buf);
const words = int32View(buf);
const pages = buf.length / 8192;
// make pd_upper non-zero
for (let p = 0; p < pages; p++) {
  buf.writeUInt16LE(100, p * 8192 + 14);
  buf.writeUInt32LE(0, p * 8192);
}
const lsn = lsnHalves(0xffffffffffffffffn);
for (let round = 0; round < 5; round++) {
  const t0 = process.hrtime.bigint();
  let bad = 0;
  for (let p = 0; p < pages; p++) if (verifyPageAt(words, p * 2048, p, lsn) === 'invalid') bad++;
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`page checksum: ${(MB / s).toFixed(0)} MB/s (${bad} invalid)`);
}
const t1 = process.hrtime.bigint();
createHash('sha256').update(buf).digest();
console.log(`sha256: ${(MB / (Number(process.hrtime.bigint() - t1) / 1e9)).toFixed(0)} MB/s`);
