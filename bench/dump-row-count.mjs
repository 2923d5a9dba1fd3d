// Times the exact row count of a dump (logical/copy-rows.ts) on each table data file (.dat.gz or, with --compress=0, .dat) of a pg_dump -Fd directory:
// node bench/dump-row-count.mjs <dump dir>. Prints, per file over 100 kB, its stored bytes, rows, elapsed and CPU seconds.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { countCopyRows } from '../packages/agent/dist/logical/copy-rows.js';
const dir = process.argv[2];
for (const n of readdirSync(dir).filter((n) => /^\d+\.dat(\.gz)?$/.test(n))) {
  const t0 = process.hrtime.bigint();
  const u0 = process.cpuUsage();
  const rows = await countCopyRows(join(dir, n));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const u = process.cpuUsage(u0);
  if (statSync(join(dir, n)).size > 100000)
    console.log(
      `${n}: ${statSync(join(dir, n)).size} bytes stored, ${rows} rows, ${s.toFixed(2)} s elapsed, ${((u.user + u.system) / 1e6).toFixed(2)} s CPU`,
    );
}
