/**
 * The embedded catalog: one SQLite file through better-sqlite3. WAL journal mode lets readers
 * (listings) run while a writer commits; busy_timeout makes a second process (e.g. a future
 * `catalog rebuild`) wait for the lock instead of failing with SQLITE_BUSY. better-sqlite3 is
 * synchronous, so each async method runs to completion without interleaving: multi-statement
 * changes still use a transaction so a crash never leaves half of one, and an IMMEDIATE one
 * (write lock taken before the read a decision rests on) so another process cannot move a job
 * between our read and our write. The job state machine is the shared one (job-state.ts).
 */
import Database from 'better-sqlite3';
import { PgfleetError } from '@pgfleet/core';
import { checkJobTransition, clusterBusyError, existingJobFor, FAILABLE_JOB_STATES } from './job-state.js';
import { SQLITE_MIGRATIONS } from './migrations.js';
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
  historySampleParams,
  upsertHistorySql,
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
  type AgentRef,
  type AgentStreamRecord,
  type ControllerRecord,
  type LeadershipFence,
  type AgentHeartbeat,
  type ConnectingHello,
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

export { isLegalJobTransition } from './job-state.js';

export interface SqliteCatalogOptions {
  /** Milliseconds a statement waits for another connection's lock; default 5000. */
  busyTimeoutMs?: number;
}

const json = encodeJson;
const unjson = (text: unknown): unknown => (text === null || text === undefined ? null : JSON.parse(text as string));
const dialect: SqlDialect = {
  param: () => '?',
  bool: (value) => (value ? 1 : 0),
  inNames: (column) => `${column} IN (SELECT value FROM json_each(?))`,
  namesParam: (names) => JSON.stringify(names),
};
/** `cluster` is one of the names bound as the statement's only parameter. */
const IN_NAMES = dialect.inNames('cluster', 1);
const agentRow = (r: AgentRow): AgentRecord => agentFromRow(r, unjson);
const jobRow = (r: JobRow): JobRecord => jobFromRow(r, unjson);

export class SqliteCatalogStore implements CatalogStore {
  readonly path: string;
  private readonly db: Database.Database;

  /**
   * Prepared statements by SQL text. Compiling a statement costs more than running most of ours:
   * a controller holding 1,000 agents spent a quarter of its CPU in `prepare` (heartbeats, health
   * evaluation, status; bench/fleet-scale.mjs). The texts are a fixed set, save the few built with
   * one placeholder per value, which the bound keeps from growing without end.
   */
  private readonly statements = new Map<string, Database.Statement>();

  private constructor(path: string, db: Database.Database) {
    this.path = path;
    this.db = db;
  }

  /** The statement for `sql`, compiled once (none of ours iterates, so reuse is safe). */
  private prepare(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (!statement) {
      if (this.statements.size >= 1000) this.statements.clear();
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }

  /** Opens (creating if needed) the catalog file and applies pending migrations. */
  static open(path: string, options: SqliteCatalogOptions = {}): SqliteCatalogStore {
    let db: Database.Database;
    try {
      db = new Database(path);
    } catch (err) {
      throw new PgfleetError('InvalidConfig', `catalog ${path} cannot be opened: ${(err as Error).message}`, {
        cause: err,
        hint: 'Point --catalog at a writable file path (its directory must exist).',
      });
    }
    try {
      db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
      db.pragma('journal_mode = WAL');
      // NORMAL is durable across application crashes in WAL mode; only an OS crash can lose the
      // last commits, and the repository (not the catalog) is the source of truth for backups.
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      migrate(db);
    } catch (err) {
      db.close();
      throw err instanceof PgfleetError
        ? err
        : new PgfleetError('Internal', `catalog ${path}: ${(err as Error).message}`, { cause: err });
    }
    return new SqliteCatalogStore(path, db);
  }

  /** The applied schema version (for tests and diagnostics). */
  schemaVersion(): number {
    const row = this.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number | null };
    return row.v ?? 0;
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }

  async upsertCluster(
    c: { name: string; systemIdentifier: string; pgVersion: number },
    now: number,
  ): Promise<ClusterRecord> {
    return this.db.transaction(() => this.upsertClusterSync(c, now)).immediate();
  }

  private upsertClusterSync(
    c: { name: string; systemIdentifier: string; pgVersion: number },
    now: number,
  ): ClusterRecord {
    const existing = this.prepare('SELECT * FROM clusters WHERE name = ?').get(c.name) as ClusterRow | undefined;
    if (existing && existing.system_identifier !== c.systemIdentifier) {
      throw new PgfleetError(
        'SystemIdMismatch',
        `cluster '${c.name}' is registered with system identifier ${existing.system_identifier}, but the agent reports ${c.systemIdentifier}`,
      );
    }
    if (existing) {
      this.prepare('UPDATE clusters SET pg_version = ? WHERE name = ?').run(c.pgVersion, c.name);
      return { ...clusterFromRow(existing), pgVersion: c.pgVersion };
    }
    this.prepare('INSERT INTO clusters (name, system_identifier, pg_version, created_at) VALUES (?, ?, ?, ?)').run(
      c.name,
      c.systemIdentifier,
      c.pgVersion,
      now,
    );
    return { name: c.name, systemIdentifier: c.systemIdentifier, pgVersion: c.pgVersion, createdAt: now };
  }

  async getCluster(name: string): Promise<ClusterRecord | undefined> {
    const row = this.prepare('SELECT * FROM clusters WHERE name = ?').get(name) as ClusterRow | undefined;
    return row && clusterFromRow(row);
  }

  async getClusters(names: readonly string[]): Promise<ClusterRecord[]> {
    const rows = this.prepare(
      'SELECT * FROM clusters WHERE name IN (SELECT value FROM json_each(?)) ORDER BY name',
    ).all(dialect.namesParam(names)) as ClusterRow[];
    return rows.map(clusterFromRow);
  }

  async listClusters(page?: ClusterPage): Promise<ClusterRecord[]> {
    const rows = page
      ? this.prepare('SELECT * FROM clusters WHERE name > ? ORDER BY name LIMIT ?').all(page.after ?? '', page.limit)
      : this.prepare('SELECT * FROM clusters ORDER BY name').all();
    return (rows as ClusterRow[]).map(clusterFromRow);
  }

  async upsertAgent(
    a: { id: string; cluster: string; hostname: string; version: string },
    now: number,
    events: readonly OutboxEventInput[] = [],
  ): Promise<AgentRecord> {
    this.db
      .transaction(() => {
        this.upsertAgentSync(a, now);
        this.insertEventsSync(events);
      })
      .immediate();
    return (await this.getAgent({ cluster: a.cluster, agentId: a.id }))!;
  }

  private upsertAgentSync(a: { id: string; cluster: string; hostname: string; version: string }, now: number): void {
    this.prepare(
      `INSERT INTO agents (id, cluster, hostname, version, connected, last_seen) VALUES (?, ?, ?, ?, 1, ?)
       ON CONFLICT (cluster, id) DO UPDATE SET hostname = excluded.hostname,
         version = excluded.version, connected = 1, last_seen = excluded.last_seen`,
    ).run(a.id, a.cluster, a.hostname, a.version, now);
  }

  async connectAgents(
    hellos: readonly ConnectingHello[],
    controllerId: string,
    now: number,
  ): Promise<Array<Error | undefined>> {
    return this.db
      .transaction(() =>
        hellos.map(({ agent: a, events = [] }) => {
          try {
            // Throws before it writes anything: the refused Hello leaves no trace, the others go on.
            this.upsertClusterSync(
              { name: a.cluster, systemIdentifier: a.systemIdentifier, pgVersion: a.pgVersion },
              now,
            );
          } catch (err) {
            if (PgfleetError.is(err, 'SystemIdMismatch')) return err as Error;
            throw err;
          }
          this.holdAgentStreamSync({ cluster: a.cluster, agentId: a.id }, controllerId, now);
          this.upsertAgentSync(a, now);
          this.insertEventsSync(events);
          return undefined;
        }),
      )
      .immediate();
  }

  async setAgentConnected(
    agent: AgentRef,
    connected: boolean,
    now: number,
    events: readonly OutboxEventInput[] = [],
  ): Promise<void> {
    this.db
      .transaction(() => {
        this.prepare('UPDATE agents SET connected = ?, last_seen = ? WHERE cluster = ? AND id = ?').run(
          connected ? 1 : 0,
          now,
          agent.cluster,
          agent.agentId,
        );
        this.insertEventsSync(events);
      })
      .immediate();
  }

  private insertEventsSync(events: readonly OutboxEventInput[]): void {
    if (events.length === 0) return;
    const ins = this.prepare(insertOutboxEventSql(dialect));
    for (const e of events) ins.run(...outboxEventParams(e));
  }

  async appendEvents(events: readonly OutboxEventInput[]): Promise<void> {
    this.db.transaction(() => this.insertEventsSync(events)).immediate();
  }

  async nextUnsentEvents(limit: number): Promise<OutboxEventRecord[]> {
    return (
      this.prepare('SELECT * FROM events_outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?').all(
        limit,
      ) as OutboxEventRow[]
    ).map(outboxEventFromRow);
  }

  async markEventsSent(seqs: readonly number[], now: number, fence?: LeadershipFence): Promise<void> {
    const upd = this.prepare('UPDATE events_outbox SET sent_at = ? WHERE seq = ? AND sent_at IS NULL');
    this.db
      .transaction(() => {
        if (fence) this.checkFence(fence);
        for (const seq of seqs) upd.run(now, seq);
      })
      .immediate();
  }

  async listEvents(filter: { cluster?: string; afterSeq?: number; limit?: number } = {}): Promise<OutboxEventRecord[]> {
    const rows = this.prepare(
      'SELECT * FROM events_outbox WHERE seq > ? AND (? IS NULL OR cluster = ?) ORDER BY seq LIMIT ?',
    ).all(
      filter.afterSeq ?? 0,
      filter.cluster ?? null,
      filter.cluster ?? null,
      filter.limit ?? 100,
    ) as OutboxEventRow[];
    return rows.map(outboxEventFromRow);
  }

  async listLatestEvents(filter: { cluster?: string; limit: number }): Promise<OutboxEventRecord[]> {
    const rows = this.prepare(
      'SELECT * FROM events_outbox WHERE (? IS NULL OR cluster = ?) ORDER BY seq DESC LIMIT ?',
    ).all(filter.cluster ?? null, filter.cluster ?? null, filter.limit) as OutboxEventRow[];
    return rows.map(outboxEventFromRow).reverse();
  }

  async recordClusterSample(cluster: string, at: number, rpoSeconds: number): Promise<void> {
    await this.recordClusterSamples([{ cluster, at, rpoSeconds }]);
  }

  async recordClusterSamples(samples: readonly ClusterSample[]): Promise<void> {
    if (samples.length === 0) return;
    const upsert = this.prepare(upsertHistorySql(dialect, 'max'));
    this.db
      .transaction(() => {
        for (const s of samples)
          for (const r of HISTORY_RESOLUTIONS) upsert.run(...historySampleParams(s.cluster, s.at, s.rpoSeconds, r));
      })
      .immediate();
  }

  async listClusterHistory(
    cluster: string,
    resolution: HistoryResolution,
    since: number,
  ): Promise<ClusterHistoryBucket[]> {
    const rows = this.prepare(
      'SELECT * FROM cluster_history WHERE cluster = ? AND resolution = ? AND start >= ? ORDER BY start',
    ).all(cluster, resolution, since) as ClusterHistoryRow[];
    return rows.map(clusterHistoryFromRow);
  }

  async pruneClusterHistory(resolution: HistoryResolution, before: number): Promise<number> {
    return this.prepare('DELETE FROM cluster_history WHERE resolution = ? AND start < ?').run(resolution, before)
      .changes;
  }

  async listHealthStates(clusters?: ClusterSelection): Promise<HealthStateRecord[]> {
    const rows = (
      Array.isArray(clusters)
        ? this.prepare(`SELECT * FROM health_states WHERE ${IN_NAMES} ORDER BY cluster, condition`).all(
            dialect.namesParam(clusters),
          )
        : this.prepare('SELECT * FROM health_states WHERE (? IS NULL OR cluster = ?) ORDER BY cluster, condition').all(
            clusters ?? null,
            clusters ?? null,
          )
    ) as HealthStateRow[];
    return rows.map((r) => healthStateFromRow(r, unjson));
  }

  async putHealthState(
    h: HealthStateRecord,
    events: readonly OutboxEventInput[] = [],
    fence?: LeadershipFence,
  ): Promise<void> {
    this.db
      .transaction(() => {
        if (fence) this.checkFence(fence);
        this.prepare(
          `INSERT INTO health_states (cluster, condition, state, since, data) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (cluster, condition) DO UPDATE SET state = excluded.state, since = excluded.since, data = excluded.data`,
        ).run(h.cluster, h.condition, h.state, h.since, json(h.data));
        this.insertEventsSync(events);
      })
      .immediate();
  }

  async disconnectAllAgents(_now: number): Promise<void> {
    this.prepare('UPDATE agents SET connected = 0 WHERE connected <> 0').run();
  }

  async heartbeatController(c: Omit<ControllerRecord, 'leads'>): Promise<void> {
    this.prepare(
      `INSERT INTO controllers (id, address, started_at, last_seen, leads) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET address = excluded.address, last_seen = excluded.last_seen, leads = excluded.leads`,
    ).run(c.id, c.address, c.startedAt, c.lastSeen, [...this.leading.keys()].sort().join(','));
  }

  async removeController(id: string): Promise<void> {
    this.db
      .transaction(() => {
        this.prepare('DELETE FROM agent_streams WHERE controller_id = ?').run(id);
        this.prepare('DELETE FROM agent_messages WHERE controller_id = ?').run(id);
        this.prepare('DELETE FROM controllers WHERE id = ?').run(id);
      })
      .immediate();
  }

  async listControllers(): Promise<ControllerRecord[]> {
    const rows = this.prepare('SELECT * FROM controllers ORDER BY started_at, id').all() as ControllerRow[];
    return rows.map(controllerRow);
  }

  async holdAgentStream(agent: AgentRef, controllerId: string, now: number): Promise<void> {
    this.holdAgentStreamSync(agent, controllerId, now);
  }

  private holdAgentStreamSync(agent: AgentRef, controllerId: string, now: number): void {
    this.prepare(
      `INSERT INTO agent_streams (cluster, agent_id, controller_id, since) VALUES (?, ?, ?, ?)
         ON CONFLICT (cluster, agent_id) DO UPDATE SET controller_id = excluded.controller_id, since = excluded.since`,
    ).run(agent.cluster, agent.agentId, controllerId, now);
  }

  async releaseAgentStream(agent: AgentRef, controllerId: string): Promise<boolean> {
    const held = this.prepare('SELECT controller_id FROM agent_streams WHERE cluster = ? AND agent_id = ?').get(
      agent.cluster,
      agent.agentId,
    ) as { controller_id: string } | undefined;
    if (held && held.controller_id !== controllerId) return false;
    this.prepare('DELETE FROM agent_streams WHERE cluster = ? AND agent_id = ? AND controller_id = ?').run(
      agent.cluster,
      agent.agentId,
      controllerId,
    );
    return true;
  }

  async listAgentStreams(cluster?: string): Promise<AgentStreamRecord[]> {
    const rows = (
      cluster === undefined
        ? this.prepare('SELECT * FROM agent_streams ORDER BY cluster, agent_id').all()
        : this.prepare('SELECT * FROM agent_streams WHERE cluster = ? ORDER BY agent_id').all(cluster)
    ) as AgentStreamRow[];
    return rows.map(agentStreamRow);
  }

  async reholdAgentStreams(controllerId: string, agents: readonly AgentRef[], now: number): Promise<AgentRef[]> {
    if (agents.length === 0) return [];
    const held = this.prepare('SELECT count(*) AS n FROM agent_streams WHERE controller_id = ?').get(controllerId) as {
      n: number;
    };
    if (held.n >= agents.length) return [];
    const insert = this.prepare(
      `INSERT INTO agent_streams (cluster, agent_id, controller_id, since) VALUES (?, ?, ?, ?) ON CONFLICT (cluster, agent_id) DO NOTHING`,
    );
    const connect = this.prepare('UPDATE agents SET connected = 1 WHERE cluster = ? AND id = ?');
    return this.db
      .transaction(() => {
        const again: AgentRef[] = [];
        for (const a of agents) {
          if (insert.run(a.cluster, a.agentId, controllerId, now).changes === 0) continue;
          if (connect.run(a.cluster, a.agentId).changes > 0) again.push({ cluster: a.cluster, agentId: a.agentId });
        }
        return again;
      })
      .immediate();
  }

  async releaseDeadStreams(self: string, _liveSince: number, _now: number): Promise<AgentRef[]> {
    // One controller per SQLite file: any holder but `self` is a previous run of it.
    return this.db
      .transaction(() => {
        const gone = this.prepare(
          `SELECT a.cluster, a.id FROM agents a LEFT JOIN agent_streams s ON s.cluster = a.cluster AND s.agent_id = a.id
             WHERE a.connected <> 0 AND (s.controller_id IS NULL OR s.controller_id <> ?)`,
        ).all(self) as { cluster: string; id: string }[];
        const stmt = this.prepare('UPDATE agents SET connected = 0 WHERE cluster = ? AND id = ?');
        for (const g of gone) stmt.run(g.cluster, g.id);
        this.prepare('DELETE FROM agent_streams WHERE controller_id <> ?').run(self);
        this.prepare('DELETE FROM agent_messages WHERE controller_id <> ?').run(self);
        this.prepare('DELETE FROM controllers WHERE id <> ?').run(self);
        return gone.map((g) => ({ cluster: g.cluster, agentId: g.id }));
      })
      .immediate();
  }

  async queueAgentMessage(controllerId: string, agent: AgentRef, payload: Uint8Array, now: number): Promise<void> {
    this.prepare(
      'INSERT INTO agent_messages (controller_id, cluster, agent_id, payload, created_at) VALUES (?, ?, ?, ?, ?)',
    ).run(controllerId, agent.cluster, agent.agentId, Buffer.from(payload), now);
  }

  async takeAgentMessages(controllerId: string, limit: number): Promise<AgentMessageRecord[]> {
    const rows = this.prepare(
      `DELETE FROM agent_messages WHERE seq IN (SELECT seq FROM agent_messages WHERE controller_id = ? ORDER BY seq LIMIT ?)
         RETURNING seq, cluster, agent_id, payload`,
    ).all(controllerId, limit) as AgentMessageRow[];
    return rows.map(agentMessageRow).sort((a, b) => a.seq - b.seq);
  }

  async recordHeartbeats(beats: readonly AgentHeartbeat[]): Promise<void> {
    if (beats.length === 0) return;
    const update = this.prepare(
      `UPDATE agents SET last_seen = ?, archiver = COALESCE(?, archiver), current_lsn = COALESCE(?, current_lsn), wal_health = COALESCE(?, wal_health),
           archive_setup = COALESCE(?, archive_setup), role = CASE WHEN ? = 1 THEN ? ELSE role END, replay = CASE WHEN ? = 1 THEN ? ELSE replay END,
           timeline = COALESCE(?, timeline) WHERE cluster = ? AND id = ?`,
    );
    // One transaction for the batch: one commit (WAL append) instead of one per beat.
    this.db
      .transaction(() => {
        for (const { agent, figures: beat, at } of foldHeartbeats(beats))
          update.run(
            at,
            json(beat.archiver),
            beat.currentLsn || null,
            json(beat.walHealth),
            json(beat.archiveSetup),
            beat.role === undefined ? 0 : 1,
            beat.role ?? null,
            beat.role === undefined ? 0 : 1,
            json(beat.replay),
            beat.timeline ?? null,
            agent.cluster,
            agent.agentId,
          );
      })
      .immediate();
  }

  async getAgent(agent: AgentRef): Promise<AgentRecord | undefined> {
    const row = this.prepare('SELECT * FROM agents WHERE cluster = ? AND id = ?').get(agent.cluster, agent.agentId) as
      AgentRow | undefined;
    return row && agentRow(row);
  }

  async listAgents(clusters?: ClusterSelection): Promise<AgentRecord[]> {
    const rows =
      clusters === undefined
        ? this.prepare('SELECT * FROM agents ORDER BY cluster, id').all()
        : Array.isArray(clusters)
          ? this.prepare(`SELECT * FROM agents WHERE ${IN_NAMES} ORDER BY cluster, id`).all(
              dialect.namesParam(clusters),
            )
          : this.prepare('SELECT * FROM agents WHERE cluster = ? ORDER BY id').all(clusters);
    return (rows as AgentRow[]).map(agentRow);
  }

  async insertBackup(b: BackupRecord): Promise<void> {
    this.insertBackupSync(b);
  }

  private insertBackupSync(b: BackupRecord): void {
    this.prepare(insertBackupSql(dialect)).run(...backupRowParams(b, dialect));
  }

  async getBackup(cluster: string, label: string): Promise<BackupRecord | undefined> {
    const row = this.prepare('SELECT * FROM backups WHERE cluster = ? AND label = ?').get(cluster, label) as
      BackupRow | undefined;
    return row && backupFromRow(row);
  }

  async listBackups(cluster: string): Promise<BackupRecord[]> {
    // Real time orders backups; the stop LSN breaks ties of backups ending in the same millisecond.
    const rows = this.prepare('SELECT * FROM backups WHERE cluster = ? ORDER BY stop_time, stop_lsn_num, label').all(
      cluster,
    ) as BackupRow[];
    return rows.map(backupFromRow);
  }

  async latestBackups(clusters?: ClusterSelection, end: 'newest' | 'oldest' = 'newest'): Promise<BackupRecord[]> {
    const dir = end === 'newest' ? 'DESC' : 'ASC';
    const order = `stop_time ${dir}, stop_lsn_num ${dir}, label ${dir}`;
    // The backups_cluster_order index answers each cluster's newest (or oldest) with one seek; over
    // the fleet (or a page of it) one seek per cluster, not a window over every backup (0.7-1 s per
    // call at 100,000 backups, twice per status and once per cluster evaluation: bench/fleet-scale.mjs).
    const seek = (cluster: string) =>
      `JOIN backups b ON b.rowid = (SELECT rowid FROM backups WHERE cluster = ${cluster} ORDER BY ${order} LIMIT 1)`;
    const rows =
      clusters === undefined
        ? this.prepare(
            `SELECT b.* FROM (SELECT DISTINCT cluster FROM backups) c ${seek('c.cluster')} ORDER BY b.cluster`,
          ).all()
        : Array.isArray(clusters)
          ? this.prepare(`SELECT b.* FROM json_each(?) c ${seek('c.value')} ORDER BY b.cluster`).all(
              dialect.namesParam(clusters),
            )
          : this.prepare(`SELECT * FROM backups WHERE cluster = ? ORDER BY ${order} LIMIT 1`).all(clusters);
    return (rows as BackupRow[]).map(backupFromRow);
  }

  async oldestBackupStopTimes(clusters?: readonly string[]): Promise<Array<{ cluster: string; stopTime: number }>> {
    // One seek of backups_cluster_order per cluster, answered from the index alone.
    const first = (cluster: string) =>
      `(SELECT stop_time FROM backups WHERE cluster = ${cluster} ORDER BY stop_time, stop_lsn_num, label LIMIT 1)`;
    const rows =
      clusters === undefined
        ? this.prepare(
            `SELECT c.cluster AS cluster, ${first('c.cluster')} AS stopTime FROM (SELECT DISTINCT cluster FROM backups) c ORDER BY c.cluster`,
          ).all()
        : this.prepare(
            `SELECT * FROM (SELECT c.value AS cluster, ${first('c.value')} AS stopTime FROM json_each(?) c) WHERE stopTime IS NOT NULL ORDER BY cluster`,
          ).all(dialect.namesParam(clusters));
    return rows as Array<{ cluster: string; stopTime: number }>;
  }

  async setBackupPinned(cluster: string, label: string, pinned: boolean): Promise<BackupRecord> {
    const res = this.prepare('UPDATE backups SET pinned = ? WHERE cluster = ? AND label = ?').run(
      pinned ? 1 : 0,
      cluster,
      label,
    );
    if (res.changes === 0)
      throw new PgfleetError('UnknownBackup', `cluster '${cluster}' has no backup '${label}' in the catalog`);
    return (await this.getBackup(cluster, label))!;
  }

  async deleteBackups(cluster: string, labels: readonly string[]): Promise<number> {
    const del = this.prepare('DELETE FROM backups WHERE cluster = ? AND label = ?');
    return this.db.transaction(() => labels.reduce((n, label) => n + del.run(cluster, label).changes, 0)).immediate();
  }

  async insertDump(d: DumpRecord): Promise<void> {
    this.insertDumpSync(d);
  }

  private insertDumpSync(d: DumpRecord): void {
    this.prepare(insertDumpSql(dialect)).run(...dumpRowParams(d));
  }

  async listDumps(cluster: string, options: { includeExpired?: boolean } = {}): Promise<DumpRecord[]> {
    const rows = this.prepare(
      `SELECT * FROM dumps WHERE cluster = ?${options.includeExpired ? '' : ' AND expired_at IS NULL'} ORDER BY stop_time, label`,
    ).all(cluster) as DumpRow[];
    return rows.map((r) => dumpFromRow(r, unjson));
  }

  async latestDumps(clusters?: ClusterSelection): Promise<DumpRecord[]> {
    const newest = (cluster: string) =>
      `SELECT rowid FROM dumps WHERE cluster = ${cluster} AND expired_at IS NULL ORDER BY stop_time DESC, label DESC LIMIT 1`;
    const rows =
      clusters === undefined
        ? this.prepare(
            `SELECT d.* FROM (SELECT DISTINCT cluster FROM dumps) c JOIN dumps d ON d.rowid = (${newest('c.cluster')}) ORDER BY d.cluster`,
          ).all()
        : Array.isArray(clusters)
          ? this.prepare(
              `SELECT d.* FROM json_each(?) c JOIN dumps d ON d.rowid = (${newest('c.value')}) ORDER BY d.cluster`,
            ).all(dialect.namesParam(clusters))
          : this.prepare(
              'SELECT * FROM dumps WHERE cluster = ? AND expired_at IS NULL ORDER BY stop_time DESC, label DESC LIMIT 1',
            ).all(clusters);
    return (rows as DumpRow[]).map((r) => dumpFromRow(r, unjson));
  }

  async markDumpsExpired(cluster: string, labels: readonly string[], now: number): Promise<number> {
    const mark = this.prepare('UPDATE dumps SET expired_at = ? WHERE cluster = ? AND label = ? AND expired_at IS NULL');
    return this.db
      .transaction(() => labels.reduce((n, label) => n + mark.run(now, cluster, label).changes, 0))
      .immediate();
  }

  async getPolicy(scope: string): Promise<PolicyRecord | undefined> {
    const row = this.prepare('SELECT * FROM policies WHERE scope = ?').get(scope) as PolicyRow | undefined;
    return row && policyFromRow(row, unjson);
  }

  async listPolicies(scopes?: readonly string[]): Promise<PolicyRecord[]> {
    const rows = (
      scopes
        ? this.prepare(`SELECT * FROM policies WHERE ${dialect.inNames('scope', 1)} ORDER BY scope <> '*', scope`).all(
            dialect.namesParam(scopes),
          )
        : this.prepare("SELECT * FROM policies ORDER BY scope <> '*', scope").all()
    ) as PolicyRow[];
    return rows.map((r) => policyFromRow(r, unjson));
  }

  async putPolicy(
    p: { scope: string; schedules: PolicySchedules; retention: PolicyRetention; health?: PolicyHealth },
    now: number,
  ): Promise<PolicyRecord> {
    this.prepare(
      `INSERT INTO policies (scope, schedules, retention, health, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (scope) DO UPDATE SET schedules = excluded.schedules, retention = excluded.retention, health = excluded.health, updated_at = excluded.updated_at`,
    ).run(p.scope, JSON.stringify(p.schedules), JSON.stringify(p.retention), JSON.stringify(p.health ?? {}), now);
    return (await this.getPolicy(p.scope))!;
  }

  async deletePolicy(scope: string): Promise<boolean> {
    return this.prepare('DELETE FROM policies WHERE scope = ?').run(scope).changes > 0;
  }

  async listScheduleRuns(clusters?: ClusterSelection): Promise<ScheduleRunRecord[]> {
    const rows =
      clusters === undefined
        ? this.prepare('SELECT * FROM schedule_runs ORDER BY cluster, type').all()
        : Array.isArray(clusters)
          ? this.prepare(`SELECT * FROM schedule_runs WHERE ${IN_NAMES} ORDER BY cluster, type`).all(
              dialect.namesParam(clusters),
            )
          : this.prepare('SELECT * FROM schedule_runs WHERE cluster = ? ORDER BY type').all(clusters);
    return (rows as ScheduleRunRow[]).map(scheduleRunFromRow);
  }

  async recordScheduleRuns(runs: readonly ScheduleRunRecord[], fence?: LeadershipFence): Promise<void> {
    this.db
      .transaction(() => {
        if (fence) this.checkFence(fence);
        this.upsertScheduleRuns(runs);
      })
      .immediate();
  }

  /** Inside a transaction; MAX keeps a late, older value from moving a run back. */
  private upsertScheduleRuns(runs: readonly ScheduleRunRecord[]): void {
    const up = this.prepare(
      `INSERT INTO schedule_runs (cluster, type, last_run) VALUES (?, ?, ?)
       ON CONFLICT (cluster, type) DO UPDATE SET last_run = MAX(last_run, excluded.last_run)`,
    );
    for (const r of runs) up.run(r.cluster, r.type, r.lastRun);
  }

  async createJob(job: NewJob, now: number): Promise<JobRecord> {
    const { changes } = this.prepare(
      `INSERT INTO jobs (id, cluster, kind, state, agent_id, params, created_at, dispatcher) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
    ).run(job.id, job.cluster, job.kind, job.agentId, json(job.params), now, job.dispatcher ?? null);
    const stored = (await this.getJob(job.id))!;
    return changes === 0 ? existingJobFor(job, stored) : stored;
  }

  async createJobIfIdle(
    cluster: string,
    kinds: readonly JobKind[],
    job: NewJob,
    now: number,
    fence?: LeadershipFence,
    runs: readonly ScheduleRunRecord[] = [],
  ): Promise<JobRecord> {
    // BEGIN IMMEDIATE takes the write lock first: a second connection to the file waits until this commits.
    return this.db
      .transaction(() => {
        if (fence) this.checkFence(fence);
        const known = this.prepare('SELECT * FROM jobs WHERE id = ?').get(job.id) as JobRow | undefined;
        if (known) return existingJobFor(job, jobRow(known));
        const active = FAILABLE_JOB_STATES.map(() => '?').join(', ');
        const kindList = kinds.map(() => '?').join(', ');
        const busy =
          kinds.length === 0
            ? undefined
            : (this.prepare(
                `SELECT * FROM jobs WHERE cluster = ? AND kind IN (${kindList}) AND state IN (${active}) ORDER BY created_at, rowid LIMIT 1`,
              ).get(cluster, ...kinds, ...FAILABLE_JOB_STATES) as JobRow | undefined);
        if (busy) throw clusterBusyError(cluster, jobRow(busy));
        this.prepare(
          `INSERT INTO jobs (id, cluster, kind, state, agent_id, params, created_at, dispatcher) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)`,
        ).run(job.id, job.cluster, job.kind, job.agentId, json(job.params), now, job.dispatcher ?? null);
        this.upsertScheduleRuns(runs);
        return jobRow(this.prepare('SELECT * FROM jobs WHERE id = ?').get(job.id) as JobRow);
      })
      .immediate();
  }

  async getJob(id: string): Promise<JobRecord | undefined> {
    const row = this.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
    return row && jobRow(row);
  }

  async listJobs(filter: JobFilter = {}): Promise<JobRecord[]> {
    const limit = filter.limit && filter.limit > 0 ? filter.limit : -1;
    const { where, args } = jobWhere(filter, dialect);
    const rows = this.prepare(`SELECT * FROM jobs ${where} ORDER BY created_at DESC, rowid DESC LIMIT ?`).all(
      ...args,
      limit,
    ) as JobRow[];
    return rows.map(jobRow);
  }

  async latestJobsPerCluster(filter: JobFilter & { perCluster: number }): Promise<JobRecord[]> {
    const { where, args } = jobWhere(filter, dialect);
    const rows = this.prepare(
      `SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY cluster ORDER BY created_at DESC, rowid DESC) AS newest
         FROM jobs ${where}) WHERE newest <= ? ORDER BY cluster, newest`,
    ).all(...args, filter.perCluster) as JobRow[];
    return rows.map(jobRow);
  }

  async countJobs(): Promise<Array<{ cluster: string; kind: JobKind; state: JobStateName; count: number }>> {
    const rows = this.prepare(
      'SELECT cluster, kind, state, COUNT(*) AS count FROM jobs GROUP BY cluster, kind, state ORDER BY cluster, kind, state',
    ).all() as Array<{ cluster: string; kind: JobKind; state: JobStateName; count: number }>;
    return rows.map((r) => ({ ...r, count: Number(r.count) }));
  }

  async listActiveJobs(): Promise<JobRecord[]> {
    const active = FAILABLE_JOB_STATES.map(() => '?').join(', ');
    const rows = this.prepare(`SELECT * FROM jobs WHERE state IN (${active}) ORDER BY created_at, rowid`).all(
      ...FAILABLE_JOB_STATES,
    ) as JobRow[];
    return rows.map(jobRow);
  }

  async transitionJob(
    id: string,
    to: JobStateName,
    options: TransitionOptions,
    now: number,
  ): Promise<TransitionOutcome> {
    return this.db.transaction(() => this.transitionSync(id, to, options, now)).immediate();
  }

  private transitionSync(id: string, to: JobStateName, options: TransitionOptions, now: number): TransitionOutcome {
    const row = this.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
    if (!row) throw new PgfleetError('UnknownJob', `job ${id} does not exist`);
    const current = jobRow(row);
    if (!checkJobTransition(id, current.state, to)) return { job: current, changed: false };
    const terminal = isTerminalJobState(to);
    if (to === 'succeeded' && options.backup) this.insertBackupSync(options.backup);
    if (to === 'succeeded' && options.dump) this.insertDumpSync(options.dump);
    this.insertEventsSync(options.events ?? []);
    this.prepare(
      `UPDATE jobs SET state = ?,
           started_at = CASE WHEN ? AND started_at IS NULL THEN ? ELSE started_at END,
           finished_at = CASE WHEN ? THEN ? ELSE finished_at END,
           error_code = COALESCE(?, error_code), error_message = COALESCE(?, error_message),
           result = COALESCE(?, result)
         WHERE id = ?`,
    ).run(
      to,
      to === 'running' ? 1 : 0,
      now,
      terminal ? 1 : 0,
      now,
      options.error?.code ?? null,
      options.error?.message ?? null,
      json(options.result),
      id,
    );
    return { job: jobRow(this.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow), changed: true };
  }

  async updateJobProgress(
    id: string,
    progress: unknown,
    now: number,
    claimed?: JobEventsFactory,
  ): Promise<TransitionOutcome> {
    return this.db
      .transaction((): TransitionOutcome => {
        const row = this.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
        if (!row) throw new PgfleetError('UnknownJob', `job ${id} does not exist`);
        const job = jobRow(row);
        // Progress that arrives after the end (a late message on the stream) must not reopen the job.
        if (isTerminalJobState(job.state)) return { job, changed: false };
        // The agent has a job still queued: its sender died (or has not recorded the send yet).
        if (job.state === 'queued') this.transitionSync(id, 'dispatched', { events: claimed?.(job) ?? [] }, now);
        if (job.state !== 'running') this.transitionSync(id, 'running', {}, now);
        this.prepare('UPDATE jobs SET progress = ? WHERE id = ?').run(json(progress), id);
        return { job: jobRow(this.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow), changed: true };
      })
      .immediate();
  }

  async claimJobDispatch(id: string, controllerId: string): Promise<JobRecord> {
    this.prepare(`UPDATE jobs SET dispatcher = ? WHERE id = ? AND state = 'queued'`).run(controllerId, id);
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
    return this.db
      .transaction(() => {
        if (fence) this.checkFence(fence);
        const rows = this.prepare(
          `SELECT id FROM jobs j
             WHERE j.state = 'queued' AND j.dispatcher IS NOT NULL AND j.dispatcher <> ? AND j.created_at < ?
               AND NOT EXISTS (SELECT 1 FROM controllers c WHERE c.id = j.dispatcher AND c.last_seen >= ?)
             ORDER BY rowid`,
        ).all(self, deadBefore, deadBefore) as { id: string }[];
        return rows.map((r) => {
          const job = this.transitionSync(r.id, 'failed', { error }, now).job;
          if (events) this.insertEventsSync(events(job));
          return job;
        });
      })
      .immediate();
  }

  async failActiveJobsOfAgent(
    agent: AgentRef,
    error: JobError,
    now: number,
    except: readonly string[] = [],
    events?: JobEventsFactory,
  ): Promise<JobRecord[]> {
    return this.failJobs('cluster = ? AND agent_id = ?', [agent.cluster, agent.agentId], except, error, now, events);
  }

  async failAllActiveJobs(error: JobError, now: number, events?: JobEventsFactory): Promise<JobRecord[]> {
    return this.failJobs('1 = 1', [], [], error, now, events);
  }

  /** Selects and fails the matching active jobs in one write transaction, so none can move in between. */
  private failJobs(
    where: string,
    params: unknown[],
    except: readonly string[],
    error: JobError,
    now: number,
    events?: JobEventsFactory,
  ): JobRecord[] {
    const active = FAILABLE_JOB_STATES.map(() => '?').join(', ');
    return this.db
      .transaction(() => {
        const rows = this.prepare(`SELECT id FROM jobs WHERE ${where} AND state IN (${active}) ORDER BY rowid`).all(
          ...params,
          ...FAILABLE_JOB_STATES,
        ) as { id: string }[];
        return rows
          .filter((r) => !except.includes(r.id))
          .map((r) => {
            const job = this.transitionSync(r.id, 'failed', { error }, now).job;
            if (events) this.insertEventsSync(events(job));
            return job;
          });
      })
      .immediate();
  }

  /** One process owns an SQLite catalog, so it always leads. */
  async createEnrollmentToken(
    t: { tokenHash: string; cluster: string; expiresAt: number },
    now: number,
  ): Promise<EnrollmentTokenRecord> {
    this.prepare('INSERT INTO enrollment_tokens (token_hash, cluster, created_at, expires_at) VALUES (?, ?, ?, ?)').run(
      t.tokenHash,
      t.cluster,
      now,
      t.expiresAt,
    );
    return enrollmentTokenFromRow(
      this.prepare('SELECT * FROM enrollment_tokens WHERE token_hash = ?').get(t.tokenHash) as EnrollmentTokenRow,
    );
  }

  async useEnrollmentToken(tokenHash: string, agentId: string, now: number): Promise<EnrollmentTokenUse> {
    // One conditional UPDATE decides: of two agents racing with one token, one changes the row.
    const res = this.prepare(
      'UPDATE enrollment_tokens SET used_at = ?, agent_id = ? WHERE token_hash = ? AND used_at IS NULL AND expires_at > ?',
    ).run(now, agentId, tokenHash, now);
    const row = this.prepare('SELECT * FROM enrollment_tokens WHERE token_hash = ?').get(tokenHash) as
      EnrollmentTokenRow | undefined;
    return res.changes === 1 ? { ok: true, token: enrollmentTokenFromRow(row!) } : enrollmentRefusal(row, now);
  }

  async listEnrollmentTokens(): Promise<EnrollmentTokenRecord[]> {
    return (
      this.prepare('SELECT * FROM enrollment_tokens ORDER BY created_at DESC, token_hash').all() as EnrollmentTokenRow[]
    ).map(enrollmentTokenFromRow);
  }

  async createAdminToken(
    t: { id: string; name: string; role: AdminRole; tokenHash: string },
    now: number,
  ): Promise<AdminTokenRecord> {
    try {
      this.prepare('INSERT INTO admin_tokens (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)').run(
        t.id,
        t.name,
        t.role,
        t.tokenHash,
        now,
      );
    } catch (err) {
      if ((err as { code?: string }).code?.startsWith('SQLITE_CONSTRAINT')) throw adminTokenNameTaken(t.name, err);
      throw err;
    }
    return adminTokenFromRow(this.prepare('SELECT * FROM admin_tokens WHERE id = ?').get(t.id) as AdminTokenRow);
  }

  async findAdminToken(tokenHash: string): Promise<AdminTokenRecord | undefined> {
    const row = this.prepare('SELECT * FROM admin_tokens WHERE token_hash = ? AND revoked_at IS NULL').get(
      tokenHash,
    ) as AdminTokenRow | undefined;
    return row && adminTokenFromRow(row);
  }

  async listAdminTokens(): Promise<AdminTokenRecord[]> {
    return (this.prepare('SELECT * FROM admin_tokens ORDER BY created_at, id').all() as AdminTokenRow[]).map(
      adminTokenFromRow,
    );
  }

  async revokeAdminToken(idOrName: string, now: number): Promise<AdminTokenRecord | undefined> {
    return this.db
      .transaction(() => {
        const row = this.prepare(
          'SELECT * FROM admin_tokens WHERE (id = ? OR name = ?) AND revoked_at IS NULL ORDER BY id = ? DESC LIMIT 1',
        ).get(idOrName, idOrName, idOrName) as AdminTokenRow | undefined;
        if (!row) return undefined;
        this.prepare('UPDATE admin_tokens SET revoked_at = ? WHERE id = ?').run(now, row.id);
        return adminTokenFromRow({ ...row, revoked_at: now });
      })
      .immediate();
  }

  /** One controller per SQLite file: it leads whatever it asks for; the epoch of each acquisition. */
  private readonly leading = new Map<string, number>();

  async tryAcquireLeadership(name: string): Promise<boolean> {
    if (!this.leading.has(name)) {
      const row = this.prepare(
        `INSERT INTO leadership_epochs (name, epoch) VALUES (?, 1)
           ON CONFLICT (name) DO UPDATE SET epoch = epoch + 1 RETURNING epoch`,
      ).get(name) as { epoch: number };
      this.leading.set(name, Number(row.epoch));
    }
    return true;
  }

  leadershipFence(name: string): LeadershipFence | undefined {
    const epoch = this.leading.get(name);
    return epoch === undefined ? undefined : { name, epoch };
  }

  async releaseLeadership(name: string): Promise<void> {
    this.leading.delete(name);
  }

  /** Inside a write transaction: refuses it unless `fence` is the leadership's current epoch. */
  private checkFence(fence: LeadershipFence): void {
    const row = this.prepare('SELECT epoch FROM leadership_epochs WHERE name = ?').get(fence.name) as
      { epoch: number } | undefined;
    if (row === undefined || Number(row.epoch) !== fence.epoch)
      throw new PgfleetError(
        'LeadershipLost',
        `${fence.name} leadership epoch ${fence.epoch} is over (now ${row?.epoch ?? 'none'}): another controller leads`,
      );
  }
}

function migrate(db: Database.Database): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
  // IMMEDIATE takes the write lock before reading the version, so two processes opening a fresh
  // file at once cannot both apply the same migration.
  db.transaction(() => {
    const applied =
      (db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as { v: number | null }).v ?? 0;
    if (applied > SQLITE_MIGRATIONS.length) {
      throw new PgfleetError(
        'InvalidConfig',
        `catalog schema version ${applied} is newer than this controller knows (${SQLITE_MIGRATIONS.length})`,
        {
          hint: 'Run the newer pgfleet-controller version that wrote this catalog.',
        },
      );
    }
    for (let version = applied + 1; version <= SQLITE_MIGRATIONS.length; version++) {
      db.exec(SQLITE_MIGRATIONS[version - 1]!);
      db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(version, Date.now());
    }
  }).immediate();
}
