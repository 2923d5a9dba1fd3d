#!/usr/bin/env node
/**
 * Where a `pgfleet status --output json` of a large fleet goes, piece by piece, in CPU seconds in
 * one process over a seeded SQLite catalog (bench/fleet-catalog-cpu.mjs --seeded FILE makes one):
 * the controller's rows (listClusterStatusPage, every page), their protobuf encoding (what gRPC
 * sends), the CLI's decoding, and its JSON output (json-text.ts; jsonOf + JSON.stringify before it)
 * and table.
 *
 *   node bench/status-parts.mjs --seeded /tmp/seed10k.db [--page-size 5000] [--runs 3] [--root DIR]
 */
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    seeded: { type: 'string' },
    'page-size': { type: 'string', default: '5000' },
    runs: { type: 'string', default: '3' },
    root: { type: 'string', default: fileURLToPath(new URL('..', import.meta.url)) },
  },
});
const root = resolve(values.root);
const load = (path) => import(pathToFileURL(join(root, path)).href);
const { openCatalog } = await load('packages/catalog/dist/index.js');
const { listClusterStatusPage } = await load('packages/controller/dist/health/status.js');
const { ListClustersResponseSchema, ClusterInfoSchema } = await load('packages/proto/dist/index.js');
// The CLI's JSON text: json-text.ts's one pass (written in 64 KiB chunks, here counted and
// dropped, as stdout takes them), or, in a checkout from before it, jsonOf + JSON.stringify.
const statusJson = await load('packages/cli/dist/json-text.js').then(
  ({ JsonText, writeJson }) =>
    (clusters) => {
      let length = 0;
      const text = new JsonText((chunk) => {
        length += chunk.length;
      });
      text.push('{\n  "clusters": ');
      writeJson(text, ClusterInfoSchema, clusters, '  ');
      text.push(',\n  "controllers": []\n}');
      text.end();
      return length;
    },
  async () => {
    const { jsonOf } = await load('packages/cli/dist/output.js');
    return (clusters) =>
      JSON.stringify({ clusters: jsonOf(ClusterInfoSchema, clusters), controllers: [] }, null, 2).length;
  },
);
const { describeStatus, describeHosts } = await load('packages/cli/dist/status-command.js');
const { create, toBinary, fromBinary } = await import('@bufbuild/protobuf');
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const dir = await mkdtemp(join(tmpdir(), 'pgfleet-status-parts-'));
const url = join(dir, 'catalog.db');
await copyFile(values.seeded, url);
const store = await openCatalog(url);
const ctx = { store, now: () => Date.now(), sessions: { get: () => undefined, ofCluster: () => [] }, logger: {} };
const pageSize = Number(values['page-size']);
const parts = { rows: [], encode: [], decode: [], json: [], table: [] };
let bytes = 0;
let n = 0;
for (let run = 0; run <= Number(values.runs); run++) {
  let t = cpu();
  const pages = [];
  let pageToken = '';
  do {
    const page = await listClusterStatusPage(ctx, { pageSize, pageToken });
    pages.push(page);
    pageToken = page.nextPageToken;
  } while (pageToken);
  const rowsCpu = cpu() - t;
  t = cpu();
  const wire = pages.map((p) => toBinary(ListClustersResponseSchema, create(ListClustersResponseSchema, p)));
  const encodeCpu = cpu() - t;
  t = cpu();
  const clusters = wire.flatMap((b) => fromBinary(ListClustersResponseSchema, b).clusters);
  const decodeCpu = cpu() - t;
  t = cpu();
  const jsonChars = statusJson(clusters);
  const jsonCpu = cpu() - t;
  t = cpu();
  const table = describeStatus(clusters, Date.now()) + describeHosts(clusters, Date.now());
  const tableCpu = cpu() - t;
  bytes = wire.reduce((s, b) => s + b.length, 0);
  n = clusters.length;
  if (run === 0) {
    console.error(`warm-up: ${n} rows, ${bytes} bytes on the wire, json ${jsonChars} chars, table ${table.length}`);
    continue;
  }
  parts.rows.push(rowsCpu);
  parts.encode.push(encodeCpu);
  parts.decode.push(decodeCpu);
  parts.json.push(jsonCpu);
  parts.table.push(tableCpu);
}
await store.close();
await rm(dir, { recursive: true, force: true });
console.log(`${n} clusters, ${(bytes / 1e6).toFixed(2)} MB on the wire; CPU seconds, median of ${values.runs}`);
for (const [k, xs] of Object.entries(parts))
  console.log(`${k.padEnd(8)} ${median(xs).toFixed(3)}  (${xs.map((x) => x.toFixed(3)).join(', ')})`);
