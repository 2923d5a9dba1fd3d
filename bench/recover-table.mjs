#!/usr/bin/env node
/**
 * Time from `pgfleet recover-table` to the rows being back, for one large table (issue 15's
 * target: a 1 GB table in under 60 s plus WAL replay). On a fleet of its own (the e2e harness:
 * controller, agent, PostgreSQL, posix repository in a temp dir): the table is filled with
 * INSERT ... SELECT generate_series until pg_table_size reaches --gb, a full backup is taken,
 * every row is deleted (the xid captured in the same statement), and `recover-table
 * --before-xid` brings them back into pgfleet_recovered. Prints the job's own figures (restore,
 * WAL replay, dump and load, total) and the CLI's wall time.
 *
 *   cd <checkout> && source scripts/node-env.sh && npx turbo run build
 *   node bench/recover-table.mjs [--gb 1]
 *
 * Replay includes the DELETE's own WAL (every row's delete record precedes its commit record,
 * where recovery stops), so "WAL replay" grows with the table too.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadavg } from 'node:os';
import { startFleet } from '../test/dist/harness.js';

const { values } = parseArgs({ options: { gb: { type: 'string', default: '1' } } });
const targetBytes = Number(values.gb) * 2 ** 30;
const CLUSTER = 'rtbench';
const t = (ms) => `${(ms / 1000).toFixed(1)} s`;

const fleet = await startFleet({ cluster: CLUSTER, startAgent: false });
try {
  await fleet.startAgent(['--scratch-dir', join(fleet.dir, 'scratch')]);
  const pg = fleet.pg;
  await pg.query('CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL)');
  const t0 = Date.now();
  let next = 1;
  const batch = 1_000_000;
  for (;;) {
    const [{ size }] = await pg.query(`SELECT pg_table_size('big')::float8 AS size`);
    if (size >= targetBytes) break;
    // ~230 bytes a row on disk: 200 characters of hex text plus the tuple header and id.
    await pg.query(
      `INSERT INTO big SELECT g, repeat(md5(g::text), 6) || left(md5((g * 7)::text), 8) FROM generate_series($1::bigint, $2::bigint) g`,
      [next, next + batch - 1],
    );
    next += batch;
  }
  const [{ rows, tbl, total }] = await pg.query(
    `SELECT count(*)::text AS rows, pg_size_pretty(pg_table_size('big')) AS tbl, pg_size_pretty(pg_total_relation_size('big')) AS total FROM big`,
  );
  console.log(`table big: ${rows} rows, ${tbl} (with its primary key ${total}), filled in ${t(Date.now() - t0)}`);

  const tb = Date.now();
  const b = await fleet.cli('backup', CLUSTER, '--wait');
  if (b.code !== 0) throw new Error(`backup failed:\n${b.stdout}\n${b.stderr}`);
  console.log(`full backup: ${t(Date.now() - tb)}`);

  const [{ x }] = await pg.query(
    'WITH d AS (DELETE FROM big RETURNING 1) SELECT txid_current()::text AS x, count(*) AS n FROM d',
  );
  const [{ wal }] = await pg.query(`SELECT pg_size_pretty(pg_current_wal_lsn() - '0/0'::pg_lsn) AS wal`);
  await fleet.switchAndArchive();
  console.log(`DELETE FROM big: xid ${x} (WAL position ${wal})`);

  const tr = Date.now();
  const r = await fleet.cli(
    'recover-table',
    CLUSTER,
    '--table',
    'public.big',
    '--before-xid',
    x,
    '--wait',
    '--output',
    'json',
  );
  const wall = Date.now() - tr;
  if (r.code !== 0) throw new Error(`recover-table failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
  const job = JSON.parse(r.stdout);
  const res = job.recoverTable;
  // The agent's log says when the job started and how long removing the copy took (after the total).
  const lines = (await fleet.agent.log())
    .split('\n')
    .filter((l) => l.includes(job.id))
    .map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        return undefined;
      }
    })
    .filter(Boolean);
  const teardown = lines.find((l) => l.msg === 'scratch copy removed')?.seconds;
  const firstAt = lines[0]?.time;
  const tab = res.tables[0];
  console.log(
    [
      `recover-table public.big -> ${tab.recoveredAs}: ${tab.rowsRecovered} rows, ${(Number(tab.dumpBytes) / 2 ** 20).toFixed(0)} MiB of dump loaded`,
      `  restore        ${res.restoreSeconds.toFixed(1)} s (${(Number(res.restoredBytes) / 2 ** 20).toFixed(0)} MiB)`,
      `  WAL replay     ${res.recoverySeconds.toFixed(1)} s`,
      `  dump + load    ${res.dumpLoadSeconds.toFixed(1)} s`,
      `  total (agent)  ${res.totalSeconds.toFixed(1)} s`,
      `  copy removal   ${teardown === undefined ? '?' : `${teardown.toFixed(1)} s`} (after the total)`,
      `  CLI wall time  ${t(wall)}${firstAt ? ` (the agent's first line of the job ${t(firstAt - tr)} after the CLI started)` : ''}`,
      `  load average   ${loadavg()
        .map((l) => l.toFixed(1))
        .join(' ')} (other work on this machine slows every figure)`,
    ].join('\n'),
  );
} finally {
  await fleet.stop();
}
