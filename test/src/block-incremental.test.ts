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
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { chownToPostgres, runAsPostgres, startPostgres, type PgInstance } from '@pgfleet/testkit';
import { startFleet, type Fleet } from './harness.js';

type JobJson = { backup?: { label: string; type: string } };
type ManifestJson = {
  label: string;
  type: string;
  format: number;
  files: {
    path: string;
    size: number;
    backup: string;
    blocks?: { changed?: { count: number; storedSize: number }; from?: string[] };
  }[];
};

const LINKS = 30;
const TABLES = ['acct', 'events', 'scratch', 'moved'] as const;

/** md5 of every table's rows in key order: what a restored copy must hold. */
async function tableDigests(pg: PgInstance): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const t of TABLES) {
    const [r] = await pg.query<{ n: string; h: string | null }>(
      `SELECT count(*)::text AS n, md5(string_agg(x::text, ',' ORDER BY x.id)) AS h FROM ${t} x`,
    );
    out[t] = `${r!.n}:${r!.h ?? ''}`;
  }
  return out;
}

/** A deterministic pseudo-random sequence, so a failing link can be replayed. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

// 25 minutes: on a 2-core host at load 30-40 the 30 backups alone take ~7 minutes and the 31
// restores (9 of them started with pg_amcheck) ~15; at 10 minutes the suite was cut off mid-restore.
describe('block-incremental chain: full + 30 incr, every link restores exactly', { timeout: 1_500_000 }, () => {
  let fleet: Fleet;
  const started: PgInstance[] = [];
  const links: { label: string; digests: Record<string, string> }[] = [];

  async function backup(type: 'full' | 'incr'): Promise<string> {
    const r = await fleet.cli('backup', 'blocks', '--type', type, '--wait', '--output', 'json');
    assert.equal(r.code, 0, `${type} backup failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    return (JSON.parse(r.stdout) as JobJson).backup!.label;
  }

  before(async () => {
    fleet = await startFleet({ cluster: 'blocks', startAgent: false });
    // Small tables keep the test quick: block maps from 16 KiB on.
    await fleet.startAgent(['--block-min-size', '16384']);
    const pg = fleet.pg;
    const tsDir = join(fleet.dir, 'tablespace-ts1');
    await mkdir(tsDir, { mode: 0o700 });
    await chownToPostgres(tsDir);
    await pg.query(`CREATE TABLESPACE ts1 LOCATION '${tsDir}'`);
    await pg.query(`CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL, pad text NOT NULL)`);
    await pg.query(`INSERT INTO acct SELECT g, g, repeat(md5(g::text), 3) FROM generate_series(1, 20000) g`);
    await pg.query(`CREATE TABLE events (id bigserial PRIMARY KEY, at int NOT NULL, body text)`);
    await pg.query(`INSERT INTO events (at, body) SELECT 0, md5(g::text) FROM generate_series(1, 2000) g`);
    await pg.query(`CREATE TABLE scratch (id int PRIMARY KEY, body text)`);
    await pg.query(`INSERT INTO scratch SELECT g, repeat('s', 100) FROM generate_series(1, 3000) g`);
    await pg.query(`CREATE TABLE moved (id int PRIMARY KEY, body text)`);
    await pg.query(`INSERT INTO moved SELECT g, repeat('m', 80) FROM generate_series(1, 4000) g`);
    await pg.query('CHECKPOINT');
    links.push({ label: await backup('full'), digests: await tableDigests(pg) });

    const rnd = lcg(14);
    const ids = (n: number, max: number) => Array.from({ length: n }, () => 1 + Math.floor(rnd() * max)).join(',');
    for (let i = 1; i <= LINKS; i++) {
      // Rows of the big table updated at random (0.3%), a few deleted and inserted again.
      await pg.query(`UPDATE acct SET v = v + ${i} WHERE id IN (${ids(60, 20000)})`);
      await pg.query(`DELETE FROM acct WHERE id IN (${ids(20, 20000)})`);
      await pg.query(
        `INSERT INTO acct SELECT g, -g, 'back ${i}' FROM unnest(ARRAY[${ids(10, 20000)}]) g ON CONFLICT (id) DO NOTHING`,
      );
      // Growth: the events table gets longer every link; sometimes its tail is deleted and vacuumed away (truncation).
      await pg.query(
        `INSERT INTO events (at, body) SELECT ${i}, md5(g::text || '${i}') FROM generate_series(1, 300) g`,
      );
      if (i % 4 === 0) {
        await pg.query(`DELETE FROM events WHERE id > (SELECT max(id) - 500 FROM events)`);
        await pg.query('VACUUM events');
      }
      if (i % 3 === 0) await pg.query('VACUUM acct');
      if (i % 7 === 0) {
        await pg.query('TRUNCATE scratch');
        await pg.query(`INSERT INTO scratch SELECT g, repeat('t${i}', 30) FROM generate_series(1, ${1000 + i * 50}) g`);
      }
      if (i % 9 === 0) await pg.query('VACUUM FULL acct');
      if (i % 5 === 0) await pg.query(`ALTER TABLE moved SET TABLESPACE ${i % 10 === 0 ? 'pg_default' : 'ts1'}`);
      await pg.query(`UPDATE moved SET body = body || '${i % 10}' WHERE id % 97 = ${i}`);
      links.push({ label: await backup('incr'), digests: await tableDigests(pg) });
    }
  });

  after(async () => {
    for (const p of started) await p.stop();
    await fleet?.stop();
  });

  it('the incrementals store only changed blocks, and maps reach back along the chain', async (t) => {
    let blockEntries = 0;
    let longestFrom = 0;
    let fileBytes = 0;
    let storedBlockBytes = 0;
    let sparse = 0;
    let deltaMaps = 0;
    let deepest = 0;
    for (const { label } of links.slice(1)) {
      const manifest = await fleet.repo.readManifest('blocks', label);
      const m = manifest as unknown as ManifestJson;
      for (const [i, f] of m.files.entries()) {
        if (f.backup !== label || !f.blocks?.changed) continue;
        assert.equal(m.format, 2);
        blockEntries++;
        // Changed blocks stored as XOR deltas (the default): at most DELTA_DEPTH over a whole image,
        // and every backup the map reads is named in blocks.from (what expire keeps).
        const map = await fleet.repo.readBlockMap('blocks', manifest.files[i]!);
        if (map.deltas.length > 0) deltaMaps++;
        deepest = Math.max(deepest, map.deltas.length);
        assert.deepEqual(map.backupsOtherThan(label), [...(f.blocks.from ?? [])].sort());
        longestFrom = Math.max(longestFrom, f.blocks.from?.length ?? 0);
        fileBytes += f.size;
        storedBlockBytes += f.blocks.changed.count * 8192;
        // A table file of at least 128 KiB of which under a quarter was stored.
        if (f.size >= 128 << 10 && f.blocks.changed.count * 4 < f.size / 8192) sparse++;
      }
    }
    assert.ok(blockEntries > LINKS, `${blockEntries} block-incremental entries`);
    assert.ok(sparse >= LINKS / 2, `${sparse} large files stored under a quarter of their blocks`);
    assert.ok(storedBlockBytes < fileBytes / 2, `stored ${storedBlockBytes} of ${fileBytes} bytes of changed files`);
    assert.ok(longestFrom >= 2, `a map reads from ${longestFrom} other backups`);
    assert.ok(deltaMaps >= LINKS / 2, `${deltaMaps} maps with XOR deltas`);
    assert.ok(deepest <= 3, `${deepest} delta layers`);
    t.diagnostic(
      `${blockEntries} block-incremental entries stored ${storedBlockBytes} of their ${fileBytes} bytes; maps read from up to ${longestFrom} other backups; ${deltaMaps} maps with deltas, up to ${deepest} deep`,
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
    const restoreLink = async (i: number): Promise<void> => {
      const link = links[i]!;
      const dir = join(fleet.dir, `restore-${i}`);
      const r = await fleet.cli(
        'restore',
        'blocks',
        '--to',
        dir,
        '--tablespace-dir',
        join(fleet.dir, `restore-${i}-ts`),
        '--backup',
        link.label,
        '--target',
        'immediate',
        '--wait',
      );
      assert.equal(r.code, 0, `restore of ${link.label} failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
      if (!STARTED.has(i)) {
        await rm(dir, { recursive: true, force: true });
        await rm(join(fleet.dir, `restore-${i}-ts`), { recursive: true, force: true });
        return;
      }
      const pg = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
      try {
        assert.deepEqual(await tableDigests(pg), link.digests, `link ${i} (${link.label})`);
        await runAsPostgres(
          join(pg.binDir, 'pg_amcheck'),
          [
            '-h',
            pg.socketDir,
            '-p',
            String(pg.port),
            '-U',
            'postgres',
            '--install-missing',
            '--heapallindexed',
            '-d',
            'postgres',
          ],
          { cwd: '/tmp' },
        );
      } finally {
        await pg.stop();
        await rm(dir, { recursive: true, force: true });
      }
    };
    // A few at a time: most of a link's time is waiting (process starts, WAL fetches, fsyncs).
    let next = 0;
    await Promise.all(
      Array.from({ length: 3 }, async () => {
        while (next < links.length) await restoreLink(next++);
      }),
    );
  });
});
