/**
 * Re-base (docs/block-incremental.md, "Re-base"): a block-incremental backup stores a relation
 * file whole again, with a block map naming no older backup, once its prior map takes half a
 * block or more per block from incrementals' parts. Here every row of `acct` is updated before
 * the first incr (every page changes, the table grows): that incr still stores only changed
 * blocks (over a full nothing re-bases), the next one stores the file whole with a new map, and
 * the one after builds on it alone. Each restores exactly the rows it held and passes pg_amcheck.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  backupLink,
  createChainTables,
  restoreLink,
  scatteredChanges,
  lcg,
  tableDigests,
  type ChainLink,
} from './block-chain.js';
import { startFleet, type Fleet } from './harness.js';

const TABLES = ['acct', 'events'] as const;

type Entry = {
  path: string;
  backup: string;
  blocks?: { changed?: { count: number }; from?: string[] };
};

describe('block-incremental re-base: a heavily changed file is stored whole again', { timeout: 600_000 }, () => {
  let fleet: Fleet;
  let acctPath: string;
  const links: ChainLink[] = [];

  const entry = async (label: string): Promise<Entry> => {
    const m = (await fleet.repo.readManifest(fleet.cluster, label)) as unknown as { files: Entry[] };
    const f = m.files.find((x) => x.path === acctPath);
    assert.ok(f, `${acctPath} in ${label}`);
    return f;
  };

  before(async () => {
    fleet = await startFleet({ cluster: 'rebase', startAgent: false });
    await fleet.startAgent(['--block-min-size', '16384']);
    const pg = fleet.pg;
    await createChainTables(pg);
    await pg.query('CHECKPOINT');
    const [row] = await pg.query<{ p: string }>(`SELECT pg_relation_filepath('acct') AS p`);
    acctPath = row!.p;
    links.push({ label: await backupLink(fleet, 'full'), digests: await tableDigests(pg, TABLES) });
    // Every row: every heap page of acct changes (and the table about doubles).
    await pg.query('UPDATE acct SET v = v + 1');
    links.push({ label: await backupLink(fleet, 'incr'), digests: await tableDigests(pg, TABLES) });
    const rnd = lcg(7);
    for (let i = 1; i <= 2; i++) {
      await scatteredChanges(pg, rnd, i);
      links.push({ label: await backupLink(fleet, 'incr'), digests: await tableDigests(pg, TABLES) });
    }
  });

  after(async () => {
    await fleet?.stop();
  });

  it('the first incr stores changed blocks, the second re-bases the file whole, the third builds on it alone', async () => {
    const [full, i1, i2, i3] = links.map((l) => l.label);
    const first = await entry(i1!);
    assert.equal(first.backup, i1);
    assert.ok(first.blocks?.changed, 'the first incr after a full stores changed blocks');
    assert.deepEqual(first.blocks.from, [full]);

    // Re-based: stored whole by this backup, with a map and nothing read from older backups.
    const rebased = await entry(i2!);
    assert.equal(rebased.backup, i2);
    assert.ok(rebased.blocks, 'a re-based file keeps a block map');
    assert.equal(rebased.blocks.changed, undefined, 'a re-based file is stored whole');
    assert.equal(rebased.blocks.from, undefined);
    const manifest = await fleet.repo.readManifest(fleet.cluster, i2!);
    const map = await fleet.repo.readBlockMap(
      fleet.cluster,
      manifest.files.find((f) => f.path === acctPath)!,
    );
    assert.deepEqual([...new Set(map.parts.map((p) => `${p.backup}/${p.object}`))], [`${i2}/${map.parts[0]!.object}`]);
    assert.notEqual(map.parts[0]!.object, 'blocks');
    assert.equal(map.deltas.length, 0);

    const next = await entry(i3!);
    assert.ok(next.blocks?.changed, 'the incr after a re-base stores changed blocks again');
    assert.deepEqual(next.blocks.from, [i2], 'it reads only the re-based copy');
  });

  it('every link restores exactly the rows it held and passes pg_amcheck', async () => {
    for (const [i, link] of links.entries())
      await restoreLink(fleet, link, { name: String(i), start: true, amcheck: true });
  });
});
