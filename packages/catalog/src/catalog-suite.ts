/**
 * The one test suite every CatalogStore must pass (SQLite and PostgreSQL). Exported through
 * '@pgfleet/catalog/testing' so each implementation's test file runs it against a real backend:
 * `open` must return a store over a fresh, empty catalog each time. Stores opened by a test are
 * closed after it, pass or fail.
 */
import { strict as assert } from 'node:assert';
import { afterEach, describe, test } from 'node:test';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { CATALOG_MIGRATIONS } from './migrations.js';
import {
  FLEET_POLICY_SCOPE,
  type AgentRef,
  type BackupRecord,
  type HeartbeatFigures,
  type CatalogStore,
  type ConnectingAgent,
  type DumpRecord,
  type OutboxEventInput,
} from './store.js';

/** One Hello through the batch call, its refusal thrown (what the controller's HelloBatcher does per Hello). */
async function connectAgent(
  store: CatalogStore,
  agent: ConnectingAgent,
  controllerId: string,
  now: number,
  events: readonly OutboxEventInput[] = [],
): Promise<void> {
  const [refused] = await store.connectAgents([{ agent, events }], controllerId, now);
  if (refused) throw refused;
}

export function sampleBackup(
  label: string,
  stopTime: number,
  stopLsn: string,
  extra: Partial<BackupRecord> = {},
): BackupRecord {
  return {
    cluster: 'main',
    label,
    type: 'full',
    startLsn: '0/2000028',
    stopLsn,
    startTime: stopTime - 1000,
    stopTime,
    timeline: 1,
    systemIdentifier: '7300000000000000001',
    pgVersion: 170002,
    sizeBytes: 1234,
    storedBytes: 100,
    fileCount: 10,
    walStart: '000000010000000000000002',
    walStop: '000000010000000000000003',
    jobId: `job-${label}`,
    priorLabel: '',
    pinned: false,
    ...extra,
  };
}

/**
 * Rows written by the schema before agents were keyed by (cluster, id), the same SQL in both
 * dialects: a test applies the earlier migrations, runs these, opens the store and calls
 * checkAgentsKeyedUpgrade.
 */
export const AGENTS_BEFORE_CLUSTER_KEY = {
  /** The schema version just before (its migrations are the first `version` entries). */
  version: CATALOG_MIGRATIONS.findIndex((m) => m.description.startsWith('agents keyed by (cluster, id)')),
  rows: [
    "INSERT INTO clusters (name, system_identifier, pg_version, created_at) VALUES ('main', '1', 170002, 0)",
    "INSERT INTO clusters (name, system_identifier, pg_version, created_at) VALUES ('other', '2', 170002, 0)",
    "INSERT INTO agents (id, cluster, hostname, version, last_seen, current_lsn) VALUES ('agent-1', 'main', 'db1', '0.1.0', 5, '0/3000060')",
  ],
};

/** After the upgrade: the agent kept with its figures, and its id free for another cluster's agent. */
export async function checkAgentsKeyedUpgrade(store: CatalogStore): Promise<void> {
  const kept = await store.getAgent(inMain('agent-1'));
  assert.deepEqual([kept?.hostname, kept?.lastSeen, kept?.currentLsn], ['db1', 5, '0/3000060']);
  await store.upsertAgent({ id: 'agent-1', cluster: 'other', hostname: 'db2', version: '0.1.0' }, 6);
  assert.deepEqual(
    (await store.listAgents()).map((a) => [a.cluster, a.id, a.hostname]),
    [
      ['main', 'agent-1', 'db1'],
      ['other', 'agent-1', 'db2'],
    ],
  );
}

export function sampleDump(label: string, stopTime: number, extra: Partial<DumpRecord> = {}): DumpRecord {
  return {
    cluster: 'main',
    label,
    jobId: `job-${label}`,
    startTime: stopTime - 500,
    stopTime,
    sizeBytes: 1000,
    storedBytes: 400,
    result: { label, databases: [{ name: 'shop', size: '1000', storedSize: '400' }] },
    ...extra,
  };
}

/**
 * Dump jobs written before the dumps table (their DumpResult kept with the succeeded job only),
 * the same SQL in both dialects: after the upgrade the succeeded ones are dumps, with the job's
 * times and the sums of their databases' sizes (checkDumpsBackfill).
 */
export const DUMPS_BEFORE_TABLE = {
  version: CATALOG_MIGRATIONS.findIndex((m) => m.description.startsWith('dumps: ')),
  rows: [
    "INSERT INTO clusters (name, system_identifier, pg_version, created_at) VALUES ('main', '1', 170002, 0)",
    `INSERT INTO jobs (id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, result) VALUES
      ('d1', 'main', 'dump', 'succeeded', 'a', '{}', 900, 1000, 5000,
       '{"dump":{"label":"20261207-010203-123L","databases":[{"name":"shop","size":"100","storedSize":"40"},{"name":"crm","size":"5","storedSize":"2"}],"codec":"none"}}')`,
    `INSERT INTO jobs (id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, result) VALUES
      ('d2', 'main', 'dump', 'failed', 'a', '{}', 6000, 6100, 6200, NULL)`,
    `INSERT INTO jobs (id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, result) VALUES
      ('d3', 'main', 'dump', 'succeeded', 'a', '{}', 7000, 7100, 9000, '{"dump":{"label":"20261207-020203-123L"}}')`,
  ],
};

export async function checkDumpsBackfill(store: CatalogStore): Promise<void> {
  const dumps = await store.listDumps('main');
  assert.deepEqual(
    dumps.map((d) => [d.label, d.jobId, d.startTime, d.stopTime, d.sizeBytes, d.storedBytes, d.expiredAt]),
    [
      ['20261207-010203-123L', 'd1', 1000, 5000, 105, 42, null],
      ['20261207-020203-123L', 'd3', 7100, 9000, 0, 0, null],
    ],
  );
  assert.equal((dumps[0]!.result as { codec: string }).codec, 'none');
  // schedule_runs admits the logical schedule.
  await store.recordScheduleRuns([{ cluster: 'main', type: 'logical', lastRun: 10 }]);
  assert.deepEqual(await store.listScheduleRuns('main'), [{ cluster: 'main', type: 'logical', lastRun: 10 }]);
}

/** An agent of cluster 'main' (the cluster storeWithCluster registers). */
const inMain = (agentId: string) => ({ cluster: 'main', agentId });

/** A backup job of main's agent-1 as `dispatcher` creates it (none: nobody sends it yet). */
function backupJobSentBy(id: string, dispatcher?: string) {
  return {
    id,
    cluster: 'main',
    kind: 'backup' as const,
    agentId: 'agent-1',
    params: {},
    ...(dispatcher ? { dispatcher } : {}),
  };
}

/** A standby's replay figures as its heartbeat reports them. */
const standbyReplay = {
  receiveLsn: '0/5000000',
  replayLsn: '0/4FFF000',
  receiveReplayBytes: 4096,
  lastReplayTime: 4900,
  replayLagSeconds: 0.1,
};

/** One beat, as a batch of one. */
function recordHeartbeat(store: CatalogStore, agent: AgentRef, figures: HeartbeatFigures, at: number): Promise<void> {
  return store.recordHeartbeats([{ agent, figures, at }]);
}

export function catalogStoreSuite(name: string, open: () => Promise<CatalogStore>): void {
  describe(`catalog store: ${name}`, () => {
    const opened: CatalogStore[] = [];
    afterEach(async () => {
      await Promise.all(opened.splice(0).map((s) => s.close()));
    });

    async function fresh(): Promise<CatalogStore> {
      const store = await open();
      opened.push(store);
      return store;
    }

    async function storeWithCluster(): Promise<CatalogStore> {
      const store = await fresh();
      await store.upsertCluster({ name: 'main', systemIdentifier: '7300000000000000001', pgVersion: 170002 }, 1000);
      await store.upsertAgent({ id: 'agent-1', cluster: 'main', hostname: 'db1', version: '0.1.0' }, 1000);
      return store;
    }

    describe('clusters and agents', () => {
      test('a page of the fleet: clusters by keyset, and each fleet-wide read of the named clusters only', async () => {
        const store = await fresh();
        const names = ['c-1', 'c.2', 'c0', 'c_3', 'd'];
        for (const name of [...names].reverse())
          await store.upsertCluster({ name, systemIdentifier: '7300000000000000001', pgVersion: 170002 }, 7);
        // Byte order ('-' < '.' < '0' < '_'), whatever the database's collation, on every page.
        assert.deepEqual(
          (await store.listClusters()).map((c) => c.name),
          names,
        );
        assert.deepEqual(
          (await store.listClusters({ limit: 2 })).map((c) => c.name),
          ['c-1', 'c.2'],
        );
        assert.deepEqual(
          (await store.listClusters({ after: 'c.2', limit: 2 })).map((c) => c.name),
          ['c0', 'c_3'],
        );
        assert.deepEqual(
          (await store.listClusters({ after: 'c1', limit: 9 })).map((c) => c.name),
          ['c_3', 'd'],
        );
        assert.deepEqual(await store.listClusters({ after: 'd', limit: 9 }), []);
        assert.deepEqual(
          (await store.getClusters(['d', 'nope', 'c0'])).map((c) => c.name),
          ['c0', 'd'],
        );
        assert.deepEqual(await store.getClusters([]), []);

        const page = ['c.2', 'c0'];
        for (const name of names) {
          await store.upsertAgent({ id: 'a1', cluster: name, hostname: `${name}-h`, version: '1' }, 9);
          await store.insertBackup(sampleBackup(`${name}-old`, 100, '0/2000000', { cluster: name }));
          await store.insertBackup(sampleBackup(`${name}-new`, 200, '0/3000000', { cluster: name }));
          await store.insertDump(sampleDump(`20261207-01000${names.indexOf(name)}-000L`, 300, { cluster: name }));
          await store.putHealthState({ cluster: name, condition: 'rpo', state: 'ok', since: 1, data: null });
          await store.putPolicy({ scope: name, schedules: { full: '0 1 * * *' }, retention: {} }, 1);
          await store.recordScheduleRuns([{ cluster: name, type: 'full', lastRun: 5 }]);
          await store.createJob({ id: `v-${name}`, cluster: name, kind: 'verify', agentId: 'a1', params: {} }, 10);
        }
        await store.putPolicy({ scope: FLEET_POLICY_SCOPE, schedules: {}, retention: {} }, 1);
        const clusters = (rows: Array<{ cluster: string }>) => rows.map((r) => r.cluster);
        assert.deepEqual(clusters(await store.listAgents(page)), page);
        assert.deepEqual(
          (await store.latestBackups(page)).map((b) => b.label),
          ['c.2-new', 'c0-new'],
        );
        assert.deepEqual(
          (await store.latestBackups(page, 'oldest')).map((b) => b.label),
          ['c.2-old', 'c0-old'],
        );
        assert.deepEqual(await store.oldestBackupStopTimes([...page, 'nope']), [
          { cluster: 'c.2', stopTime: 100 },
          { cluster: 'c0', stopTime: 100 },
        ]);
        assert.deepEqual(clusters(await store.latestDumps(page)), page);
        assert.deepEqual(clusters(await store.listHealthStates(page)), page);
        assert.deepEqual(clusters(await store.listScheduleRuns(page)), page);
        assert.deepEqual(
          clusters(await store.latestJobsPerCluster({ kind: 'verify', perCluster: 1, clusters: page })),
          page,
        );
        assert.deepEqual(
          (await store.listPolicies([FLEET_POLICY_SCOPE, ...page])).map((p) => p.scope),
          [FLEET_POLICY_SCOPE, ...page],
        );
        // No names: nothing (not the whole fleet).
        assert.deepEqual(await store.listAgents([]), []);
        assert.deepEqual(await store.latestBackups([]), []);
        assert.deepEqual(await store.oldestBackupStopTimes([]), []);
        assert.deepEqual(await store.latestJobsPerCluster({ kind: 'verify', perCluster: 1, clusters: [] }), []);
      });

      test('another system identifier under a known name is SystemIdMismatch', async () => {
        const store = await storeWithCluster();
        await assert.rejects(
          store.upsertCluster({ name: 'main', systemIdentifier: '999', pgVersion: 170002 }, 2000),
          (err: unknown) =>
            PgfleetError.is(err, 'SystemIdMismatch') &&
            err.code === ErrorCodes.SystemIdMismatch.code &&
            err.message.includes('7300000000000000001'),
        );
        // Same identifier, new server_version_num (a minor update keeps the identifier): accepted and recorded.
        const c = await store.upsertCluster(
          { name: 'main', systemIdentifier: '7300000000000000001', pgVersion: 170004 },
          3000,
        );
        assert.deepEqual(c, {
          name: 'main',
          systemIdentifier: '7300000000000000001',
          pgVersion: 170004,
          createdAt: 1000,
        });
        assert.deepEqual(await store.getCluster('main'), c);
        assert.equal(await store.getCluster('nope'), undefined);
      });

      test('an agent is (cluster, id): the same id in another cluster is another agent, and neither disturbs the other', async () => {
        const store = await storeWithCluster();
        await store.upsertCluster({ name: 'other', systemIdentifier: '7300000000000000002', pgVersion: 170002 }, 1000);
        await recordHeartbeat(store, inMain('agent-1'), { currentLsn: '0/3000060' }, 1500);
        const before = await store.getAgent(inMain('agent-1'));
        // An agent of cluster 'other' takes the same id: its own row, with its own events.
        const event = {
          id: 'e-other',
          cluster: 'other',
          kind: 'agent.connected',
          time: 2000,
          payload: new Uint8Array([1]),
        };
        const theirs = await store.upsertAgent(
          { id: 'agent-1', cluster: 'other', hostname: 'db9', version: '9.9.9' },
          2000,
          [event],
        );
        assert.deepEqual(
          [theirs.cluster, theirs.id, theirs.hostname, theirs.currentLsn],
          ['other', 'agent-1', 'db9', null],
        );
        assert.ok((await store.listEvents({})).some((e) => e.id === 'e-other'));
        const other = { cluster: 'other', agentId: 'agent-1' };
        await recordHeartbeat(store, other, { currentLsn: 'FF/FFFFFFFF' }, 2500);
        await store.setAgentConnected(other, false, 2600);
        assert.deepEqual(await store.getAgent(inMain('agent-1')), before, "main's agent-1 is untouched");
        assert.deepEqual(
          (await store.listAgents()).map((a) => [a.cluster, a.id, a.connected, a.currentLsn]),
          [
            ['main', 'agent-1', true, '0/3000060'],
            ['other', 'agent-1', false, 'FF/FFFFFFFF'],
          ],
        );
        // Failing one agent's jobs leaves the namesake's jobs in the other cluster alone.
        await store.createJob({ id: 'jm', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 3000);
        await store.createJob({ id: 'jo', cluster: 'other', kind: 'backup', agentId: 'agent-1', params: {} }, 3000);
        const failed = await store.failActiveJobsOfAgent(
          other,
          { code: ErrorCodes.AgentDisconnected.code, message: 'gone' },
          3100,
        );
        assert.deepEqual(
          failed.map((j) => j.id),
          ['jo'],
        );
        assert.equal((await store.getJob('jm'))?.state, 'queued');
        // Its own cluster re-registers it as before (a reconnect).
        const again = await store.upsertAgent(
          { id: 'agent-1', cluster: 'main', hostname: 'db1b', version: '0.2.0' },
          4000,
        );
        assert.deepEqual([again.cluster, again.hostname, again.lastSeen], ['main', 'db1b', 4000]);
        assert.equal((await store.getAgent(other))?.hostname, 'db9');
        assert.equal(await store.getAgent({ cluster: 'nope', agentId: 'agent-1' }), undefined);
      });

      test('clusters are listed by name', async () => {
        const store = await fresh();
        for (const n of ['b', 'a', 'B', 'c'])
          await store.upsertCluster({ name: n, systemIdentifier: `id-${n}`, pgVersion: 160000 }, 1);
        // Byte order (upper case first) in both stores, whatever a database's collation says.
        assert.deepEqual(
          (await store.listClusters()).map((c) => c.name),
          ['B', 'a', 'b', 'c'],
        );
      });

      test('heartbeats, disconnects and the start-up reset', async () => {
        const store = await storeWithCluster();
        const fresh1 = await store.getAgent(inMain('agent-1'));
        assert.deepEqual(fresh1, {
          id: 'agent-1',
          cluster: 'main',
          hostname: 'db1',
          version: '0.1.0',
          connected: true,
          lastSeen: 1000,
          archiver: null,
          currentLsn: null,
          walHealth: null,
          archiveSetup: null,
          role: null,
          replay: null,
          timeline: null,
        });
        await recordHeartbeat(
          store,
          inMain('agent-1'),
          { archiver: { archivedCount: '3' }, currentLsn: '0/3000060' },
          5000,
        );
        let a = await store.getAgent(inMain('agent-1'));
        assert.deepEqual(
          [a?.connected, a?.lastSeen, a?.currentLsn, a?.archiver],
          [true, 5000, '0/3000060', { archivedCount: '3' }],
        );
        // A heartbeat without figures keeps the last ones.
        await recordHeartbeat(store, inMain('agent-1'), {}, 5500);
        a = await store.getAgent(inMain('agent-1'));
        assert.deepEqual([a?.lastSeen, a?.currentLsn, a?.archiver], [5500, '0/3000060', { archivedCount: '3' }]);
        // WAL health: stored as reported (numbers stay numbers), kept by a beat without it, replaced by the next.
        const wal = {
          pgWalBytes: 3 * 16 * 1024 * 1024,
          pgWalFreeBytes: 52_000_000_000,
          pgWalTotalBytes: 107_000_000_000,
          slotName: 'pgfleet_main',
          slotActive: true,
          slotRestartLsn: '0/3000000',
          slotRetainedBytes: 96,
          slotWalStatus: 'reserved',
          streamLagBytes: 96,
          streamLagSeconds: 0.5,
          walSegmentsArchived: 7,
          walBytesArchived: 7 * 16 * 1024 * 1024,
        };
        await recordHeartbeat(store, inMain('agent-1'), { walHealth: wal }, 5600);
        await recordHeartbeat(store, inMain('agent-1'), { currentLsn: '0/3000070' }, 5700);
        assert.deepEqual((await store.getAgent(inMain('agent-1')))?.walHealth, wal);
        await recordHeartbeat(
          store,
          inMain('agent-1'),
          { walHealth: { ...wal, slotName: '', slotActive: false, walSegmentsArchived: 8 } },
          5800,
        );
        assert.deepEqual((await store.listAgents('main'))[0]?.walHealth, {
          ...wal,
          slotName: '',
          slotActive: false,
          walSegmentsArchived: 8,
        });
        // Archive setup likewise: kept by a beat that could not read it (PostgreSQL down), replaced by the next.
        const setup = {
          archiveMode: 'on',
          archiveCommand: 'pgfleet-agent wal-push %p --cluster main',
          viaPgfleet: true,
          problem: '',
        };
        await recordHeartbeat(store, inMain('agent-1'), { archiveSetup: setup }, 5850);
        await recordHeartbeat(store, inMain('agent-1'), {}, 5860);
        assert.deepEqual((await store.getAgent(inMain('agent-1')))?.archiveSetup, setup);
        const bypass = {
          archiveMode: 'on',
          archiveCommand: '/bin/true',
          viaPgfleet: false,
          problem: 'archive_command does not run pgfleet-agent wal-push',
        };
        await recordHeartbeat(store, inMain('agent-1'), { archiveSetup: bypass }, 5870);
        assert.deepEqual((await store.listAgents('main'))[0]?.archiveSetup, bypass);
        // The timeline a primary writes: kept when a beat does not say (a standby, or PostgreSQL down), replaced when it does.
        await recordHeartbeat(store, inMain('agent-1'), { timeline: 2 }, 5880);
        await recordHeartbeat(store, inMain('agent-1'), {}, 5890);
        assert.equal((await store.getAgent(inMain('agent-1')))?.timeline, 2);
        await recordHeartbeat(store, inMain('agent-1'), { timeline: 0x7fffffff + 3 }, 5895);
        assert.equal(
          (await store.getAgent(inMain('agent-1')))?.timeline,
          0x7fffffff + 3,
          'timeline ids are unsigned 32-bit',
        );
        await store.setAgentConnected(inMain('agent-1'), false, 6000);
        a = await store.getAgent(inMain('agent-1'));
        assert.deepEqual([a?.connected, a?.lastSeen], [false, 6000]);
        await store.upsertAgent({ id: 'agent-1', cluster: 'main', hostname: 'db1', version: '0.2.0' }, 7000);
        assert.equal((await store.getAgent(inMain('agent-1')))?.connected, true);
        await store.upsertAgent({ id: 'agent-0', cluster: 'main', hostname: 'db0', version: '0.2.0' }, 7000);
        await store.disconnectAllAgents(8000);
        assert.deepEqual(
          (await store.listAgents('main')).map((x) => [x.id, x.connected, x.version]),
          [
            ['agent-0', false, '0.2.0'],
            ['agent-1', false, '0.2.0'],
          ],
        );
        assert.deepEqual(
          (await store.listAgents()).map((x) => x.id),
          ['agent-0', 'agent-1'],
        );
        assert.deepEqual(await store.listAgents('other'), []);
        assert.equal(await store.getAgent(inMain('nope')), undefined);
      });

      test("two hosts of one cluster: roles and a standby's replay figures, replaced at every beat that reports them", async () => {
        const store = await storeWithCluster();
        await store.upsertAgent({ id: 'agent-2', cluster: 'main', hostname: 'db2', version: '0.1.0' }, 1000);
        const replay = standbyReplay;
        await recordHeartbeat(
          store,
          inMain('agent-1'),
          { currentLsn: '0/5000100', role: 'primary', replay: null },
          5000,
        );
        await recordHeartbeat(store, inMain('agent-2'), { currentLsn: '0/4FFF000', role: 'standby', replay }, 5000);
        assert.deepEqual(
          (await store.listAgents('main')).map((a) => [a.id, a.role, a.replay]),
          [
            ['agent-1', 'primary', null],
            ['agent-2', 'standby', replay],
          ],
        );
        // A beat without a role (an agent that does not report one) keeps both.
        await recordHeartbeat(store, inMain('agent-2'), { currentLsn: '0/5000000' }, 5500);
        assert.deepEqual(
          [(await store.getAgent(inMain('agent-2')))?.role, (await store.getAgent(inMain('agent-2')))?.replay],
          ['standby', replay],
        );
        // PostgreSQL down on the primary's host: its role is not known any more (not kept as primary).
        await recordHeartbeat(store, inMain('agent-1'), { role: null, replay: null }, 6000);
        assert.equal((await store.getAgent(inMain('agent-1')))?.role, null);
        // Failover: the standby reports primary and loses its replay figures.
        await recordHeartbeat(
          store,
          inMain('agent-2'),
          { currentLsn: '0/6000000', role: 'primary', replay: null },
          7000,
        );
        const promoted = await store.getAgent(inMain('agent-2'));
        assert.deepEqual([promoted?.role, promoted?.replay, promoted?.currentLsn], ['primary', null, '0/6000000']);
      });

      test('a batch of heartbeats ends as its beats applied one after the other, several of one agent included', async () => {
        const store = await storeWithCluster();
        await store.upsertAgent({ id: 'agent-2', cluster: 'main', hostname: 'db2', version: '0.1.0' }, 1000);
        const replay = standbyReplay;
        // Quotes, backslashes and braces survive the batch's array parameters.
        const setup = {
          archiveMode: 'on',
          archiveCommand: 'pgfleet-agent wal-push "%p" --x \\{a,b}',
          viaPgfleet: true,
          problem: '',
        };
        await store.recordHeartbeats([
          {
            agent: inMain('agent-1'),
            figures: { archiver: { archivedCount: '3' }, currentLsn: '0/3000060', role: 'primary', replay: null },
            at: 5000,
          },
          { agent: inMain('agent-2'), figures: { currentLsn: '0/2000000', role: 'standby', replay }, at: 5001 },
          // An agent the catalog does not hold: nothing to update, and the others are recorded.
          { agent: inMain('gone'), figures: { currentLsn: '0/1' }, at: 5002 },
          // agent-1 again: what it leaves out stays from its first beat, what it says replaces it.
          { agent: inMain('agent-1'), figures: { archiveSetup: setup, timeline: 3 }, at: 5003 },
          { agent: inMain('agent-1'), figures: { currentLsn: '0/3000070', role: null }, at: 5004 },
          { agent: inMain('agent-2'), figures: { archiver: { archivedCount: '9' } }, at: 5005 },
        ]);
        const [a1, a2] = await store.listAgents('main');
        assert.deepEqual(
          [a1?.lastSeen, a1?.archiver, a1?.currentLsn, a1?.archiveSetup, a1?.timeline, a1?.role, a1?.replay],
          [5004, { archivedCount: '3' }, '0/3000070', setup, 3, null, null],
        );
        assert.deepEqual(
          [a2?.lastSeen, a2?.archiver, a2?.currentLsn, a2?.role, a2?.replay],
          [5005, { archivedCount: '9' }, '0/2000000', 'standby', replay],
        );
        assert.equal(await store.getAgent(inMain('gone')), undefined);
        await store.recordHeartbeats([]);
        assert.equal((await store.getAgent(inMain('agent-1')))?.lastSeen, 5004);
      });
    });

    describe('backups', () => {
      test('listed by stop time, not by label; re-inserting the same label is a no-op', async () => {
        const store = await storeWithCluster();
        // Labels deliberately sort the other way round from the stop times.
        await store.insertBackup(sampleBackup('20990101-000000F', 3000, '0/9000000'));
        await store.insertBackup(sampleBackup('20000101-000000F', 9000, '0/A0000000'));
        await store.insertBackup(sampleBackup('20500101-000000F', 5000, '0/10000000'));
        await store.insertBackup(sampleBackup('20500101-000000F', 1, '0/1'));
        const list = await store.listBackups('main');
        assert.deepEqual(
          list.map((b) => b.label),
          ['20990101-000000F', '20500101-000000F', '20000101-000000F'],
        );
        assert.equal(list[1]!.stopTime, 5000);
        assert.deepEqual(
          await store.getBackup('main', '20000101-000000F'),
          sampleBackup('20000101-000000F', 9000, '0/A0000000'),
        );
        assert.equal(await store.getBackup('main', 'nope'), undefined);
        assert.deepEqual(await store.listBackups('other'), []);
      });

      test('stop LSNs are kept in numeric form (0/A0000000 > 0/10000000; 1/0 and 7FFFFFFF/0 above both)', async () => {
        const store = await storeWithCluster();
        await store.insertBackup(sampleBackup('b1', 1000, '0/A0000000'));
        await store.insertBackup(sampleBackup('b2', 1000, '0/10000000'));
        await store.insertBackup(sampleBackup('b3', 1000, '7FFFFFFF/0'));
        await store.insertBackup(sampleBackup('b0', 1000, '1/0'));
        assert.deepEqual(
          (await store.listBackups('main')).map((b) => b.label),
          ['b2', 'b1', 'b0', 'b3'],
        );
      });

      test('every field survives the round trip, large sizes included', async () => {
        const store = await storeWithCluster();
        const b = sampleBackup('20250101-010203F_20250102-010203I', 1_735_000_000_123, '2A/3C000100', {
          type: 'incr',
          startLsn: '2A/3B000028',
          timeline: 7,
          sizeBytes: 5 * 2 ** 40,
          storedBytes: 2 ** 41 + 1,
          fileCount: 123_456,
          priorLabel: '20250101-010203F',
          walStart: '000000070000002A0000003B',
          walStop: '000000070000002A0000003C',
        });
        await store.insertBackup(b);
        assert.deepEqual(await store.getBackup('main', b.label), b);
      });

      test('latestBackups: the newest (or oldest) of each cluster, by stop time then stop LSN, or of one cluster', async () => {
        const store = await storeWithCluster();
        await store.upsertCluster({ name: 'other', systemIdentifier: '7300000000000000009', pgVersion: 170002 }, 1);
        await store.upsertCluster({ name: 'empty', systemIdentifier: '7300000000000000008', pgVersion: 170002 }, 1);
        // Labels sort against the stop times; two backups of 'main' end in the same millisecond.
        await store.insertBackup(sampleBackup('z-old', 1000, '0/5000000'));
        await store.insertBackup(sampleBackup('a-new', 3000, '0/9000000'));
        await store.insertBackup(sampleBackup('b-newest', 3000, '0/A0000000'));
        await store.insertBackup(sampleBackup('o1', 9000, '0/3000000', { cluster: 'other' }));
        await store.insertBackup(sampleBackup('o0', 500, '0/2000000', { cluster: 'other' }));
        assert.deepEqual(
          (await store.latestBackups()).map((b) => [b.cluster, b.label]),
          [
            ['main', 'b-newest'],
            ['other', 'o1'],
          ],
        );
        assert.deepEqual(await store.latestBackups('main'), [await store.getBackup('main', 'b-newest')]);
        assert.deepEqual(
          (await store.latestBackups('main')).at(-1),
          (await store.listBackups('main')).at(-1),
          'the last of listBackups',
        );
        assert.deepEqual(await store.latestBackups('empty'), []);
        // The other end: where each cluster's PITR window starts (status's pitrFrom).
        assert.deepEqual(
          (await store.latestBackups(undefined, 'oldest')).map((b) => [b.cluster, b.label]),
          [
            ['main', 'z-old'],
            ['other', 'o0'],
          ],
        );
        assert.deepEqual((await store.latestBackups('main', 'oldest'))[0], (await store.listBackups('main'))[0]);
        // Its stop time alone, as status reads it, whole fleet or named clusters.
        const oldest = (await store.latestBackups(undefined, 'oldest')).map((b) => ({
          cluster: b.cluster,
          stopTime: b.stopTime,
        }));
        assert.deepEqual(await store.oldestBackupStopTimes(), oldest);
        assert.deepEqual(await store.oldestBackupStopTimes(['other', 'empty', 'main']), oldest);
      });

      test('a bad LSN is refused', async () => {
        const store = await storeWithCluster();
        await assert.rejects(store.insertBackup(sampleBackup('bad', 1, 'nonsense')), (err: unknown) =>
          PgfleetError.is(err, 'InvalidArgument'),
        );
        assert.deepEqual(await store.listBackups('main'), []);
      });
    });

    describe('jobs', () => {
      test('latestJobsPerCluster: the newest N of each cluster matching kind and state, newest first', async () => {
        const store = await storeWithCluster();
        await store.upsertCluster({ name: 'other', systemIdentifier: '7300000000000000009', pgVersion: 170002 }, 1);
        const job = async (id: string, cluster: string, kind: 'verify' | 'drill', at: number, end?: 'succeeded') => {
          await store.createJob({ id, cluster, kind, agentId: 'agent-1', params: {} }, at);
          if (end) {
            await store.transitionJob(id, 'dispatched', {}, at);
            await store.transitionJob(id, end, {}, at);
          }
        };
        await job('m1', 'main', 'verify', 10, 'succeeded');
        await job('m2', 'main', 'verify', 20, 'succeeded');
        await job('m3', 'main', 'verify', 30);
        await job('m4', 'main', 'drill', 40, 'succeeded');
        // Same millisecond: creation order decides.
        await job('o1', 'other', 'verify', 50, 'succeeded');
        await job('o2', 'other', 'verify', 50, 'succeeded');
        const ids = async (f: Parameters<typeof store.latestJobsPerCluster>[0]) =>
          (await store.latestJobsPerCluster(f)).map((j) => j.id);
        assert.deepEqual(await ids({ kind: 'verify', state: 'succeeded', perCluster: 1 }), ['m2', 'o2']);
        assert.deepEqual(await ids({ kind: 'verify', perCluster: 2 }), ['m3', 'm2', 'o2', 'o1']);
        assert.deepEqual(await ids({ kind: 'verify', cluster: 'main', perCluster: 5 }), ['m3', 'm2', 'm1']);
        assert.deepEqual(await ids({ kind: 'drill', state: 'failed', perCluster: 3 }), []);
      });

      test('params, progress and results keep their JSON shape', async () => {
        const store = await storeWithCluster();
        const params = {
          type: 'full',
          tags: ['a', 'b'],
          nested: { x: null, y: [1, { z: 'q' }] },
          ratio: 0.25,
          big: '18446744073709551615',
          unicode: 'é✓',
        };
        const job = await store.createJob({ id: 'j', cluster: 'main', kind: 'backup', agentId: 'agent-1', params }, 10);
        assert.deepEqual(job.params, params);
        const arr = await store.createJob(
          { id: 'k', cluster: 'main', kind: 'restore', agentId: 'agent-1', params: ['x', 1] },
          11,
        );
        assert.deepEqual(arr.params, ['x', 1]);
        const none = await store.createJob(
          { id: 'l', cluster: 'main', kind: 'restore', agentId: 'agent-1', params: undefined },
          12,
        );
        assert.deepEqual(
          [none.params, none.progress, none.result, none.error, none.startedAt, none.finishedAt],
          [null, null, null, null, null, null],
        );
        await store.transitionJob('k', 'dispatched', {}, 13);
        await store.updateJobProgress('k', { files: [1, 2], phase: 'copy' }, 14);
        await store.transitionJob('k', 'succeeded', { result: { restored: true, list: [] } }, 15);
        const k = await store.getJob('k');
        assert.deepEqual(
          [k?.progress, k?.result],
          [
            { files: [1, 2], phase: 'copy' },
            { restored: true, list: [] },
          ],
        );
        assert.equal(await store.getJob('nope'), undefined);
      });

      test('a failed drill keeps its result with the job: reasons, the server log lines, the kept directory, and its drill.failed event', async () => {
        // What the controller stores for a drill that failed in recovery (DrillResult as protobuf
        // JSON, docs/drills.md): PostgreSQL's log lines as the agent cut them, up to 8 KiB of
        // quotes, backslashes, tabs and non-ASCII, must come back byte for byte.
        const store = await storeWithCluster();
        const fatal =
          "2026-11-24 12:00:00.100 UTC [7] FATAL:  requested timeline 2 is not a child of this server's history";
        const tail = Array.from(
          { length: 30 },
          (_, i) =>
            `2026-11-24 12:00:00.${String(i).padStart(3, '0')} UTC [6] LOG:  restored log file "00000001000000000000${String(i).padStart(4, '0')}" from archive \\ "q" \tété ✓ ${'x'.repeat(200)}`,
        );
        const drill = {
          backupLabel: '20261124-110000F',
          stage: 'recovery',
          reasons: [
            "recovery failed: FATAL: requested timeline 2 is not a child of this server's history",
            "recovery: the drill's PostgreSQL exited during recovery",
          ],
          postgresLogProblems: [
            fatal,
            '2026-11-24 12:00:00.100 UTC [7] DETAIL:  Latest checkpoint is at 0/3000028 on timeline 1',
          ],
          postgresLogTail: [...tail, fatal],
          keptDir: '/var/lib/postgresql/15/pgfleet-scratch/pgfleet-drill-d1',
        };
        assert.ok(JSON.stringify(drill).length > 7000);
        const error = {
          code: ErrorCodes.DrillFailed.code,
          message: `drill of cluster main failed in stage recovery: the drill's PostgreSQL exited during recovery (PostgreSQL: FATAL: requested timeline 2 is not a child of this server's history)`,
        };
        const payload = new TextEncoder().encode(JSON.stringify(drill));
        await store.createJob(
          { id: 'd1', cluster: 'main', kind: 'drill', agentId: 'agent-1', params: { backupLabel: '', keep: true } },
          10,
        );
        await store.transitionJob('d1', 'dispatched', {}, 11);
        const out = await store.transitionJob(
          'd1',
          'failed',
          {
            error,
            result: { drill },
            events: [{ id: 'ev-d1', cluster: 'main', kind: 'drill.failed', time: 12, payload }],
          },
          12,
        );
        assert.equal(out.changed, true);
        const [listed] = await store.listJobs({ cluster: 'main', kind: 'drill' });
        for (const job of [await store.getJob('d1'), listed]) {
          assert.deepEqual(
            [job?.state, job?.error, job?.result, job?.params],
            ['failed', error, { drill }, { backupLabel: '', keep: true }],
          );
        }
        const [ev] = await store.listEvents({ cluster: 'main' });
        assert.deepEqual([ev?.kind, Buffer.from(ev!.payload).equals(Buffer.from(payload))], ['drill.failed', true]);
      });

      test('createJobIfIdle: of two creators racing for one cluster exactly one creates its job; the other is refused with BackupInProgress', async () => {
        const store = await storeWithCluster();
        await store.upsertCluster({ name: 'other', systemIdentifier: '7300000000000000002', pgVersion: 170002 }, 1000);
        const kinds = ['backup', 'expire'] as const;
        const attempt = (id: string, kind: 'backup' | 'expire') =>
          store.createJobIfIdle('main', kinds, { id, cluster: 'main', kind, agentId: 'agent-1', params: { id } }, 10);
        // PostgreSQL: both start before either commits (two pooled connections; postgres-store.test.ts also races two
        // stores behind a held lock). SQLite: one synchronous connection per controller, so this checks the rule in order.
        const outcomes = await Promise.allSettled([attempt('b1', 'backup'), attempt('e1', 'expire')]);
        const created = outcomes.filter((o) => o.status === 'fulfilled');
        const refused = outcomes.filter((o) => o.status === 'rejected');
        assert.equal(created.length, 1);
        assert.equal(refused.length, 1);
        const winner = (created[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof attempt>>>).value;
        const err = (refused[0] as PromiseRejectedResult).reason as unknown;
        assert.ok(PgfleetError.is(err, 'BackupInProgress'), String(err));
        assert.match(
          (err as Error).message,
          new RegExp(`already has a ${winner.kind} job running \\(${winner.id}, queued\\)`),
        );
        assert.match((err as PgfleetError).hint, new RegExp(`pgfleet job ${winner.id}`));
        assert.deepEqual(
          (await store.listActiveJobs()).map((j) => j.id),
          [winner.id],
        );
        // Another cluster, and kinds outside the rule, are not held up; a repeat of the winner's id returns it.
        await store.createJobIfIdle(
          'other',
          kinds,
          { id: 'o1', cluster: 'other', kind: 'backup', agentId: 'agent-1', params: {} },
          11,
        );
        await store.createJobIfIdle(
          'main',
          ['drill'],
          { id: 'v1', cluster: 'main', kind: 'verify', agentId: 'agent-1', params: {} },
          12,
        );
        assert.deepEqual(
          await store.createJobIfIdle(
            'main',
            kinds,
            { id: winner.id, cluster: 'main', kind: winner.kind, agentId: 'agent-1', params: {} },
            13,
          ),
          winner,
        );
        // Once the winner ends, the cluster is idle again.
        await store.transitionJob(
          winner.id,
          'failed',
          { error: { code: ErrorCodes.JobFailed.code, message: 'the agent went away' } },
          14,
        );
        const next = await attempt('b2', 'backup');
        assert.equal(next.state, 'queued');
        // Many racers at once: still exactly one.
        await store.transitionJob('b2', 'cancelled', {}, 15);
        const many = await Promise.allSettled(
          Array.from({ length: 8 }, (_, i) => attempt(`m${i}`, i % 2 ? 'backup' : 'expire')),
        );
        assert.equal(many.filter((o) => o.status === 'fulfilled').length, 1);
        assert.ok(many.every((o) => o.status === 'fulfilled' || PgfleetError.is(o.reason, 'BackupInProgress')));
      });

      test('createJob is idempotent by id: a repeat returns the job as it is now; another cluster or kind is JobStateConflict', async () => {
        const store = await storeWithCluster();
        const first = await store.createJob(
          { id: 'same', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: { type: 'full' } },
          10,
        );
        await store.transitionJob('same', 'dispatched', {}, 11);
        // The retry carries other params and a later time: the stored job wins, state and all.
        const again = await store.createJob(
          { id: 'same', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: { type: 'incr' } },
          20,
        );
        assert.deepEqual(again, { ...first, state: 'dispatched' });
        assert.equal((await store.listJobs({ cluster: 'main' })).length, 1);
        for (const other of [
          { cluster: 'other', kind: 'backup' as const },
          { cluster: 'main', kind: 'restore' as const },
        ]) {
          await assert.rejects(
            store.createJob({ id: 'same', agentId: 'agent-1', params: {}, ...other }, 30),
            (err: unknown) =>
              PgfleetError.is(err, 'JobStateConflict') && err.message.includes("backup job of cluster 'main'"),
          );
        }
        assert.deepEqual(await store.getJob('same'), again);
      });

      test('a backup job runs to success and inserts its backup in the same step', async () => {
        const store = await storeWithCluster();
        const job = await store.createJob(
          { id: 'j1', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: { type: 'full' } },
          100,
        );
        assert.deepEqual(job, {
          id: 'j1',
          cluster: 'main',
          kind: 'backup',
          state: 'queued',
          agentId: 'agent-1',
          params: { type: 'full' },
          createdAt: 100,
          startedAt: null,
          finishedAt: null,
          error: null,
          progress: null,
          result: null,
          dispatcher: null,
        });
        assert.equal((await store.transitionJob('j1', 'dispatched', {}, 110)).changed, true);
        const p = await store.updateJobProgress('j1', { bytesDone: '5' }, 120);
        assert.deepEqual(
          [p.changed, p.job.state, p.job.startedAt, p.job.progress],
          [true, 'running', 120, { bytesDone: '5' }],
        );
        await store.updateJobProgress('j1', { bytesDone: '9' }, 130);
        assert.equal((await store.getJob('j1'))?.startedAt, 120);
        const done = await store.transitionJob(
          'j1',
          'succeeded',
          { result: { label: 'b1' }, backup: sampleBackup('b1', 140, '0/3000000', { jobId: 'j1' }) },
          140,
        );
        assert.deepEqual(
          [done.changed, done.job.state, done.job.startedAt, done.job.finishedAt, done.job.result],
          [true, 'succeeded', 120, 140, { label: 'b1' }],
        );
        assert.equal((await store.getBackup('main', 'b1'))?.jobId, 'j1');

        // Idempotent: the same terminal state again changes nothing.
        const again = await store.transitionJob('j1', 'succeeded', { result: { label: 'other' } }, 999);
        assert.deepEqual([again.changed, again.job.finishedAt, again.job.result], [false, 140, { label: 'b1' }]);
        // Late progress does not reopen it.
        const late = await store.updateJobProgress('j1', { bytesDone: '1' }, 1000);
        assert.deepEqual([late.changed, late.job.state, late.job.progress], [false, 'succeeded', { bytesDone: '9' }]);
      });

      test('a failed backup insert rolls the success back: the job stays running', async () => {
        const store = await storeWithCluster();
        await store.createJob({ id: 'j', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 1);
        await store.transitionJob('j', 'dispatched', {}, 2);
        await store.updateJobProgress('j', {}, 3);
        await assert.rejects(
          store.transitionJob('j', 'succeeded', { backup: sampleBackup('b', 4, 'not-an-lsn') }, 4),
          (err: unknown) => PgfleetError.is(err, 'InvalidArgument'),
        );
        // A backup of a cluster the catalog does not know violates the foreign key: also all-or-nothing.
        await assert.rejects(
          store.transitionJob('j', 'succeeded', { backup: sampleBackup('b', 4, '0/3000000', { cluster: 'ghost' }) }, 4),
        );
        const j = await store.getJob('j');
        assert.deepEqual([j?.state, j?.finishedAt], ['running', null]);
        assert.deepEqual(await store.listBackups('ghost'), []);
        const ok = await store.transitionJob('j', 'succeeded', { backup: sampleBackup('b', 5, '0/3000000') }, 5);
        assert.deepEqual([ok.changed, ok.job.state], [true, 'succeeded']);
      });

      // Progress for a queued job is the agent's claim of it (a controller that died before
      // recording the send): "a dead controller's queued jobs fail after the grace, unless claimed".
      test('dispatched may end directly', async () => {
        const store = await storeWithCluster();
        await store.createJob({ id: 'q', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 1);
        await store.transitionJob('q', 'dispatched', {}, 3);
        const end = await store.transitionJob('q', 'succeeded', {}, 4);
        assert.deepEqual([end.job.state, end.job.startedAt, end.job.finishedAt], ['succeeded', null, 4]);
      });

      test('illegal transitions are rejected with JobStateConflict; unknown jobs with UnknownJob', async () => {
        const store = await storeWithCluster();
        await store.createJob({ id: 'j2', cluster: 'main', kind: 'restore', agentId: 'agent-1', params: {} }, 100);
        await assert.rejects(
          store.transitionJob('j2', 'running', {}, 101),
          (err: unknown) => PgfleetError.is(err, 'JobStateConflict') && err.code === ErrorCodes.JobStateConflict.code,
        );
        assert.equal((await store.transitionJob('j2', 'queued', {}, 101)).changed, false);
        await store.transitionJob('j2', 'dispatched', {}, 101);
        await assert.rejects(store.transitionJob('j2', 'queued', {}, 101), (err: unknown) =>
          PgfleetError.is(err, 'JobStateConflict'),
        );
        await store.transitionJob(
          'j2',
          'failed',
          { error: { code: ErrorCodes.AgentDisconnected.code, message: 'gone' } },
          102,
        );
        await assert.rejects(store.transitionJob('j2', 'succeeded', {}, 103), (err: unknown) =>
          PgfleetError.is(err, 'JobStateConflict'),
        );
        const j = await store.getJob('j2');
        assert.deepEqual(
          [j?.state, j?.error, j?.finishedAt],
          ['failed', { code: ErrorCodes.AgentDisconnected.code, message: 'gone' }, 102],
        );
        await assert.rejects(store.transitionJob('nope', 'failed', {}, 1), (err: unknown) =>
          PgfleetError.is(err, 'UnknownJob'),
        );
        await assert.rejects(store.updateJobProgress('nope', {}, 1), (err: unknown) =>
          PgfleetError.is(err, 'UnknownJob'),
        );
      });

      test('two conflicting transitions at once: exactly one wins', async () => {
        const store = await storeWithCluster();
        await store.createJob({ id: 'r', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 1);
        await store.transitionJob('r', 'dispatched', {}, 2);
        await store.updateJobProgress('r', {}, 3);
        const outcomes = await Promise.allSettled([
          store.transitionJob('r', 'succeeded', { backup: sampleBackup('b', 4, '0/3000000', { jobId: 'r' }) }, 4),
          store.transitionJob('r', 'cancelled', {}, 4),
        ]);
        const won = outcomes.filter((o) => o.status === 'fulfilled');
        const lost = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
        assert.equal(won.length, 1);
        assert.ok(PgfleetError.is(lost[0]?.reason, 'JobStateConflict'));
        const state = (await store.getJob('r'))?.state;
        // The backup row exists exactly when the success won.
        assert.equal((await store.getBackup('main', 'b')) !== undefined, state === 'succeeded');
      });

      test('failing the active jobs of an agent keeps the ones it still runs and the finished ones', async () => {
        const store = await storeWithCluster();
        await store.upsertAgent({ id: 'agent-2', cluster: 'main', hostname: 'db2', version: '0.1.0' }, 1000);
        for (const id of ['a', 'b', 'c', 'd', 'e'])
          await store.createJob({ id, cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 1);
        await store.createJob({ id: 'other', cluster: 'main', kind: 'backup', agentId: 'agent-2', params: {} }, 1);
        await store.transitionJob('a', 'dispatched', {}, 2);
        await store.transitionJob('e', 'dispatched', {}, 2);
        await store.updateJobProgress('e', { p: 1 }, 2);
        await store.transitionJob('c', 'cancelled', {}, 2);
        const failed = await store.failActiveJobsOfAgent(
          inMain('agent-1'),
          { code: ErrorCodes.AgentDisconnected.code, message: 'agent restarted' },
          3,
          ['d'],
        );
        assert.deepEqual(failed.map((j) => j.id).sort(), ['a', 'b', 'e']);
        for (const j of failed)
          assert.deepEqual(
            [j.state, j.finishedAt, j.error],
            ['failed', 3, { code: ErrorCodes.AgentDisconnected.code, message: 'agent restarted' }],
          );
        const e = await store.getJob('e');
        assert.deepEqual([e?.state, e?.startedAt, e?.progress], ['failed', 2, { p: 1 }]);
        assert.equal((await store.getJob('c'))?.state, 'cancelled');
        assert.equal((await store.getJob('c'))?.error, null);
        assert.equal((await store.getJob('d'))?.state, 'queued');
        assert.equal((await store.getJob('other'))?.state, 'queued');
        assert.deepEqual(
          await store.failActiveJobsOfAgent(
            inMain('agent-1'),
            { code: ErrorCodes.AgentDisconnected.code, message: 'again' },
            4,
            ['d'],
          ),
          [],
        );

        const all = await store.failAllActiveJobs(
          { code: ErrorCodes.ControllerRestarted.code, message: 'controller restarted' },
          4,
        );
        assert.deepEqual(all.map((j) => j.id).sort(), ['d', 'other']);
        assert.deepEqual((await store.getJob('other'))?.error, {
          code: ErrorCodes.ControllerRestarted.code,
          message: 'controller restarted',
        });
        assert.deepEqual((await store.getJob('a'))?.error, {
          code: ErrorCodes.AgentDisconnected.code,
          message: 'agent restarted',
        });
        assert.deepEqual(
          await store.failAllActiveJobs({ code: ErrorCodes.ControllerRestarted.code, message: 'again' }, 5),
          [],
        );
      });

      test('listJobs is newest first (creation order within a millisecond), filtered and limited', async () => {
        const store = await storeWithCluster();
        await store.upsertCluster({ name: 'other', systemIdentifier: '2', pgVersion: 160000 }, 1);
        await store.createJob({ id: 'x1', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 10);
        await store.createJob({ id: 'x2', cluster: 'other', kind: 'backup', agentId: 'agent-9', params: {} }, 20);
        await store.createJob({ id: 'x3', cluster: 'main', kind: 'restore', agentId: 'agent-1', params: {} }, 30);
        // Same millisecond, ids sorting against creation order.
        await store.createJob({ id: 'y9', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 40);
        await store.createJob({ id: 'y1', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 40);
        assert.deepEqual(
          (await store.listJobs()).map((j) => j.id),
          ['y1', 'y9', 'x3', 'x2', 'x1'],
        );
        assert.deepEqual(
          (await store.listJobs({ cluster: 'main' })).map((j) => j.id),
          ['y1', 'y9', 'x3', 'x1'],
        );
        assert.deepEqual(
          (await store.listJobs({ limit: 1 })).map((j) => j.id),
          ['y1'],
        );
        assert.deepEqual(
          (await store.listJobs({ cluster: 'main', limit: 3 })).map((j) => j.id),
          ['y1', 'y9', 'x3'],
        );
        assert.deepEqual((await store.listJobs({ limit: 0 })).length, 5);
        assert.deepEqual(await store.listJobs({ cluster: 'none' }), []);
        await store.createJob({ id: 'd1', cluster: 'main', kind: 'drill', agentId: 'agent-1', params: {} }, 50);
        await store.createJob({ id: 'c1', cluster: 'main', kind: 'capture', agentId: 'agent-1', params: {} }, 50);
        await store.createJob(
          { id: 'k1', cluster: 'main', kind: 'check', agentId: 'agent-1', params: { timeoutSeconds: 60 } },
          50,
        );
        assert.deepEqual(
          (await store.listJobs({ kind: 'check' })).map((j) => [j.id, j.params]),
          [['k1', { timeoutSeconds: 60 }]],
        );
        assert.deepEqual(
          (await store.listJobs({ cluster: 'main', kind: 'backup' })).map((j) => j.id),
          ['y1', 'y9', 'x1'],
        );
        assert.deepEqual(
          (await store.listJobs({ kind: 'drill' })).map((j) => j.id),
          ['d1'],
        );
        assert.deepEqual(
          (await store.listJobs({ cluster: 'main', kind: 'backup', state: 'queued', limit: 2 })).map((j) => j.id),
          ['y1', 'y9'],
        );
        assert.deepEqual(await store.listJobs({ state: 'running' }), []);
      });
    });

    describe('retention and schedules', () => {
      test('pinning a backup survives reads; an unknown backup is UnknownBackup', async () => {
        const store = await storeWithCluster();
        await store.insertBackup(sampleBackup('b1', 1000, '0/3000000'));
        await store.insertBackup(sampleBackup('b2', 2000, '0/4000000', { pinned: true }));
        assert.deepEqual(
          (await store.listBackups('main')).map((b) => [b.label, b.pinned]),
          [
            ['b1', false],
            ['b2', true],
          ],
        );
        const pinned = await store.setBackupPinned('main', 'b1', true);
        assert.equal(pinned.pinned, true);
        assert.equal((await store.getBackup('main', 'b1'))?.pinned, true);
        assert.equal((await store.setBackupPinned('main', 'b2', false)).pinned, false);
        await assert.rejects(store.setBackupPinned('main', 'nope', true), (err: unknown) =>
          PgfleetError.is(err, 'UnknownBackup'),
        );
        await assert.rejects(store.setBackupPinned('other', 'b1', true), (err: unknown) =>
          PgfleetError.is(err, 'UnknownBackup'),
        );
      });

      test('dumps: listed oldest first, one record per label, the newest per cluster; expired ones leave the listing', async () => {
        const store = await storeWithCluster();
        await store.upsertCluster({ name: 'other', systemIdentifier: '2', pgVersion: 160000 }, 1);
        await store.insertDump(sampleDump('20261207-030000-000L', 3000));
        await store.insertDump(sampleDump('20261207-010000-000L', 1000));
        await store.insertDump(sampleDump('20261207-020000-000L', 2000));
        // The same label again (a retried result) keeps the first record.
        await store.insertDump(sampleDump('20261207-020000-000L', 2000, { jobId: 'retry', sizeBytes: 1 }));
        await store.insertDump(sampleDump('20261207-050000-000L', 5000, { cluster: 'other' }));
        const list = await store.listDumps('main');
        assert.deepEqual(
          list.map((d) => [d.label, d.jobId, d.sizeBytes, d.expiredAt]),
          [
            ['20261207-010000-000L', 'job-20261207-010000-000L', 1000, null],
            ['20261207-020000-000L', 'job-20261207-020000-000L', 1000, null],
            ['20261207-030000-000L', 'job-20261207-030000-000L', 1000, null],
          ],
        );
        assert.deepEqual(list[0]!.result, sampleDump('20261207-010000-000L', 1000).result);
        assert.deepEqual(
          (await store.latestDumps()).map((d) => [d.cluster, d.label]),
          [
            ['main', '20261207-030000-000L'],
            ['other', '20261207-050000-000L'],
          ],
        );
        assert.equal(
          await store.markDumpsExpired('main', ['20261207-030000-000L', '20261207-010000-000L', 'nope'], 7000),
          2,
        );
        assert.equal(await store.markDumpsExpired('main', ['20261207-030000-000L'], 8000), 0, 'expired once');
        assert.deepEqual(
          (await store.listDumps('main')).map((d) => d.label),
          ['20261207-020000-000L'],
        );
        assert.deepEqual(
          (await store.listDumps('main', { includeExpired: true })).map((d) => [d.label, d.expiredAt]),
          [
            ['20261207-010000-000L', 7000],
            ['20261207-020000-000L', null],
            ['20261207-030000-000L', 7000],
          ],
        );
        assert.deepEqual(
          (await store.latestDumps('main')).map((d) => d.label),
          ['20261207-020000-000L'],
        );
        assert.deepEqual(await store.listDumps('ghost'), []);
      });

      test('a dump job succeeds and records its dump in the same step', async () => {
        const store = await storeWithCluster();
        await store.createJob({ id: 'dj', cluster: 'main', kind: 'dump', agentId: 'agent-1', params: {} }, 1);
        await store.transitionJob('dj', 'dispatched', {}, 2);
        await store.transitionJob('dj', 'running', {}, 2);
        const dump = sampleDump('20261207-010000-000L', 3, { jobId: 'dj' });
        const done = await store.transitionJob('dj', 'succeeded', { result: { dump: dump.result }, dump }, 3);
        assert.equal(done.changed, true);
        assert.deepEqual(
          (await store.listDumps('main')).map((d) => [d.label, d.jobId, d.stopTime]),
          [['20261207-010000-000L', 'dj', 3]],
        );
        // A failed dump job records nothing.
        await store.createJob({ id: 'df', cluster: 'main', kind: 'dump', agentId: 'agent-1', params: {} }, 4);
        await store.transitionJob('df', 'failed', { dump: sampleDump('20261207-020000-000L', 5) }, 5);
        assert.equal((await store.listDumps('main')).length, 1);
      });

      test('deleting backup rows removes exactly the named ones of the cluster', async () => {
        const store = await storeWithCluster();
        await store.upsertCluster({ name: 'other', systemIdentifier: '2', pgVersion: 160000 }, 1);
        for (const [l, t] of [
          ['b1', 1000],
          ['b2', 2000],
          ['b3', 3000],
        ] as const)
          await store.insertBackup(sampleBackup(l, t, '0/3000000'));
        await store.insertBackup(sampleBackup('b1', 1000, '0/3000000', { cluster: 'other' }));
        assert.equal(await store.deleteBackups('main', ['b1', 'b3', 'missing']), 2);
        assert.deepEqual(
          (await store.listBackups('main')).map((b) => b.label),
          ['b2'],
        );
        assert.deepEqual(
          (await store.listBackups('other')).map((b) => b.label),
          ['b1'],
        );
        assert.equal(await store.deleteBackups('main', []), 0);
      });

      test('policies: put replaces, get and list (fleet first), delete', async () => {
        const store = await fresh();
        assert.equal(await store.getPolicy(FLEET_POLICY_SCOPE), undefined);
        await store.putPolicy({ scope: 'zeta', schedules: { full: '0 1 * * *' }, retention: {} }, 10);
        await store.putPolicy({ scope: 'Alpha', schedules: {}, retention: { minFull: 3 } }, 11);
        const fleetPolicy = {
          schedules: {
            full: '0 1 * * 0',
            incr: '0 1 * * 1-6',
            drill: '0 3 * * 6',
            spreadMinutes: 30,
            backupFrom: 'prefer-standby',
          },
          retention: { pitrWindowDays: 7.5, daily: 7, weekly: 4 },
          health: { rpoSeconds: 120, silenceSeconds: 30 },
        } as const;
        const fleet = await store.putPolicy({ scope: FLEET_POLICY_SCOPE, ...fleetPolicy }, 12);
        assert.deepEqual(fleet, { scope: '*', ...fleetPolicy, updatedAt: 12 });
        assert.deepEqual(
          (await store.listPolicies()).map((p) => p.scope),
          ['*', 'Alpha', 'zeta'],
        );
        // A whole replacement: keys not given are gone; '' (not scheduled) is kept as such.
        await store.putPolicy({ scope: 'zeta', schedules: { diff: '' }, retention: { daily: 0 } }, 20);
        assert.deepEqual(await store.getPolicy('zeta'), {
          scope: 'zeta',
          schedules: { diff: '' },
          retention: { daily: 0 },
          health: {},
          updatedAt: 20,
        });
        assert.equal(await store.deletePolicy('zeta'), true);
        assert.equal(await store.deletePolicy('zeta'), false);
        assert.equal(await store.getPolicy('zeta'), undefined);
      });

      test('schedule runs are recorded per cluster and type and never move back', async () => {
        const store = await fresh();
        assert.deepEqual(await store.listScheduleRuns(), []);
        await store.recordScheduleRuns([
          { cluster: 'b', type: 'full', lastRun: 1_700_000_000_000 },
          { cluster: 'a', type: 'incr', lastRun: 1_700_000_060_000 },
          { cluster: 'a', type: 'full', lastRun: 1_700_000_060_000 },
          { cluster: 'a', type: 'drill', lastRun: 1_700_000_060_000 },
          { cluster: 'a', type: 'dump-drill', lastRun: 1_700_000_060_000 },
        ]);
        await store.recordScheduleRuns([]);
        // A later run moves it on; an older one (another controller late with its tick) does not move it back.
        await store.recordScheduleRuns([
          { cluster: 'b', type: 'full', lastRun: 1_700_000_120_000 },
          { cluster: 'a', type: 'full', lastRun: 1 },
        ]);
        assert.deepEqual(await store.listScheduleRuns(), [
          { cluster: 'a', type: 'drill', lastRun: 1_700_000_060_000 },
          { cluster: 'a', type: 'dump-drill', lastRun: 1_700_000_060_000 },
          { cluster: 'a', type: 'full', lastRun: 1_700_000_060_000 },
          { cluster: 'a', type: 'incr', lastRun: 1_700_000_060_000 },
          { cluster: 'b', type: 'full', lastRun: 1_700_000_120_000 },
        ]);
        assert.deepEqual(await store.listScheduleRuns('b'), [
          { cluster: 'b', type: 'full', lastRun: 1_700_000_120_000 },
        ]);
        await assert.rejects(store.recordScheduleRuns([{ cluster: 'a', type: 'bogus' as 'full', lastRun: 5 }]));
      });

      test('expire jobs are jobs like the others; active jobs are listed oldest first', async () => {
        const store = await storeWithCluster();
        await store.createJob(
          { id: 'e1', cluster: 'main', kind: 'expire', agentId: 'agent-1', params: { labels: ['b1'] } },
          5,
        );
        await store.createJob({ id: 'b1', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 3);
        await store.createJob({ id: 'b2', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 4);
        await store.transitionJob('b2', 'dispatched', {}, 6);
        await store.transitionJob('b2', 'failed', { error: { code: ErrorCodes.JobFailed.code, message: 'x' } }, 7);
        await store.transitionJob('e1', 'dispatched', {}, 6);
        assert.deepEqual(
          (await store.listActiveJobs()).map((j) => [j.id, j.kind, j.state]),
          [
            ['b1', 'backup', 'queued'],
            ['e1', 'expire', 'dispatched'],
          ],
        );
        await store.transitionJob('e1', 'succeeded', { result: { deleted: 1 } }, 8);
        assert.deepEqual(
          (await store.listActiveJobs()).map((j) => j.id),
          ['b1'],
        );
        await assert.rejects(
          store.createJob({ id: 'x', cluster: 'main', kind: 'bogus' as 'backup', agentId: 'agent-1', params: {} }, 9),
        );
      });
    });

    describe('enrollment and admin tokens', () => {
      test('an enrollment token works once, before it expires, and says why it was refused', async () => {
        const store = await fresh();
        const t = await store.createEnrollmentToken({ tokenHash: 'h1', cluster: 'main', expiresAt: 5000 }, 1000);
        assert.deepEqual(t, {
          tokenHash: 'h1',
          cluster: 'main',
          createdAt: 1000,
          expiresAt: 5000,
          usedAt: null,
          agentId: null,
        });
        await store.createEnrollmentToken({ tokenHash: 'h2', cluster: 'other', expiresAt: 3000 }, 2000);
        assert.deepEqual(await store.useEnrollmentToken('nope', 'a1', 1500), { ok: false, reason: 'unknown' });
        const used = await store.useEnrollmentToken('h1', 'a1', 1500);
        assert.deepEqual(used, { ok: true, token: { ...t, usedAt: 1500, agentId: 'a1' } });
        // Single use: a second agent (or the same one again) is refused, and the first use stays recorded.
        const again = await store.useEnrollmentToken('h1', 'a2', 1600);
        assert.equal(again.ok, false);
        assert.equal(!again.ok && again.reason, 'used');
        assert.equal(!again.ok && again.token?.agentId, 'a1');
        // Expiry is exclusive: at expiresAt the token no longer works, and an expired one is not marked used.
        const late = await store.useEnrollmentToken('h2', 'a3', 3000);
        assert.deepEqual([late.ok, !late.ok && late.reason, !late.ok && late.token?.usedAt], [false, 'expired', null]);
        assert.deepEqual(
          (await store.listEnrollmentTokens()).map((x) => [x.tokenHash, x.cluster, x.agentId]),
          [
            ['h2', 'other', null],
            ['h1', 'main', 'a1'],
          ],
        );
        await assert.rejects(store.createEnrollmentToken({ tokenHash: 'h1', cluster: 'main', expiresAt: 9000 }, 4000));
      });

      test('of agents racing with one enrollment token exactly one wins', async () => {
        const store = await fresh();
        await store.createEnrollmentToken({ tokenHash: 'race', cluster: 'main', expiresAt: 10_000 }, 1);
        const outcomes = await Promise.all(['a', 'b', 'c', 'd'].map((id) => store.useEnrollmentToken('race', id, 2)));
        assert.equal(outcomes.filter((o) => o.ok).length, 1);
      });

      test('admin tokens: found by hash until revoked, names unique among active tokens', async () => {
        const store = await fresh();
        const v = await store.createAdminToken({ id: 't1', name: 'ci', role: 'viewer', tokenHash: 'hv' }, 100);
        assert.deepEqual(v, { id: 't1', name: 'ci', role: 'viewer', tokenHash: 'hv', createdAt: 100, revokedAt: null });
        await store.createAdminToken({ id: 't2', name: 'ops', role: 'operator', tokenHash: 'ho' }, 200);
        assert.deepEqual(await store.findAdminToken('hv'), v);
        assert.equal(await store.findAdminToken('unknown'), undefined);
        await assert.rejects(
          store.createAdminToken({ id: 't3', name: 'ci', role: 'admin', tokenHash: 'hx' }, 300),
          (err: unknown) => PgfleetError.is(err, 'InvalidArgument'),
        );
        await assert.rejects(
          store.createAdminToken({ id: 't3', name: 'bad-role', role: 'root' as 'admin', tokenHash: 'hy' }, 300),
        );
        // By name, then by id; a second revoke finds nothing.
        assert.equal((await store.revokeAdminToken('ci', 400))?.revokedAt, 400);
        assert.equal(await store.revokeAdminToken('ci', 410), undefined);
        assert.equal(await store.findAdminToken('hv'), undefined);
        assert.equal((await store.revokeAdminToken('t2', 420))?.name, 'ops');
        // A revoked token's name can be used again.
        await store.createAdminToken({ id: 't4', name: 'ci', role: 'admin', tokenHash: 'hz' }, 500);
        assert.deepEqual(
          (await store.listAdminTokens()).map((x) => [x.id, x.name, x.role, x.revokedAt]),
          [
            ['t1', 'ci', 'viewer', 400],
            ['t2', 'ops', 'operator', 420],
            ['t4', 'ci', 'admin', null],
          ],
        );
      });
    });

    describe('cluster history', () => {
      test('samples add up into minute and hour buckets (max and mean), and pruning drops one resolution', async () => {
        const store = await fresh();
        const hour = 3_600_000;
        const t0 = 1000 * hour; // a bucket boundary of both resolutions
        await store.recordClusterSample('shop', t0 + 1_000, 10);
        await store.recordClusterSample('shop', t0 + 30_000, 30);
        await store.recordClusterSample('shop', t0 + 90_000, 5);
        await store.recordClusterSample('other', t0 + 1_000, 99);
        const minutes = await store.listClusterHistory('shop', 60, 0);
        assert.deepEqual(
          minutes.map((b) => [b.start - t0, b.rpoMaxSeconds, b.rpoAvgSeconds, b.samples]),
          [
            [0, 30, 20, 2],
            [60_000, 5, 5, 1],
          ],
        );
        const hours = await store.listClusterHistory('shop', 3600, 0);
        assert.deepEqual(
          hours.map((b) => [b.start - t0, b.rpoMaxSeconds, b.rpoAvgSeconds, b.samples]),
          [[0, 30, 15, 3]],
        );
        assert.deepEqual(await store.listClusterHistory('shop', 60, t0 + 60_000).then((l) => l.length), 1);
        assert.equal(await store.pruneClusterHistory(60, t0 + 60_000), 2, "shop's first minute and other's");
        assert.equal((await store.listClusterHistory('shop', 60, 0)).length, 1);
        assert.equal((await store.listClusterHistory('shop', 3600, 0)).length, 1, 'hours are kept');
      });

      test('a batch of samples (a health round) adds up as the same samples one by one', async () => {
        const store = await fresh();
        const t0 = 1000 * 3_600_000;
        // Two samples of one cluster in one bucket within a batch count twice, as they would apart.
        await store.recordClusterSamples([
          { cluster: 'shop', at: t0 + 1_000, rpoSeconds: 10 },
          { cluster: 'other', at: t0 + 1_000, rpoSeconds: 99 },
          { cluster: 'shop', at: t0 + 30_000, rpoSeconds: 30 },
        ]);
        await store.recordClusterSamples([{ cluster: 'shop', at: t0 + 90_000, rpoSeconds: 5 }]);
        await store.recordClusterSamples([]);
        const rows = async (c: string, r: 60 | 3600) =>
          (await store.listClusterHistory(c, r, 0)).map((b) => [
            b.start - t0,
            b.rpoMaxSeconds,
            b.rpoAvgSeconds,
            b.samples,
          ]);
        assert.deepEqual(await rows('shop', 60), [
          [0, 30, 20, 2],
          [60_000, 5, 5, 1],
        ]);
        assert.deepEqual(await rows('shop', 3600), [[0, 30, 15, 3]]);
        assert.deepEqual(await rows('other', 60), [[0, 99, 99, 1]]);
      });
    });

    describe('leadership and lifecycle', () => {
      test('a lone store leads; asking again, releasing and re-taking all work', async () => {
        const store = await fresh();
        assert.equal(await store.tryAcquireLeadership('scheduler'), true);
        assert.equal(await store.tryAcquireLeadership('scheduler'), true);
        assert.equal(await store.tryAcquireLeadership('retention'), true);
        await store.releaseLeadership('scheduler');
        await store.releaseLeadership('scheduler');
        await store.releaseLeadership('never-held');
        assert.equal(await store.tryAcquireLeadership('scheduler'), true);
      });

      test('fencing: each acquisition has a new epoch, and writes carrying an older one are refused', async () => {
        const store = await storeWithCluster();
        assert.equal(store.leadershipFence('scheduler'), undefined, 'not led: no fence');
        await store.tryAcquireLeadership('scheduler');
        const first = store.leadershipFence('scheduler')!;
        await store.tryAcquireLeadership('scheduler');
        assert.deepEqual(store.leadershipFence('scheduler'), first, 'asking again while leading keeps the epoch');
        await store.releaseLeadership('scheduler');
        await store.tryAcquireLeadership('scheduler');
        const second = store.leadershipFence('scheduler')!;
        assert.equal(second.epoch, first.epoch + 1);
        const job = (id: string) => ({ id, cluster: 'main', kind: 'backup' as const, agentId: 'agent-1', params: {} });
        // The ex-leader's fire and run record: refused, nothing written.
        await assert.rejects(store.createJobIfIdle('main', ['backup'], job('j-old'), 1, first), (err: unknown) =>
          PgfleetError.is(err, 'LeadershipLost'),
        );
        await assert.rejects(
          store.recordScheduleRuns([{ cluster: 'main', type: 'full', lastRun: 5 }], first),
          (err: unknown) => PgfleetError.is(err, 'LeadershipLost'),
        );
        assert.equal(await store.getJob('j-old'), undefined);
        assert.deepEqual(await store.listScheduleRuns('main'), []);
        // The current leader's go through.
        await store.createJobIfIdle('main', ['backup'], job('j-new'), 1, second);
        await store.recordScheduleRuns([{ cluster: 'main', type: 'full', lastRun: 5 }], second);
        assert.equal((await store.getJob('j-new'))?.state, 'queued');
        assert.equal((await store.listScheduleRuns('main')).length, 1);
        // The outbox publisher's mark, likewise.
        await store.appendEvents([
          { id: 'ev-fenced', cluster: 'main', kind: 'backup.completed', time: 1, payload: new Uint8Array([1]) },
        ]);
        const [ev] = await store.nextUnsentEvents(10);
        await assert.rejects(store.markEventsSent([ev!.seq], 2, first), (err: unknown) =>
          PgfleetError.is(err, 'LeadershipLost'),
        );
        assert.equal((await store.nextUnsentEvents(10)).length, 1, 'still unsent');
        await store.markEventsSent([ev!.seq], 2, second);
        assert.deepEqual(await store.nextUnsentEvents(10), []);
      });

      test('fencing: a health state (and its event) written with an old health epoch is refused', async () => {
        const store = await storeWithCluster();
        await store.tryAcquireLeadership('health');
        const first = store.leadershipFence('health')!;
        await store.releaseLeadership('health');
        await store.tryAcquireLeadership('health');
        const second = store.leadershipFence('health')!;
        const breached = { cluster: 'main', condition: 'rpo', state: 'breached' as const, since: 5, data: null };
        const event = (id: string) => ({
          id,
          cluster: 'main',
          kind: 'rpo.breached',
          time: 5,
          payload: new Uint8Array([1]),
        });
        await assert.rejects(store.putHealthState(breached, [event('ev-old')], first), (err: unknown) =>
          PgfleetError.is(err, 'LeadershipLost'),
        );
        assert.deepEqual(await store.listHealthStates('main'), []);
        assert.deepEqual(await store.nextUnsentEvents(10), [], 'no event either');
        await store.putHealthState(breached, [event('ev-new')], second);
        assert.deepEqual(
          (await store.listHealthStates('main')).map((h) => h.state),
          ['breached'],
        );
        assert.deepEqual(
          (await store.nextUnsentEvents(10)).map((e) => e.id),
          ['ev-new'],
        );
      });

      test('close is idempotent', async () => {
        const store = await fresh();
        await store.tryAcquireLeadership('scheduler');
        await store.close();
        await store.close();
      });
    });
    describe('controllers and agent streams', () => {
      test('controllers beat and are listed; a clean stop forgets one with what it held', async () => {
        const store = await storeWithCluster();
        await store.heartbeatController({ id: 'c1', address: 'h1:7420', startedAt: 10, lastSeen: 10 });
        await store.tryAcquireLeadership('scheduler');
        await store.tryAcquireLeadership('health');
        await store.heartbeatController({ id: 'c1', address: 'h1:7420', startedAt: 99, lastSeen: 20 });
        assert.deepEqual(await store.listControllers(), [
          { id: 'c1', address: 'h1:7420', startedAt: 10, lastSeen: 20, leads: ['health', 'scheduler'] },
        ]);
        await store.holdAgentStream(inMain('agent-1'), 'c1', 21);
        assert.deepEqual(await store.listAgentStreams(), [
          { cluster: 'main', agentId: 'agent-1', controllerId: 'c1', since: 21 },
        ]);
        await store.removeController('c1');
        assert.deepEqual([await store.listControllers(), await store.listAgentStreams()], [[], []]);
      });

      test('a Hello (connectAgents of one) records cluster, stream and agent together, or nothing on a system mismatch', async () => {
        const store = await storeWithCluster();
        await store.setAgentConnected(inMain('agent-1'), false, 1500);
        const hello = {
          id: 'agent-1',
          cluster: 'main',
          hostname: 'db1b',
          version: '0.2.0',
          systemIdentifier: '7300000000000000001',
          pgVersion: 170005,
        };
        await connectAgent(store, hello, 'c1', 2000, [
          { id: 'e-hello', cluster: 'main', kind: 'agent.connected', time: 2000, payload: new Uint8Array([1]) },
        ]);
        const a = await store.getAgent(inMain('agent-1'));
        assert.deepEqual([a?.hostname, a?.version, a?.connected, a?.lastSeen], ['db1b', '0.2.0', true, 2000]);
        assert.equal((await store.getCluster('main'))?.pgVersion, 170005);
        assert.deepEqual(await store.listAgentStreams('main'), [
          { cluster: 'main', agentId: 'agent-1', controllerId: 'c1', since: 2000 },
        ]);
        assert.deepEqual(
          (await store.listEvents({})).map((e) => e.id),
          ['e-hello'],
        );
        // A new cluster and its first agent.
        await connectAgent(store, { ...hello, cluster: 'fresh', systemIdentifier: '42' }, 'c2', 2100);
        assert.equal((await store.getCluster('fresh'))?.createdAt, 2100);
        assert.equal((await store.getAgent({ cluster: 'fresh', agentId: 'agent-1' }))?.connected, true);
        // Another system under a known name: refused before anything about the agent is written.
        await assert.rejects(
          connectAgent(store, { ...hello, id: 'intruder', systemIdentifier: '999' }, 'c3', 3000, [
            { id: 'e-intruder', cluster: 'main', kind: 'agent.connected', time: 3000, payload: new Uint8Array([2]) },
          ]),
          (err: unknown) => PgfleetError.is(err, 'SystemIdMismatch'),
        );
        assert.equal(await store.getAgent(inMain('intruder')), undefined);
        assert.deepEqual(
          (await store.listAgentStreams('main')).map((s) => s.agentId),
          ['agent-1'],
        );
        assert.ok(!(await store.listEvents({})).some((e) => e.id === 'e-intruder'));
        assert.equal((await store.getCluster('main'))?.pgVersion, 170005);
      });

      test('Hellos in one batch (connectAgents): each as connectAgent alone, a refused one writing nothing', async () => {
        const store = await storeWithCluster();
        const main = (await store.getCluster('main'))!;
        const hello = (id: string, cluster: string, systemIdentifier: string, pgVersion: number) => ({
          id,
          cluster,
          hostname: `${id}.host`,
          version: '0.3.0',
          systemIdentifier,
          pgVersion,
        });
        const event = (id: string, cluster: string) => ({
          id,
          cluster,
          kind: 'agent.connected',
          time: 4000,
          payload: new Uint8Array([id.length]),
        });
        const outcomes = await store.connectAgents(
          [
            { agent: hello('a1', 'main', main.systemIdentifier, 170007), events: [event('e1', 'main')] },
            // A new cluster: its first Hello sets its system, a later one of another system is refused.
            { agent: hello('b1', 'new-1', '501', 160001), events: [event('e2', 'new-1')] },
            { agent: hello('intruder', 'main', '999', 170009), events: [event('e3', 'main')] },
            { agent: hello('b2', 'new-1', '502', 160002), events: [event('e4', 'new-1')] },
            // The same agent twice (a reconnect): the last Hello's figures, one stream, both events.
            { agent: { ...hello('b1', 'new-1', '501', 160003), hostname: 'moved' }, events: [event('e5', 'new-1')] },
            { agent: hello("q'uote\\", 'new-2', '601', 150000) },
          ],
          'c9',
          4000,
        );
        assert.deepEqual(
          outcomes.map((e) => (e === undefined ? 'ok' : PgfleetError.is(e, 'SystemIdMismatch') ? 'mismatch' : e)),
          ['ok', 'ok', 'mismatch', 'mismatch', 'ok', 'ok'],
        );
        assert.match(String(outcomes[2]?.message), /registered with system identifier .* but the agent reports 999/);
        assert.deepEqual(
          [await store.getCluster('main'), await store.getCluster('new-1'), await store.getCluster('new-2')].map(
            (c) => [c?.systemIdentifier, c?.pgVersion, c?.createdAt],
          ),
          [
            [main.systemIdentifier, 170007, main.createdAt],
            ['501', 160003, 4000],
            ['601', 150000, 4000],
          ],
        );
        const b1 = await store.getAgent({ cluster: 'new-1', agentId: 'b1' });
        assert.deepEqual([b1?.hostname, b1?.connected, b1?.lastSeen], ['moved', true, 4000]);
        assert.equal((await store.getAgent({ cluster: 'main', agentId: 'a1' }))?.connected, true);
        assert.equal((await store.getAgent({ cluster: 'new-2', agentId: "q'uote\\" }))?.hostname, "q'uote\\.host");
        assert.equal(await store.getAgent(inMain('intruder')), undefined);
        assert.equal(await store.getAgent({ cluster: 'new-1', agentId: 'b2' }), undefined);
        assert.deepEqual(
          (await store.listAgentStreams()).map((s) => [s.cluster, s.agentId, s.controllerId, s.since]),
          [
            ['main', 'a1', 'c9', 4000],
            ['new-1', 'b1', 'c9', 4000],
            ['new-2', "q'uote\\", 'c9', 4000],
          ],
        );
        const events = await store.listEvents({});
        assert.deepEqual(
          events.map((e) => e.id),
          ['e1', 'e2', 'e5'],
        );
        assert.deepEqual([...events[2]!.payload], [2]);
        // Every Hello refused: nothing written, no failure.
        assert.deepEqual(
          (await store.connectAgents([{ agent: hello('x', 'main', '1', 1) }], 'c9', 5000)).map((e) =>
            PgfleetError.is(e, 'SystemIdMismatch'),
          ),
          [true],
        );
        assert.deepEqual(await store.connectAgents([], 'c9', 5000), []);
      });

      test("the streams of one cluster: only that cluster's, by agent", async () => {
        const store = await storeWithCluster();
        await store.upsertAgent({ id: 'agent-0', cluster: 'main', hostname: 'db0', version: '0.1.0' }, 1000);
        await store.upsertCluster({ name: 'other', systemIdentifier: '7300000000000000002', pgVersion: 170002 }, 1000);
        await store.upsertAgent({ id: 'agent-1', cluster: 'other', hostname: 'db9', version: '0.1.0' }, 1000);
        await store.holdAgentStream({ cluster: 'other', agentId: 'agent-1' }, 'c2', 5);
        await store.holdAgentStream(inMain('agent-1'), 'c1', 6);
        await store.holdAgentStream(inMain('agent-0'), 'c2', 7);
        assert.deepEqual(
          (await store.listAgentStreams('main')).map((s) => [s.cluster, s.agentId, s.controllerId]),
          [
            ['main', 'agent-0', 'c2'],
            ['main', 'agent-1', 'c1'],
          ],
        );
        assert.deepEqual(await store.listAgentStreams('ghost'), []);
        assert.equal((await store.listAgentStreams()).length, 3);
      });

      test('a stream released by a controller that no longer holds it stays with the new holder', async () => {
        const store = await storeWithCluster();
        await store.holdAgentStream(inMain('agent-1'), 'c1', 1);
        await store.holdAgentStream(inMain('agent-1'), 'c2', 2);
        assert.equal(await store.releaseAgentStream(inMain('agent-1'), 'c1'), false);
        assert.deepEqual(
          (await store.listAgentStreams()).map((s) => s.controllerId),
          ['c2'],
        );
        assert.equal(await store.releaseAgentStream(inMain('agent-1'), 'c2'), true);
        assert.equal(await store.releaseAgentStream(inMain('agent-1'), 'c2'), true, 'nothing held: nothing to keep');
        assert.deepEqual(await store.listAgentStreams(), []);
      });

      test('a controller taken for dead while it paused holds its open streams again, not those that moved', async () => {
        const store = await storeWithCluster();
        await store.upsertAgent({ id: 'agent-2', cluster: 'main', hostname: 'db2', version: '0.1.0' }, 1000);
        await store.heartbeatController({ id: 'paused', address: 'h:1', startedAt: 1, lastSeen: 1 });
        await store.heartbeatController({ id: 'other', address: 'h:2', startedAt: 1, lastSeen: 5000 });
        await store.holdAgentStream(inMain('agent-1'), 'paused', 2);
        await store.holdAgentStream(inMain('agent-2'), 'paused', 2);
        // 'other' takes 'paused' for dead; meanwhile agent-2 really moved to 'other'.
        assert.equal((await store.releaseDeadStreams('other', 4000, 5000)).length, 2);
        await store.holdAgentStream(inMain('agent-2'), 'other', 5001);
        await store.upsertAgent({ id: 'agent-2', cluster: 'main', hostname: 'db2', version: '0.1.0' }, 5001);
        assert.deepEqual(await store.reholdAgentStreams('paused', [inMain('agent-1'), inMain('agent-2')], 6000), [
          inMain('agent-1'),
        ]);
        assert.deepEqual(
          (await store.listAgentStreams()).map((s) => [s.agentId, s.controllerId]),
          [
            ['agent-1', 'paused'],
            ['agent-2', 'other'],
          ],
        );
        assert.deepEqual(
          (await store.listAgents('main')).map((a) => [a.id, a.connected]),
          [
            ['agent-1', true],
            ['agent-2', true],
          ],
        );
        assert.deepEqual(await store.reholdAgentStreams('paused', [inMain('agent-1')], 7000), [], 'all held already');
      });

      test('a scheduled job and the record of its fire time are created together', async () => {
        const store = await storeWithCluster();
        const runs = [
          { cluster: 'main', type: 'full' as const, lastRun: 60_000 },
          { cluster: 'main', type: 'incr' as const, lastRun: 60_000 },
        ];
        const job = { id: 'sched-1', cluster: 'main', kind: 'backup' as const, agentId: 'agent-1', params: {} };
        await store.createJobIfIdle('main', ['backup'], job, 61_000, undefined, runs);
        assert.deepEqual(
          (await store.listScheduleRuns('main')).map((r) => [r.type, r.lastRun]),
          [
            ['full', 60_000],
            ['incr', 60_000],
          ],
        );
        // Busy: neither a second job nor a later run is recorded.
        await assert.rejects(
          store.createJobIfIdle('main', ['backup'], { ...job, id: 'sched-2' }, 121_000, undefined, [
            { cluster: 'main', type: 'full', lastRun: 120_000 },
          ]),
        );
        assert.deepEqual(
          (await store.listScheduleRuns('main')).map((r) => [r.type, r.lastRun]),
          [
            ['full', 60_000],
            ['incr', 60_000],
          ],
        );
      });

      test('a job records the controller that sends it; a claim moves it to another only while queued', async () => {
        const store = await storeWithCluster();
        const job = backupJobSentBy;
        assert.equal((await store.createJob(job('a', 'c1'), 1)).dispatcher, 'c1');
        assert.equal((await store.createJobIfIdle('main', ['restore'], job('b', 'c1'), 2)).dispatcher, 'c1');
        assert.equal((await store.createJob(job('waits'), 3)).dispatcher, null, 'nobody sends it yet');
        assert.equal((await store.claimJobDispatch('waits', 'c2')).dispatcher, 'c2');
        assert.equal((await store.getJob('waits'))?.dispatcher, 'c2');
        // Sent: the claim of another controller changes nothing and says the job is not queued.
        await store.transitionJob('a', 'dispatched', {}, 4);
        const late = await store.claimJobDispatch('a', 'c2');
        assert.deepEqual([late.state, late.dispatcher], ['dispatched', 'c1']);
        await assert.rejects(store.claimJobDispatch('ghost', 'c2'), (err: unknown) =>
          PgfleetError.is(err, 'UnknownJob'),
        );
      });

      test("a dead controller's queued jobs fail after the grace, unless claimed; live, own and unowned ones stay", async () => {
        const store = await storeWithCluster();
        await store.heartbeatController({ id: 'dead', address: 'h:1', startedAt: 1, lastSeen: 1_000 });
        await store.heartbeatController({ id: 'live', address: 'h:2', startedAt: 1, lastSeen: 30_000 });
        const job = backupJobSentBy;
        await store.createJob(job('lost', 'dead'), 900);
        await store.createJob(job('claimed', 'dead'), 900);
        await store.createJob(job('sent', 'dead'), 900);
        await store.createJob(job('gone', 'removed'), 900); // its controller stopped cleanly: no row
        await store.createJob(job('new', 'removed'), 25_000); // created after deadBefore: its agent still has time
        await store.createJob(job('of-live', 'live'), 900);
        await store.createJob(job('mine', 'me'), 900);
        await store.createJob(job('waits'), 900);
        await store.transitionJob('sent', 'dispatched', {}, 950);
        // The agent reports progress on a job still queued: it has it, so it is running (through dispatched).
        const events = (j: { id: string }): OutboxEventInput[] => [
          { id: `ev-${j.id}`, cluster: 'main', kind: 'backup.started', time: 1, payload: new Uint8Array([1]) },
        ];
        const p = await store.updateJobProgress('claimed', { phase: 'copy' }, 20_000, events);
        assert.deepEqual([p.changed, p.job.state, p.job.startedAt], [true, 'running', 20_000]);
        const error = { code: ErrorCodes.DispatcherLost.code, message: 'lost' };
        const failedEvents = (j: { id: string }): OutboxEventInput[] => [
          { id: `fail-${j.id}`, cluster: 'main', kind: 'backup.failed', time: 2, payload: new Uint8Array([2]) },
        ];
        const failed = await store.failLostDispatches('me', 20_000, error, 30_000, failedEvents);
        assert.deepEqual(failed.map((j) => j.id).sort(), ['gone', 'lost']);
        assert.deepEqual([failed[0]!.state, failed[0]!.error, failed[0]!.finishedAt], ['failed', error, 30_000]);
        const states = Object.fromEntries((await store.listJobs()).map((j) => [j.id, j.state]));
        assert.deepEqual(states, {
          lost: 'failed',
          claimed: 'running',
          sent: 'dispatched',
          gone: 'failed',
          new: 'queued',
          'of-live': 'queued',
          mine: 'queued',
          waits: 'queued',
        });
        assert.deepEqual(
          (await store.listEvents()).map((e) => e.id),
          ['ev-claimed', 'fail-lost', 'fail-gone'],
        );
        assert.deepEqual(await store.failLostDispatches('me', 20_000, error, 31_000), [], 'once');
      });

      test('a lost dispatch is failed only under the current leadership (fence)', async () => {
        const store = await storeWithCluster();
        assert.equal(await store.tryAcquireLeadership('scheduler'), true);
        const fence = store.leadershipFence('scheduler')!;
        await store.createJob(
          { id: 'lost', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {}, dispatcher: 'dead' },
          1,
        );
        const error = { code: ErrorCodes.DispatcherLost.code, message: 'lost' };
        const stale = { name: 'scheduler', epoch: fence.epoch - 1 };
        await assert.rejects(store.failLostDispatches('me', 100, error, 200, undefined, stale), (err: unknown) =>
          PgfleetError.is(err, 'LeadershipLost'),
        );
        assert.equal((await store.getJob('lost'))?.state, 'queued');
        assert.equal((await store.failLostDispatches('me', 100, error, 200, undefined, fence)).length, 1);
      });

      test('messages left for a controller are taken once, in order, by that controller only', async () => {
        const store = await storeWithCluster();
        await store.queueAgentMessage('c2', inMain('agent-1'), new Uint8Array([1]), 1);
        await store.queueAgentMessage('c3', inMain('agent-1'), new Uint8Array([9]), 2);
        await store.queueAgentMessage('c2', inMain('agent-1'), new Uint8Array([2, 3]), 3);
        const taken = await store.takeAgentMessages('c2', 10);
        assert.deepEqual(
          taken.map((m) => [m.cluster, m.agentId, [...m.payload]]),
          [
            ['main', 'agent-1', [1]],
            ['main', 'agent-1', [2, 3]],
          ],
        );
        assert.deepEqual(await store.takeAgentMessages('c2', 10), []);
        assert.deepEqual(
          (await store.takeAgentMessages('c3', 1)).map((m) => [...m.payload]),
          [[9]],
        );
      });

      test("at start, agents held by no live controller are disconnected and dead controllers' leftovers go", async () => {
        const store = await storeWithCluster(); // agent-1 of main is connected, held by nobody
        await store.upsertAgent({ id: 'agent-2', cluster: 'main', hostname: 'db2', version: '0.1.0' }, 1000);
        await store.heartbeatController({ id: 'old', address: 'h:1', startedAt: 1, lastSeen: 1 });
        await store.heartbeatController({ id: 'me', address: 'h:2', startedAt: 5000, lastSeen: 5000 });
        await store.holdAgentStream(inMain('agent-2'), 'old', 2);
        await store.queueAgentMessage('old', inMain('agent-2'), new Uint8Array([1]), 3);
        const gone = await store.releaseDeadStreams('me', 4000, 5000);
        assert.deepEqual(gone.map((a) => a.agentId).sort(), ['agent-1', 'agent-2']);
        assert.deepEqual(
          (await store.listAgents('main')).map((a) => [a.id, a.connected]),
          [
            ['agent-1', false],
            ['agent-2', false],
          ],
        );
        assert.deepEqual(await store.listAgentStreams(), []);
        assert.deepEqual(await store.takeAgentMessages('old', 10), []);
      });
    });
    describe('events outbox', () => {
      const ev = (id: string, cluster = 'main', kind = 'backup.completed', time = 1): OutboxEventInput => ({
        id,
        cluster,
        kind,
        time,
        payload: new Uint8Array([1, 2, id.length]),
      });

      test('events commit with the job transition, and a failing transition writes none', async () => {
        const store = await storeWithCluster();
        await store.createJob({ id: 'j', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 1);
        await store.transitionJob('j', 'dispatched', { events: [ev('e-start', 'main', 'backup.started')] }, 2);
        await store.updateJobProgress('j', {}, 3);
        // The backup row is bad (unknown cluster): the whole transaction, event included, rolls back.
        await assert.rejects(
          store.transitionJob(
            'j',
            'succeeded',
            { backup: sampleBackup('b', 4, '0/3000000', { cluster: 'ghost' }), events: [ev('e-lost')] },
            4,
          ),
        );
        // An illegal transition writes nothing either.
        await assert.rejects(store.transitionJob('j', 'queued', { events: [ev('e-illegal')] }, 4));
        // A repeated (no-op) transition does not write its events.
        await store.transitionJob('j', 'running', { events: [ev('e-noop')] }, 4);
        await store.transitionJob(
          'j',
          'succeeded',
          { backup: sampleBackup('b', 5, '0/3000000'), events: [ev('e-done')] },
          5,
        );
        assert.deepEqual(
          (await store.listEvents()).map((e) => e.id),
          ['e-start', 'e-done'],
        );
        const [first] = await store.listEvents({ limit: 1 });
        assert.deepEqual([...first!.payload], [1, 2, 7]);
        assert.equal(first!.kind, 'backup.started');
        assert.equal(first!.sentAt, null);
      });

      test('agent connect/disconnect, failed jobs and health states carry their events', async () => {
        const store = await storeWithCluster();
        await store.upsertAgent({ id: 'agent-2', cluster: 'main', hostname: 'db2', version: '0.1.0' }, 2, [
          ev('c1', 'main', 'agent.connected'),
        ]);
        await store.setAgentConnected(inMain('agent-2'), false, 3, [ev('d1', 'main', 'agent.disconnected')]);
        await store.createJob({ id: 'x', cluster: 'main', kind: 'backup', agentId: 'agent-2', params: {} }, 4);
        await store.createJob({ id: 'y', cluster: 'main', kind: 'backup', agentId: 'agent-1', params: {} }, 4);
        await store.failActiveJobsOfAgent(
          inMain('agent-2'),
          { code: ErrorCodes.AgentDisconnected.code, message: 'gone' },
          5,
          [],
          (job) => [ev(`f-${job.id}`, job.cluster, 'backup.failed')],
        );
        await store.failAllActiveJobs({ code: ErrorCodes.ControllerRestarted.code, message: 'restart' }, 6, (job) => [
          ev(`f-${job.id}`, job.cluster, 'backup.failed'),
        ]);
        await store.putHealthState({ cluster: 'main', condition: 'rpo', state: 'breached', since: 7, data: { n: 1 } }, [
          ev('h1', 'main', 'rpo.breached'),
        ]);
        assert.deepEqual(await store.listHealthStates('main'), [
          { cluster: 'main', condition: 'rpo', state: 'breached', since: 7, data: { n: 1 } },
        ]);
        await store.putHealthState({ cluster: 'main', condition: 'rpo', state: 'ok', since: 8, data: null });
        assert.equal((await store.listHealthStates())[0]!.state, 'ok');
        assert.deepEqual(await store.listHealthStates('other'), []);
        assert.deepEqual(
          (await store.listEvents()).map((e) => e.id),
          ['c1', 'd1', 'f-x', 'f-y', 'h1'],
        );
        assert.deepEqual(await store.countJobs(), [{ cluster: 'main', kind: 'backup', state: 'failed', count: 2 }]);
      });

      test('nextUnsentEvents / markEventsSent / listEvents by cluster and seq', async () => {
        const store = await fresh();
        await store.appendEvents([ev('a1', 'a'), ev('b1', 'b'), ev('a2', 'a'), ev('b2', 'b')]);
        const batch = await store.nextUnsentEvents(3);
        assert.deepEqual(
          batch.map((e) => e.id),
          ['a1', 'b1', 'a2'],
        );
        assert.ok(batch[0]!.seq < batch[1]!.seq && batch[1]!.seq < batch[2]!.seq);
        await store.markEventsSent([batch[0]!.seq, batch[1]!.seq], 50);
        await store.markEventsSent([batch[0]!.seq], 60); // twice: harmless, keeps the first time
        assert.deepEqual(
          (await store.nextUnsentEvents(10)).map((e) => e.id),
          ['a2', 'b2'],
        );
        const all = await store.listEvents();
        assert.equal(all[0]!.sentAt, 50);
        assert.deepEqual(
          (await store.listEvents({ cluster: 'a' })).map((e) => e.id),
          ['a1', 'a2'],
        );
        assert.deepEqual(
          (await store.listEvents({ afterSeq: all[1]!.seq })).map((e) => e.id),
          ['a2', 'b2'],
        );
        assert.deepEqual(
          (await store.listEvents({ limit: 1, cluster: 'b' })).map((e) => e.id),
          ['b1'],
        );
        assert.deepEqual(
          (await store.listLatestEvents({ limit: 2 })).map((e) => e.id),
          ['a2', 'b2'],
        );
        // Event ids are unique: a second append of the same id fails and writes nothing of its batch.
        await assert.rejects(store.appendEvents([ev('new'), ev('a1')]));
        assert.equal((await store.listEvents()).length, 4);
      });
    });
  });
}
