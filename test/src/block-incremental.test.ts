/**
 * Block-level incremental backups (docs/block-incremental.md) on a real cluster: a full, then 30
 * incrementals with random updates, deletes, VACUUM, TRUNCATE, table rewrites (VACUUM FULL and
 * ALTER TABLE SET TABLESPACE, both new relfilenodes) and relation growth between them. The
 * incrementals store only changed blocks of the big table; restoring every link of the chain
 * gives exactly the rows each table held when that backup was taken (md5 of the ordered rows of
 * every table), and pg_amcheck finds nothing wrong with heap or indexes.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chownToPostgres } from '@pgfleet/testkit';
import {
  backupLink,
  createChainTables,
  dropTemplateDatabases,
  inParallel,
  lcg,
  linkMaps,
  restoreLink,
  scatteredChanges,
  sumLinkMaps,
  tableDigests,
  type ChainLink,
} from './block-chain.js';
import { startFleet, type Fleet } from './harness.js';

const LINKS = 30;
const TABLES = ['acct', 'events', 'scratch', 'moved'] as const;

// 25 minutes: on a 2-core host at load 30-40 the 30 backups alone take ~7 minutes and the 31
// restores (9 of them started with pg_amcheck) ~15; at 10 minutes the suite was cut off mid-restore.
describe('block-incremental chain: full + 30 incr, every link restores exactly', { timeout: 1_500_000 }, () => {
  let fleet: Fleet;
  const links: ChainLink[] = [];

  before(async () => {
    fleet = await startFleet({ cluster: 'blocks', startAgent: false });
    // Small tables keep the test quick: block maps from 16 KiB on.
    await fleet.startAgent(['--block-min-size', '16384']);
    const pg = fleet.pg;
    const tsDir = join(fleet.dir, 'tablespace-ts1');
    await mkdir(tsDir, { mode: 0o700 });
    await chownToPostgres(tsDir);
    await pg.query(`CREATE TABLESPACE ts1 LOCATION '${tsDir}'`);
    // 31 backups and 31 restores of every file of the cluster: only the files a link can change.
    await dropTemplateDatabases(pg);
    await createChainTables(pg);
    await pg.query(`CREATE TABLE scratch (id int PRIMARY KEY, body text)`);
    await pg.query(`INSERT INTO scratch SELECT g, repeat('s', 100) FROM generate_series(1, 3000) g`);
    await pg.query(`CREATE TABLE moved (id int PRIMARY KEY, body text)`);
    await pg.query(`INSERT INTO moved SELECT g, repeat('m', 80) FROM generate_series(1, 4000) g`);
    await pg.query('CHECKPOINT');
    links.push({ label: await backupLink(fleet, 'full'), digests: await tableDigests(pg, TABLES) });

    const rnd = lcg(14);
    for (let i = 1; i <= LINKS; i++) {
      // Random updates of the big table, growth and truncation of events (block-chain.ts).
      await scatteredChanges(pg, rnd, i);
      if (i % 3 === 0) await pg.query('VACUUM acct');
      if (i % 7 === 0) {
        await pg.query('TRUNCATE scratch');
        await pg.query(`INSERT INTO scratch SELECT g, repeat('t${i}', 30) FROM generate_series(1, ${1000 + i * 50}) g`);
      }
      if (i % 9 === 0) await pg.query('VACUUM FULL acct');
      if (i % 5 === 0) await pg.query(`ALTER TABLE moved SET TABLESPACE ${i % 10 === 0 ? 'pg_default' : 'ts1'}`);
      await pg.query(`UPDATE moved SET body = body || '${i % 10}' WHERE id % 97 = ${i}`);
      links.push({ label: await backupLink(fleet, 'incr'), digests: await tableDigests(pg, TABLES) });
    }
  });

  after(async () => {
    await fleet?.stop();
  });

  it('the incrementals store only changed blocks, and maps reach back along the chain', async (t) => {
    const maps = sumLinkMaps(await Promise.all(links.slice(1).map((l) => linkMaps(fleet, l.label))));
    const storedBlockBytes = maps.storedBlocks * 8192;
    assert.ok(maps.entries > LINKS, `${maps.entries} block-incremental entries`);
    // Large table files of which under a quarter of the blocks was stored.
    assert.ok(maps.sparse >= LINKS / 2, `${maps.sparse} large files stored under a quarter of their blocks`);
    assert.ok(
      storedBlockBytes < maps.fileBytes / 2,
      `stored ${storedBlockBytes} of ${maps.fileBytes} bytes of changed files`,
    );
    assert.ok(maps.longestFrom >= 2, `a map reads from ${maps.longestFrom} other backups`);
    // Changed blocks stored as XOR deltas (the default): at most DELTA_DEPTH over a whole image.
    assert.ok(maps.deltaMaps >= LINKS / 2, `${maps.deltaMaps} maps with XOR deltas`);
    assert.ok(maps.deepest <= 3, `${maps.deepest} delta layers`);
    t.diagnostic(
      `${maps.entries} block-incremental entries stored ${storedBlockBytes} of their ${maps.fileBytes} bytes (${maps.deltaBlocks} blocks as deltas); maps read from up to ${maps.longestFrom} other backups; ${maps.deltaMaps} maps with deltas, up to ${maps.deepest} deep`,
    );
  });

  it('verify finds every block map and changed-block object in place', async () => {
    const r = await fleet.cli('verify', 'blocks', '--wait', '--output', 'json');
    assert.equal(r.code, 0, `verify failed:\n${r.stdout}\n${r.stderr}`);
  });

  // Every link is restored: a restore checks each file it writes against the whole-file sha256
  // the backup recorded of the file it read, so a link that restores at all rebuilt every file
  // byte for byte from its chain of block maps. Starting PostgreSQL on a copy (WAL replay, table
  // checksums, pg_amcheck) is the same for any backup type and costs most of a link's time: it is
  // done for the links right after each kind of change (VACUUM FULL, SET TABLESPACE both ways,
  // TRUNCATE, truncation by VACUUM) and for the first and the last.
  const STARTED = new Set([0, 1, 5, 7, 9, 10, 12, 21, LINKS]);
  it('every link of the chain restores exactly; started links hold exactly their rows and pass pg_amcheck', async () => {
    await inParallel(links.length, 3, (i) =>
      restoreLink(fleet, links[i]!, { name: String(i), tablespaces: true, start: STARTED.has(i), amcheck: true }),
    );
  });
});
