/**
 * Logical dumps under a policy (issue 17 part 2, docs/logical.md "Schedules, retention, health"),
 * with a real PostgreSQL, agent, controller and nats-server:
 * - `--logical CRON` with catch-up on fires a dump of every database on the scheduler's own
 *   (--schedule-interval 1; a yearly cron whose latest fire time is due at once, so exactly one
 *   run, whatever the clock), listed by `pgfleet dumps`;
 * - `pgfleet status` shows the newest dump (table and JSON), /metrics its time and size;
 * - dump.completed (scheduled) and dump.failed (a database the cluster lacks) reach a JetStream
 *   consumer exactly once each;
 * - logical tiers: `retention plan` judges the dumps, `retention apply` deletes exactly the ones it
 *   planned (their objects gone from the repository, `pgfleet dumps` equal to the plan's keep set)
 *   and retention.expired names them;
 * - `--stale-dump-threshold 1`: the dump.stale alert is raised (status alert, event).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { ErrorCodes } from '@pgfleet/core';
import { freePort, startNats, type NatsServer } from '@pgfleet/testkit';
import { startFleet, waitFor, watchedControllerArgs, type Fleet } from './harness.js';
import { consumeClusterEvents, streamContents, type Received } from './jetstream.js';

const CLUSTER = 'lsched';

interface DumpInfoJson {
  jobId: string;
  dump: { label: string; databases: { name: string }[] };
}
interface PlanJson {
  dumps?: { label: string; keep?: boolean; reasons: string[] }[];
}
interface ClusterJson {
  name: string;
  alerts?: string[];
  lastDump?: { label: string; jobId: string; size?: string | number; databases?: number };
}

describe('logical dumps: schedule, retention, health and events', { timeout: 900_000 }, () => {
  let nats: NatsServer;
  let fleet: Fleet;
  let metricsPort: number;
  let nc: NatsConnection | undefined;
  const received: Received[] = [];

  async function cliJson<T>(...args: string[]): Promise<T> {
    const r = await fleet.cli(...args, '--output', 'json');
    assert.equal(r.code, 0, `pgfleet ${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }
  const listed = async () => (await cliJson<DumpInfoJson[]>('dumps', CLUSTER)).map((d) => d.dump.label);
  const stored = async () => (await readdir(join(fleet.repoDir, CLUSTER, 'dump')).catch(() => [] as string[])).sort();
  const status = async () =>
    (await cliJson<{ clusters: ClusterJson[] }>('status')).clusters.find((c) => c.name === CLUSTER)!;
  const policy = async (...flags: string[]) => {
    const r = await fleet.cli('policy', 'set', CLUSTER, ...flags);
    assert.equal(r.code, 0, r.stderr);
  };
  const ofKind = async (kind: string) =>
    (await streamContents(nats.url)).filter((m) => m.subject === `pgfleet.events.${CLUSTER}.${kind}`);

  before(async () => {
    nats = await startNats();
    metricsPort = await freePort();
    fleet = await startFleet({
      cluster: CLUSTER,
      archive: false,
      controllerArgs: [...watchedControllerArgs(nats.url, metricsPort, 86_400), '--schedule-interval', '1'],
    });
    await fleet.pg.query('CREATE DATABASE shop');
    nc = await connect({ servers: nats.url, timeout: 30_000, maxReconnectAttempts: -1 });
    await consumeClusterEvents(nc, CLUSTER, received);
  });

  after(async () => {
    if (process.exitCode && fleet) console.error((await fleet.logs()).slice(-20_000));
    await nc?.close().catch(() => undefined);
    await fleet?.stop();
    await nats?.stop();
  });

  let scheduled: string;

  it('--logical with catch-up: the scheduler starts a dump of every database, listed by pgfleet dumps', async () => {
    assert.deepEqual(await listed(), []);
    // Yearly: its latest fire time (January 1st) is due now with catch-up, and no other comes during the test.
    await policy('--logical', '0 0 1 1 *', '--catch-up', 'on', '--spread-minutes', '0');
    const labels = await waitFor('the scheduled dump', async () => {
      const l = await listed();
      return l.length > 0 ? l : undefined;
    });
    assert.equal(labels.length, 1);
    scheduled = labels[0]!;
    const [info] = await cliJson<DumpInfoJson[]>('dumps', CLUSTER);
    assert.deepEqual(info!.dump.databases.map((d) => d.name).sort(), ['postgres', 'shop']);
    assert.deepEqual(await stored(), [scheduled]);
    const r = await fleet.cli('policy', 'get', CLUSTER);
    assert.match(r.stdout, /^logical\s+0 0 1 1 \*\s+cluster\s*$/m);
  });

  it('pgfleet status and /metrics show the newest dump', async () => {
    const c = await status();
    assert.equal(c.lastDump?.label, scheduled);
    assert.equal(c.lastDump?.databases, 2);
    assert.ok(Number(c.lastDump?.size) > 0);
    const table = await fleet.cli('status');
    assert.match(table.stdout, /LAST DUMP/);
    assert.match(table.stdout, new RegExp(`^${CLUSTER}\\s.*${scheduled} \\S+ ago`, 'm'));
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const line = metrics
      .split('\n')
      .find((l) => l.startsWith(`pgfleet_last_dump_timestamp_seconds{cluster="${CLUSTER}"}`));
    assert.ok(line, metrics);
    const stamp = Number(line.split(' ').at(-1));
    // The label is the dump's start (UTC); it finished at or after it.
    const m = /^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})-(\d{3})L$/.exec(scheduled)!;
    const started = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!, +m[7]!) / 1000;
    assert.ok(stamp >= started, `${stamp} >= ${started}`);
    assert.match(metrics, new RegExp(`^pgfleet_last_dump_stored_bytes\\{cluster="${CLUSTER}"\\} [1-9]`, 'm'));
  });

  it('dump.completed and dump.failed reach a JetStream consumer exactly once', async () => {
    // shop's snapshot is exported while the agent asks which databases exist: the dump still fails
    // as DumpDatabaseUnknown, with nothing stored (that snapshot closed, the lease removed).
    const failed = await fleet.cli('dump', CLUSTER, '--database', 'shop,nosuchdb', '--wait', '--output', 'json');
    assert.notEqual(failed.code, 0);
    assert.ok(
      (failed.stdout + failed.stderr).includes(ErrorCodes.DumpDatabaseUnknown.code),
      failed.stdout + failed.stderr,
    );
    await waitFor('dump.failed at the consumer', async () =>
      received.some((r) => r.body.kind === 'dump.failed') ? true : undefined,
    );
    const completed = await ofKind('dump.completed');
    assert.equal(completed.length, 1, JSON.stringify(completed));
    const body = completed[0]!.body.dumpCompleted as { label: string; scheduled?: boolean; databases: string[] };
    assert.equal(body.label, scheduled);
    assert.equal(body.scheduled, true);
    assert.deepEqual([...body.databases].sort(), ['postgres', 'shop']);
    const fails = await ofKind('dump.failed');
    assert.equal(fails.length, 1, JSON.stringify(fails));
    assert.equal(
      (fails[0]!.body.dumpFailed as { error: { code: string } }).error.code,
      ErrorCodes.DumpDatabaseUnknown.code,
    );
    // The consumer got each once too, and the failed dump is neither listed nor stored.
    assert.equal(received.filter((r) => r.body.kind === 'dump.completed').length, 1);
    assert.equal(received.filter((r) => r.body.kind === 'dump.failed').length, 1);
    assert.deepEqual(await listed(), [scheduled]);
    assert.deepEqual(await stored(), [scheduled]);
    // No transaction of the failed dump is left open on the server (shop's snapshot ended).
    await waitFor(
      'the failed dump to leave no connection',
      async () =>
        (await fleet.pg.query("SELECT 1 FROM pg_stat_activity WHERE application_name = 'pgfleet-dump'")).length === 0,
    );
  });

  it('logical tiers: retention apply deletes exactly the dumps the plan expires', async () => {
    for (let i = 0; i < 3; i++) {
      const r = await fleet.cli('dump', CLUSTER, '--database', 'shop', '--wait');
      assert.equal(r.code, 0, r.stderr);
    }
    const all = await listed(); // newest first
    assert.equal(all.length, 4);
    // Without a logical tier every dump stays.
    let plan = await cliJson<PlanJson>('retention', 'plan', CLUSTER);
    assert.ok(plan.dumps!.every((d) => d.keep && d.reasons.includes('no-logical-retention')));
    // Tiers off, the two newest by count: the two oldest go.
    await policy('--logical-daily', '0', '--logical-weekly', '0', '--logical-monthly', '0', '--logical-min', '2');
    plan = await cliJson<PlanJson>('retention', 'plan', CLUSTER);
    const keep = plan.dumps!.filter((d) => d.keep).map((d) => d.label);
    const expire = plan.dumps!.filter((d) => !d.keep).map((d) => d.label);
    assert.deepEqual(keep.sort(), all.slice(0, 2).sort());
    assert.deepEqual(expire.sort(), all.slice(2).sort());
    const text = await fleet.cli('retention', 'plan', CLUSTER);
    assert.match(text.stdout, /2 of 4 dumps would be removed/);

    const mark = received.length;
    const r = await fleet.cli('retention', 'apply', CLUSTER, '--wait', '--output', 'json');
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    assert.deepEqual((await listed()).sort(), keep.sort());
    assert.deepEqual(await stored(), keep.sort());
    const expired = await waitFor('retention.expired', async () =>
      received.slice(mark).find((x) => x.body.kind === 'retention.expired'),
    );
    assert.deepEqual(
      [...((expired.body.retentionExpired as { expiredDumpLabels: string[] }).expiredDumpLabels ?? [])].sort(),
      expire.sort(),
    );
    // Applied again: nothing left to expire.
    const again = await cliJson<PlanJson>('retention', 'plan', CLUSTER);
    assert.ok(again.dumps!.every((d) => d.keep));
  });

  it('--stale-dump-threshold: the dump.stale alert is raised', async () => {
    await policy('--stale-dump-threshold', '1');
    await waitFor(
      'dump-stale in status',
      async () => ((await status()).alerts ?? []).includes('dump-stale') || undefined,
    );
    const stale = await waitFor('dump.stale at the consumer', async () =>
      received.find((r) => r.body.kind === 'dump.stale'),
    );
    const body = stale.body.dumpStale as { lastDumpLabel: string; thresholdSeconds: number };
    assert.equal(body.thresholdSeconds, 1);
    assert.equal(body.lastDumpLabel, (await listed())[0]);
  });
});
