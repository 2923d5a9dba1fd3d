// Where a full backup's CPU goes, pass by pass, over real PGDATA files: each pass a full backup
// makes over a relation file's bytes (storage object-io.ts storeBlocks, agent copy/tasks.ts
// backupTask) timed alone on the same 1 MiB reads, in CPU seconds of this thread
// (process.threadCpuUsage), so other load on the machine matters less. The files should be in
// the page cache (a first round warms it). Run after `npx turbo run build`:
//   node bench/full-stages.mjs --data PGDATA_DIR [--rounds 2] [--zstd 1,2:5,2:6] [--frames 128,1024]
// Relation files (named like them) are counted as the backup treats them: page checks, block
// checksums, 128 KiB frames (or each of --frames); other files in 1 MiB frames without either.
// --zstd: the zstd settings to time, each LEVEL or LEVEL:MINMATCH (zstd's ZSTD_c_minMatch; level
// 2 is what backups use, with a minimum match of 6 since branch fullcpu: storage codec-blocks.ts),
// on node:zlib's native context as the agent drives it (one frame per call, content checksums on).
import { createHash } from 'node:crypto';
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import zlib from 'node:zlib';
import { sumBlocks, BLOCK_SUM_BYTES } from '../packages/storage/dist/block-map.js';
import { int32View, verifyPages } from '../packages/pg/dist/page-checksum.js';

const { values } = parseArgs({
  options: {
    data: { type: 'string' },
    rounds: { type: 'string', default: '2' },
    zstd: { type: 'string', default: '1,2:5,2:6' },
    frames: { type: 'string', default: '128,1024' },
  },
});
if (!values.data) {
  console.error(
    'usage: node bench/full-stages.mjs --data PGDATA_DIR [--rounds 2] [--zstd 1,2:5,2:6] [--frames 128,1024]',
  );
  process.exit(2);
}
const READ = 1 << 20;
const files = [];
const walk = (d) => {
  for (const e of readdirSync(d, { withFileTypes: true })) {
    const p = join(d, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.isFile())
      files.push({ path: p, rel: /(?:^|\/)\d+(?:\.\d+)?$/.test(relative(values.data, p)), size: statSync(p).size });
  }
};
walk(values.data);
const total = files.reduce((s, f) => s + f.size, 0);
const relBytes = files.filter((f) => f.rel).reduce((s, f) => s + f.size, 0);
console.log(`${files.length} files, ${(total / 1e9).toFixed(3)} GB, relation files ${(relBytes / 1e9).toFixed(3)} GB`);

const cpu = () => {
  const u = process.threadCpuUsage();
  return (u.user + u.system) / 1e6;
};
const buf = Buffer.allocUnsafeSlow(READ);
const sums = new Uint8Array((READ / 8192) * BLOCK_SUM_BYTES);
const out = Buffer.allocUnsafeSlow(READ + (READ >> 8) + 1024);
const settings = values.zstd.split(',');
const frames = values.frames.split(',').map((k) => Number(k) * 1024);
const Z = zlib.constants;
/** A zstd context as storage codec-blocks.ts drives it: ZSTD_e_end with a whole frame per call. */
function zstdEncoder(setting) {
  const [level, minMatch] = setting.split(':').map(Number);
  const stream = zlib.createZstdCompress({
    params: {
      [Z.ZSTD_c_compressionLevel]: level,
      [Z.ZSTD_c_checksumFlag]: 1,
      ...(minMatch ? { [Z.ZSTD_c_minMatch]: minMatch } : {}),
    },
  });
  const { _handle: handle, _writeState: state } = stream;
  return (data) => {
    handle.writeSync(Z.ZSTD_e_end, data, 0, data.length, out, 0, out.length);
    return out.length - state[0];
  };
}
const encoders = new Map(settings.map((z) => [z, zstdEncoder(z)]));

/** Runs `each(chunk, file)` over every 1 MiB read of every file; CPU of the passes alone (reads measured apart). */
function pass(each, onlyRel = false) {
  let spent = 0;
  for (const f of files) {
    if (onlyRel && !f.rel) continue;
    const fd = openSync(f.path, 'r');
    for (let pos = 0; ;) {
      const n = readSync(fd, buf, 0, READ, pos);
      if (n === 0) break;
      pos += n;
      const t0 = cpu();
      each(buf.subarray(0, n), f);
      spent += cpu() - t0;
    }
    closeSync(fd);
  }
  return spent;
}

function readsOnly() {
  const t0 = cpu();
  for (const f of files) {
    const fd = openSync(f.path, 'r');
    for (let pos = 0; ;) {
      const n = readSync(fd, buf, 0, READ, pos);
      if (n === 0) break;
      pos += n;
    }
    closeSync(fd);
  }
  return cpu() - t0;
}

const lsn = { hi: 0xffffffff, lo: 0xffffffff };
for (let round = 0; round < Number(values.rounds); round++) {
  const rows = [];
  rows.push(['open + read (1 MiB readSync)', readsOnly()]);
  rows.push([
    'page checksums (WebAssembly SIMD), relation files',
    pass((c) => {
      const pages = Math.floor(c.length / 8192);
      if (pages > 0) verifyPages(int32View(c.subarray(0, pages * 8192)), 0, pages, 0, lsn, () => {});
    }, true),
  ]);
  rows.push(['block checksums (XXH64 WebAssembly), relation files', pass((c) => sumBlocks(c, sums, 0, 'xxh64'), true)]);
  rows.push([
    'sha256 of the content',
    (() => {
      const h = createHash('sha256');
      const s = pass((c) => h.update(c));
      h.digest();
      return s;
    })(),
  ]);
  let stored = 0;
  for (const setting of settings)
    for (const frame of frames) {
      const enc = encoders.get(setting);
      let bytes = 0;
      const s = pass((c, f) => {
        const step = f.rel ? frame : READ;
        for (let at = 0; at < c.length; at += step) bytes += enc(c.subarray(at, Math.min(c.length, at + step)));
      });
      const [level, minMatch] = setting.split(':');
      const what = `zstd level ${level}${minMatch ? ` minMatch ${minMatch}` : ''}`;
      rows.push([`${what}, relation files in ${frame >> 10} KiB frames (${(bytes / 1e6).toFixed(1)} MB stored)`, s]);
      // The stored-bytes rows below use what a backup stores: level 2, minimum match 6, 128 KiB frames.
      if (!stored || (setting === '2:6' && frame === 128 * 1024)) stored = bytes;
    }
  rows.push([
    'copy of stored bytes (estimate: a memcpy of the content share stored)',
    pass((c) => out.set(c.subarray(0, Math.ceil((c.length * stored) / total)))),
  ]);
  rows.push([
    'sha256 of the stored bytes (estimate: the same share)',
    (() => {
      const h = createHash('sha256');
      const s = pass((c) => h.update(c.subarray(0, Math.ceil((c.length * stored) / total))));
      h.digest();
      return s;
    })(),
  ]);
  console.log(`round ${round + 1}:`);
  for (const [what, s] of rows)
    console.log(`  ${s.toFixed(3).padStart(7)} s  ${(total / 1e6 / s).toFixed(0).padStart(6)} MB/s  ${what}`);
}
