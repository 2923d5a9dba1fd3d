/**
 * Block-level incremental backups with XOR deltas on an S3 repository (fauxqs from testkit): a
 * backup reads the prior versions of its changed blocks through ranged reads of the prior
 * backups' objects (docs/block-incremental.md, "XOR deltas"). A full and 3 incrementals with
 * scattered updates store deltas (3: DELTA_DEPTH, the most layers a block's rebuild reads); then
 * an incremental with --whole-blocks, and two with gzip (whose objects cannot be read block by
 * block), store whole blocks; the last link of each kind restores from the bucket exactly the
 * files its backup read. The chain's set-up is block-chain.ts, shared with the 30-link chain on a
 * directory (block-incremental.test.ts).
 *
 * What this file shows is what S3 changes: prior versions read by ranges, deltas made from them
 * and rebuilt from them at restore, the fallbacks to whole blocks. It does not repeat the
 * directory chain's 30 links and the restore of each, its kinds of change (VACUUM FULL, TRUNCATE,
 * tablespaces) or its pg_amcheck, which are the same whatever holds the objects. Encrypted deltas
 * over ranged reads are storage's block-delta.test.ts (a 12-link chain on S3, plaintext and
 * encrypted).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  backupLink,
  createChainTables,
  dropTemplateDatabases,
  inParallel,
  lcg,
  linkMaps,
  restartAgent,
  restoreLink,
  scatteredChanges,
  tableDigests,
  type ChainLink,
  type LinkMaps,
} from './block-chain.js';
import { startFleet, type Fleet } from './harness.js';

// Every delta link's map is checked; the last one's restore rebuilds blocks through every layer
// the earlier ones made (ranged reads of each of their objects). Links in between add no path
// that is S3's: the directory chain restores every one of its 30.
const DELTA_LINKS = 3;
const TABLES = ['acct', 'events'] as const;
const AGENT_ARGS = ['--block-min-size', '16384'];

describe(
  'block-incremental chain on S3: deltas through ranged reads, whole blocks where they cannot be made',
  { timeout: 900_000 },
  () => {
    let fleet: Fleet;
    /** Every link, and what the maps of each incremental hold, by how it was taken. */
    const links: ChainLink[] = [];
    const maps = { deltas: [] as LinkMaps[], wholeBlocks: [] as LinkMaps[], gzip: [] as LinkMaps[] };

    before(async () => {
      fleet = await startFleet({ cluster: 's3blocks', repository: 's3', startAgent: false });
      // Small tables keep the test quick: block maps from 16 KiB on.
      await fleet.startAgent(AGENT_ARGS);
      await dropTemplateDatabases(fleet.pg);
      await createChainTables(fleet.pg);
      await fleet.pg.query('CHECKPOINT');
      const rnd = lcg(3);
      const link = async (i: number, into?: LinkMaps[]) => {
        // A quarter of the directory chain's row changes: the 3 delta links stay under the re-base
        // load, so the last one's maps hold 3 layers of deltas read back by ranges.
        if (i > 0) await scatteredChanges(fleet.pg, rnd, i, 0.25);
        const label = await backupLink(fleet, i === 0 ? 'full' : 'incr');
        links.push({ label, digests: await tableDigests(fleet.pg, TABLES) });
        into?.push(await linkMaps(fleet, label));
      };
      await link(0);
      for (let i = 1; i <= DELTA_LINKS; i++) await link(i, maps.deltas);
      await restartAgent(fleet, [...AGENT_ARGS, '--whole-blocks']);
      await link(DELTA_LINKS + 1, maps.wholeBlocks);
      // gzip: the first incremental's own objects, then the prior map's parts too, have no block form.
      await restartAgent(fleet, [...AGENT_ARGS, '--compress', 'gzip']);
      await link(DELTA_LINKS + 2, maps.gzip);
      await link(DELTA_LINKS + 3, maps.gzip);
    });

    after(async () => {
      await fleet?.stop();
    });

    it('the incrementals store changed blocks as XOR deltas, read back from S3 by ranges', (t) => {
      let stored = 0;
      let deltas = 0;
      for (const [i, m] of maps.deltas.entries()) {
        assert.ok(m.entries >= 1, `incremental ${i + 1}: ${m.entries} block-incremental entries`);
        assert.ok(
          m.deltaBlocks >= 1,
          `incremental ${i + 1}: ${m.deltaBlocks} of ${m.storedBlocks} stored blocks are deltas`,
        );
        assert.ok(m.deepest <= 3, `${m.deepest} delta layers`);
        stored += m.storedBlocks;
        deltas += m.deltaBlocks;
      }
      // Scattered row updates change a few dozen bytes of a heap page; new pages (the relation grew) are whole.
      assert.ok(deltas * 4 >= stored, `${deltas} of ${stored} stored blocks are deltas`);
      t.diagnostic(
        maps.deltas.map((m, i) => `incr ${i + 1}: ${m.deltaBlocks} of ${m.storedBlocks} blocks as deltas`).join('; '),
      );
    });

    it('with --whole-blocks, and with gzip, changed blocks are stored whole', () => {
      for (const [how, all] of [
        ['--whole-blocks', maps.wholeBlocks],
        ['gzip', maps.gzip],
      ] as const)
        for (const m of all) {
          assert.ok(
            m.entries >= 1 && m.storedBlocks > 0,
            `${how}: ${m.storedBlocks} blocks stored in ${m.entries} entries`,
          );
          assert.equal(m.deltaBlocks, 0, `${how}: no block stored as a delta`);
        }
    });

    // A restore checks each file it writes against the whole-file sha256 the backup recorded of
    // the file it read, so a link that restores at all was rebuilt byte for byte from its ranged
    // parts. Restored: the last link of each kind, whose maps read every object of the chain
    // before it: the deepest deltas (their layers made by every delta link, over the full's
    // blocks), --whole-blocks, and both gzip links (the first's own objects, then the prior map's
    // parts too, have no block form). Each is started (WAL fetched from the bucket, replay, row
    // digests) but the first gzip link, whose objects the second one's restore reads too.
    const RESTORED = [DELTA_LINKS, DELTA_LINKS + 1, DELTA_LINKS + 2, DELTA_LINKS + 3];
    const STARTED = new Set([DELTA_LINKS, DELTA_LINKS + 1, DELTA_LINKS + 3]);
    it('the last link of each kind restores exactly; started links hold the rows each table held at their backup', async () => {
      await inParallel(RESTORED.length, 2, (n) => {
        const i = RESTORED[n]!;
        return restoreLink(fleet, links[i]!, { name: String(i), start: STARTED.has(i) });
      });
    });
  },
);
