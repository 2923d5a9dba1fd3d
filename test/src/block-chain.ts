/**
 * What the block-incremental scenarios share (block-incremental.test.ts on a directory,
 * block-incremental-s3.test.ts on an S3 bucket): the tables and the digest of their rows, the
 * random updates between links, a backup through the CLI, what the block maps of a chain hold,
 * and the restore of a link checked against the rows it held.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runAsPostgres, startPostgres, type PgInstance } from '@pgfleet/testkit';
import { waitFor, type Fleet } from './harness.js';

type JobJson = { id: string; backup?: { label: string; type: string } };
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

/** One backup of a chain and the rows every table held when it was taken. */
export interface ChainLink {
  label: string;
  digests: Record<string, string>;
}

/** md5 of every table's rows in key order: what a restored copy must hold. */
export async function tableDigests(pg: PgInstance, tables: readonly string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const t of tables) {
    const [r] = await pg.query<{ n: string; h: string | null }>(
      `SELECT count(*)::text AS n, md5(string_agg(x::text, ',' ORDER BY x.id)) AS h FROM ${t} x`,
    );
    out[t] = `${r!.n}:${r!.h ?? ''}`;
  }
  return out;
}

/** A deterministic pseudo-random sequence, so a failing link can be replayed. */
export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/**
 * Starts a job with the CLI (`args`, with --wait: it prints the job as JSON at its end) and
 * waits for it to succeed: one CLI process per job, as a user runs it (a chain of 31 links starts
 * 62 jobs, and a CLI process costs a second or more of a loaded 2-core host). On a loaded host a
 * backup to S3 outlasted one CLI run's time limit (harness runNode, 3 minutes): the job, named on
 * stderr as soon as it was started, is then followed on in rounds of `pgfleet job --wait`.
 */
async function runJob(fleet: Fleet, what: string, args: string[]): Promise<JobJson> {
  let r = await fleet.cli(...args, '--wait', '--output', 'json');
  if (r.code === -1) {
    // The CLI run's time limit, not the job's end; it said "<kind> job <id> <state> to agent <agent>".
    const id = /\bjob (\S+) \w+ to agent\b/.exec(r.stderr)?.[1];
    assert.ok(id, `${what} not started within the CLI's time limit:\n${r.stdout}\n${r.stderr}`);
    do r = await fleet.cli('job', id, '--wait', '--output', 'json');
    while (r.code === -1);
  }
  assert.equal(r.code, 0, `${what} failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
  return JSON.parse(r.stdout) as JobJson;
}

/** A backup of the fleet's cluster through the CLI, waited for; its label. */
export async function backupLink(fleet: Fleet, type: 'full' | 'incr'): Promise<string> {
  return (await runJob(fleet, `${type} backup`, ['backup', fleet.cluster, '--type', type])).backup!.label;
}

/** Stops the cluster's agent and, once the controller saw it go, starts it again with `args`. */
export async function restartAgent(fleet: Fleet, args: string[]): Promise<void> {
  await fleet.agent!.stop();
  await waitFor('the controller to see the agent go', async () => !(await fleet.agentConnected()));
  await fleet.startAgent(args);
}

/**
 * Drops the template databases initdb made (template0, template1): about two thirds of a new
 * cluster's ~1000 files, none of which any link changes, yet every backup of a chain lists each
 * of them and every restore writes and checks each. What a chain proves is about the files
 * that change; the unchanged files it carries from link to link are still the postgres
 * database's ~300 and the cluster-wide ones. (No test here creates a database.)
 */
export async function dropTemplateDatabases(pg: PgInstance): Promise<void> {
  for (const db of ['template0', 'template1']) {
    await pg.query(`ALTER DATABASE ${db} IS_TEMPLATE false`);
    await pg.query(`DROP DATABASE ${db}`);
  }
}

/** The two tables every chain changes: `acct` (20000 rows, updated at random), `events` (growing). */
export async function createChainTables(pg: PgInstance): Promise<void> {
  await pg.query(`CREATE TABLE acct (id int PRIMARY KEY, v int NOT NULL, pad text NOT NULL)`);
  await pg.query(`INSERT INTO acct SELECT g, g, repeat(md5(g::text), 3) FROM generate_series(1, 20000) g`);
  await pg.query(`CREATE TABLE events (id bigserial PRIMARY KEY, at int NOT NULL, body text)`);
  await pg.query(`INSERT INTO events (at, body) SELECT 0, md5(g::text) FROM generate_series(1, 2000) g`);
}

/**
 * The changes before link `i`: rows of `acct` updated at random (0.3%), a few deleted and
 * inserted again; `events` longer, its tail deleted and vacuumed away every 4th link (truncation).
 * `share` scales the `acct` changes: at 1 a link touches about a quarter of its blocks, so its maps
 * re-base every few links (docs/block-incremental.md, "Re-base"); a chain that must keep building
 * delta layers link after link takes a smaller share.
 */
export async function scatteredChanges(pg: PgInstance, rnd: () => number, i: number, share = 1): Promise<void> {
  const ids = (n: number, max: number) =>
    Array.from({ length: Math.max(1, Math.round(n * share)) }, () => 1 + Math.floor(rnd() * max)).join(',');
  await pg.query(`UPDATE acct SET v = v + ${i} WHERE id IN (${ids(60, 20000)})`);
  await pg.query(`DELETE FROM acct WHERE id IN (${ids(20, 20000)})`);
  await pg.query(
    `INSERT INTO acct SELECT g, -g, 'back ${i}' FROM unnest(ARRAY[${ids(10, 20000)}]) g ON CONFLICT (id) DO NOTHING`,
  );
  await pg.query(`INSERT INTO events (at, body) SELECT ${i}, md5(g::text || '${i}') FROM generate_series(1, 300) g`);
  if (i % 4 === 0) {
    await pg.query(`DELETE FROM events WHERE id > (SELECT max(id) - 500 FROM events)`);
    await pg.query('VACUUM events');
  }
}

/** What the block maps of one backup's own block-incremental entries hold. */
export interface LinkMaps {
  /** Entries that stored changed blocks (blocks.changed). */
  entries: number;
  /** Blocks they stored, and how many of those as XOR deltas (their part in a delta layer). */
  storedBlocks: number;
  deltaBlocks: number;
  /** Entries whose map has delta layers (made by this backup or an earlier one), and the most layers. */
  deltaMaps: number;
  deepest: number;
  /** Their files' sizes. */
  fileBytes: number;
  /** Large files (128 KiB and up) of which under a quarter of the blocks was stored. */
  sparse: number;
  /** The most other backups one map reads from. */
  longestFrom: number;
}

const noLinkMaps = (): LinkMaps => ({
  entries: 0,
  storedBlocks: 0,
  deltaBlocks: 0,
  deltaMaps: 0,
  deepest: 0,
  fileBytes: 0,
  sparse: 0,
  longestFrom: 0,
});

/**
 * Reads the maps of `label`'s own block-incremental entries (through the storage package's
 * reader, on any repository), checking each names in blocks.from every backup it reads.
 */
export async function linkMaps(fleet: Fleet, label: string): Promise<LinkMaps> {
  const out = noLinkMaps();
  const manifest = await fleet.repo.readManifest(fleet.cluster, label);
  const m = manifest as unknown as ManifestJson;
  for (const [i, f] of m.files.entries()) {
    if (f.backup !== label || !f.blocks?.changed) continue;
    assert.equal(m.format, 2);
    out.entries++;
    const map = await fleet.repo.readBlockMap(fleet.cluster, manifest.files[i]!);
    // Every backup the map reads is named in blocks.from (what expire keeps).
    assert.deepEqual(map.backupsOtherThan(label), [...(f.blocks.from ?? [])].sort());
    out.longestFrom = Math.max(out.longestFrom, f.blocks.from?.length ?? 0);
    if (map.deltas.length > 0) out.deltaMaps++;
    out.deepest = Math.max(out.deepest, map.deltas.length);
    const own = map.parts.findIndex((p) => p.backup === label);
    for (const layer of map.deltas) for (let b = 0; b < map.blocks; b++) if (layer.part[b] === own) out.deltaBlocks++;
    out.storedBlocks += f.blocks.changed.count;
    out.fileBytes += f.size;
    if (f.size >= 128 << 10 && f.blocks.changed.count * 4 < f.size / 8192) out.sparse++;
  }
  return out;
}

/** LinkMaps of several backups added up (deepest and longestFrom: the most). */
export function sumLinkMaps(all: readonly LinkMaps[]): LinkMaps {
  const total = noLinkMaps();
  for (const m of all) {
    for (const k of ['entries', 'storedBlocks', 'deltaBlocks', 'deltaMaps', 'fileBytes', 'sparse'] as const)
      total[k] += m[k];
    total.deepest = Math.max(total.deepest, m.deepest);
    total.longestFrom = Math.max(total.longestFrom, m.longestFrom);
  }
  return total;
}

/**
 * Restores `link` into a new directory under the fleet's (a restore checks every file it writes
 * against the sha256 of the file the backup read: a link that restores rebuilt every file byte for
 * byte). With `start`, PostgreSQL is started on the copy and every table must hold exactly the
 * link's rows; with `amcheck`, pg_amcheck must find nothing wrong with heap or indexes. The copy is
 * removed afterwards.
 */
export async function restoreLink(
  fleet: Fleet,
  link: ChainLink,
  opts: { name: string; tablespaces?: boolean; start: boolean; amcheck?: boolean },
): Promise<void> {
  const dir = join(fleet.dir, `restore-${opts.name}`);
  const tsDir = join(fleet.dir, `restore-${opts.name}-ts`);
  await runJob(fleet, `restore of ${link.label}`, [
    'restore',
    fleet.cluster,
    '--to',
    dir,
    ...(opts.tablespaces ? ['--tablespace-dir', tsDir] : []),
    '--backup',
    link.label,
    '--target',
    'immediate',
  ]);
  try {
    if (!opts.start) return;
    const pg = await startPostgres({ dataDir: dir, waitForRecovery: true, settings: { archive_mode: 'off' } });
    try {
      assert.deepEqual(await tableDigests(pg, Object.keys(link.digests)), link.digests, `${opts.name} (${link.label})`);
      if (opts.amcheck)
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
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
    await rm(tsDir, { recursive: true, force: true });
  }
}

/** Runs `each` over 0..n-1, `parallel` at a time (a restore mostly waits: process starts, WAL fetches, fsyncs). */
export async function inParallel(n: number, parallel: number, each: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < n) await each(next++);
    }),
  );
}
