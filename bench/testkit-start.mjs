#!/usr/bin/env node
// Starts and stops N test clusters one after another with the testkit (default this checkout's,
// or the dist/index.js given as the second argument), each loaded with 50,000 rows and
// checkpointed: what one new cluster costs the test suite. Usage: node bench/testkit-start.mjs [N] [testkit]
const n = Number(process.argv[2] ?? 4);
const tk = await import(process.argv[3] ?? '@pgfleet/testkit');
const t0 = Date.now();
for (let i = 0; i < n; i++) {
  const s = Date.now();
  const pg = await tk.startPostgres();
  await pg.query('create table t as select g from generate_series(1, 50000) g');
  await pg.query('checkpoint');
  const started = Date.now() - s;
  await pg.stop();
  console.log(`cluster ${i}: started and loaded in ${started} ms, ${Date.now() - s} ms with the stop`);
}
console.log(`all: ${Date.now() - t0} ms`);
