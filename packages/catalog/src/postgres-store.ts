/**
 * The shared catalog: PostgreSQL through a node-postgres pool, for several controllers on one
 * catalog (HA). Same interface, migrations, state machine and test suite as the SQLite store;
 * what differs is concurrency, since another controller may change any row between two
 * statements of ours:
 * - a job transition reads the row with SELECT ... FOR UPDATE and decides with the row locked,
 *   so of two controllers moving one job, the second sees the first's outcome (READ COMMITTED
 *   re-reads a row it waited for) and gets JobStateConflict or an idempotent no-op;
 * - multi-row changes are one statement (upsert with ON CONFLICT, UPDATE ... FROM a locked set);
 * - migrations run under a transaction-scoped advisory lock, so controllers starting together
 *   apply each version once;
 * - scheduler leadership is a session advisory lock on a connection of its own, outside the pool,
 *   so it lives exactly as long as that session.
 */
import pg from 'pg';
import { PgfleetError } from '@pgfleet/core';
import { checkJobTransition, clusterBusyError, existingJobFor, FAILABLE_JOB_STATES } from './job-state.js';
import { CATALOG_SCHEMA_VERSION, POSTGRES_MIGRATIONS } from './migrations.js';
import {
  adminTokenFromRow,
  adminTokenNameTaken,
  backupRowParams,
  healthStateFromRow,
  insertBackupSql,
  insertDumpSql,
  dumpFromRow,
  dumpRowParams,
  type DumpRow,
  insertOutboxEventSql,
  outboxEventFromRow,
  outboxEventParams,
  type HealthStateRow,
  type OutboxEventRow,
  type SqlDialect,
  enrollmentRefusal,
  enrollmentTokenFromRow,
  type AdminTokenRow,
  type EnrollmentTokenRow,
  agentFromRow,
  backupFromRow,
  clusterFromRow,
  encodeJson,
  jobFromRow,
  jobWhere,
  policyFromRow,
  scheduleRunFromRow,
  type AgentRow,
  type AgentMessageRow,
  type AgentStreamRow,
  type ControllerRow,
  agentMessageRow,
  agentStreamRow,
  controllerRow,
  type BackupRow,
  type ClusterRow,
  type JobRow,
  type PolicyRow,
  type ScheduleRunRow,
  clusterHistoryFromRow,
  historyBucketStart,
  type ClusterHistoryRow,
} from './rows.js';
import {
  isTerminalJobState,
  type AdminRole,
  type AdminTokenRecord,
  type EnrollmentTokenRecord,
  type EnrollmentTokenUse,
  type AgentMessageRecord,
  type AgentRecord,
  type AgentStreamRecord,
  type ControllerRecord,
  type LeadershipFence,
  type AgentRef,
  type AgentHeartbeat,
  type ConnectingAgent,
  type ConnectingHello,
  agentRefKey,
  foldHeartbeats,
  type BackupRecord,
  type CatalogStore,
  type ClusterRecord,
  type ClusterPage,
  type ClusterSample,
  type ClusterSelection,
  type JobError,
  type JobRecord,
  type JobStateName,
  type JobKind,
  type NewJob,
  type PolicyRecord,
  type JobFilter,
  type PolicyHealth,
  type PolicyRetention,
  type PolicySchedules,
  type ScheduleRunRecord,
  type DumpRecord,
  type TransitionOptions,
  type TransitionOutcome,
  type HealthStateRecord,
  type ClusterHistoryBucket,
  type HistoryResolution,
  HISTORY_RESOLUTIONS,
  type JobEventsFactory,
  type OutboxEventInput,
  type OutboxEventRecord,
} from './store.js';

export interface PostgresCatalogOptions {
  /** Pool size; default 10. */
  maxConnections?: number;
  /** Milliseconds to wait for a new connection; default 10000. */
  connectTimeoutMs?: number;
  /** application_name shown in pg_stat_activity; default 'pgfleet-controller'. */
  applicationName?: string;
}

/**
 * Advisory lock keys use the two-int4 form (class, object): that key space does not overlap the
 * single-bigint one other applications on the same server most often use, and the class keeps
 * the migration lock apart from any leadership name's hashtext(). 0x706766xx reads 'pgf'.
 */
export const MIGRATION_LOCK_CLASS = 0x70676601;
export const LEADERSHIP_LOCK_CLASS = 0x70676602;
/** createJobIfIdle: one creator per cluster at a time (object = hashtext(cluster)). */
export const CLUSTER_JOBS_LOCK_CLASS = 0x70676603;

const INT8_OID = 20;
/**
 * BIGINT columns hold ms timestamps and byte counts, far below 2^53, so they are read as numbers
 * (node-postgres returns strings by default). NUMERIC (the LSN sort keys) stays a string.
 */
const types: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === INT8_OID && format !== 'binary'
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format as 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

/** JSONB arrives parsed; SQL NULL stays null. */
const decodeJson = (value: unknown): unknown => value ?? null;
const dialect: SqlDialect = {
  param: (n) => `$${n}`,
  bool: (value) => value,
  inNames: (column, n) => `${column} = ANY($${n}::text[])`,
  namesParam: (names) => [...names],
};
/** `cluster` is one of the names bound as the statement's first parameter. */
const IN_NAMES = dialect.inNames('cluster', 1);
const agentRow = (r: AgentRow): AgentRecord => agentFromRow(r, decodeJson);
const jobRow = (r: JobRow): JobRecord => jobFromRow(r, decodeJson);

/** The URL with any password masked, for messages and logs. */
export function redactCatalogUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    if (u.searchParams.has('password')) u.searchParams.set('password', '***');
    return u.toString();
  } catch {
    return url.replace(/(\/\/[^:/@]*:)[^@]*@/, '$1***@').replace(/(password=)[^&]*/gi, '$1***');
  }
}

/** SQLSTATE classes 08 (connection), 28 (authorization), 3D (no such database), 57P0x (server shutting down). */
function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    if (/^(08|28|3D)/.test(code) || /^57P0[1-3]$/.test(code)) return true;
    if (/^E[A-Z]+$/.test(code)) return true; // Node socket errors: ECONNREFUSED, ENOTFOUND, ...
  }
  return (
    err instanceof Error &&
    /Connection terminated|timeout expired|Client was closed|Cannot use a pool after/i.test(err.message)
  );
}

const UNREACHABLE_HINT = 'Check the catalog URL (--catalog) and that its PostgreSQL server is running and reachable.';

export class PostgresCatalogStore implements CatalogStore {
  /** The catalog URL with any password masked. */
  readonly url: string;
  private readonly connectionString: string;
  private readonly pool: pg.Pool;
  private readonly options: PostgresCatalogOptions;
  /** Leadership name -> the dedicated session holding its advisory lock. */
  private readonly leaders = new Map<string, pg.Client>();
  /** The epoch of each leadership's current acquisition (leadership_epochs), while held. */
  private readonly epochs = new Map<string, number>();
  /** Serialises acquire/release per name, so one store never competes with itself for a lock. */
  private readonly leadershipQueue = new Map<string, Promise<unknown>>();
  private closing: Promise<void> | undefined;

  private constructor(connectionString: string, pool: pg.Pool, options: PostgresCatalogOptions) {
    this.connectionString = connectionString;
    this.url = redactCatalogUrl(connectionString);
    this.pool = pool;
    this.options = options;
  }

  /** Connects to the catalog database and applies pending migrations. */
  static async open(connectionString: string, options: PostgresCatalogOptions = {}): Promise<PostgresCatalogStore> {
    const pool = new pg.Pool({
      connectionString,
      max: options.maxConnections ?? 10,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
      application_name: options.applicationName ?? 'pgfleet-controller',
      types,
    });
    // An idle pooled connection that breaks (server restart) must not crash the controller: the
    // pool drops it, and the next query opens a new one or fails with a PgConnectFailed.
    pool.on('error', () => {});
    const store = new PostgresCatalogStore(connectionString, pool, options);
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (err) {
      await pool.end().catch(() => {});
      throw new PgfleetError('PgConnectFailed', `catalog ${store.url} cannot be opened: ${(err as Error).message}`, {
        cause: err,
        hint: UNREACHABLE_HINT,
      });
    }
    try {
      await migrate(client);
      client.release();
    } catch (err) {
      client.release(true);
      await pool.end().catch(() => {});
      throw store.error(err);
    }
    return store;
  }

  /** The applied schema version (for tests and diagnostics). */
  async schemaVersion(): Promise<number> {
    const rows = await this.query<{ v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations');
    return rows[0]?.v ?? 0;
  }

  async close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.all([...this.leaders.keys()].map((name) => this.releaseLeadership(name).catch(() => {})));
      await this.pool.end();
    })();
    return this.closing;
  }

  async upsertCluster(
    c: { name: string; systemIdentifier: string; pgVersion: number },
    now: number,
  ): Promise<ClusterRecord> {
    return this.upsertClusterWith(this.pool, c, now);
  }

  private async upsertClusterWith(
    db: pg.Pool | pg.PoolClient,
    c: { name: string; systemIdentifier: string; pgVersion: number },
    now: number,
  ): Promise<ClusterRecord> {
    // One statement, so two controllers registering the same new cluster cannot both insert it:
    // the second waits on the first's row, then takes the update path (or none on a mismatch).
    const { rows } = await this.run(() =>
      db.query<ClusterRow>(
        `INSERT INTO clusters (name, system_identifier, pg_version, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET pg_version = EXCLUDED.pg_version
           WHERE clusters.system_identifier = EXCLUDED.system_identifier
         RETURNING *`,
        [c.name, c.systemIdentifier, c.pgVersion, now],
      ),
    );
    if (rows[0]) return clusterFromRow(rows[0]);
    const existing = await this.getCluster(c.name);
    throw new PgfleetError(
      'SystemIdMismatch',
      `cluster '${c.name}' is registered with system identifier ${existing?.systemIdentifier ?? '(unknown)'}, but the agent reports ${c.systemIdentifier}`,
    );
  }

  async getCluster(name: string): Promise<ClusterRecord | undefined> {
    const rows = await this.query<ClusterRow>('SELECT * FROM clusters WHERE name = $1', [name]);
    return rows[0] && clusterFromRow(rows[0]);
  }

  async getClusters(names: readonly string[]): Promise<ClusterRecord[]> {
    const rows = await this.query<ClusterRow>(
      `SELECT * FROM clusters WHERE ${dialect.inNames('name', 1)} ORDER BY name COLLATE "C"`,
      [dialect.namesParam(names)],
    );
    return rows.map(clusterFromRow);
  }

  async listClusters(page?: ClusterPage): Promise<ClusterRecord[]> {
    // COLLATE "C": byte order, as SQLite sorts, whatever the database's default collation.
    const rows = page
      ? await this.query<ClusterRow>(
          'SELECT * FROM clusters WHERE name COLLATE "C" > $1 ORDER BY name COLLATE "C" LIMIT $2',
          [page.after ?? '', page.limit],
        )
      : await this.query<ClusterRow>('SELECT * FROM clusters ORDER BY name COLLATE "C"');
    return rows.map(clusterFromRow);
  }

  async upsertAgent(
    a: { id: string; cluster: string; hostname: string; version: string },
    now: number,
    events: readonly OutboxEventInput[] = [],
  ): Promise<AgentRecord> {
    return this.transaction(async (client) => {
      const row = await upsertAgentWith(client, a, now);
      await insertEvents(client, events);
      return agentRow(row);
    });
  }

  async connectAgents(
    hellos: readonly ConnectingHello[],
    controllerId: string,
    now: number,
  ): Promise<Array<Error | undefined>> {
    if (hellos.length === 0) return [];
    // Six statements for the whole batch, where a Hello each was a transaction of six round trips
    // holding one of the pool's connections: 10,000 of them at once waited past the pool's connect
    // timeout and lost their streams (bench/fleet-scale.mjs). The outcome is that of the Hellos
    // applied one after the other: a cluster's system is its first Hello's when it is new, a
    // Hello of another system is refused, and the last accepted Hello of a cluster or an agent
    // sets what it updates. Rows are taken in key order, as every other multi-row write does.
    return this.transaction(async (client) => {
      const firstOf = new Map<string, ConnectingAgent>();
      for (const { agent } of hellos) if (!firstOf.has(agent.cluster)) firstOf.set(agent.cluster, agent);
      const firsts = [...firstOf.values()];
      await client.query(
        `INSERT INTO clusters (name, system_identifier, pg_version, created_at)
         SELECT v.name, v.system_identifier, v.pg_version, $4
           FROM unnest($1::text[], $2::text[], $3::int[]) AS v(name, system_identifier, pg_version)
           ORDER BY v.name COLLATE "C"
         ON CONFLICT (name) DO NOTHING`,
        [firsts.map((a) => a.cluster), firsts.map((a) => a.systemIdentifier), firsts.map((a) => a.pgVersion), now],
      );
      const { rows } = await client.query<{ name: string; system_identifier: string }>(
        `SELECT name, system_identifier FROM clusters WHERE name = ANY($1::text[]) ORDER BY name COLLATE "C" FOR UPDATE`,
        [[...firstOf.keys()]],
      );
      const systemOf = new Map(rows.map((r) => [r.name, r.system_identifier]));
      const outcomes = hellos.map(({ agent: a }): Error | undefined => {
        const system = systemOf.get(a.cluster);
        return system === a.systemIdentifier
          ? undefined
          : new PgfleetError(
              'SystemIdMismatch',
              `cluster '${a.cluster}' is registered with system identifier ${system ?? '(unknown)'}, but the agent reports ${a.systemIdentifier}`,
            );
      });
      const accepted = hellos.filter((_, i) => outcomes[i] === undefined);
      if (accepted.length === 0) return outcomes;
      const lastOf = <K>(key: (a: ConnectingAgent) => K): ConnectingAgent[] => [
        ...new Map(accepted.map(({ agent }) => [key(agent), agent])).values(),
      ];
      const clusters = lastOf((a) => a.cluster);
      await client.query(
        `UPDATE clusters c SET pg_version = v.pg_version
           FROM unnest($1::text[], $2::int[]) AS v(name, pg_version)
          WHERE c.name = v.name AND c.pg_version <> v.pg_version`,
        [clusters.map((a) => a.cluster), clusters.map((a) => a.pgVersion)],
      );
      const agents = lastOf((a) => agentRefKey({ cluster: a.cluster, agentId: a.id }));
      // Held before the agents show as connected (the same transaction), as holdAgentStream says.
      await client.query(
        `INSERT INTO agent_streams (cluster, agent_id, controller_id, since)
         SELECT v.cluster, v.agent_id, $3, $4 FROM unnest($1::text[], $2::text[]) AS v(cluster, agent_id)
           ORDER BY v.cluster, v.agent_id
         ON CONFLICT (cluster, agent_id) DO UPDATE SET controller_id = EXCLUDED.controller_id, since = EXCLUDED.since`,
        [agents.map((a) => a.cluster), agents.map((a) => a.id), controllerId, now],
      );
      // Key order as recordHeartbeats locks the agents' rows: a batch of beats and one of Hellos queue.
      await client.query(
        `INSERT INTO agents (id, cluster, hostname, version, connected, last_seen)
         SELECT v.id, v.cluster, v.hostname, v.version, true, $5
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS v(id, cluster, hostname, version)
           ORDER BY v.cluster, v.id
         ON CONFLICT (cluster, id) DO UPDATE SET hostname = EXCLUDED.hostname,
           version = EXCLUDED.version, connected = true, last_seen = EXCLUDED.last_seen`,
        [
          agents.map((a) => a.id),
          agents.map((a) => a.cluster),
          agents.map((a) => a.hostname),
          agents.map((a) => a.version),
          now,
        ],
      );
      await insertEventsMany(
        client,
        accepted.flatMap((h) => h.events ?? []),
      );
      return outcomes;
    });
  }

  async setAgentConnected(
    agent: AgentRef,
    connected: boolean,
    now: number,
    events: readonly OutboxEventInput[] = [],
  ): Promise<void> {
    await this.transaction(async (client) => {
      await client.query('UPDATE agents SET connected = $1, last_seen = $2 WHERE cluster = $3 AND id = $4', [
        connected,
        now,
        agent.cluster,
        agent.agentId,
      ]);
      await insertEvents(client, events);
    });
  }

  async appendEvents(events: readonly OutboxEventInput[]): Promise<void> {
    await this.transaction((client) => insertEvents(client, events));
  }

  async nextUnsentEvents(limit: number): Promise<OutboxEventRecord[]> {
    return (
      await this.query<OutboxEventRow>('SELECT * FROM events_outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $1', [
        limit,
      ])
    ).map(outboxEventFromRow);
  }

  async markEventsSent(seqs: readonly number[], now: number, fence?: LeadershipFence): Promise<void> {
    if (seqs.length === 0) return;
    await this.transaction(async (client) => {
      if (fence) await checkFence(client, fence);
      await client.query('UPDATE events_outbox SET sent_at = $1 WHERE seq = ANY($2::bigint[]) AND sent_at IS NULL', [
        now,
        seqs,
      ]);
    });
  }

  async listEvents(filter: { cluster?: string; afterSeq?: number; limit?: number } = {}): Promise<OutboxEventRecord[]> {
    const rows = await this.query<OutboxEventRow>(
      'SELECT * FROM events_outbox WHERE seq > $1 AND ($2::text IS NULL OR cluster = $2) ORDER BY seq LIMIT $3',
      [filter.afterSeq ?? 0, filter.cluster ?? null, filter.limit ?? 100],
    );
    return rows.map(outboxEventFromRow);
  }

  async listLatestEvents(filter: { cluster?: string; limit: number }): Promise<OutboxEventRecord[]> {
    const rows = await this.query<OutboxEventRow>(
      'SELECT * FROM events_outbox WHERE ($1::text IS NULL OR cluster = $1) ORDER BY seq DESC LIMIT $2',
      [filter.cluster ?? null, filter.limit],
    );
    return rows.map(outboxEventFromRow).reverse();
  }

  async recordClusterSample(cluster: string, at: number, rpoSeconds: number): Promise<void> {
    await this.recordClusterSamples([{ cluster, at, rpoSeconds }]);
  }

  async recordClusterSamples(samples: readonly ClusterSample[]): Promise<void> {
    if (samples.length === 0) return;
    // One statement per resolution for the whole batch (a health round's slice). Samples falling
    // into one bucket are added up here first: one INSERT ... ON CONFLICT may not touch a row twice.
    await this.transaction(async (client) => {
      for (const r of HISTORY_RESOLUTIONS) {
        const buckets = new Map<string, { cluster: string; start: number; max: number; sum: number; n: number }>();
        for (const s of samples) {
          const start = historyBucketStart(s.at, r);
          const key = `${s.cluster}\u0000${start}`;
          const b = buckets.get(key);
          if (b) {
            b.max = Math.max(b.max, s.rpoSeconds);
            b.sum += s.rpoSeconds;
            b.n++;
          } else buckets.set(key, { cluster: s.cluster, start, max: s.rpoSeconds, sum: s.rpoSeconds, n: 1 });
        }
        const rows = [...buckets.values()];
        await client.query(
          `INSERT INTO cluster_history (cluster, resolution, start, rpo_max, rpo_sum, samples)
           SELECT c, $2, s, mx, sm, n FROM unnest($1::text[], $3::bigint[], $4::float8[], $5::float8[], $6::int[]) AS t(c, s, mx, sm, n)
           ON CONFLICT (cluster, resolution, start) DO UPDATE SET rpo_max = GREATEST(cluster_history.rpo_max, EXCLUDED.rpo_max),
             rpo_sum = cluster_history.rpo_sum + EXCLUDED.rpo_sum, samples = cluster_history.samples + EXCLUDED.samples`,
          [
            rows.map((x) => x.cluster),
            r,
            rows.map((x) => x.start),
            rows.map((x) => x.max),
            rows.map((x) => x.sum),
            rows.map((x) => x.n),
          ],
        );
      }
    });
  }

  async listClusterHistory(
    cluster: string,
    resolution: HistoryResolution,
    since: number,
  ): Promise<ClusterHistoryBucket[]> {
    const rows = await this.query<ClusterHistoryRow>(
      'SELECT * FROM cluster_history WHERE cluster = $1 AND resolution = $2 AND start >= $3 ORDER BY start',
      [cluster, resolution, since],
    );
    return rows.map(clusterHistoryFromRow);
  }

  async pruneClusterHistory(resolution: HistoryResolution, before: number): Promise<number> {
    const res = await this.run(() =>
      this.pool.query('DELETE FROM cluster_history WHERE resolution = $1 AND start < $2', [resolution, before]),
    );
    return res.rowCount ?? 0;
  }

  async listHealthStates(clusters?: ClusterSelection): Promise<HealthStateRecord[]> {
    const order = 'ORDER BY cluster COLLATE "C", condition COLLATE "C"';
    const rows = Array.isArray(clusters)
      ? await this.query<HealthStateRow>(`SELECT * FROM health_states WHERE ${IN_NAMES} ${order}`, [
          dialect.namesParam(clusters),
        ])
      : await this.query<HealthStateRow>(
          `SELECT * FROM health_states WHERE ($1::text IS NULL OR cluster = $1) ${order}`,
          [clusters ?? null],
        );
    return rows.map((r) => healthStateFromRow(r, decodeJson));
  }

  async putHealthState(
    h: HealthStateRecord,
    events: readonly OutboxEventInput[] = [],
    fence?: LeadershipFence,
  ): Promise<void> {
    await this.transaction(async (client) => {
      if (fence) await checkFence(client, fence);
      await client.query(
        `INSERT INTO health_states (cluster, condition, state, since, data) VALUES ($1, $2, $3, $4, $5::jsonb)
         ON CONFLICT (cluster, condition) DO UPDATE SET state = EXCLUDED.state, since = EXCLUDED.since, data = EXCLUDED.data`,
        [h.cluster, h.condition, h.state, h.since, encodeJson(h.data)],
      );
      await insertEvents(client, events);
    });
  }

  async disconnectAllAgents(_now: number): Promise<void> {
    await this.query('UPDATE agents SET connected = false WHERE connected');
  }

  async heartbeatController(c: Omit<ControllerRecord, 'leads'>): Promise<void> {
    await this.query(
      `INSERT INTO controllers (id, address, started_at, last_seen, leads) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, last_seen = EXCLUDED.last_seen, leads = EXCLUDED.leads`,
      [c.id, c.address, c.startedAt, c.lastSeen, [...this.leaders.keys()].sort().join(',')],
    );
  }

  async removeController(id: string): Promise<void> {
    await this.transaction(async (client) => {
      await client.query('DELETE FROM agent_streams WHERE controller_id = $1', [id]);
      await client.query('DELETE FROM agent_messages WHERE controller_id = $1', [id]);
      await client.query('DELETE FROM controllers WHERE id = $1', [id]);
    });
  }

  async listControllers(): Promise<ControllerRecord[]> {
    return (await this.query<ControllerRow>('SELECT * FROM controllers ORDER BY started_at, id COLLATE "C"')).map(
      controllerRow,
    );
  }

  async holdAgentStream(agent: AgentRef, controllerId: string, now: number): Promise<void> {
    await this.run(() => holdAgentStreamWith(this.pool, agent, controllerId, now));
  }

  async releaseAgentStream(agent: AgentRef, controllerId: string): Promise<boolean> {
    // One statement: the holding is read and removed together, so a move to another controller in between is seen.
    const rows = await this.query<{ mine: boolean | null }>(
      `WITH held AS (SELECT controller_id FROM agent_streams WHERE cluster = $1 AND agent_id = $2),
            gone AS (DELETE FROM agent_streams WHERE cluster = $1 AND agent_id = $2 AND controller_id = $3 RETURNING 1)
       SELECT (SELECT controller_id FROM held) = $3 OR NOT EXISTS (SELECT 1 FROM held) AS mine`,
      [agent.cluster, agent.agentId, controllerId],
    );
    return rows[0]?.mine !== false;
  }

  async listAgentStreams(cluster?: string): Promise<AgentStreamRecord[]> {
    return (
      cluster === undefined
        ? await this.query<AgentStreamRow>(
            'SELECT * FROM agent_streams ORDER BY cluster COLLATE "C", agent_id COLLATE "C"',
          )
        : await this.query<AgentStreamRow>(
            'SELECT * FROM agent_streams WHERE cluster = $1 ORDER BY agent_id COLLATE "C"',
            [cluster],
          )
    ).map(agentStreamRow);
  }

  async releaseDeadStreams(self: string, liveSince: number, _now: number): Promise<AgentRef[]> {
    return this.transaction(async (client) => {
      const live = `SELECT id FROM controllers WHERE id = $1 OR last_seen >= $2`;
      const gone = await client.query<{ cluster: string; id: string }>(
        `UPDATE agents a SET connected = false
         WHERE a.connected AND NOT EXISTS (
           SELECT 1 FROM agent_streams s WHERE s.cluster = a.cluster AND s.agent_id = a.id AND s.controller_id IN (${live}))
         RETURNING a.cluster, a.id`,
        [self, liveSince],
      );
      await client.query(`DELETE FROM agent_streams WHERE controller_id NOT IN (${live})`, [self, liveSince]);
      await client.query(`DELETE FROM agent_messages WHERE controller_id NOT IN (${live})`, [self, liveSince]);
      // A dead controller stays listed an hour (status shows which one died), then goes.
      await client.query('DELETE FROM controllers WHERE id <> $1 AND last_seen < $2', [self, liveSince - 3_600_000]);
      return gone.rows.map((g) => ({ cluster: g.cluster, agentId: g.id }));
    });
  }

  async reholdAgentStreams(controllerId: string, agents: readonly AgentRef[], now: number): Promise<AgentRef[]> {
    if (agents.length === 0) return [];
    const [held] = await this.query<{ n: string }>('SELECT count(*) AS n FROM agent_streams WHERE controller_id = $1', [
      controllerId,
    ]);
    if (Number(held?.n ?? 0) >= agents.length) return [];
    const rows = await this.query<{ cluster: string; id: string }>(
      `WITH held AS (
         INSERT INTO agent_streams (cluster, agent_id, controller_id, since)
         SELECT cluster, agent_id, $3, $4 FROM unnest($1::text[], $2::text[]) AS m(cluster, agent_id)
         ON CONFLICT (cluster, agent_id) DO NOTHING RETURNING cluster, agent_id)
       UPDATE agents a SET connected = true FROM held WHERE a.cluster = held.cluster AND a.id = held.agent_id
       RETURNING a.cluster, a.id`,
      [agents.map((a) => a.cluster), agents.map((a) => a.agentId), controllerId, now],
    );
    return rows.map((r) => ({ cluster: r.cluster, agentId: r.id }));
  }

  async queueAgentMessage(controllerId: string, agent: AgentRef, payload: Uint8Array, now: number): Promise<void> {
    // The notification goes out when the row commits, never before: the holder finds the message.
    await this.query(
      `WITH m AS (INSERT INTO agent_messages (controller_id, cluster, agent_id, payload, created_at) VALUES ($1, $2, $3, $4, $5))
       SELECT pg_notify('${AGENT_MESSAGES_CHANNEL}', $1)`,
      [controllerId, agent.cluster, agent.agentId, Buffer.from(payload), now],
    );
  }

  async listenAgentMessages(controllerId: string, wake: () => void): Promise<() => Promise<void>> {
    const client = new pg.Client({
      connectionString: this.connectionString,
      connectionTimeoutMillis: this.options.connectTimeoutMs ?? 10_000,
      application_name: `${this.options.applicationName ?? 'pgfleet-controller'} listen`,
      keepAlive: true,
    });
    // A lost connection loses notifications only: the caller's poll still finds the messages.
    client.on('error', () => {});
    client.on('notification', (n) => {
      if (n.payload === controllerId) wake();
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${AGENT_MESSAGES_CHANNEL}`);
    } catch (err) {
      await client.end().catch(() => {});
      throw this.error(err);
    }
    return () => client.end().catch(() => {});
  }

  async takeAgentMessages(controllerId: string, limit: number): Promise<AgentMessageRecord[]> {
    const rows = await this.query<AgentMessageRow>(
      `DELETE FROM agent_messages WHERE seq IN (
         SELECT seq FROM agent_messages WHERE controller_id = $1 ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)
       RETURNING seq, cluster, agent_id, payload`,
      [controllerId, limit],
    );
    return rows.map(agentMessageRow).sort((a, b) => a.seq - b.seq);
  }

  async recordHeartbeats(beats: readonly AgentHeartbeat[]): Promise<void> {
    if (beats.length === 0) return;
    const folded = foldHeartbeats(beats);
    const column = <T>(f: (b: AgentHeartbeat) => T): T[] => folded.map(f);
    // One statement for the batch: a round trip and a commit (a WAL flush) for hundreds of beats,
    // where one per beat left 30% of 10,000 agents' heartbeats unrecorded (bench/fleet-scale.mjs).
    // The rows are locked in key order first, so two controllers' batches (an agent that moved
    // holds a beat in each) queue instead of deadlocking.
    await this.query(
      `WITH v AS MATERIALIZED (
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::jsonb[], $5::text[], $6::jsonb[], $7::jsonb[],
                              $8::boolean[], $9::text[], $10::jsonb[], $11::bigint[])
           AS v(cluster, id, at, archiver, current_lsn, wal_health, archive_setup, has_role, role, replay, timeline)
       ), locked AS (
         SELECT a.cluster, a.id FROM agents a JOIN v ON a.cluster = v.cluster AND a.id = v.id
         ORDER BY a.cluster, a.id
         FOR UPDATE OF a
       )
       UPDATE agents a SET last_seen = v.at, archiver = COALESCE(v.archiver, a.archiver),
         current_lsn = COALESCE(v.current_lsn, a.current_lsn), wal_health = COALESCE(v.wal_health, a.wal_health),
         archive_setup = COALESCE(v.archive_setup, a.archive_setup),
         role = CASE WHEN v.has_role THEN v.role ELSE a.role END,
         replay = CASE WHEN v.has_role THEN v.replay ELSE a.replay END,
         timeline = COALESCE(v.timeline, a.timeline)
       FROM v JOIN locked l ON l.cluster = v.cluster AND l.id = v.id
       WHERE a.cluster = v.cluster AND a.id = v.id`,
      [
        column((b) => b.agent.cluster),
        column((b) => b.agent.agentId),
        column((b) => b.at),
        column((b) => encodeJson(b.figures.archiver)),
        column((b) => b.figures.currentLsn || null),
        column((b) => encodeJson(b.figures.walHealth)),
        column((b) => encodeJson(b.figures.archiveSetup)),
        column((b) => b.figures.role !== undefined),
        column((b) => b.figures.role ?? null),
        column((b) => encodeJson(b.figures.replay)),
        column((b) => b.figures.timeline ?? null),
      ],
    );
  }

  async getAgent(agent: AgentRef): Promise<AgentRecord | undefined> {
    const rows = await this.query<AgentRow>('SELECT * FROM agents WHERE cluster = $1 AND id = $2', [
      agent.cluster,
      agent.agentId,
    ]);
    return rows[0] && agentRow(rows[0]);
  }

  async listAgents(clusters?: ClusterSelection): Promise<AgentRecord[]> {
    const rows =
      clusters === undefined
        ? await this.query<AgentRow>('SELECT * FROM agents ORDER BY cluster COLLATE "C", id COLLATE "C"')
        : Array.isArray(clusters)
          ? await this.query<AgentRow>(
              `SELECT * FROM agents WHERE ${IN_NAMES} ORDER BY cluster COLLATE "C", id COLLATE "C"`,
              [dialect.namesParam(clusters)],
            )
          : await this.query<AgentRow>('SELECT * FROM agents WHERE cluster = $1 ORDER BY id COLLATE "C"', [clusters]);
    return rows.map(agentRow);
  }

  async insertBackup(b: BackupRecord): Promise<void> {
    await this.insertBackupWith(this.pool, b);
  }

  private async insertBackupWith(db: pg.Pool | pg.PoolClient, b: BackupRecord): Promise<void> {
    const params = backupRowParams(b, dialect);
    await this.run(() => db.query(insertBackupSql(dialect), params));
  }

  async getBackup(cluster: string, label: string): Promise<BackupRecord | undefined> {
    const rows = await this.query<BackupRow>('SELECT * FROM backups WHERE cluster = $1 AND label = $2', [
      cluster,
      label,
    ]);
    return rows[0] && backupFromRow(rows[0]);
  }

  async listBackups(cluster: string): Promise<BackupRecord[]> {
    // Real time orders backups; the stop LSN breaks ties of backups ending in the same millisecond.
    const rows = await this.query<BackupRow>(
      'SELECT * FROM backups WHERE cluster = $1 ORDER BY stop_time, stop_lsn_num, label COLLATE "C"',
      [cluster],
    );
    return rows.map(backupFromRow);
  }

  async latestBackups(clusters?: ClusterSelection, end: 'newest' | 'oldest' = 'newest'): Promise<BackupRecord[]> {
    const dir = end === 'newest' ? 'DESC' : 'ASC';
    const order = `stop_time ${dir}, stop_lsn_num ${dir}, label COLLATE "C" ${dir}`;
    // Per cluster, the backups_cluster_order index gives the newest (or oldest) directly; over the
    // fleet, one pass; over a page of it, one index seek per named cluster.
    const rows =
      clusters === undefined
        ? await this.query<BackupRow>(
            `SELECT DISTINCT ON (cluster COLLATE "C") * FROM backups ORDER BY cluster COLLATE "C", ${order}`,
          )
        : Array.isArray(clusters)
          ? await this.query<BackupRow>(
              `SELECT b.* FROM unnest($1::text[]) AS c(name)
               CROSS JOIN LATERAL (SELECT * FROM backups WHERE cluster = c.name ORDER BY ${order} LIMIT 1) b
               ORDER BY b.cluster COLLATE "C"`,
              [dialect.namesParam(clusters)],
            )
          : await this.query<BackupRow>(`SELECT * FROM backups WHERE cluster = $1 ORDER BY ${order} LIMIT 1`, [
              clusters,
            ]);
    return rows.map(backupFromRow);
  }

  async oldestBackupStopTimes(clusters?: readonly string[]): Promise<Array<{ cluster: string; stopTime: number }>> {
    const order = 'stop_time, stop_lsn_num, label COLLATE "C"';
    const rows =
      clusters === undefined
        ? await this.query<{ cluster: string; stop_time: number }>(
            `SELECT DISTINCT ON (cluster COLLATE "C") cluster, stop_time FROM backups ORDER BY cluster COLLATE "C", ${order}`,
          )
        : await this.query<{ cluster: string; stop_time: number }>(
            `SELECT c.name AS cluster, b.stop_time FROM unnest($1::text[]) AS c(name)
             CROSS JOIN LATERAL (SELECT stop_time FROM backups WHERE cluster = c.name ORDER BY ${order} LIMIT 1) b
             ORDER BY c.name COLLATE "C"`,
            [dialect.namesParam(clusters)],
          );
    return rows.map((r) => ({ cluster: r.cluster, stopTime: r.stop_time }));
  }

  async setBackupPinned(cluster: string, label: string, pinned: boolean): Promise<BackupRecord> {
    const rows = await this.query<BackupRow>(
      'UPDATE backups SET pinned = $3 WHERE cluster = $1 AND label = $2 RETURNING *',
      [cluster, label, pinned],
    );
    if (!rows[0])
      throw new PgfleetError('UnknownBackup', `cluster '${cluster}' has no backup '${label}' in the catalog`);
    return backupFromRow(rows[0]);
  }

  async deleteBackups(cluster: string, labels: readonly string[]): Promise<number> {
    const rows = await this.query<{ label: string }>(
      'DELETE FROM backups WHERE cluster = $1 AND label = ANY($2::text[]) RETURNING label',
      [cluster, [...labels]],
    );
    return rows.length;
  }

  async insertDump(d: DumpRecord): Promise<void> {
    await this.insertDumpWith(this.pool, d);
  }

  private async insertDumpWith(db: pg.Pool | pg.PoolClient, d: DumpRecord): Promise<void> {
    const params = dumpRowParams(d);
    await this.run(() =>
      db.query(
        insertDumpSql(dialect, (n) => `$${n}::jsonb`),
        params,
      ),
    );
  }

  async listDumps(cluster: string, options: { includeExpired?: boolean } = {}): Promise<DumpRecord[]> {
    const rows = await this.query<DumpRow>(
      `SELECT * FROM dumps WHERE cluster = $1${options.includeExpired ? '' : ' AND expired_at IS NULL'} ORDER BY stop_time, label COLLATE "C"`,
      [cluster],
    );
    return rows.map((r) => dumpFromRow(r, decodeJson));
  }

  async latestDumps(clusters?: ClusterSelection): Promise<DumpRecord[]> {
    const rows =
      clusters === undefined
        ? await this.query<DumpRow>(
            `SELECT DISTINCT ON (cluster COLLATE "C") * FROM dumps WHERE expired_at IS NULL
             ORDER BY cluster COLLATE "C", stop_time DESC, label COLLATE "C" DESC`,
          )
        : Array.isArray(clusters)
          ? await this.query<DumpRow>(
              `SELECT d.* FROM unnest($1::text[]) AS c(name)
               CROSS JOIN LATERAL (SELECT * FROM dumps WHERE cluster = c.name AND expired_at IS NULL
                                   ORDER BY stop_time DESC, label COLLATE "C" DESC LIMIT 1) d
               ORDER BY d.cluster COLLATE "C"`,
              [dialect.namesParam(clusters)],
            )
          : await this.query<DumpRow>(
              'SELECT * FROM dumps WHERE cluster = $1 AND expired_at IS NULL ORDER BY stop_time DESC, label COLLATE "C" DESC LIMIT 1',
              [clusters],
            );
    return rows.map((r) => dumpFromRow(r, decodeJson));
  }

  async markDumpsExpired(cluster: string, labels: readonly string[], now: number): Promise<number> {
    const rows = await this.query<{ label: string }>(
      'UPDATE dumps SET expired_at = $3 WHERE cluster = $1 AND label = ANY($2::text[]) AND expired_at IS NULL RETURNING label',
      [cluster, [...labels], now],
    );
    return rows.length;
  }

  async getPolicy(scope: string): Promise<PolicyRecord | undefined> {
    const rows = await this.query<PolicyRow>('SELECT * FROM policies WHERE scope = $1', [scope]);
    return rows[0] && policyFromRow(rows[0], decodeJson);
  }

  async listPolicies(scopes?: readonly string[]): Promise<PolicyRecord[]> {
    const order = `ORDER BY scope <> '*', scope COLLATE "C"`;
    const rows = scopes
      ? await this.query<PolicyRow>(`SELECT * FROM policies WHERE ${dialect.inNames('scope', 1)} ${order}`, [
          dialect.namesParam(scopes),
        ])
      : await this.query<PolicyRow>(`SELECT * FROM policies ${order}`);
    return rows.map((r) => policyFromRow(r, decodeJson));
  }

  async putPolicy(
    p: { scope: string; schedules: PolicySchedules; retention: PolicyRetention; health?: PolicyHealth },
    now: number,
  ): Promise<PolicyRecord> {
    const rows = await this.query<PolicyRow>(
      `INSERT INTO policies (scope, schedules, retention, health, updated_at) VALUES ($1, $2::jsonb, $3::jsonb, $4::jsonb, $5)
       ON CONFLICT (scope) DO UPDATE SET schedules = EXCLUDED.schedules, retention = EXCLUDED.retention, health = EXCLUDED.health, updated_at = EXCLUDED.updated_at
       RETURNING *`,
      [p.scope, JSON.stringify(p.schedules), JSON.stringify(p.retention), JSON.stringify(p.health ?? {}), now],
    );
    return policyFromRow(rows[0]!, decodeJson);
  }

  async deletePolicy(scope: string): Promise<boolean> {
    return (await this.query('DELETE FROM policies WHERE scope = $1 RETURNING scope', [scope])).length > 0;
  }

  async listScheduleRuns(clusters?: ClusterSelection): Promise<ScheduleRunRecord[]> {
    const rows =
      clusters === undefined
        ? await this.query<ScheduleRunRow>('SELECT * FROM schedule_runs ORDER BY cluster COLLATE "C", type')
        : Array.isArray(clusters)
          ? await this.query<ScheduleRunRow>(
              `SELECT * FROM schedule_runs WHERE ${IN_NAMES} ORDER BY cluster COLLATE "C", type`,
              [dialect.namesParam(clusters)],
            )
          : await this.query<ScheduleRunRow>('SELECT * FROM schedule_runs WHERE cluster = $1 ORDER BY type', [
              clusters,
            ]);
    return rows.map(scheduleRunFromRow);
  }

  async recordScheduleRuns(runs: readonly ScheduleRunRecord[], fence?: LeadershipFence): Promise<void> {
    if (runs.length === 0) return;
    await this.transaction(async (client) => {
      if (fence) await checkFence(client, fence);
      await upsertScheduleRuns(client, runs);
    });
  }

  async createJob(job: NewJob, now: number): Promise<JobRecord> {
    const rows = await this.query<JobRow>(
      `INSERT INTO jobs (id, cluster, kind, state, agent_id, params, created_at, dispatcher) VALUES ($1, $2, $3, 'queued', $4, $5::jsonb, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING *`,
      [job.id, job.cluster, job.kind, job.agentId, encodeJson(job.params), now, job.dispatcher ?? null],
    );
    if (rows[0]) return jobRow(rows[0]);
    // Only a row that exists makes the insert do nothing; jobs are never deleted.
    return existingJobFor(job, (await this.getJob(job.id))!);
  }

  async createJobIfIdle(
    cluster: string,
    kinds: readonly JobKind[],
    job: NewJob,
    now: number,
    fence?: LeadershipFence,
    runs: readonly ScheduleRunRecord[] = [],
  ): Promise<JobRecord> {
    return this.transaction(async (client) => {
      // Serialises creators of this cluster until commit. Under READ COMMITTED each statement
      // below sees what an earlier holder committed, so the check and the insert cannot be split
      // by another controller's insert (a unique index cannot say "one active backup or expire").
      // Set explicitly: under a database default of REPEATABLE READ the snapshot would be taken by
      // the lock statement itself, before the earlier holder committed, and both would insert.
      await client.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
      await client.query(`SELECT pg_advisory_xact_lock(${CLUSTER_JOBS_LOCK_CLASS}, hashtext($1))`, [cluster]);
      if (fence) await checkFence(client, fence);
      const known = await client.query<JobRow>('SELECT * FROM jobs WHERE id = $1', [job.id]);
      if (known.rows[0]) return existingJobFor(job, jobRow(known.rows[0]));
      const busy = await client.query<JobRow>(
        'SELECT * FROM jobs WHERE cluster = $1 AND kind = ANY($2::text[]) AND state = ANY($3::text[]) ORDER BY created_at, seq LIMIT 1',
        [cluster, kinds, FAILABLE_JOB_STATES],
      );
      if (busy.rows[0]) throw clusterBusyError(cluster, jobRow(busy.rows[0]));
      const rows = await client.query<JobRow>(
        `INSERT INTO jobs (id, cluster, kind, state, agent_id, params, created_at, dispatcher) VALUES ($1, $2, $3, 'queued', $4, $5::jsonb, $6, $7) RETURNING *`,
        [job.id, job.cluster, job.kind, job.agentId, encodeJson(job.params), now, job.dispatcher ?? null],
      );
      if (runs.length > 0) await upsertScheduleRuns(client, runs);
      return jobRow(rows.rows[0]!);
    });
  }

  async getJob(id: string): Promise<JobRecord | undefined> {
    const rows = await this.query<JobRow>('SELECT * FROM jobs WHERE id = $1', [id]);
    return rows[0] && jobRow(rows[0]);
  }

  async listJobs(filter: JobFilter = {}): Promise<JobRecord[]> {
    // LIMIT NULL is no limit. seq (creation order) breaks ties within a millisecond, as rowid does in SQLite.
    const limit = filter.limit && filter.limit > 0 ? filter.limit : null;
    const { where, args } = jobWhere(filter, dialect);
    const rows = await this.query<JobRow>(
      `SELECT * FROM jobs ${where} ORDER BY created_at DESC, seq DESC LIMIT $${args.length + 1}`,
      [...args, limit],
    );
    return rows.map(jobRow);
  }

  async latestJobsPerCluster(filter: JobFilter & { perCluster: number }): Promise<JobRecord[]> {
    const { where, args } = jobWhere(filter, dialect);
    const rows = await this.query<JobRow>(
      `SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY cluster ORDER BY created_at DESC, seq DESC) AS newest
       FROM jobs ${where}) j WHERE newest <= $${args.length + 1} ORDER BY cluster COLLATE "C", newest`,
      [...args, filter.perCluster],
    );
    return rows.map(jobRow);
  }

  async countJobs(): Promise<Array<{ cluster: string; kind: JobKind; state: JobStateName; count: number }>> {
    const rows = await this.query<{ cluster: string; kind: JobKind; state: JobStateName; count: string }>(
      'SELECT cluster, kind, state, COUNT(*) AS count FROM jobs GROUP BY cluster, kind, state ORDER BY cluster COLLATE "C", kind, state',
    );
    return rows.map((r) => ({ ...r, count: Number(r.count) }));
  }

  async listActiveJobs(): Promise<JobRecord[]> {
    const rows = await this.query<JobRow>('SELECT * FROM jobs WHERE state = ANY($1::text[]) ORDER BY created_at, seq', [
      FAILABLE_JOB_STATES,
    ]);
    return rows.map(jobRow);
  }

  async transitionJob(
    id: string,
    to: JobStateName,
    options: TransitionOptions,
    now: number,
  ): Promise<TransitionOutcome> {
    return this.transaction(async (client) => {
      const current = await lockJob(client, id);
      return this.transitionLocked(client, current, to, options, now);
    });
  }

  /** Applies a move to a job whose row this transaction has locked (FOR UPDATE). */
  private async transitionLocked(
    client: pg.PoolClient,
    current: JobRecord,
    to: JobStateName,
    options: TransitionOptions,
    now: number,
  ): Promise<TransitionOutcome> {
    if (!checkJobTransition(current.id, current.state, to)) return { job: current, changed: false };
    const terminal = isTerminalJobState(to);
    if (to === 'succeeded' && options.backup) await this.insertBackupWith(client, options.backup);
    if (to === 'succeeded' && options.dump) await this.insertDumpWith(client, options.dump);
    await insertEvents(client, options.events ?? []);
    const res = await client.query<JobRow>(
      `UPDATE jobs SET state = $2,
         started_at = CASE WHEN $3::boolean AND started_at IS NULL THEN $4::bigint ELSE started_at END,
         finished_at = CASE WHEN $5::boolean THEN $4::bigint ELSE finished_at END,
         error_code = COALESCE($6, error_code), error_message = COALESCE($7, error_message),
         result = COALESCE($8::jsonb, result)
       WHERE id = $1
       RETURNING *`,
      [
        current.id,
        to,
        to === 'running',
        now,
        terminal,
        options.error?.code ?? null,
        options.error?.message ?? null,
        encodeJson(options.result),
      ],
    );
    return { job: jobRow(res.rows[0]!), changed: true };
  }

  async updateJobProgress(
    id: string,
    progress: unknown,
    now: number,
    claimed?: JobEventsFactory,
  ): Promise<TransitionOutcome> {
    return this.transaction(async (client): Promise<TransitionOutcome> => {
      let job = await lockJob(client, id);
      // Progress that arrives after the end (a late message on the stream) must not reopen the job.
      if (isTerminalJobState(job.state)) return { job, changed: false };
      // The agent has a job still queued: its sender died (or has not recorded the send yet).
      if (job.state === 'queued')
        job = (await this.transitionLocked(client, job, 'dispatched', { events: claimed?.(job) ?? [] }, now)).job;
      if (job.state !== 'running') await this.transitionLocked(client, job, 'running', {}, now);
      const res = await client.query<JobRow>('UPDATE jobs SET progress = $2::jsonb WHERE id = $1 RETURNING *', [
        id,
        encodeJson(progress),
      ]);
      return { job: jobRow(res.rows[0]!), changed: true };
    });
  }

  async claimJobDispatch(id: string, controllerId: string): Promise<JobRecord> {
    const rows = await this.query<JobRow>(
      `UPDATE jobs SET dispatcher = $2 WHERE id = $1 AND state = 'queued' RETURNING *`,
      [id, controllerId],
    );
    if (rows[0]) return jobRow(rows[0]);
    const job = await this.getJob(id);
    if (!job) throw new PgfleetError('UnknownJob', `job ${id} does not exist`);
    return job;
  }

  async failLostDispatches(
    self: string,
    deadBefore: number,
    error: JobError,
    now: number,
    events?: JobEventsFactory,
    fence?: LeadershipFence,
  ): Promise<JobRecord[]> {
    return this.transaction(async (client) => {
      if (fence) await checkFence(client, fence);
      // Locked in id order like failJobs; a job claimed (or sent and recorded) meanwhile is no
      // longer queued after the wait and is left alone.
      const { rows } = await client.query<JobRow>(
        `WITH target AS (
           SELECT id FROM jobs j
           WHERE j.state = 'queued' AND j.dispatcher IS NOT NULL AND j.dispatcher <> $1 AND j.created_at < $2
             AND NOT EXISTS (SELECT 1 FROM controllers c WHERE c.id = j.dispatcher AND c.last_seen >= $2)
           ORDER BY id
           FOR UPDATE
         ), failed AS (
           UPDATE jobs SET state = 'failed', finished_at = $3, error_code = $4, error_message = $5
           FROM target WHERE jobs.id = target.id AND jobs.state = 'queued'
           RETURNING jobs.*
         )
         SELECT * FROM failed ORDER BY seq`,
        [self, deadBefore, now, error.code, error.message],
      );
      const jobs = rows.map(jobRow);
      if (events) for (const job of jobs) await insertEvents(client, events(job));
      return jobs;
    });
  }

  async failActiveJobsOfAgent(
    agent: AgentRef,
    error: JobError,
    now: number,
    except: readonly string[] = [],
    events?: JobEventsFactory,
  ): Promise<JobRecord[]> {
    return this.failJobs(agent, except, error, now, events);
  }

  async failAllActiveJobs(error: JobError, now: number, events?: JobEventsFactory): Promise<JobRecord[]> {
    return this.failJobs(null, [], error, now, events);
  }

  /**
   * Fails the active jobs (of one agent, or all) in one statement. The rows are locked in id
   * order, so two controllers doing this at once queue instead of deadlocking, and a row another
   * controller finished meanwhile is re-checked after the wait and left alone. The result is the
   * same as transitionJob(id, 'failed', { error }) on each: 'failed' is legal from every state
   * in FAILABLE_JOB_STATES, which comes from the shared transition table.
   */
  private async failJobs(
    agent: AgentRef | null,
    except: readonly string[],
    error: JobError,
    now: number,
    events?: JobEventsFactory,
  ): Promise<JobRecord[]> {
    return this.transaction(async (client) => {
      const { rows } = await client.query<JobRow>(
        `WITH target AS (
         SELECT id FROM jobs
         WHERE ($1::text IS NULL OR (agent_id = $1 AND cluster = $7)) AND state = ANY($2::text[]) AND NOT (id = ANY($3::text[]))
         ORDER BY id
         FOR UPDATE
       ), failed AS (
         UPDATE jobs SET state = 'failed', finished_at = $4, error_code = COALESCE($5, error_code), error_message = COALESCE($6, error_message)
         FROM target WHERE jobs.id = target.id
         RETURNING jobs.*
       )
       SELECT * FROM failed ORDER BY seq`,
        [agent?.agentId ?? null, FAILABLE_JOB_STATES, except, now, error.code, error.message, agent?.cluster ?? null],
      );
      const jobs = rows.map(jobRow);
      if (events) for (const job of jobs) await insertEvents(client, events(job));
      return jobs;
    });
  }

  async createEnrollmentToken(
    t: { tokenHash: string; cluster: string; expiresAt: number },
    now: number,
  ): Promise<EnrollmentTokenRecord> {
    const rows = await this.query<EnrollmentTokenRow>(
      'INSERT INTO enrollment_tokens (token_hash, cluster, created_at, expires_at) VALUES ($1, $2, $3, $4) RETURNING *',
      [t.tokenHash, t.cluster, now, t.expiresAt],
    );
    return enrollmentTokenFromRow(rows[0]!);
  }

  async useEnrollmentToken(tokenHash: string, agentId: string, now: number): Promise<EnrollmentTokenUse> {
    // One conditional UPDATE decides: of two controllers or agents racing with one token, one changes the row.
    const used = await this.query<EnrollmentTokenRow>(
      'UPDATE enrollment_tokens SET used_at = $1, agent_id = $2 WHERE token_hash = $3 AND used_at IS NULL AND expires_at > $1 RETURNING *',
      [now, agentId, tokenHash],
    );
    if (used[0]) return { ok: true, token: enrollmentTokenFromRow(used[0]) };
    const rows = await this.query<EnrollmentTokenRow>('SELECT * FROM enrollment_tokens WHERE token_hash = $1', [
      tokenHash,
    ]);
    return enrollmentRefusal(rows[0], now);
  }

  async listEnrollmentTokens(): Promise<EnrollmentTokenRecord[]> {
    return (
      await this.query<EnrollmentTokenRow>(
        'SELECT * FROM enrollment_tokens ORDER BY created_at DESC, token_hash COLLATE "C"',
      )
    ).map(enrollmentTokenFromRow);
  }

  async createAdminToken(
    t: { id: string; name: string; role: AdminRole; tokenHash: string },
    now: number,
  ): Promise<AdminTokenRecord> {
    try {
      const rows = await this.query<AdminTokenRow>(
        'INSERT INTO admin_tokens (id, name, role, token_hash, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING *',
        [t.id, t.name, t.role, t.tokenHash, now],
      );
      return adminTokenFromRow(rows[0]!);
    } catch (err) {
      if ((err as { code?: string }).code === '23505') throw adminTokenNameTaken(t.name, err);
      throw err;
    }
  }

  async findAdminToken(tokenHash: string): Promise<AdminTokenRecord | undefined> {
    const rows = await this.query<AdminTokenRow>(
      'SELECT * FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL',
      [tokenHash],
    );
    return rows[0] && adminTokenFromRow(rows[0]);
  }

  async listAdminTokens(): Promise<AdminTokenRecord[]> {
    return (await this.query<AdminTokenRow>('SELECT * FROM admin_tokens ORDER BY created_at, id COLLATE "C"')).map(
      adminTokenFromRow,
    );
  }

  async revokeAdminToken(idOrName: string, now: number): Promise<AdminTokenRecord | undefined> {
    // An id match wins over a name match (ids and names could collide).
    const rows = await this.query<AdminTokenRow>(
      `UPDATE admin_tokens SET revoked_at = $2 WHERE id = (
         SELECT id FROM admin_tokens WHERE (id = $1 OR name = $1) AND revoked_at IS NULL ORDER BY id = $1 DESC LIMIT 1 FOR UPDATE
       ) AND revoked_at IS NULL RETURNING *`,
      [idOrName, now],
    );
    return rows[0] && adminTokenFromRow(rows[0]);
  }

  async tryAcquireLeadership(name: string): Promise<boolean> {
    return this.serialiseLeadership(name, async () => {
      const held = this.leaders.get(name);
      if (held) {
        // The lock lives as long as its session: a live session still holds it. A dead one lost
        // it (the server released it, another controller may lead now), so try afresh.
        try {
          await held.query('SELECT 1');
          return true;
        } catch {
          this.leaders.delete(name);
          await held.end().catch(() => {});
        }
      }
      const client = new pg.Client({
        connectionString: this.connectionString,
        connectionTimeoutMillis: this.options.connectTimeoutMs ?? 10_000,
        application_name: `${this.options.applicationName ?? 'pgfleet-controller'} leader`,
        // Notice a vanished server or network path (and so a lost lock) without waiting for a query.
        keepAlive: true,
      });
      client.on('error', () => {
        if (this.leaders.get(name) === client) this.leaders.delete(name);
      });
      try {
        await client.connect();
        const res = await client.query<{ ok: boolean }>(
          `SELECT pg_try_advisory_lock(${LEADERSHIP_LOCK_CLASS}, hashtext($1)) AS ok`,
          [name],
        );
        if (res.rows[0]?.ok) {
          // A new acquisition: a new epoch, which writes of earlier leaders no longer match.
          const epoch = await client.query<{ epoch: string }>(
            `INSERT INTO leadership_epochs (name, epoch) VALUES ($1, 1)
             ON CONFLICT (name) DO UPDATE SET epoch = leadership_epochs.epoch + 1 RETURNING epoch`,
            [name],
          );
          this.leaders.set(name, client);
          this.epochs.set(name, Number(epoch.rows[0]!.epoch));
          return true;
        }
      } catch (err) {
        await client.end().catch(() => {});
        throw this.error(err);
      }
      await client.end().catch(() => {});
      return false;
    });
  }

  leadershipFence(name: string): LeadershipFence | undefined {
    const epoch = this.epochs.get(name);
    return this.leaders.has(name) && epoch !== undefined ? { name, epoch } : undefined;
  }

  async releaseLeadership(name: string): Promise<void> {
    return this.serialiseLeadership(name, async () => {
      const client = this.leaders.get(name);
      if (!client) return;
      this.leaders.delete(name);
      // Unlock explicitly: ending the connection also releases it, but only once the server has
      // noticed the disconnect, and another controller asking right after must find it free.
      await client.query(`SELECT pg_advisory_unlock(${LEADERSHIP_LOCK_CLASS}, hashtext($1))`, [name]).catch(() => {});
      await client.end().catch(() => {});
    });
  }

  private serialiseLeadership<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.leadershipQueue.get(name) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(fn);
    const settled = next.catch(() => {});
    this.leadershipQueue.set(name, settled);
    void settled.then(() => {
      if (this.leadershipQueue.get(name) === settled) this.leadershipQueue.delete(name);
    });
    return next;
  }

  private async query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params?: unknown[]): Promise<R[]> {
    const res = await this.run(() => this.pool.query<R>(sql, params));
    return res.rows;
  }

  private async run<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.error(err);
    }
  }

  /** Runs fn in a transaction on one pooled connection; rolls back on any error. */
  private async transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.run(() => this.pool.connect());
    let broken: Error | undefined;
    try {
      await client.query('BEGIN');
      const out = await fn(client);
      await client.query('COMMIT');
      return out;
    } catch (err) {
      await client.query('ROLLBACK').catch((e: Error) => {
        broken = e; // the connection is unusable: the pool must not hand it out again
      });
      throw this.error(err);
    } finally {
      client.release(broken);
    }
  }

  /** Our own errors pass through; a lost or refused connection becomes PgConnectFailed naming the catalog. */
  private error(err: unknown): unknown {
    if (err instanceof PgfleetError) return err;
    if (isConnectionError(err)) {
      return new PgfleetError('PgConnectFailed', `catalog ${this.url}: ${(err as Error).message}`, {
        cause: err,
        hint: UNREACHABLE_HINT,
      });
    }
    return err;
  }
}

async function upsertAgentWith(
  db: pg.Pool | pg.PoolClient,
  a: { id: string; cluster: string; hostname: string; version: string },
  now: number,
): Promise<AgentRow> {
  const res = await db.query<AgentRow>(
    `INSERT INTO agents (id, cluster, hostname, version, connected, last_seen) VALUES ($1, $2, $3, $4, true, $5)
     ON CONFLICT (cluster, id) DO UPDATE SET hostname = EXCLUDED.hostname,
       version = EXCLUDED.version, connected = true, last_seen = EXCLUDED.last_seen
     RETURNING *`,
    [a.id, a.cluster, a.hostname, a.version, now],
  );
  return res.rows[0]!;
}

async function holdAgentStreamWith(
  db: pg.Pool | pg.PoolClient,
  agent: AgentRef,
  controllerId: string,
  now: number,
): Promise<void> {
  await db.query(
    `INSERT INTO agent_streams (cluster, agent_id, controller_id, since) VALUES ($1, $2, $3, $4)
     ON CONFLICT (cluster, agent_id) DO UPDATE SET controller_id = EXCLUDED.controller_id, since = EXCLUDED.since`,
    [agent.cluster, agent.agentId, controllerId, now],
  );
}

async function insertEvents(client: pg.PoolClient, events: readonly OutboxEventInput[]): Promise<void> {
  for (const e of events) await client.query(insertOutboxEventSql(dialect), outboxEventParams(e));
}

/** Events in one statement, their seq in the order given (WITH ORDINALITY). */
async function insertEventsMany(client: pg.PoolClient, events: readonly OutboxEventInput[]): Promise<void> {
  if (events.length <= 1) return insertEvents(client, events);
  const params = events.map(outboxEventParams);
  await client.query(
    `INSERT INTO events_outbox (id, cluster, kind, time, payload)
     SELECT v.id, v.cluster, v.kind, v.time, v.payload
       FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[]) WITH ORDINALITY
         AS v(id, cluster, kind, time, payload, n)
       ORDER BY v.n`,
    [0, 1, 2, 3, 4].map((k) => params.map((p) => p[k])),
  );
}

async function lockJob(client: pg.PoolClient, id: string): Promise<JobRecord> {
  const res = await client.query<JobRow>('SELECT * FROM jobs WHERE id = $1 FOR UPDATE', [id]);
  if (!res.rows[0]) throw new PgfleetError('UnknownJob', `job ${id} does not exist`);
  return jobRow(res.rows[0]);
}

async function migrate(client: pg.PoolClient): Promise<void> {
  await client.query('BEGIN');
  try {
    // Controllers starting together on a fresh catalog would each see version 0 and apply it.
    // The transaction-scoped lock makes the others wait and then find the work done; it is
    // released by COMMIT or ROLLBACK, or by the server if this process dies mid-migration.
    await client.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_CLASS}, 0)`);
    await client.query(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)',
    );
    const applied =
      (await client.query<{ v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations')).rows[0]?.v ?? 0;
    if (applied > CATALOG_SCHEMA_VERSION) {
      throw new PgfleetError(
        'InvalidConfig',
        `catalog schema version ${applied} is newer than this controller knows (${CATALOG_SCHEMA_VERSION})`,
        {
          hint: 'Run the newer pgfleet-controller version that wrote this catalog.',
        },
      );
    }
    for (let version = applied + 1; version <= CATALOG_SCHEMA_VERSION; version++) {
      // DDL is transactional in PostgreSQL: a failed version leaves the schema as it was.
      await client.query(POSTGRES_MIGRATIONS[version - 1]!);
      await client.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [version, Date.now()]);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** The NOTIFY channel of agent_messages; the payload names the controller a message was left for. */
const AGENT_MESSAGES_CHANNEL = 'pgfleet_agent_messages';

/** Schedule runs in one statement: all or none, and GREATEST keeps a late, older value from moving a run back. */
async function upsertScheduleRuns(client: pg.PoolClient, runs: readonly ScheduleRunRecord[]): Promise<void> {
  if (runs.length === 0) return;
  await client.query(
    `INSERT INTO schedule_runs (cluster, type, last_run)
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
     ON CONFLICT (cluster, type) DO UPDATE SET last_run = GREATEST(schedule_runs.last_run, EXCLUDED.last_run)`,
    [runs.map((r) => r.cluster), runs.map((r) => r.type), runs.map((r) => r.lastRun)],
  );
}

/**
 * Refuses the transaction's writes unless `fence` is still the leadership's current epoch. FOR
 * SHARE holds the row until commit: a controller acquiring the leadership meanwhile waits to
 * bump the epoch until these writes are committed, and so sees them in its first round.
 */
async function checkFence(client: pg.PoolClient, fence: LeadershipFence): Promise<void> {
  const rows = await client.query<{ epoch: string }>('SELECT epoch FROM leadership_epochs WHERE name = $1 FOR SHARE', [
    fence.name,
  ]);
  const current = rows.rows[0] ? Number(rows.rows[0].epoch) : undefined;
  if (current !== fence.epoch)
    throw new PgfleetError(
      'LeadershipLost',
      `${fence.name} leadership epoch ${fence.epoch} is over (now ${current ?? 'none'}): another controller leads`,
    );
}
