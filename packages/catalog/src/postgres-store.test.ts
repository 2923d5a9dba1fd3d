// The PostgreSQL catalog against a real server (one per file, a fresh database per store): the
// shared store suite, plus what only a catalog shared by several controllers needs: concurrent
// transitions, concurrent migrations and scheduler leadership.
import { strict as assert } from 'node:assert';
import { after, afterEach, before, describe, test } from 'node:test';
import pg from 'pg';
import { ErrorCodes, PgfleetError, sleep } from '@pgfleet/core';
import { freePort, startPostgres, type PgInstance } from '@pgfleet/testkit';
import {
  AGENTS_BEFORE_CLUSTER_KEY,
  DUMPS_BEFORE_TABLE,
  catalogStoreSuite,
  checkAgentsKeyedUpgrade,
  checkDumpsBackfill,
  sampleBackup,
} from './catalog-suite.js';
import {
  CATALOG_SCHEMA_VERSION,
  CLUSTER_JOBS_LOCK_CLASS,
  POSTGRES_MIGRATIONS,
  LEADERSHIP_LOCK_CLASS,
  PostgresCatalogStore,
  openCatalog,
  type CatalogStore,
  type JobStateName,
} from './index.js';

let server: PgInstance;
before(async () => {
  server = await startPostgres();
});
after(async () => {
  await server?.stop();
});

let n = 0;
/** A new, empty database on the test server; its URL. */
async function freshDatabase(): Promise<string> {
  const name = `catalog_${++n}`;
  await server.query(`CREATE DATABASE ${name}`);
  return urlOf(name);
}

/** One statement on its own connection to `url`, outside any store. */
async function rawQuery<T extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

function urlOf(database: string): string {
  const u = new URL(server.connectionString);
  u.pathname = `/${database}`;
  return u.toString();
}

catalogStoreSuite('postgres', async () => PostgresCatalogStore.open(await freshDatabase()));

describe('postgres: shared by several controllers', () => {
  const opened: CatalogStore[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((s) => s.close()));
  });
  async function open(url: string): Promise<PostgresCatalogStore> {
    const store = await PostgresCatalogStore.open(url);
    opened.push(store);
    return store;
  }

  /** Two stores (two controllers) on one new catalog holding cluster 'main' and its agent. */
  async function twoControllers(): Promise<[PostgresCatalogStore, PostgresCatalogStore, string]> {
    const url = await freshDatabase();
    const a = await open(url);
    const b = await open(url);
    await a.upsertCluster({ name: 'main', systemIdentifier: '7300000000000000001', pgVersion: 170002 }, 1);
    await a.upsertAgent({ id: 'agent-1', cluster: 'main', hostname: 'db1', version: '0.1.0' }, 1);
    return [a, b, url];
  }

  async function runningJob(store: CatalogStore, id: string): Promise<void> {
    await store.createJob({ id, cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 1);
    await store.transitionJob(id, 'dispatched', {}, 2);
    await store.updateJobProgress(id, {}, 3);
  }

  /**
   * Runs both moves while a third session holds the job's row lock, so both are in flight before
   * either can read the row: a store that read without locking would let both "win".
   */
  async function race(
    url: string,
    id: string,
    moves: [() => Promise<unknown>, () => Promise<unknown>],
  ): Promise<PromiseSettledResult<unknown>[]> {
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [id]);
      const settled = Promise.allSettled(moves.map((m) => m()));
      // Both transitions are now waiting on the row lock (or about to): give them time to get there.
      await waitFor(async () => {
        const r = await blocker.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
        );
        return r.rows[0].n >= 2;
      });
      await blocker.query('COMMIT');
      return await settled;
    } finally {
      await blocker.end();
    }
  }

  test('two controllers moving one job at once: exactly one wins, the other gets JobStateConflict', async () => {
    const [a, b, url] = await twoControllers();
    const targets: [JobStateName, JobStateName][] = [
      ['succeeded', 'cancelled'],
      ['failed', 'succeeded'],
      ['cancelled', 'failed'],
    ];
    for (const [i, [toA, toB]] of targets.entries()) {
      const id = `race-${i}`;
      await runningJob(a, id);
      const backup = sampleBackup(`b-${i}`, 10, '0/3000000', { jobId: id });
      const outcomes = await race(url, id, [
        () => a.transitionJob(id, toA, toA === 'succeeded' ? { backup } : {}, 10),
        () => b.transitionJob(id, toB, toB === 'succeeded' ? { backup } : {}, 10),
      ]);
      const won = outcomes.filter((o) => o.status === 'fulfilled');
      const lost = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
      assert.equal(won.length, 1, `${toA} vs ${toB}`);
      assert.ok(PgfleetError.is(lost[0]?.reason, 'JobStateConflict'), `${toA} vs ${toB}: ${String(lost[0]?.reason)}`);
      const job = await b.getJob(id);
      assert.ok(job && [toA, toB].includes(job.state));
      // The backup row exists exactly when the success won; it never outlives a lost success.
      assert.equal((await a.getBackup('main', backup.label)) !== undefined, job.state === 'succeeded');
    }
  });

  test('the same move from two controllers at once: one changes the job, the other is a no-op', async () => {
    const [a, b, url] = await twoControllers();
    await runningJob(a, 'same');
    const outcomes = await race(url, 'same', [
      () => a.transitionJob('same', 'failed', { error: { code: ErrorCodes.AgentDisconnected.code, message: 'a' } }, 10),
      () => b.transitionJob('same', 'failed', { error: { code: ErrorCodes.AgentDisconnected.code, message: 'b' } }, 11),
    ]);
    const changed = outcomes.map((o) =>
      o.status === 'fulfilled' ? (o.value as { changed: boolean }).changed : o.reason,
    );
    assert.deepEqual(changed.sort(), [false, true]);
  });

  test('progress racing a cancel never reopens the job', async () => {
    const [a, b, url] = await twoControllers();
    await a.createJob({ id: 'p', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 1);
    await a.transitionJob('p', 'dispatched', {}, 2);
    const outcomes = await race(url, 'p', [
      () => a.updateJobProgress('p', { n: 1 }, 3),
      () => b.transitionJob('p', 'cancelled', {}, 3),
    ]);
    const job = await a.getJob('p');
    assert.equal(job?.state, 'cancelled');
    // Progress either came first (then the cancel ended the running job) or was ignored after it.
    const progress = outcomes[0]!;
    assert.equal(progress.status, 'fulfilled');
    if ((progress as PromiseFulfilledResult<{ changed: boolean }>).value.changed) assert.equal(job?.startedAt, 3);
    else assert.equal(job?.startedAt, null);
  });

  test('two controllers failing active jobs at once fail each job once', async () => {
    const [a, b] = await twoControllers();
    for (let i = 0; i < 30; i++) await runningJob(a, `j${String(i).padStart(2, '0')}`);
    const [fa, fb] = await Promise.all([
      a.failAllActiveJobs({ code: ErrorCodes.ControllerRestarted.code, message: 'a' }, 50),
      b.failActiveJobsOfAgent(
        { cluster: 'main', agentId: 'agent-1' },
        { code: ErrorCodes.AgentDisconnected.code, message: 'b' },
        51,
      ),
    ]);
    const ids = [...fa, ...fb].map((j) => j.id).sort();
    assert.equal(ids.length, 30);
    assert.equal(new Set(ids).size, 30);
    assert.ok((await a.listJobs()).every((j) => j.state === 'failed'));
  });

  test('controllers starting together on a fresh catalog migrate it once', async () => {
    const url = await freshDatabase();
    const stores = await Promise.all(Array.from({ length: 4 }, () => open(url)));
    for (const s of stores) assert.equal(await s.schemaVersion(), CATALOG_SCHEMA_VERSION);
    const rows = await rawQuery<{ version: number }>(url, 'SELECT version FROM schema_migrations ORDER BY version');
    assert.deepEqual(
      rows.map((r) => r.version),
      Array.from({ length: CATALOG_SCHEMA_VERSION }, (_, i) => i + 1),
    );
    // All of them work on the one schema.
    await stores[1]!.upsertCluster({ name: 'c', systemIdentifier: '1', pgVersion: 1 }, 1);
    assert.deepEqual(
      (await stores[3]!.listClusters()).map((c) => c.name),
      ['c'],
    );
  });

  test('a catalog with agents keyed by id alone upgrades: agents kept, their ids free in other clusters', async () => {
    const url = await freshDatabase();
    await rawQuery(url, 'CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
    for (let v = 1; v <= AGENTS_BEFORE_CLUSTER_KEY.version; v++) {
      await rawQuery(url, POSTGRES_MIGRATIONS[v - 1]!);
      await rawQuery(url, 'INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)', [v]);
    }
    for (const sql of AGENTS_BEFORE_CLUSTER_KEY.rows) await rawQuery(url, sql);
    const store = await open(url);
    assert.equal(await store.schemaVersion(), CATALOG_SCHEMA_VERSION);
    await checkAgentsKeyedUpgrade(store);
  });

  test('dump jobs from before the dumps table become dumps: succeeded ones with their sizes, failed ones not', async () => {
    const url = await freshDatabase();
    await rawQuery(url, 'CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)');
    for (let v = 1; v <= DUMPS_BEFORE_TABLE.version; v++) {
      await rawQuery(url, POSTGRES_MIGRATIONS[v - 1]!);
      await rawQuery(url, 'INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)', [v]);
    }
    for (const sql of DUMPS_BEFORE_TABLE.rows) await rawQuery(url, sql);
    const store = await open(url);
    assert.equal(await store.schemaVersion(), CATALOG_SCHEMA_VERSION);
    await checkDumpsBackfill(store);
  });

  test('reopening applies nothing twice; a newer schema is refused with PGF-1002', async () => {
    const url = await freshDatabase();
    const first = await open(url);
    await first.upsertCluster({ name: 'c', systemIdentifier: '1', pgVersion: 160000 }, 1);
    await first.close();
    const second = await open(url);
    assert.equal(await second.schemaVersion(), CATALOG_SCHEMA_VERSION);
    assert.deepEqual(
      (await second.listClusters()).map((c) => c.name),
      ['c'],
    );
    await rawQuery(url, 'INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)', [
      CATALOG_SCHEMA_VERSION + 1,
    ]);
    await assert.rejects(
      PostgresCatalogStore.open(url),
      (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && /newer/.test(err.message),
    );
  });

  test('agent streams: a controller starting keeps what live controllers hold; a dead one loses its agents', async () => {
    const [a, b] = await twoControllers();
    await a.upsertCluster({ name: 'm', systemIdentifier: '7300000000000000001', pgVersion: 170002 }, 1);
    for (const id of ['x', 'y']) await a.upsertAgent({ id, cluster: 'm', hostname: id, version: '0.1.0' }, 1);
    await a.heartbeatController({ id: 'live', address: 'h1:7420', startedAt: 1, lastSeen: 10_000 });
    await a.heartbeatController({ id: 'dead', address: 'h2:7420', startedAt: 1, lastSeen: 1_000 });
    await a.holdAgentStream({ cluster: 'm', agentId: 'x' }, 'live', 2);
    await a.holdAgentStream({ cluster: 'm', agentId: 'y' }, 'dead', 2);
    // A message for the live holder, left through the other store, is taken by the holder's.
    await b.queueAgentMessage('live', { cluster: 'm', agentId: 'x' }, new Uint8Array([7]), 3);
    await b.queueAgentMessage('dead', { cluster: 'm', agentId: 'y' }, new Uint8Array([8]), 3);
    const gone = await b.releaseDeadStreams('new', 9_000, 10_000);
    assert.deepEqual(
      gone.filter((g) => g.cluster === 'm'),
      [{ cluster: 'm', agentId: 'y' }],
    );
    assert.deepEqual(
      (await a.listAgents('m')).map((g) => [g.id, g.connected]),
      [
        ['x', true],
        ['y', false],
      ],
    );
    assert.deepEqual(
      (await a.listAgentStreams()).map((s) => [s.agentId, s.controllerId]),
      [['x', 'live']],
    );
    assert.deepEqual(
      (await a.takeAgentMessages('live', 10)).map((m) => [...m.payload]),
      [[7]],
    );
    assert.deepEqual(await a.takeAgentMessages('dead', 10), []);
    // Still listed (status shows the dead one for an hour).
    assert.deepEqual(
      (await a.listControllers()).map((c) => c.id),
      ['dead', 'live'],
    );
  });

  test('a message left for a controller wakes it through NOTIFY; one for another does not', async () => {
    const [a, b] = await twoControllers();
    const woken: string[] = [];
    let wake: () => void = () => {};
    const woke = new Promise<void>((resolve) => (wake = resolve));
    const stop = await a.listenAgentMessages('ctl-a', () => {
      woken.push('ctl-a');
      wake();
    });
    try {
      await b.queueAgentMessage('ctl-other', { cluster: 'm', agentId: 'x' }, new Uint8Array([1]), 1);
      await b.queueAgentMessage('ctl-a', { cluster: 'm', agentId: 'x' }, new Uint8Array([2]), 1);
      await woke;
      // Notifications arrive in commit order: the one for ctl-other came first and woke nobody.
      assert.deepEqual(woken, ['ctl-a']);
      assert.deepEqual(
        (await a.takeAgentMessages('ctl-a', 10)).map((m) => [...m.payload]),
        [[2]],
      );
    } finally {
      await stop();
    }
  });

  test('fencing: a paused ex-leader cannot fire a schedule once another controller leads', async () => {
    const [a, b] = await twoControllers();
    await a.upsertCluster({ name: 'fenced', systemIdentifier: '7300000000000000001', pgVersion: 170002 }, 1);
    assert.equal(await a.tryAcquireLeadership('fence-test'), true);
    const stale = a.leadershipFence('fence-test')!;
    // a pauses (here: lets go); b leads with a newer epoch.
    await a.releaseLeadership('fence-test');
    assert.equal(await b.tryAcquireLeadership('fence-test'), true);
    const current = b.leadershipFence('fence-test')!;
    assert.ok(current.epoch > stale.epoch);
    const job = (id: string) => ({ id, cluster: 'fenced', kind: 'backup' as const, agentId: 'x', params: {} });
    await assert.rejects(a.createJobIfIdle('fenced', ['backup'], job('fenced-late'), 2, stale), (err: unknown) =>
      PgfleetError.is(err, 'LeadershipLost'),
    );
    assert.equal(await a.getJob('fenced-late'), undefined);
    await b.createJobIfIdle('fenced', ['backup'], job('fenced-now'), 2, current);
    assert.equal((await a.getJob('fenced-now'))?.state, 'queued');
    await b.releaseLeadership('fence-test');
  });

  test('leadership: one of two controllers leads; after release, close or a lost session the other can', async () => {
    const [a, b] = await twoControllers();
    assert.equal(await a.tryAcquireLeadership('scheduler'), true);
    assert.equal(await b.tryAcquireLeadership('scheduler'), false);
    // Another name is another lock.
    assert.equal(await b.tryAcquireLeadership('retention'), true);
    assert.equal(await a.tryAcquireLeadership('retention'), false);
    // Asking again while leading keeps it; racing itself, a store still gets one answer.
    assert.deepEqual(await Promise.all([a.tryAcquireLeadership('scheduler'), a.tryAcquireLeadership('scheduler')]), [
      true,
      true,
    ]);
    assert.equal(await b.tryAcquireLeadership('scheduler'), false);

    await a.releaseLeadership('scheduler');
    assert.equal(await b.tryAcquireLeadership('scheduler'), true);
    assert.equal(await a.tryAcquireLeadership('scheduler'), false);

    // Closing releases what a store holds.
    await b.close();
    assert.equal(await a.tryAcquireLeadership('scheduler'), true);
    assert.equal(await a.tryAcquireLeadership('retention'), true);
  });

  test('createJobIfIdle: two controllers on a catalog whose default isolation is REPEATABLE READ still create one job', async () => {
    const url = await freshDatabase();
    // A DBA's default for the catalog database; the stores must not depend on READ COMMITTED being it.
    await server.query(
      `ALTER DATABASE ${new URL(url).pathname.slice(1)} SET default_transaction_isolation = 'repeatable read'`,
    );
    const [a, b] = [await open(url), await open(url)];
    await a.upsertCluster({ name: 'main', systemIdentifier: '7300000000000000001', pgVersion: 170002 }, 1);
    // A third session holds the cluster's lock, so both creators begin (and take any snapshot) before either can go on.
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    try {
      await blocker.query(`SELECT pg_advisory_lock(${CLUSTER_JOBS_LOCK_CLASS}, hashtext('main'))`);
      const attempt = (store: CatalogStore, id: string) =>
        store.createJobIfIdle(
          'main',
          ['backup', 'expire'],
          { id, cluster: 'main', kind: 'backup', agentId: 'a1', params: {} },
          10,
        );
      const settled = Promise.allSettled([attempt(a, 'j-a'), attempt(b, 'j-b')]);
      await waitFor(async () => {
        const r = await blocker.query(
          `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::bigint::oid AND NOT granted`,
          [CLUSTER_JOBS_LOCK_CLASS],
        );
        return r.rows[0].n >= 2;
      });
      await blocker.query(`SELECT pg_advisory_unlock(${CLUSTER_JOBS_LOCK_CLASS}, hashtext('main'))`);
      const outcomes = await settled;
      assert.equal(outcomes.filter((o) => o.status === 'fulfilled').length, 1, JSON.stringify(outcomes));
      const refused = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult;
      assert.ok(PgfleetError.is(refused.reason, 'BackupInProgress'), String(refused.reason));
      assert.equal((await a.listActiveJobs()).length, 1);
    } finally {
      await blocker.end();
    }
  });

  test('leadership is lost with its session: the old leader learns it on its next ask', async () => {
    const [a, b] = await twoControllers();
    assert.equal(await a.tryAcquireLeadership('scheduler'), true);
    // The server ends the leader's session (network cut, idle timeout, pg_terminate_backend).
    const killed = await server.query<{ ok: boolean }>(
      `SELECT pg_terminate_backend(pid) AS ok FROM pg_locks WHERE locktype = 'advisory' AND classid = $1::bigint::oid AND granted`,
      [LEADERSHIP_LOCK_CLASS],
    );
    assert.deepEqual(
      killed.map((r) => r.ok),
      [true],
    );
    await waitFor(async () => b.tryAcquireLeadership('scheduler'));
    assert.equal(await a.tryAcquireLeadership('scheduler'), false);
    // Ordinary queries of the old leader go on through the pool.
    assert.equal((await a.listClusters()).length, 1);
  });
});

describe('postgres: opening', () => {
  test('openCatalog picks PostgreSQL for postgres:// and postgresql:// URLs', async () => {
    const url = await freshDatabase();
    for (const u of [url, url.replace(/^postgres:/, 'postgresql:')]) {
      const store = await openCatalog(u);
      try {
        assert.ok(store instanceof PostgresCatalogStore);
        assert.equal(await store.schemaVersion(), CATALOG_SCHEMA_VERSION);
      } finally {
        await store.close();
      }
    }
  });

  test('an unreachable server or missing database is PgConnectFailed naming the URL without its password', async () => {
    const port = await freePort();
    const down = `postgres://pgfleet:s3cret@127.0.0.1:${port}/catalog`;
    await assert.rejects(
      PostgresCatalogStore.open(down, { connectTimeoutMs: 2000 }),
      (err: unknown) =>
        PgfleetError.is(err, 'PgConnectFailed') &&
        err.message.includes(`postgres://pgfleet:***@127.0.0.1:${port}/catalog`) &&
        !err.message.includes('s3cret'),
    );
    await assert.rejects(
      PostgresCatalogStore.open(urlOf('no_such_db')),
      (err: unknown) => PgfleetError.is(err, 'PgConnectFailed') && /no_such_db/.test(err.message),
    );
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(20);
  }
}
