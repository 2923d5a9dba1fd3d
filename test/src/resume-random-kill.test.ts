/**
 * Resumable backups under kill -9 at random points (issue 14 part 2; docs/repository-format.md
 * "Resumable backups"), on every repository kind, with two copy workers:
 *
 * - a seeded sequence (printed; replay with PGFLEET_RESUME_SEED=<seed>) picks, for a full and two
 *   block-incremental incrs, where the agent is killed -9: before the copy (its lease is stored,
 *   nothing journaled), after a random number of bytes journaled, after a random number of files
 *   stored, while the backup waits for its WAL, or at a random moment after its WAL arrived (the
 *   WAL check, the manifest write, the report);
 * - nothing partial is ever listed, in the catalog or the repository, while the killed backup
 *   runs or after it died;
 * - a new agent's next backup of the same kind continues the leftover under its label (a new one
 *   when nothing was journaled; none when the killed run had finished), copies at most what was
 *   not journaled (or changed since) plus the largest file per worker, and removes the journal;
 * - every backup restores exactly the rows the source held (row checksums), and `pgfleet verify`
 *   finds every backup restorable (block maps and pg_blocks objects of continued incrs included).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sleep } from '@pgfleet/core';
import type { PgInstance } from '@pgfleet/testkit';
import { createClient, type Client } from '@pgfleet/rpc';
import { AdminService, JobState } from '@pgfleet/proto';
import { REPOSITORY_KINDS, agentCommand, startFleet, waitFor, type Fleet } from './harness.js';
import { figures, notJournaled, restoreExactly, tableDigests, TABLES, type JobJson } from './resume-fixtures.js';

const SEED = Number(process.env.PGFLEET_RESUME_SEED ?? 0x5eed14);
const WORKERS = 2;
const AGENT_ARGS = ['--workers', String(WORKERS)];
const BIG = TABLES.slice(0, 4);

/** Where a backup is killed. */
const KILL_POINTS = ['before-copy', 'bytes-journaled', 'files-stored', 'wait-wal', 'after-wal'] as const;
type KillPoint = (typeof KILL_POINTS)[number];
type Kind = 'full' | 'incr';

// ---- seeded PRNG (mulberry32, as fuzz.test.ts): the same sequence on every machine ------------
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = prng(SEED);
const int = (n: number) => Math.floor(random() * n);
function shuffled<T>(xs: readonly T[]): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = int(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

interface Cycle {
  type: Kind;
  point: KillPoint;
  /** bytes-journaled: the fraction of the tables' bytes to copy; files-stored: the fraction of the files to store. */
  fraction: number;
  /** after-wal: how long after the WAL is released. */
  delayMs: number;
}

/** Every kill point once over the first two kinds, the sixth at random; within a kind in random order. */
function plan(): Record<'posix' | 's3', Cycle[]> {
  const points = [...shuffled(KILL_POINTS), KILL_POINTS[int(KILL_POINTS.length)]!];
  const cycles = (ps: KillPoint[]): Cycle[] =>
    shuffled(ps).map((point, i) => ({
      type: i === 0 ? 'full' : 'incr',
      point,
      fraction: 0.05 + random() * 0.9,
      delayMs: int(4000),
    }));
  return { posix: cycles(points.slice(0, 3)), s3: cycles(points.slice(3, 6)) };
}
const PLAN = plan();

for (const kind of REPOSITORY_KINDS)
  describe(`resumable backups killed -9 at random points (${kind}, seed ${SEED})`, { timeout: 900_000 }, () => {
    const C = `rk${kind}`;
    let fleet: Fleet;
    const started: PgInstance[] = [];
    const cli = async (...args: string[]) => fleet.cli(...args);
    /**
     * The controller's admin API in this process, for the polls while a backup runs (its phase
     * every 100 ms, the catalog's listing with it): a CLI process per poll cost ~0.3 s of CPU of
     * a 2-core host, which kept a core busy through every kill wait. What a user sees is still
     * asked of the CLI: the backups started and waited for, and the catalog listing the result.
     */
    let admin: Client<typeof AdminService> & { close(): void };
    /** Complete backups and the rows each must restore. */
    const complete = new Map<string, Record<string, string>>();
    /** The backups that continued (or replaced) a killed run: each is restored. */
    const continued = new Map<string, Record<string, string>>();

    /** The job's state (as the CLI names it) and phase, from the admin API. */
    async function job(id: string): Promise<{ state: string; phase: string }> {
      const j = (await admin.getJob({ id })).job;
      assert.ok(j, `job ${id}`);
      return { state: (JobState[j.state] ?? String(j.state)).toLowerCase(), phase: j.progress?.phase ?? '' };
    }

    /** The labels `pgfleet backups` lists (the CLI, as a user asks). */
    async function catalogLabels(): Promise<string[]> {
      const r = await cli('backups', C, '--output', 'json');
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { label: string }[]).map((b) => b.label).sort();
    }

    /** The labels the catalog lists, through the admin API (every page). */
    async function apiLabels(): Promise<string[]> {
      const labels: string[] = [];
      let pageToken = '';
      do {
        const r = await admin.listBackups({ cluster: C, pageToken });
        labels.push(...r.backups.map((b) => b.label));
        pageToken = r.nextPageToken;
      } while (pageToken);
      return labels.sort();
    }

    /**
     * Nothing partial listed: every label the catalog or the repository lists has its manifest
     * (the catalog's as `pgfleet backups` prints it with `cliToo`, else through the admin API).
     */
    async function nothingPartialListed(cliToo = false): Promise<void> {
      const repoLabels = (await fleet.repo.listBackups(C)).map((m) => m.label);
      const catalog = [...(await apiLabels()), ...(cliToo ? await catalogLabels() : [])];
      for (const label of new Set([...catalog, ...repoLabels]))
        assert.equal(await fleet.repo.hasManifest(C, label), true, `${label} is listed without its manifest`);
    }

    async function holdArchiving(hold: boolean): Promise<void> {
      const command = hold ? '/bin/false' : agentCommand(`wal-push "%p" ${fleet.walArgs}`);
      await fleet.pg.query(`ALTER SYSTEM SET archive_command = '${command.replaceAll("'", "''")}'`);
      await fleet.pg.query('SELECT pg_reload_conf()');
    }

    /** Dirty pages on disk, and mtimes old enough for the next listing to trust (prior.ts MTIME_GUARD_MS). */
    async function settle(): Promise<void> {
      await fleet.pg.query('CHECKPOINT');
      await sleep(2100);
    }

    async function tableBytes(): Promise<number> {
      const [r] = await fleet.pg.query<{ b: string }>(
        `SELECT sum(pg_total_relation_size(c))::text AS b FROM unnest(ARRAY[${BIG.map((t) => `'${t}'::regclass`).join(',')}]) c`,
      );
      return Number(r!.b);
    }

    /** Stored data objects (pg_data/, pg_blocks/) under a label. */
    async function storedFiles(label: string): Promise<number> {
      return (await fleet.repo.backupObjects(C, label)).filter((o) => /\/(pg_data|pg_blocks)\//.test(o.key)).length;
    }

    /**
     * Starts a backup and kills -9 its agent at the cycle's point; returns the killed run's label.
     * Archiving is held from the moment the run has a label, so it cannot finish before its kill
     * point (a copy-phase point not reached when the copy ends is taken as wait-wal).
     */
    async function startAndKill(
      cycle: Cycle,
      t: { diagnostic(m: string): void },
    ): Promise<{ label: string; at: string }> {
      const earlier = new Set((await fleet.repo.listUnfinishedBackups(C)).map((u) => u.label));
      // What the run copies of the tables: all of them (full), about the two a cycle updates (incr).
      const total = (await tableBytes()) / (cycle.type === 'full' ? 1 : 2);
      // Held from the start, so a quick incr cannot finish before its kill point; the first
      // backup of the cluster proves WAL reaches the repository first, so it is held once that run has a label.
      const holdFirst = complete.size > 0;
      if (holdFirst) await holdArchiving(true);
      const r = await cli('backup', C, '--type', cycle.type, '--output', 'json');
      assert.equal(r.code, 0, r.stderr);
      const id = (JSON.parse(r.stdout) as JobJson).id;
      const label = await waitFor(
        'the backup to store its lease',
        async () => (await fleet.repo.listUnfinishedBackups(C)).find((u) => !earlier.has(u.label))?.label,
        120_000,
        5,
      );
      // The job's phase, polled in the background (a CLI call each), with the listing invariant.
      let phase = '';
      let watching = cycle.point !== 'before-copy';
      const watcher = (async () => {
        while (watching) {
          phase = (await job(id)).phase;
          await nothingPartialListed();
          await sleep(100);
        }
      })();
      let at: string = cycle.point;
      if (cycle.point !== 'before-copy') {
        if (!holdFirst) await holdArchiving(true);
        const filesToStore = cycle.type === 'full' ? 900 : 12;
        const reached = async (): Promise<boolean> => {
          if (phase === 'wait-wal' || phase === 'manifest' || phase === 'done') {
            if (cycle.point === 'bytes-journaled' || cycle.point === 'files-stored')
              at = `wait-wal (${cycle.point} not reached during the copy)`;
            return true;
          }
          if (cycle.point === 'bytes-journaled') {
            const { batches } = await fleet.repo.readJournal(C, label);
            return batches.reduce((n, b) => n + b.files.reduce((m, f) => m + f.size, 0), 0) >= cycle.fraction * total;
          }
          if (cycle.point === 'files-stored')
            return (await storedFiles(label)) >= Math.ceil(cycle.fraction * filesToStore);
          return false;
        };
        await waitFor(`kill point ${cycle.point}`, reached, 240_000, 10);
        if (cycle.point === 'after-wal') {
          await holdArchiving(false);
          await sleep(cycle.delayMs);
        }
      }
      const agent = fleet.agent!;
      agent.child.kill('SIGKILL');
      watching = false;
      await new Promise((resolve) =>
        agent.child.exitCode !== null ? resolve(undefined) : agent.child.once('exit', resolve),
      );
      await watcher;
      const batches = (await fleet.repo.readJournal(C, label)).batches.length;
      t.diagnostic(
        `${cycle.type} ${label} killed at ${at} (fraction ${cycle.fraction.toFixed(2)}, delay ${cycle.delayMs} ms): job phase ${phase || '?'}, ${batches} journal batch(es), ${await storedFiles(label)} object(s) stored`,
      );
      await holdArchiving(false);
      await nothingPartialListed(true);
      await fleet.startAgent(AGENT_ARGS);
      await waitFor('the killed job to end', async () =>
        ['succeeded', 'failed', 'cancelled'].includes((await job(id)).state),
      );
      await nothingPartialListed();
      return { label, at };
    }

    const restored = (label: string, expected: Record<string, string>) =>
      restoreExactly(fleet, C, label, expected, started);

    before(async () => {
      fleet = await startFleet({
        cluster: C,
        repository: kind,
        startAgent: false,
        controllerArgs: ['--schedule-interval', '3600'],
        // Files change between two runs only when the test changes them (autovacuum would at any time).
        pg: { settings: { autovacuum: 'off' } },
      });
      await fleet.startAgent(AGENT_ARGS);
      admin = createClient(AdminService, fleet.controllerAddress, { defaultDeadlineMs: 60_000 });
      for (const t of BIG) {
        await fleet.pg.query(`CREATE TABLE ${t} (id int PRIMARY KEY, v int NOT NULL, pad text NOT NULL)`);
        await fleet.pg.query(
          `INSERT INTO ${t} SELECT g, g, md5(g::text) || md5((g + 1)::text) FROM generate_series(1, 40000) g`,
        );
      }
      await fleet.pg.query(`CREATE TABLE small (id int PRIMARY KEY, v int NOT NULL, pad text NOT NULL)`);
      await fleet.pg.query(`INSERT INTO small SELECT g, g, md5(g::text) FROM generate_series(1, 2000) g`);
      await fleet.pg.query('VACUUM (FREEZE, ANALYZE)');
    });
    after(async () => {
      for (const p of started) await p.stop().catch(() => {});
      admin?.close();
      await fleet?.stop();
    });

    for (const [i, cycle] of PLAN[kind].entries())
      it(`${cycle.type} #${i + 1} killed -9 (${cycle.point}), continued by the next ${cycle.type}`, async (t) => {
        if (i > 0) {
          // Changes spread over every block of two tables (the incr stores changed blocks of each), and growth.
          const step = 3 + int(5);
          await fleet.pg.query(`UPDATE big${1 + (i % 4)} SET v = v + 1 WHERE id % ${step} = ${int(step)}`);
          await fleet.pg.query(`UPDATE big${1 + ((i + 1) % 4)} SET v = v - 1 WHERE id % 50 = ${int(50)}`);
          await fleet.pg.query(
            `INSERT INTO small SELECT g, g, md5(g::text) FROM generate_series(${i * 10000 + 1}, ${i * 10000 + 500}) g`,
          );
        }
        const digests = await tableDigests(fleet.pg);
        await settle();
        const killed = await startAndKill(cycle, t);
        const finished = await fleet.repo.hasManifest(C, killed.label);
        const journal = finished ? [] : (await fleet.repo.readJournal(C, killed.label)).batches;
        if (finished) complete.set(killed.label, digests);

        const r = await cli('backup', C, '--type', cycle.type, '--wait', '--output', 'json');
        assert.equal(r.code, 0, `backup after the kill:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
        const done = JSON.parse(r.stdout) as JobJson;
        const label = done.backup!.label;
        complete.set(label, digests);
        if (journal.length > 0) assert.equal(label, killed.label, 'a journaled leftover is continued under its label');
        else assert.notEqual(label, killed.label, 'nothing journaled (or finished): a backup of its own');

        const manifest = await fleet.repo.readManifest(C, label);
        const own = manifest.files.filter((f) => f.backup === label);
        const ownBytes = own.reduce((n, f) => n + f.size, 0);
        const largest = Math.max(...own.map((f) => f.size));
        const { copiedBytes, takenBytes, takenFiles } = figures(done);
        const bound = notJournaled(manifest, label === killed.label ? journal : []) + WORKERS * largest;
        t.diagnostic(
          `${label}: ${done.progress?.message}; ${journal.length} batch(es) journaled at the kill; own ${ownBytes} bytes, copied ${copiedBytes} <= ${bound}`,
        );
        assert.equal(copiedBytes + takenBytes, ownBytes, 'every own file copied or taken over');
        assert.ok(copiedBytes <= bound, `copied ${copiedBytes} bytes, bound ${bound}: ${done.progress?.message}`);
        if (label === killed.label && journal.some((b) => b.files.some((f) => f.path !== 'global/pg_control')))
          assert.ok(takenFiles > 0, `journaled files are taken over: ${done.progress?.message}`);
        // The changes of this cycle are in the killed run when it finished, else in the continued one.
        const stored = finished ? await fleet.repo.readManifest(C, killed.label) : manifest;
        if (cycle.type === 'incr')
          assert.ok(
            stored.files.some((f) => f.backup === stored.label && f.blocks?.changed),
            'the incr stores changed blocks (block maps)',
          );
        if (!finished) continued.set(label, digests);
        assert.equal((await fleet.repo.readJournal(C, label)).batches.length, 0, 'the journal went with the manifest');
        await nothingPartialListed();
        assert.ok((await catalogLabels()).includes(label), `the catalog lists ${label}`);
      });

    it('every backup restores exactly the rows it was taken from; verify finds all restorable', async () => {
      // The chain's last backup reads files of every earlier one; each continued one is restored on its own too.
      const last = [...complete.keys()].at(-1)!;
      const targets = new Map([...continued, [last, complete.get(last)!]]);
      // One at a time: restores in parallel on a busy 2-core machine outlast the CLI's time limit.
      for (const [label, digests] of targets) await restored(label, digests);
      const r = await cli('verify', C, '--wait');
      assert.equal(r.code, 0, `verify:\n${r.stdout}\n${r.stderr}`);
    });
  });
