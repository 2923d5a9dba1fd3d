// Integration: the fleet status, declarative policies (ApplyFleet) and credential RPCs on the real
// controller (port 0, temp SQLite catalog, admin tokens required), a fake agent on the real
// Connect stream, and the compiled `pgfleet` CLI spawned by path for what a user sees.
import { strict as assert } from 'node:assert';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { create, toJson } from '@bufbuild/protobuf';
import { timestampFromMs, timestampMs } from '@bufbuild/protobuf/wkt';
import { PgfleetError } from '@pgfleet/core';
import { bearerMetadata, createClient } from '@pgfleet/rpc';
import { AdminService, DrillResultSchema, VerifyResultSchema, type ClusterInfo } from '@pgfleet/proto';
import { hashToken } from '../security/access.js';
import { startController, type RunningController } from '../server.js';
import { createAdminToken } from '../security/tokens.js';
import { FakeAgent, closeFakeAgents, waitFor } from '../testing/fake-agent.js';
import { CLI_BIN, runScript } from '../testing/run-script.js';

const pgfleet = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  runScript(CLI_BIN, args, { PGFLEET_INSECURE: 'true', ...env });

let dir: string;
let controller: RunningController;
let adminToken: string;
let viewerToken: string;
let admin: ReturnType<typeof createClient<typeof AdminService>>;
let env: NodeJS.ProcessEnv;

before(async () => {
  assert.ok(existsSync(CLI_BIN), `${CLI_BIN} is missing: build packages/cli first`);
  dir = mkdtempSync(join(tmpdir(), 'pgfleet-fleet-admin-'));
  controller = await startController(
    {
      listen: '127.0.0.1:0',
      insecure: true,
      catalogPath: join(dir, 'catalog.db'),
      repoPath: '/srv/repo',
      heartbeatIntervalSeconds: 5,
      requireAuth: true,
    },
    { schedulerTimer: false, healthTimer: false },
  );
  const store = controller.context.store;
  adminToken = (await createAdminToken(store, { name: 'root', role: 'admin' }, Date.now())).token;
  viewerToken = (await createAdminToken(store, { name: 'watcher', role: 'viewer' }, Date.now())).token;
  admin = createClient(AdminService, controller.address, {
    defaultDeadlineMs: 5000,
    metadata: bearerMetadata(adminToken),
  });
  env = { PGFLEET_CONTROLLER: controller.address, PGFLEET_TOKEN: adminToken };
});

after(async () => {
  closeFakeAgents();
  admin?.close();
  await controller?.close(100);
  rmSync(dir, { recursive: true, force: true });
});

async function cluster(name: string): Promise<ClusterInfo | undefined> {
  return (await admin.listClusters({})).clusters.find((c) => c.name === name);
}

describe('fleet status', () => {
  const now = Date.now();

  test('agent, RPO, archive state, next job, alerts, last verify and drills, in the API and in pgfleet status', async () => {
    const agent = new FakeAgent(controller.address);
    agent.hello();
    assert.equal((await agent.receive()).msg.case, 'welcome');
    // Everything written is archived as of this heartbeat (current LSN inside the last archived segment).
    agent.stream.send({
      msg: {
        case: 'heartbeat',
        value: {
          pgUp: true,
          currentLsn: '0/4000100',
          archiver: {
            archivedCount: 3n,
            lastArchivedWal: '000000010000000000000004',
            lastArchivedTime: timestampFromMs(now - 90_000),
          },
        },
      },
    });
    await waitFor('heartbeat', async () =>
      (await cluster('main'))?.archiver?.archivedCount === 3n ? true : undefined,
    );

    const store = controller.context.store;
    await store.putPolicy(
      { scope: 'main', schedules: { full: '0 1 * * *', drill: '0 3 * * *', spreadMinutes: 0 }, retention: {} },
      now,
    );
    // Both ran today: the next job is tomorrow's full at 01:00 UTC (or today's, if it is not 01:00 yet).
    const today = Math.floor(now / 86_400_000) * 86_400_000;
    await store.recordScheduleRuns([
      { cluster: 'main', type: 'full', lastRun: today + 3_600_000 },
      { cluster: 'main', type: 'drill', lastRun: today + 3 * 3_600_000 },
    ]);
    await store.putHealthState({
      cluster: 'main',
      condition: 'backup_stale',
      state: 'breached',
      since: now,
      data: null,
    });

    const verify = await store.createJob(
      { id: 'v1', cluster: 'main', kind: 'verify', agentId: 'agent-1', params: {} },
      now - 5000,
    );
    await store.transitionJob(verify.id, 'dispatched', {}, now - 4000);
    const verdict = toJson(VerifyResultSchema, create(VerifyResultSchema, { ok: true, walSegmentsChecked: 4 }));
    await store.transitionJob(verify.id, 'succeeded', { result: { verify: verdict } }, now - 3000);
    const drill = (id: string, t: number, ok: boolean, rto: number) => ({
      id,
      t,
      result: toJson(
        DrillResultSchema,
        create(DrillResultSchema, {
          ok,
          rtoSeconds: rto,
          backupLabel: 'b1',
          reasons: ok ? [] : ['amcheck: 1 finding'],
          stage: ok ? 'done' : 'amcheck',
        }),
      ),
    });
    for (const d of [drill('d1', now - 60_000, true, 12.5), drill('d2', now - 30_000, false, 0)]) {
      await store.createJob({ id: d.id, cluster: 'main', kind: 'drill', agentId: 'agent-1', params: {} }, d.t);
      await store.transitionJob(d.id, 'dispatched', {}, d.t);
      await store.transitionJob(d.id, 'succeeded', { result: { drill: d.result } }, d.t + 1000);
    }

    const c = (await cluster('main'))!;
    assert.equal(c.agentConnected, true);
    assert.ok(c.rpoKnown && c.rpoSeconds >= 0 && c.rpoSeconds < 30, `rpo ${c.rpoSeconds}`);
    assert.equal(c.archiveState, 'ok');
    assert.deepEqual(c.alerts, ['backup-stale']);
    const nextFull = now < today + 3_600_000 ? today + 3_600_000 : today + 86_400_000 + 3_600_000;
    const nextDrill = now < today + 3 * 3_600_000 ? today + 3 * 3_600_000 : today + 86_400_000 + 3 * 3_600_000;
    assert.deepEqual(
      [c.nextJob?.kind, timestampMs(c.nextJob!.time!)],
      nextFull <= nextDrill ? ['full', nextFull] : ['drill', nextDrill],
    );
    assert.deepEqual([c.lastVerify?.jobId, c.lastVerify?.ok], ['v1', true]);
    assert.deepEqual([c.lastDrill?.jobId, c.lastDrill?.ok, c.lastDrill?.reason], ['d2', false, 'amcheck: 1 finding']);
    assert.deepEqual([c.lastGoodDrill?.jobId, c.lastGoodDrill?.rtoSeconds], ['d1', 12.5]);

    const table = await pgfleet(['status'], env);
    assert.equal(table.code, 0, table.stderr);
    assert.match(
      table.stdout,
      /^CLUSTER\s+AGENT\s+LAST BACKUP\s+AGE\s+LAST DUMP\s+RPO\s+ARCHIVE\s+NEXT JOB\s+VERIFY\s+DRILL\s+ALERTS$/m,
    );
    assert.match(
      table.stdout,
      /^main\s+connected\s+-\s+-\s+-\s+\d+s\s+ok\s+(full|drill) in \S+\s+ok \d+s ago\s+FAILED; last good RTO 12\.5s\s+backup-stale$/m,
    );
    const json = await pgfleet(['status', '--cluster', 'main', '--output', 'json'], env);
    assert.equal(json.code, 0, json.stderr);
    // {clusters, controllers}: the controllers of the catalog ride along with the clusters.
    const parsed = JSON.parse(json.stdout) as {
      clusters: { name: string; archiveState: string; lastGoodDrill: { rtoSeconds: number } }[];
    };
    assert.deepEqual(
      parsed.clusters.map((p) => [p.name, p.archiveState, p.lastGoodDrill.rtoSeconds]),
      [['main', 'ok', 12.5]],
    );
    const unknown = await pgfleet(['status', '--cluster', 'nope'], env);
    assert.equal(unknown.code, 3);
    assert.match(unknown.stderr, /PGF-2001/);
  });
});

describe('pgfleet apply', () => {
  const file = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  test('dry run changes nothing; apply replaces fleet and listed overrides; again is a no-op; prune drops the rest', async () => {
    const store = controller.context.store;
    await store.putPolicy({ scope: 'legacy', schedules: { incr: '0 * * * *' }, retention: { daily: 2 } }, Date.now());
    const before = await store.listPolicies();
    const f = file(
      'fleet.yaml',
      'fleet:\n  full: "0 1 * * 0"\n  daily: 7\nclusters:\n  main:\n    incr: ""\n    pitr-window-days: 3\n  newdb:\n    weekly: 2\n',
    );

    const dry = await pgfleet(['apply', '-f', f, '--dry-run'], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /^fleet\s+full\s+-\s+0 1 \* \* 0$/m);
    assert.match(dry.stdout, /^main\s+incr\s+-\s+off$/m);
    assert.match(dry.stdout, /^main\s+drill\s+0 3 \* \* \*\s+-$/m);
    assert.match(dry.stdout, /dry run: would change 8 value\(s\) in 3 scope\(s\)/);
    assert.match(dry.stdout, /not connected yet: newdb/);
    assert.deepEqual(await store.listPolicies(), before);

    const applied = JSON.parse((await pgfleet(['apply', '-f', f, '--output', 'json'], env)).stdout) as {
      changes: { scope: string; key: string; oldValue: string; newValue: string }[];
      dryRun: boolean;
    };
    assert.equal(applied.dryRun, false);
    assert.deepEqual(
      applied.changes.map((c) => `${c.scope}.${c.key}=${c.oldValue}->${c.newValue}`),
      [
        'fleet.full=->0 1 * * 0',
        'fleet.daily=->7',
        'main.full=0 1 * * *->',
        'main.incr=->off',
        'main.drill=0 3 * * *->',
        'main.spreadMinutes=0->',
        'main.pitrWindowDays=->3',
        'newdb.weekly=->2',
      ],
    );
    const main = (await admin.getPolicy({ cluster: 'main' })).values.map((v) => `${v.key}=${v.value}/${v.source}`);
    assert.ok(
      main.includes('full=0 1 * * 0/fleet') &&
        main.includes('incr=-/cluster') &&
        main.includes('daily=7/fleet') &&
        main.includes('pitrWindowDays=3/cluster'),
      main.join(' '),
    );
    assert.equal((await store.getPolicy('legacy'))?.retention.daily, 2);

    const again = await pgfleet(['apply', '-f', f], env);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /no changes/);

    const pruned = JSON.parse((await pgfleet(['apply', '-f', f, '--prune', '--output', 'json'], env)).stdout) as {
      changes: { scope: string; key: string }[];
    };
    assert.deepEqual(
      pruned.changes.map((c) => `${c.scope}.${c.key}`),
      ['legacy.incr', 'legacy.daily'],
    );
    assert.equal(await store.getPolicy('legacy'), undefined);

    // A file without a fleet section leaves the fleet default alone, even with --prune.
    const clustersOnly = file(
      'clusters-only.yaml',
      'clusters:\n  main:\n    incr: ""\n    pitr-window-days: 3\n  newdb:\n    weekly: 5\n',
    );
    const partial = JSON.parse(
      (await pgfleet(['apply', '-f', clustersOnly, '--prune', '--output', 'json'], env)).stdout,
    ) as { changes: { scope: string; key: string }[] };
    assert.deepEqual(
      partial.changes.map((c) => `${c.scope}.${c.key}`),
      ['newdb.weekly'],
    );
    assert.deepEqual(
      [(await store.getPolicy('*'))?.schedules.full, (await store.getPolicy('*'))?.retention.daily],
      ['0 1 * * 0', 7],
    );
  });

  test('a bad file fails before any connection; a bad cron fails at the controller naming the key, writing nothing', async () => {
    const offline = { ...env, PGFLEET_CONTROLLER: '127.0.0.1:1' };
    const typo = await pgfleet(['apply', '-f', file('typo.yaml', 'clusters:\n  main:\n    dayly: 3\n')], offline);
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /PGF-1002 fleet file .*typo\.yaml: key 'clusters\.main\.dayly'/);
    const missing = await pgfleet(['apply'], offline);
    assert.match(missing.stderr, /PGF-1001 pgfleet apply needs -f FILE/);

    const before = await controller.context.store.listPolicies();
    const cron = await pgfleet(
      ['apply', '-f', file('cron.yaml', 'fleet:\n  daily: 1\nclusters:\n  main:\n    full: "0 25 * * *"\n')],
      env,
    );
    assert.equal(cron.code, 2);
    assert.match(
      cron.stderr,
      /PGF-1001 clusters\.main: policy full \(--full\): cron expression '0 25 \* \* \*' is not valid/,
    );
    assert.deepEqual(await controller.context.store.listPolicies(), before);
  });
});

describe('tokens and enrollment through the API', () => {
  test('token create prints the token once; it works with its role; list shows it; revoke stops it', async () => {
    const created = await pgfleet(['token', 'create', '--role', 'operator', '--name', 'ci'], env);
    assert.equal(created.code, 0, created.stderr);
    const token = created.stdout.trim();
    assert.match(token, /^pgfa_[A-Za-z0-9_-]{43}$/);
    assert.match(created.stderr, /admin token 'ci' \(id tok_[0-9a-f]+, role operator\)/);
    assert.equal((await controller.context.store.findAdminToken(hashToken(token)))?.role, 'operator');

    const asCi = await pgfleet(['clusters'], { ...env, PGFLEET_TOKEN: token });
    assert.equal(asCi.code, 0, asCi.stderr);
    const denied = await pgfleet(['token', 'list'], { ...env, PGFLEET_TOKEN: token });
    assert.equal(denied.code, 7);
    assert.match(denied.stderr, /PGF-8002 token 'ci' has role operator; .*ListTokens needs admin/);

    const listed = await pgfleet(['token', 'list'], env);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /^ID\s+NAME\s+ROLE\s+CREATED\s+REVOKED$/m);
    assert.match(listed.stdout, /^tok_[0-9a-f]+\s+ci\s+operator\s+\S+ \S+\s+-$/m);
    assert.doesNotMatch(listed.stdout, /pgfa_/);

    const revoked = await pgfleet(['token', 'revoke', 'ci'], env);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, /revoked admin token 'ci'/);
    const after = await pgfleet(['clusters'], { ...env, PGFLEET_TOKEN: token });
    assert.equal(after.code, 7);
    assert.match(after.stderr, /PGF-8001/);
    const again = await pgfleet(['token', 'revoke', 'ci'], env);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /no active admin token has the id or name 'ci'/);
  });

  test('a viewer cannot create tokens or enrollment tokens; bad requests name what is wrong', async () => {
    const viewer = createClient(AdminService, controller.address, {
      defaultDeadlineMs: 5000,
      metadata: bearerMetadata(viewerToken),
    });
    try {
      for (const call of [
        viewer.createToken({ name: 'x', role: 'admin' }),
        viewer.createEnrollmentToken({ cluster: 'main' }),
      ]) {
        await assert.rejects(call, (err: unknown) => PgfleetError.is(err, 'PermissionDenied'));
      }
    } finally {
      viewer.close();
    }
    await assert.rejects(
      admin.createToken({ name: 'x', role: 'root' }),
      (err: unknown) => PgfleetError.is(err, 'InvalidArgument') && /viewer, operator, admin/.test(err.message),
    );
    await assert.rejects(
      admin.createToken({ name: ' ', role: 'viewer' }),
      (err: unknown) => PgfleetError.is(err, 'InvalidArgument') && /needs a name/.test(err.message),
    );
    await assert.rejects(
      admin.createToken({ name: 'root', role: 'viewer' }),
      (err: unknown) => PgfleetError.is(err, 'InvalidArgument') && /exists already/.test(err.message),
    );
    await assert.rejects(admin.createEnrollmentToken({ cluster: '' }), (err: unknown) =>
      PgfleetError.is(err, 'InvalidArgument'),
    );
  });

  test('enroll-token prints a one-time token for the cluster, stored hashed with its lifetime', async () => {
    const t0 = Date.now();
    const r = await pgfleet(['enroll-token', 'newdb', '--ttl', '30m'], env);
    assert.equal(r.code, 0, r.stderr);
    const token = r.stdout.trim();
    assert.match(token, /^pgfe_/);
    assert.match(r.stderr, /one-time enrollment token for an agent of cluster 'newdb'/);
    const stored = (await controller.context.store.listEnrollmentTokens()).find(
      (t) => t.tokenHash === hashToken(token),
    );
    assert.equal(stored?.cluster, 'newdb');
    assert.ok(Math.abs(stored!.expiresAt - (t0 + 1_800_000)) < 60_000);
    const bad = await pgfleet(['enroll-token', 'newdb', '--ttl', 'forever'], {
      ...env,
      PGFLEET_CONTROLLER: '127.0.0.1:1',
    });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--ttl 'forever' is not a duration/);
    const json = JSON.parse((await pgfleet(['enroll-token', 'newdb', '--output', 'json'], env)).stdout) as {
      token: string;
      cluster: string;
    };
    assert.equal(json.cluster, 'newdb');
    assert.match(json.token, /^pgfe_/);
  });
});
