// Throughput of the page-checksum verification a backup runs over every relation page: the
// WebAssembly SIMD batch (verifyPages, what backups use) and the plain JavaScript loop
// (verifyPageAt, the fallback and the re-check), against sha256 (which every backup pays anyway)
// on the same bytes. MB per CPU second of this process, so other load on the machine matters less.
// Run after `npx turbo run build`:
//   node bench/page-checksum.mjs
import { verifyPageAt, verifyPages, int32View, lsnHalves } from '../packages/pg/dist/page-checksum.js';
import { createHash, randomFillSync } from 'node:crypto';
const MB = 256; // random pages with a non-zero pd_upper and pd_lsn 0: every page is checksummed

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
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const rate = (f) => {
  const t0 = cpu();
  const r = f();
  return [MB / (cpu() - t0), r];
};
for (let round = 0; round < 5; round++) {
  const [simd, a] = rate(() => {
    let bad = 0;
    verifyPages(words, 0, pages, 0, lsn, () => bad++);
    return bad;
  });
  const [js, b] = rate(() => {
    let bad = 0;
    for (let p = 0; p < pages; p++) if (verifyPageAt(words, p * 2048, p, lsn) === 'invalid') bad++;
    return bad;
  });
  console.log(
    `page checksum: WebAssembly ${simd.toFixed(0)} MB/s, JavaScript ${js.toFixed(0)} MB/s (${(simd / js).toFixed(1)}x; ${a}/${b} invalid)`,
  );
}
const [sha] = rate(() => createHash('sha256').update(buf).digest());
console.log(`sha256: ${sha.toFixed(0)} MB/s`);
