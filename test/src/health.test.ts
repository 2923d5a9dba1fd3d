/**
 * Fleet health end to end, with real PostgreSQL, agents, controller and nats-server, events read
 * by a plain NATS subscriber (core subscription, no JetStream API) that decodes the JSON bodies
 * exactly as docs/events.md describes them:
 *   - a per-cluster RPO threshold set with `pgfleet policy set --rpo-threshold` (the controller's
 *     own flag is an hour) makes rpo.breached and rpo.recovered carry and obey it;
 *   - a WAL segment missing from the repository is reported by wal.gap_detected once, however
 *     often verify runs;
 *   - the agents' heartbeats bring WAL health to the controller (/metrics): pg_wal bytes and free
 *     space matching the real filesystem, the streaming slot active with a small lag, the WAL
 *     bytes the agent archived; and an agent whose role lacks pg_monitor still measures pg_wal.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { freePort, startNats, type NatsServer } from '@pgfleet/testkit';
import {
  AGENT_BIN,
  INSECURE_ARGS,
  agentRunArgs,
  startDaemon,
  startFleet,
  waitFor,
  watchedControllerArgs,
  type Daemon,
  type Fleet,
} from './harness.js';

const CLUSTER = 'hlt';
const MiB = 1024 * 1024;

interface EventJson {
  id: string;
  time: string;
  cluster: string;
  kind: string;
  [payload: string]: unknown;
}
interface Received {
  subject: string;
  encoding: string | undefined;
  body: EventJson;
}

/** The payload field of a kind, as docs/events.md names it: backup.completed -> backupCompleted. */
const payloadField = (kind: string) => kind.replace(/[._]([a-z])/g, (_, c: string) => c.toUpperCase());

describe('fleet health: per-cluster RPO threshold, WAL gaps, WAL health in heartbeats', { timeout: 600_000 }, () => {
  let nats: NatsServer;
  let fleet: Fleet;
  let nc: NatsConnection;
  let metricsPort: number;
  let limitedAgent: Daemon | undefined;
  const received: Received[] = [];

  before(async () => {
    nats = await startNats();
    metricsPort = await freePort();
    fleet = await startFleet({
      cluster: CLUSTER,
      // An hour: any RPO event below comes from the cluster's policy.
      controllerArgs: [...watchedControllerArgs(nats.url, metricsPort, 3600), '--schedule-interval', '3600'],
    });
    nc = await connect({ servers: nats.url, timeout: 30_000, maxReconnectAttempts: -1 });
    const sub = nc.subscribe(`pgfleet.events.${CLUSTER}.>`);
    void (async () => {
      for await (const m of sub)
        received.push({
          subject: m.subject,
          encoding: m.headers?.get('pgfleet-encoding'),
          body: JSON.parse(m.string()) as EventJson,
        });
    })().catch(() => undefined);
    await nc.flush();
    await fleet.pg.query('CREATE TABLE t (id serial PRIMARY KEY, filler text)');
    await fleet.switchAndArchive();
  });

  after(async () => {
    await limitedAgent?.stop();
    await nc?.close().catch(() => undefined);
    await fleet?.stop();
    await nats?.stop();
  });

  const write = () => fleet.pg.query(`INSERT INTO t (filler) SELECT repeat('x', 100) FROM generate_series(1, 1000)`);
  const eventsOf = (kind: string, from = 0) => received.slice(from).filter((r) => r.body.kind === kind);

  async function scrape(): Promise<string> {
    return (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  }
  function metric(text: string, series: string): number | undefined {
    const line = text.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  }

  /** A body exactly as documented: envelope fields, one payload field named after the kind. */
  function assertDocumentedShape(r: Received): Record<string, unknown> {
    const { body } = r;
    assert.equal(r.subject, `pgfleet.events.${CLUSTER}.${body.kind}`);
    assert.equal(r.encoding, 'json');
    assert.match(body.id, /^[0-9a-f-]{36}$/);
    assert.ok(!Number.isNaN(Date.parse(body.time)) && body.time.endsWith('Z'), body.time);
    assert.equal(body.cluster, CLUSTER);
    assert.deepEqual(Object.keys(body).sort(), ['cluster', 'id', 'kind', payloadField(body.kind), 'time'].sort());
    return body[payloadField(body.kind)] as Record<string, unknown>;
  }

  it("the cluster's own RPO threshold (pgfleet policy set --rpo-threshold) decides rpo.breached and rpo.recovered", async () => {
    const set = await fleet.cli('policy', 'set', CLUSTER, '--rpo-threshold', '2');
    assert.equal(set.code, 0, `${set.stdout}\n${set.stderr}`);
    const mark = received.length;
    // WAL past the last archived segment, not switched: the RPO grows from the last archive time.
    await write();
    const breach = await waitFor('rpo.breached', async () => eventsOf('rpo.breached', mark)[0], 120_000).catch(
      async (err: Error) => {
        throw new Error(
          `${err.message}\nreceived: ${received.map((r) => r.body.kind).join(', ')}\n${(await fleet.logs()).slice(-5000)}`,
        );
      },
    );
    const b = assertDocumentedShape(breach) as {
      rpoSeconds: number;
      thresholdSeconds: number;
      lastArchivedWal: string;
      lastArchivedTime: string;
    };
    assert.equal(b.thresholdSeconds, 2);
    // Seconds since the last archive (a sane figure, not a speed): however slowly a loaded machine got here.
    assert.ok(b.rpoSeconds > 2 && b.rpoSeconds < 600, `rpoSeconds ${b.rpoSeconds}`);
    assert.match(b.lastArchivedWal, /^[0-9A-F]{24}$/);
    assert.ok(!Number.isNaN(Date.parse(b.lastArchivedTime)));
    assert.equal(metric(await scrape(), `pgfleet_rpo_threshold_seconds{cluster="${CLUSTER}"}`), 2);

    await fleet.switchAndArchive();
    const recovered = await waitFor('rpo.recovered', async () => eventsOf('rpo.recovered', mark)[0], 120_000);
    const r = assertDocumentedShape(recovered) as {
      rpoSeconds?: number;
      thresholdSeconds: number;
      breachedSeconds: number;
    };
    assert.equal(r.thresholdSeconds, 2);
    assert.ok((r.rpoSeconds ?? 0) <= 2, `rpoSeconds ${r.rpoSeconds}`);
    assert.ok(r.breachedSeconds > 0);
    // Back to an hour: what follows must not flap.
    assert.equal((await fleet.cli('policy', 'set', CLUSTER, '--rpo-threshold', '3600')).code, 0);
  });

  it('a WAL segment missing from the repository: one wal.gap_detected, however often verify runs', async () => {
    const backup = await fleet.cli('backup', CLUSTER, '--type', 'full', '--wait', '--output', 'json');
    assert.equal(backup.code, 0, `${backup.stdout}\n${backup.stderr}`);
    const segments: string[] = [];
    for (let i = 0; i < 3; i++) {
      await write();
      const [row] = await fleet.pg.query<{ f: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS f');
      segments.push(row!.f);
      await fleet.switchAndArchive();
    }
    // Remove the middle one of the three from the repository: archived WAL before and after it.
    const missing = segments[1]!;
    const object = await findWalObject(join(fleet.repoDir, CLUSTER, 'wal'), missing);
    assert.ok(object, `${missing} in the repository`);
    const bytes = await readFile(object);
    await rm(object);
    const mark = received.length;
    try {
      for (let i = 0; i < 2; i++) {
        const v = await fleet.cli('verify', CLUSTER, '--wait');
        assert.equal(v.code, 6, `verify finds the gap (exit 6):\n${v.stdout}\n${v.stderr}`);
      }
      const gap = await waitFor('wal.gap_detected', async () => eventsOf('wal.gap_detected', mark)[0], 120_000);
      const g = assertDocumentedShape(gap) as {
        timeline: number;
        firstMissingWal: string;
        lastMissingWal: string;
        missingSegments: string;
        affectedBackupLabels?: string[];
      };
      assert.deepEqual(
        g,
        { timeline: 1, firstMissingWal: missing, lastMissingWal: missing, missingSegments: '1' },
        "after the backup's own WAL: no backup affected, the list left out",
      );
      // Both verify jobs' events are on the bus by now (their own completion is reported after the gap).
      const listed = await fleet.cli('events', '--cluster', CLUSTER, '--output', 'json', '--limit', '1000');
      const kinds = listed.stdout
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as EventJson).kind);
      assert.equal(kinds.filter((k) => k === 'wal.gap_detected').length, 1, kinds.join(', '));
      assert.equal(eventsOf('wal.gap_detected', mark).length, 1);
      assert.equal(metric(await scrape(), `pgfleet_health_breached{cluster="${CLUSTER}",condition="wal_gap"}`), 1);
    } finally {
      await writeFile(object, bytes);
    }
    const clean = await fleet.cli('verify', CLUSTER, '--wait');
    assert.equal(clean.code, 0, `${clean.stdout}\n${clean.stderr}`);
    assert.equal(metric(await scrape(), `pgfleet_health_breached{cluster="${CLUSTER}",condition="wal_gap"}`), 0);
  });

  it('heartbeats bring WAL health to the controller: pg_wal space, the streaming slot and its lag, WAL archived', async (t) => {
    await fleet.agent!.stop();
    await fleet.startAgent(['--stream']);
    const slot = `pgfleet_${CLUSTER}`;
    for (let i = 0; i < 2; i++) {
      await write();
      await fleet.switchAndArchive();
    }
    const text = await waitFor(
      'WAL health in /metrics',
      async () => {
        const t = await scrape();
        const active = metric(t, `pgfleet_wal_slot_active{cluster="${CLUSTER}",slot="${slot}",wal_status="reserved"}`);
        // The restarted stream first catches up from the slot's restart point, and on a loaded
        // machine it may fall behind the writes above for a while: judge it once it has caught up.
        const lag = metric(t, `pgfleet_wal_stream_lag_bytes{cluster="${CLUSTER}"}`);
        const lagSeconds = metric(t, `pgfleet_wal_stream_lag_seconds{cluster="${CLUSTER}"}`);
        const retained = metric(t, `pgfleet_wal_slot_retained_bytes{cluster="${CLUSTER}",slot="${slot}"}`);
        return active === 1 &&
          lag !== undefined &&
          lag < 16 * MiB &&
          lagSeconds !== undefined &&
          lagSeconds < 5 &&
          retained !== undefined &&
          retained < 4 * 16 * MiB &&
          (metric(t, `pgfleet_wal_archived_bytes_total{cluster="${CLUSTER}"}`) ?? 0) > 0
          ? t
          : undefined;
      },
      120_000,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}\n${await scrape()}\n${(await fleet.logs()).slice(-5000)}`);
    });
    const value = (series: string) => {
      const v = metric(text, series);
      assert.ok(v !== undefined, `${series} in\n${text}`);
      return v;
    };
    // Archived bytes count whole segments; the agent restarted, so only what it stored since then.
    const archivedBytes = value(`pgfleet_wal_archived_bytes_total{cluster="${CLUSTER}"}`);
    const archivedSegments = value(`pgfleet_wal_archived_segments_total{cluster="${CLUSTER}"}`);
    assert.ok(
      archivedSegments >= 1 && archivedBytes === archivedSegments * 16 * MiB,
      `${archivedSegments} segments, ${archivedBytes} bytes`,
    );
    // pg_wal's filesystem as this test sees it (free space moves a little meanwhile).
    const fs = await statfs(join(fleet.pg.dataDir, 'pg_wal'));
    const free = value(`pgfleet_pg_wal_free_bytes{cluster="${CLUSTER}"}`);
    assert.ok(Math.abs(free - fs.bavail * fs.bsize) < 2048 * MiB, `free ${free} vs statfs ${fs.bavail * fs.bsize}`);
    assert.equal(value(`pgfleet_pg_wal_filesystem_bytes{cluster="${CLUSTER}"}`), fs.blocks * fs.bsize);
    const [waldir] = await fleet.pg.query<{ bytes: string }>('SELECT sum(size)::text AS bytes FROM pg_ls_waldir()');
    const walBytes = value(`pgfleet_pg_wal_bytes{cluster="${CLUSTER}"}`);
    assert.ok(
      walBytes >= 16 * MiB && Math.abs(walBytes - Number(waldir!.bytes)) <= 8 * 16 * MiB,
      `pg_wal ${walBytes} vs ${waldir!.bytes}`,
    );
    // The stream keeps up: the slot holds back less than a few segments, the lag is small.
    assert.ok(value(`pgfleet_wal_slot_retained_bytes{cluster="${CLUSTER}",slot="${slot}"}`) < 4 * 16 * MiB);
    assert.ok(value(`pgfleet_wal_stream_lag_bytes{cluster="${CLUSTER}"}`) < 16 * MiB);
    assert.ok(value(`pgfleet_wal_stream_lag_seconds{cluster="${CLUSTER}"}`) < 5);
    t.diagnostic(
      `pg_wal ${walBytes} B (pg_ls_waldir ${waldir!.bytes}), free ${free} of ${fs.blocks * fs.bsize} B; archived ${archivedSegments} segments; ` +
        `slot retains ${value(`pgfleet_wal_slot_retained_bytes{cluster="${CLUSTER}",slot="${slot}"}`)} B; lag ${value(`pgfleet_wal_stream_lag_bytes{cluster="${CLUSTER}"}`)} B / ${value(`pgfleet_wal_stream_lag_seconds{cluster="${CLUSTER}"}`)} s`,
    );
  });

  it('an agent whose role lacks pg_monitor (no pg_ls_waldir) still measures pg_wal', async () => {
    await fleet.pg.query('CREATE ROLE hlt_monitorless LOGIN');
    const other = `${CLUSTER}-limited`;
    // A second agent on the same PostgreSQL, under another cluster name, without a repository: heartbeats only.
    limitedAgent = startDaemon(
      AGENT_BIN,
      agentRunArgs(fleet.controllerAddress, other, fleet.pg, [
        '--pg-user',
        'hlt_monitorless',
        '--socket',
        join(fleet.dir, 'limited.sock'),
        ...INSECURE_ARGS,
      ]),
      join(fleet.dir, 'agent-limited.log'),
      { asPg: true },
    );
    const walBytes = await waitFor(
      "the limited agent's pg_wal figures",
      async () => {
        if (limitedAgent!.child.exitCode !== null) throw new Error(`agent exited: ${await limitedAgent!.log()}`);
        return metric(await scrape(), `pgfleet_pg_wal_bytes{cluster="${other}"}`);
      },
      120_000,
    );
    assert.ok(walBytes >= 16 * MiB, `pg_wal ${walBytes}`);
    assert.ok((metric(await scrape(), `pgfleet_pg_wal_free_bytes{cluster="${other}"}`) ?? 0) > 0);
    assert.match(await limitedAgent.log(), /pg_ls_waldir\(\) is not allowed for this role/);
    assert.doesNotMatch(await limitedAgent.log(), /WAL health not collected/);
  });
});

/** The stored object of a WAL segment (<name>-<sha256>...) anywhere under the cluster's WAL directory. */
async function findWalObject(dir: string, name: string): Promise<string | undefined> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) {
      const found = await findWalObject(path, name);
      if (found) return found;
    } else if (e.name.startsWith(`${name}-`)) {
      return path;
    }
  }
  return undefined;
}
