// Throughput of the block maps' per-block checksum (storage block-map.ts sumBlocks) over 8 KiB
// blocks of random bytes, as a backup takes it: a 1 MiB read at a time. XXH64 (WebAssembly, a
// read per call; what new maps use) against the truncated SHA-1 of maps written before (a native
// call per block), with sha256 of the same bytes (which every backup pays anyway) for scale. MB
// per CPU second of this process, so other load on the machine matters less.
// Run after `npx turbo run build`:
//   node bench/block-checksum.mjs [--mb 256] [--rounds 5]
import { createHash, randomFillSync } from 'node:crypto';
import { parseArgs } from 'node:util';
import { sumBlocks, BLOCK_SUM_BYTES } from '../packages/storage/dist/block-map.js';

const { values } = parseArgs({
  options: { mb: { type: 'string', default: '256' }, rounds: { type: 'string', default: '5' } },
});
const MB = Number(values.mb);
const READ = 1 << 20;
const buf = randomFillSync(Buffer.alloc(MB << 20));
const sums = new Uint8Array((buf.length / 8192) * BLOCK_SUM_BYTES);
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const rate = (f) => {
  const t0 = cpu();
  f();
  return MB / (cpu() - t0);
};
const blocks = (checksum) => () => {
  for (let at = 0; at < buf.length; at += READ) sumBlocks(buf.subarray(at, at + READ), sums, at / 8192, checksum);
};
for (let round = 0; round < Number(values.rounds); round++) {
  const xxh = rate(blocks('xxh64'));
  const sha1 = rate(blocks('sha1-64'));
  const sha256 = rate(() => createHash('sha256').update(buf).digest());
  console.log(
    `block checksums: xxh64 ${xxh.toFixed(0)} MB/s, sha1-64 ${sha1.toFixed(0)} MB/s (${(xxh / sha1).toFixed(1)}x); sha256 stream ${sha256.toFixed(0)} MB/s`,
  );
}
