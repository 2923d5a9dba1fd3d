/**
 * An HA cluster as a DBA runs one: a primary and a streaming standby (pg_basebackup -R), each
 * host with its own agent of the same cluster, both archiving into one repository (the standby
 * with archive_mode = always, so archiving survives a failover). What the DBA must see:
 * - `pgfleet status` lists both hosts with their roles and the standby's lag;
 * - `backup --from standby` fails with PGF-2010 while no standby's agent is connected;
 * - a backup from the standby (`--from standby`, and through the prefer-standby policy) runs on
 *   the standby's agent and restores exactly (rows equal to the rows at the target);
 * - the standby archives the segments it received without a conflict (same name, same bytes as
 *   the primary's: the repository accepts a duplicate only when its checksum matches);
 * - after a failover (old primary stopped, standby promoted) WAL keeps reaching the repository
 *   from the new primary, a backup of the new primary works and restores, and status shows the
 *   new roles.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runAsPostgres, startPostgres, startStandby, type PgInstance, type StandbyInstance } from '@pgfleet/testkit';
import { agentCommand, startFleet, waitFor, type Fleet } from './harness.js';
import { sleep } from '@pgfleet/core';

const CLUSTER = 'ha';
const STANDBY_AGENT = 'standby-host';

type Row = { id: number; note: string };
type HostJson = {
  agentId: string;
  hostname: string;
  connected?: boolean;
  role?: string;
  lagKnown?: boolean;
  lagBytes?: number;
};
type ClusterJson = { name: string; agentId?: string; hosts?: HostJson[] };
type JobJson = {
  id: string;
  agentId: string;
  state: string;
  kind: string;
  error?: { code: string };
  backup?: { label: string; timeline: number };
};
type ManifestJson = { label: string; timeline: number; source?: { role: string; host: string; pgdata: string } };

describe('HA cluster: primary and standby agents, backups from the standby, failover', { timeout: 900_000 }, () => {
  let fleet: Fleet;
  let standby: StandbyInstance;
  let primaryAgent = '';
  const started: PgInstance[] = [];

  const rows = (pg: PgInstance) => pg.query<Row>('SELECT id, note FROM orders ORDER BY id');
  const cluster = async (): Promise<ClusterJson | undefined> => {
    const r = await fleet.cli('status', '--cluster', CLUSTER, '--output', 'json');
    return r.code === 0 ? (JSON.parse(r.stdout) as { clusters: ClusterJson[] }).clusters[0] : undefined;
  };
  const roles = (c: ClusterJson | undefined) =>
    (c?.hosts ?? []).map((h) => [h.agentId, h.role ?? 'unspecified', h.connected === true]);

  /** Waits until the standby has replayed everything the primary has written so far. */
  async function standbyCaughtUp(): Promise<void> {
    const [p] = await fleet.pg.query<{ l: string }>('SELECT pg_current_wal_lsn()::text AS l');
    await waitFor(
      "the standby to replay the primary's WAL",
      async () => {
        const [s] = await standby.query<{ ok: boolean }>(`SELECT pg_last_wal_replay_lsn() >= '${p!.l}'::pg_lsn AS ok`);
        return s!.ok;
      },
      120_000,
    );
  }

  async function backup(...args: string[]): Promise<JobJson> {
    const r = await fleet.cli('backup', CLUSTER, ...args, '--wait', '--output', 'json');
    assert.equal(r.code, 0, `backup ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    return JSON.parse(r.stdout) as JobJson;
  }

  async function restoreAndStart(dir: string, ...args: string[]): Promise<PgInstance> {
    const r = await fleet.cli('restore', CLUSTER, '--to', dir, ...args, '--wait', '--output', 'json');
    assert.equal(r.code, 0, `restore failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    // archive_mode off: the restored copy must not archive its own timeline into the cluster's repository.
    const pg = await startPostgres({
      dataDir: dir,
      waitForRecovery: true,
      startTimeoutMs: 180_000,
      settings: { archive_mode: 'off' },
    });
    started.push(pg);
    return pg;
  }

  before(async () => {
    fleet = await startFleet({ cluster: CLUSTER });
    await fleet.pg.query('CREATE TABLE orders (id int PRIMARY KEY, note text NOT NULL)');
    await fleet.pg.query(`INSERT INTO orders SELECT g, 'before ' || g FROM generate_series(1, 500) g`);
    const c = await waitFor("the primary's agent to report its role", async () => {
      const x = await cluster();
      return x?.hosts?.[0]?.role === 'primary' ? x : undefined;
    });
    primaryAgent = c.hosts![0]!.agentId;
  });

  after(async () => {
    for (const p of started) await p.stop();
    await fleet?.stop();
    await standby?.stop();
  });

  it("--from standby without a standby's agent fails with PGF-2010 and starts no job", async () => {
    const r = await fleet.cli('backup', CLUSTER, '--from', 'standby', '--wait');
    assert.equal(r.code, 4, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /PGF-2010 cannot back up cluster 'ha' from a standby: no agent of a standby is connected/);
    const jobs = await fleet.cli('jobs', '--cluster', CLUSTER, '--output', 'json');
    assert.deepEqual(
      (JSON.parse(jobs.stdout) as JobJson[]).filter((j) => j.kind === 'backup'),
      [],
    );
  });

  it('a standby with its own agent: status shows both hosts, the primary and the standby with its lag', async () => {
    // Both hosts archive into the same repository; on the standby only with archive_mode = always.
    standby = await startStandby(fleet.pg, {
      archiveCommand: agentCommand(`wal-push "%p" ${fleet.walArgs}`),
      settings: { archive_mode: 'always' },
    });
    await fleet.startHostAgent(standby, STANDBY_AGENT);
    const c = await waitFor(
      'both roles in status',
      async () => {
        const x = await cluster();
        return JSON.stringify(roles(x)) ===
          JSON.stringify([
            [primaryAgent, 'primary', true],
            [STANDBY_AGENT, 'standby', true],
          ]) && x?.hosts?.[1]?.lagKnown
          ? x
          : undefined;
      },
      120_000,
    );
    assert.equal(c.agentId, primaryAgent, "the cluster's own figures are the primary's");
    const table = await fleet.cli('status', '--cluster', CLUSTER);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^CLUSTER\s+AGENT\s+HOST\s+ROLE\s+STATE\s+LSN\s+LAG$/m);
    assert.match(
      table.stdout,
      new RegExp(`^ha\\s+${primaryAgent}\\s+\\S+\\s+primary\\s+connected\\s+[0-9A-F]+/[0-9A-F]+\\s+-$`, 'm'),
    );
    assert.match(
      table.stdout,
      new RegExp(
        `^ha\\s+${STANDBY_AGENT}\\s+\\S+\\s+standby\\s+connected\\s+[0-9A-F]+/[0-9A-F]+\\s+\\S+ (B|KB|MB|KiB|MiB) behind`,
        'm',
      ),
    );
  });

  it("backup --from standby runs on the standby's agent and restores exactly to a time after it", async () => {
    await standbyCaughtUp();
    const job = await backup('--from', 'standby');
    assert.equal(job.agentId, STANDBY_AGENT);
    const manifest = (await fleet.repo.readManifest(CLUSTER, job.backup!.label)) as ManifestJson;
    assert.deepEqual([manifest.source?.role, manifest.source?.pgdata], ['standby', standby.dataDir]);

    await fleet.pg.query(
      `INSERT INTO orders SELECT g, 'after the standby backup ' || g FROM generate_series(501, 600) g`,
    );
    await fleet.pg.query(`UPDATE orders SET note = 'changed' WHERE id <= 10`);
    const atTarget = await rows(fleet.pg);
    const [t] = await fleet.pg.query<{ t: string }>(
      `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t`,
    );
    await sleep(50);
    await fleet.pg.query(`INSERT INTO orders SELECT g, 'after the target ' || g FROM generate_series(601, 700) g`);
    await fleet.switchAndArchive();

    const restored = await restoreAndStart(
      join(fleet.dir, 'restore-standby'),
      '--backup',
      job.backup!.label,
      '--target-time',
      t!.t,
    );
    assert.deepEqual(await rows(restored), atTarget);
  });

  it("the standby archives what it received without a conflict: duplicates of the primary's segments are byte-identical", async () => {
    const [seg] = await fleet.pg.query<{ f: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS f');
    await fleet.switchAndArchive();
    await standbyCaughtUp();
    // The standby pushes the same segment names the primary did; the repository accepts a second
    // push of a name only when the content's checksum is the same, else archiving fails (PGF-4004).
    const archived = await waitFor(
      `the standby to archive ${seg!.f}`,
      async () => {
        const [a] = await standby.query<{ w: string | null; failed: string }>(
          'SELECT last_archived_wal AS w, failed_count::text AS failed FROM pg_stat_archiver',
        );
        return a!.w !== null && a!.w >= seg!.f ? a : undefined;
      },
      120_000,
    );
    assert.equal(archived.failed, '0', `the standby's archive_command failed:\n${await standby.log()}`);
    assert.ok(await fleet.repo.isWalArchived(CLUSTER, seg!.f));
  });

  it('with the prefer-standby policy a plain backup runs on the standby and restores exactly', async () => {
    const set = await fleet.cli('policy', 'set', CLUSTER, '--backup-from', 'prefer-standby');
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /backup-from\s+prefer-standby\s+cluster/);
    await fleet.pg.query(
      `INSERT INTO orders SELECT g, 'before the policy backup ' || g FROM generate_series(701, 800) g`,
    );
    await standbyCaughtUp();
    const atBackup = await rows(fleet.pg);
    const job = await backup();
    assert.equal(job.agentId, STANDBY_AGENT);
    const restored = await restoreAndStart(
      join(fleet.dir, 'restore-policy'),
      '--backup',
      job.backup!.label,
      '--target',
      'immediate',
    );
    assert.deepEqual(await rows(restored), atBackup);
  });

  it('failover: the promoted standby archives, its backup restores, and status shows the new roles', async () => {
    await fleet.pg.query(
      `INSERT INTO orders SELECT g, 'last on the old primary ' || g FROM generate_series(801, 900) g`,
    );
    await standbyCaughtUp();
    await runAsPostgres(join(fleet.pg.binDir, 'pg_ctl'), ['-D', fleet.pg.dataDir, '-m', 'fast', '-w', 'stop'], {
      cwd: '/tmp',
    });
    await standby.promote();

    const c = await waitFor(
      'the new roles in status',
      async () => {
        const x = await cluster();
        const r = roles(x);
        return r[0]?.[0] === STANDBY_AGENT &&
          r[0]?.[1] === 'primary' &&
          r[1]?.[0] === primaryAgent &&
          r[1]?.[1] === 'unspecified'
          ? x
          : undefined;
      },
      120_000,
    );
    assert.equal(c.agentId, STANDBY_AGENT);
    const table = await fleet.cli('status', '--cluster', CLUSTER);
    assert.match(table.stdout, new RegExp(`^ha\\s+${STANDBY_AGENT}\\s+\\S+\\s+primary\\s+connected`, 'm'));
    assert.match(table.stdout, new RegExp(`^ha\\s+${primaryAgent}\\s+\\S+\\s+unknown\\s+connected`, 'm'));

    // Keep writing on the new primary; segments switched after the promotion reach the repository,
    // starting with the new timeline's first one (its first page holds the old timeline's WAL).
    const switched: string[] = [];
    for (let i = 0; i < 3; i++) {
      await standby.query(
        `INSERT INTO orders SELECT g, 'on the new primary ' || g FROM generate_series(${1000 + i * 100}, ${1099 + i * 100}) g`,
      );
      const [s] = await standby.query<{ f: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS f');
      switched.push(s!.f);
    }
    assert.ok(
      switched.every((f) => f.startsWith('00000002')),
      `segments of the new timeline: ${switched.join(', ')}`,
    );
    await waitFor(
      `${switched.at(-1)} in the repository`,
      async () => fleet.repo.isWalArchived(CLUSTER, switched.at(-1)!),
      180_000,
    );
    // Through archive_command itself, without a failure: PostgreSQL archives in order, so every
    // segment of timeline 2 up to the last switched one went through wal-push.
    await waitFor(
      'archive_command to reach the last switched segment',
      async () => {
        const [a] = await standby.query<{ w: string | null }>('SELECT last_archived_wal AS w FROM pg_stat_archiver');
        return a!.w !== null && a!.w.slice(0, 24) >= switched.at(-1)!;
      },
      180_000,
    );
    const [archiver] = await standby.query<{ failed: string }>(
      'SELECT failed_count::text AS failed FROM pg_stat_archiver',
    );
    assert.equal(archiver!.failed, '0', `archive_command failed on the new primary:\n${await standby.log()}`);

    const atBackup = await rows(standby);
    const job = await backup('--from', 'primary');
    assert.equal(job.agentId, STANDBY_AGENT);
    const manifest = (await fleet.repo.readManifest(CLUSTER, job.backup!.label)) as ManifestJson;
    assert.deepEqual([manifest.timeline, manifest.source?.role], [2, 'primary']);
    const restored = await restoreAndStart(
      join(fleet.dir, 'restore-new-primary'),
      '--backup',
      job.backup!.label,
      '--target',
      'immediate',
    );
    assert.deepEqual(await rows(restored), atBackup);
  });
});
