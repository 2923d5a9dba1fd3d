/**
 * Events and fleet health end to end: real PostgreSQL, agent, controller (--nats-url) and a real
 * nats-server. (a) an unwritable repository makes a JetStream consumer receive
 * wal.archive_failed and rpo.breached, fixing it archive_recovered and rpo.recovered; (b) with
 * NATS down two backups still produce their events, which arrive once each, in commit order,
 * after NATS is back; (c) /metrics shows the cluster's RPO and last backup; the JSON bodies
 * decode as documented and `pgfleet events` shows the same events from the catalog.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { freePort, startNats, type NatsServer } from '@pgfleet/testkit';
import { startFleet, waitFor, watchedControllerArgs, type Fleet } from './harness.js';
import { consumeClusterEvents, streamContents, type Received } from './jetstream.js';

const CLUSTER = 'evt';

describe('events: outbox, NATS JetStream, health and metrics', { timeout: 600_000 }, () => {
  let nats: NatsServer;
  let fleet: Fleet;
  let metricsPort: number;
  let nc: NatsConnection | undefined;
  const received: Received[] = [];
  let walDir: string;
  let walMode = 0o750;

  before(async () => {
    nats = await startNats();
    metricsPort = await freePort();
    fleet = await startFleet({
      cluster: CLUSTER,
      controllerArgs: watchedControllerArgs(nats.url, metricsPort, 3),
    });
    await fleet.pg.query('CREATE TABLE t (id serial PRIMARY KEY, filler text)');
    // The stream exists once the relay published agent.connected.
    nc = await connect({ servers: nats.url, timeout: 30_000, maxReconnectAttempts: -1 });
    await consumeClusterEvents(nc, CLUSTER, received);
    await fleet.switchAndArchive();
    walDir = join(fleet.repoDir, CLUSTER, 'wal');
    walMode = (await stat(walDir)).mode & 0o7777;
  });

  after(async () => {
    if (walDir) await chmod(walDir, walMode).catch(() => undefined);
    await nc?.close().catch(() => undefined);
    await fleet?.stop();
    await nats?.stop();
  });

  const kindsAfter = (from: number) => received.slice(from).map((r) => r.body.kind);
  const write = () => fleet.pg.query(`INSERT INTO t (filler) SELECT repeat('x', 100) FROM generate_series(1, 1000)`);

  it('(a) an unwritable repository: wal.archive_failed and rpo.breached; fixed: archive_recovered and rpo.recovered', async () => {
    assert.ok(
      received.some((r) => r.body.kind === 'agent.connected'),
      'the consumer received agent.connected',
    );
    const mark = received.length;
    await chmod(walDir, 0o000);
    await write();
    await fleet.pg.query('SELECT pg_switch_wal()');
    await waitFor(
      'wal.archive_failed and rpo.breached',
      async () => {
        const k = kindsAfter(mark);
        // rpo.breached may have come earlier (an idle cluster writes a little WAL too): then the newest rpo event is a breach.
        const rpoKinds = received.map((r) => r.body.kind).filter((x) => x.startsWith('rpo.'));
        return k.includes('wal.archive_failed') && rpoKinds.at(-1) === 'rpo.breached';
      },
      120_000,
    );
    const failed = received.slice(mark).find((r) => r.body.kind === 'wal.archive_failed')!;
    assert.equal(failed.subject, `pgfleet.events.${CLUSTER}.wal.archive_failed`);
    const wf = failed.body.walArchiveFailed as { failedCount: string; lastFailedWal: string; lastArchivedWal?: string };
    assert.ok(Number(wf.failedCount) > 0 && wf.lastFailedWal.length === 24, JSON.stringify(failed.body));
    const breached = [...received].reverse().find((r) => r.body.kind === 'rpo.breached')!;
    assert.equal((breached.body.rpoBreached as { thresholdSeconds: number }).thresholdSeconds, 3);

    const fixMark = received.length;
    await chmod(walDir, walMode);
    // A new segment to archive wakes the archiver now rather than in a minute.
    await write();
    await fleet.pg.query('SELECT pg_switch_wal()');
    await waitFor(
      'wal.archive_recovered and rpo.recovered',
      async () => {
        const k = kindsAfter(fixMark);
        return k.includes('wal.archive_recovered') && k.includes('rpo.recovered');
      },
      120_000,
    ).catch(async (err: Error) => {
      const a = await fleet.pg.query('SELECT * FROM pg_stat_archiver');
      throw new Error(
        `${err.message}\nreceived: ${received.map((r) => r.body.kind).join(', ')}\narchiver: ${JSON.stringify(a)}\n${(await fleet.logs()).slice(-6000)}`,
      );
    });
    const rec = received.slice(fixMark).find((r) => r.body.kind === 'rpo.recovered')!;
    assert.ok((rec.body.rpoRecovered as { breachedSeconds: number }).breachedSeconds > 0);
  });

  it('(b) NATS down during two backups: every event arrives once, in commit order', async () => {
    await nats.kill();
    const labels: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await fleet.cli('backup', CLUSTER, '--type', 'full', '--wait', '--output', 'json');
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
      labels.push((JSON.parse(r.stdout) as { backup: { label: string } }).backup.label);
    }
    // The events wait in the catalog: `pgfleet events` shows them, unsent.
    const listed = await fleet.cli('events', '--cluster', CLUSTER, '--output', 'json', '--limit', '1000');
    assert.equal(listed.code, 0, listed.stderr);
    const catalog = listed.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Received['body']);
    const completed = catalog
      .filter((e) => e.kind === 'backup.completed')
      .map((e) => (e.backupCompleted as { backup: { label: string } }).backup.label);
    assert.deepEqual(completed.slice(-2), labels);

    await nats.restart();
    const catalogIds = catalog.map((e) => e.id);
    const stored = await waitFor(
      "the backups' events on the stream",
      async () => {
        const s = await streamContents(nats.url).catch(() => undefined);
        const ids = new Set(s?.map((r) => r.body.id));
        return s && catalogIds.every((id) => ids.has(id)) ? s : undefined;
      },
      120_000,
      500,
    );
    const ids = stored.map((r) => r.body.id);
    assert.equal(new Set(ids).size, ids.length, 'no event is stored twice');
    // In order per cluster: the stream holds this cluster's events in the catalog's commit order.
    const streamOrder = stored
      .filter((r) => r.body.cluster === CLUSTER)
      .map((r) => r.body.id)
      .filter((id) => catalogIds.includes(id));
    assert.deepEqual(streamOrder, catalogIds);
    const kinds = stored.map((r) => r.body.kind);
    assert.equal(kinds.filter((k) => k === 'backup.started').length >= 2, true);
    // Canonical protobuf JSON as documented: lowerCamelCase, 64-bit integers as strings, enum names.
    const done = stored.filter((r) => r.body.kind === 'backup.completed').at(-1)!;
    assert.equal(done.subject, `pgfleet.events.${CLUSTER}.backup.completed`);
    const bc = done.body.backupCompleted as {
      jobId: string;
      backup: { label: string; type: string; sizeBytes: string; cluster: string };
      durationSeconds: number;
    };
    assert.equal(bc.backup.label, labels[1]);
    assert.equal(bc.backup.type, 'BACKUP_TYPE_FULL');
    assert.match(bc.backup.sizeBytes, /^\d+$/);
    assert.equal(bc.backup.cluster, CLUSTER);
    assert.ok(bc.jobId.length > 0);
  });

  it("(c) /metrics shows the cluster's RPO and last backup; /healthz and /readyz answer", async () => {
    const base = `http://127.0.0.1:${metricsPort}`;
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
    const text = await (await fetch(`${base}/metrics`)).text();
    const value = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
    const rpo = value(new RegExp(`^pgfleet_rpo_seconds\\{cluster="${CLUSTER}"\\} (\\S+)$`, 'm'));
    assert.ok(rpo >= 0 && rpo < 3600, `rpo ${rpo}\n${text}`);
    const last = value(
      new RegExp(`^pgfleet_last_backup_timestamp_seconds\\{cluster="${CLUSTER}",type="any"\\} (\\S+)$`, 'm'),
    );
    assert.ok(Math.abs(last - Date.now() / 1000) < 600, `last backup ${last}`);
    assert.ok(
      value(new RegExp(`^pgfleet_last_backup_size_bytes\\{cluster="${CLUSTER}",type="any"\\} (\\S+)$`, 'm')) > 0,
    );
    assert.ok(
      value(new RegExp(`^pgfleet_last_backup_duration_seconds\\{cluster="${CLUSTER}",type="any"\\} (\\S+)$`, 'm')) >= 0,
    );
    assert.ok(value(new RegExp(`^pgfleet_wal_archive_failed_total\\{cluster="${CLUSTER}"\\} (\\S+)$`, 'm')) > 0);
    assert.ok(value(new RegExp(`^pgfleet_wal_archived_total\\{cluster="${CLUSTER}"\\} (\\S+)$`, 'm')) > 0);
    assert.equal(value(new RegExp(`^pgfleet_agents_connected\\{cluster="${CLUSTER}"\\} (\\S+)$`, 'm')), 1);
    assert.ok(
      value(new RegExp(`^pgfleet_jobs\\{cluster="${CLUSTER}",kind="backup",state="succeeded"\\} (\\S+)$`, 'm')) >= 2,
    );
  });
});
