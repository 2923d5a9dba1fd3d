/**
 * Versioned schema migrations for the catalog, one ordered list for both dialects: entry N is
 * schema version N in SQLite and in PostgreSQL alike, with each dialect's SQL side by side so the
 * versions cannot drift apart. Each store applies the pending entries in one transaction together
 * with their rows in schema_migrations; entries are never edited after release, only appended.
 *
 * Dialect differences are types only, plus what SQLite gives implicitly: times are ms since the
 * epoch (INTEGER / BIGINT), JSON is TEXT / JSONB, flags INTEGER 0/1 / BOOLEAN, and PostgreSQL has
 * no rowid, so jobs carry an identity column `seq` to order jobs created in the same millisecond.
 */
export interface CatalogMigration {
  /** What the version adds (documentation; not stored). */
  readonly description: string;
  readonly sqlite: string;
  readonly postgres: string;
}

/**
 * A migration that admits another job kind: SQLite rebuilds jobs for its CHECK constraint as in
 * version 5 (rowids kept: they order jobs created in the same millisecond), PostgreSQL swaps the
 * constraint. Only for migrations from 13 on: the texts of applied migrations never change.
 * `dispatcher`: the jobs table has the dispatcher column (every migration after 'jobs.dispatcher'
 * must pass true, or SQLite's rebuild would drop it; the catalog suite's dispatch tests then fail).
 */
function jobKindsMigration(
  kinds: readonly string[],
  dispatcher = false,
): Pick<CatalogMigration, 'sqlite' | 'postgres'> {
  const list = kinds.map((k) => `'${k}'`).join(', ');
  const extra = dispatcher ? ', dispatcher' : '';
  return {
    sqlite: `
      CREATE TABLE jobs_v5 (
        id            TEXT PRIMARY KEY,
        cluster       TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN (${list})),
        state         TEXT NOT NULL CHECK (state IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')),
        agent_id      TEXT NOT NULL,
        params        TEXT,
        created_at    INTEGER NOT NULL,
        started_at    INTEGER,
        finished_at   INTEGER,
        error_code    TEXT,
        error_message TEXT,
        progress      TEXT,
        result        TEXT${dispatcher ? ',\n        dispatcher    TEXT' : ''}
      );
      INSERT INTO jobs_v5 (rowid, id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, error_code, error_message, progress, result${extra})
        SELECT rowid, id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, error_code, error_message, progress, result${extra} FROM jobs;
      DROP TABLE jobs;
      ALTER TABLE jobs_v5 RENAME TO jobs;
      CREATE INDEX jobs_cluster_created ON jobs(cluster, created_at);
      CREATE INDEX jobs_active ON jobs(state) WHERE state IN ('queued', 'dispatched', 'running');
      CREATE INDEX jobs_cluster_kind ON jobs(cluster, kind, created_at);
    `,
    postgres: `
      ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
      ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN (${list}));
    `,
  };
}

/**
 * A migration that admits another schedule_runs type: SQLite rebuilds the table for its CHECK
 * constraint, PostgreSQL swaps the constraint. Only for migrations from 21 on (version 20 spelled
 * its own out: the texts of applied migrations never change).
 */
function scheduleKindsMigration(types: readonly string[]): Pick<CatalogMigration, 'sqlite' | 'postgres'> {
  const list = types.map((k) => `'${k}'`).join(', ');
  return {
    sqlite: `
      CREATE TABLE schedule_runs_next (
        cluster  TEXT NOT NULL,
        type     TEXT NOT NULL CHECK (type IN (${list})),
        last_run INTEGER NOT NULL,
        PRIMARY KEY (cluster, type)
      );
      INSERT INTO schedule_runs_next (cluster, type, last_run) SELECT cluster, type, last_run FROM schedule_runs;
      DROP TABLE schedule_runs;
      ALTER TABLE schedule_runs_next RENAME TO schedule_runs;
    `,
    postgres: `
      ALTER TABLE schedule_runs DROP CONSTRAINT schedule_runs_type_check;
      ALTER TABLE schedule_runs ADD CONSTRAINT schedule_runs_type_check CHECK (type IN (${list}));
    `,
  };
}

/** The job kinds once rotate-key was admitted (each later migration adds its own to these). */
const KINDS_WITH_ROTATE_KEY = [
  'backup',
  'restore',
  'expire',
  'verify',
  'drill',
  'capture',
  'check',
  'info',
  'restore-points',
  'rotate-key',
] as const;

export const CATALOG_MIGRATIONS: readonly CatalogMigration[] = [
  {
    description: 'clusters, agents, backups, jobs',
    sqlite: `
      CREATE TABLE clusters (
        name              TEXT PRIMARY KEY,
        system_identifier TEXT NOT NULL,
        pg_version        INTEGER NOT NULL,
        created_at        INTEGER NOT NULL
      );
      CREATE TABLE agents (
        id          TEXT PRIMARY KEY,
        cluster     TEXT NOT NULL REFERENCES clusters(name),
        hostname    TEXT NOT NULL,
        version     TEXT NOT NULL,
        connected   INTEGER NOT NULL DEFAULT 0,
        last_seen   INTEGER,
        archiver    TEXT,
        current_lsn TEXT
      );
      CREATE INDEX agents_cluster ON agents(cluster);
      CREATE TABLE backups (
        cluster           TEXT NOT NULL REFERENCES clusters(name),
        label             TEXT NOT NULL,
        type              TEXT NOT NULL CHECK (type IN ('full', 'diff', 'incr')),
        start_lsn         TEXT NOT NULL,
        start_lsn_num     INTEGER NOT NULL,
        stop_lsn          TEXT NOT NULL,
        stop_lsn_num      INTEGER NOT NULL,
        start_time        INTEGER NOT NULL,
        stop_time         INTEGER NOT NULL,
        timeline          INTEGER NOT NULL,
        system_identifier TEXT NOT NULL,
        pg_version        INTEGER NOT NULL,
        size_bytes        INTEGER NOT NULL,
        stored_bytes      INTEGER NOT NULL,
        file_count        INTEGER NOT NULL,
        wal_start         TEXT NOT NULL,
        wal_stop          TEXT NOT NULL,
        job_id            TEXT NOT NULL,
        prior_label       TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (cluster, label)
      );
      CREATE INDEX backups_cluster_stop ON backups(cluster, stop_time);
      CREATE TABLE jobs (
        id            TEXT PRIMARY KEY,
        cluster       TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('backup', 'restore')),
        state         TEXT NOT NULL CHECK (state IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')),
        agent_id      TEXT NOT NULL,
        params        TEXT,
        created_at    INTEGER NOT NULL,
        started_at    INTEGER,
        finished_at   INTEGER,
        error_code    TEXT,
        error_message TEXT,
        progress      TEXT,
        result        TEXT
      );
      CREATE INDEX jobs_cluster_created ON jobs(cluster, created_at);
      CREATE INDEX jobs_active ON jobs(state) WHERE state IN ('queued', 'dispatched', 'running');
    `,
    postgres: `
      CREATE TABLE clusters (
        name              TEXT PRIMARY KEY,
        system_identifier TEXT NOT NULL,
        pg_version        INTEGER NOT NULL,
        created_at        BIGINT NOT NULL
      );
      CREATE TABLE agents (
        id          TEXT PRIMARY KEY,
        cluster     TEXT NOT NULL REFERENCES clusters(name),
        hostname    TEXT NOT NULL,
        version     TEXT NOT NULL,
        connected   BOOLEAN NOT NULL DEFAULT false,
        last_seen   BIGINT,
        archiver    JSONB,
        current_lsn TEXT
      );
      CREATE INDEX agents_cluster ON agents(cluster);
      CREATE TABLE backups (
        cluster           TEXT NOT NULL REFERENCES clusters(name),
        label             TEXT NOT NULL,
        type              TEXT NOT NULL CHECK (type IN ('full', 'diff', 'incr')),
        start_lsn         TEXT NOT NULL,
        -- An LSN is an unsigned 64-bit integer; NUMERIC holds all of it where BIGINT stops at 2^63.
        start_lsn_num     NUMERIC(20, 0) NOT NULL,
        stop_lsn          TEXT NOT NULL,
        stop_lsn_num      NUMERIC(20, 0) NOT NULL,
        start_time        BIGINT NOT NULL,
        stop_time         BIGINT NOT NULL,
        timeline          BIGINT NOT NULL,
        system_identifier TEXT NOT NULL,
        pg_version        INTEGER NOT NULL,
        size_bytes        BIGINT NOT NULL,
        stored_bytes      BIGINT NOT NULL,
        file_count        BIGINT NOT NULL,
        wal_start         TEXT NOT NULL,
        wal_stop          TEXT NOT NULL,
        job_id            TEXT NOT NULL,
        prior_label       TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (cluster, label)
      );
      CREATE INDEX backups_cluster_stop ON backups(cluster, stop_time);
      CREATE TABLE jobs (
        id            TEXT PRIMARY KEY,
        seq           BIGINT GENERATED ALWAYS AS IDENTITY,
        cluster       TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('backup', 'restore')),
        state         TEXT NOT NULL CHECK (state IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')),
        agent_id      TEXT NOT NULL,
        params        JSONB,
        created_at    BIGINT NOT NULL,
        started_at    BIGINT,
        finished_at   BIGINT,
        error_code    TEXT,
        error_message TEXT,
        progress      JSONB,
        result        JSONB
      );
      CREATE INDEX jobs_cluster_created ON jobs(cluster, created_at);
      CREATE INDEX jobs_active ON jobs(state) WHERE state IN ('queued', 'dispatched', 'running');
    `,
  },
  {
    description:
      'policies (cluster override or fleet default), schedule_runs (last run per cluster and backup type), backups.pinned, expire jobs',
    // SQLite cannot change a CHECK constraint in place: the jobs table is rebuilt, rowids kept
    // (they order jobs created in the same millisecond). The kind list also admits the job kinds
    // the protocol plans (verify, drill), so adding them needs no further rebuild.
    sqlite: `
      CREATE TABLE policies (
        scope      TEXT PRIMARY KEY,
        schedules  TEXT NOT NULL,
        retention  TEXT NOT NULL,
        updated_at INTEGER NOT NULL
      );
      CREATE TABLE schedule_runs (
        cluster  TEXT NOT NULL,
        type     TEXT NOT NULL CHECK (type IN ('full', 'diff', 'incr')),
        last_run INTEGER NOT NULL,
        PRIMARY KEY (cluster, type)
      );
      ALTER TABLE backups ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
      CREATE TABLE jobs_v2 (
        id            TEXT PRIMARY KEY,
        cluster       TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('backup', 'restore', 'expire', 'verify', 'drill')),
        state         TEXT NOT NULL CHECK (state IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')),
        agent_id      TEXT NOT NULL,
        params        TEXT,
        created_at    INTEGER NOT NULL,
        started_at    INTEGER,
        finished_at   INTEGER,
        error_code    TEXT,
        error_message TEXT,
        progress      TEXT,
        result        TEXT
      );
      INSERT INTO jobs_v2 (rowid, id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, error_code, error_message, progress, result)
        SELECT rowid, id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, error_code, error_message, progress, result FROM jobs;
      DROP TABLE jobs;
      ALTER TABLE jobs_v2 RENAME TO jobs;
      CREATE INDEX jobs_cluster_created ON jobs(cluster, created_at);
      CREATE INDEX jobs_active ON jobs(state) WHERE state IN ('queued', 'dispatched', 'running');
    `,
    postgres: `
      CREATE TABLE policies (
        scope      TEXT PRIMARY KEY,
        schedules  JSONB NOT NULL,
        retention  JSONB NOT NULL,
        updated_at BIGINT NOT NULL
      );
      CREATE TABLE schedule_runs (
        cluster  TEXT NOT NULL,
        type     TEXT NOT NULL CHECK (type IN ('full', 'diff', 'incr')),
        last_run BIGINT NOT NULL,
        PRIMARY KEY (cluster, type)
      );
      ALTER TABLE backups ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT false;
      ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
      ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('backup', 'restore', 'expire', 'verify', 'drill'));
    `,
  },
  {
    description:
      'enrollment_tokens (one-time agent enrollment, stored hashed), admin_tokens (bearer tokens with a role, stored hashed)',
    sqlite: `
      CREATE TABLE enrollment_tokens (
        token_hash TEXT PRIMARY KEY,
        cluster    TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER,
        agent_id   TEXT
      );
      CREATE TABLE admin_tokens (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        role       TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        token_hash TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
      );
      CREATE UNIQUE INDEX admin_tokens_active_name ON admin_tokens(name) WHERE revoked_at IS NULL;
    `,
    postgres: `
      CREATE TABLE enrollment_tokens (
        token_hash TEXT PRIMARY KEY,
        cluster    TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at    BIGINT,
        agent_id   TEXT
      );
      CREATE TABLE admin_tokens (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        role       TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        token_hash TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
      );
      CREATE UNIQUE INDEX admin_tokens_active_name ON admin_tokens(name) WHERE revoked_at IS NULL;
    `,
  },
  {
    description:
      'events_outbox (events written with the state change they report, relayed to NATS), health_states (per cluster+condition hysteresis)',
    sqlite: `
      CREATE TABLE events_outbox (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        id      TEXT NOT NULL UNIQUE,
        cluster TEXT NOT NULL,
        kind    TEXT NOT NULL,
        time    INTEGER NOT NULL,
        payload BLOB NOT NULL,
        sent_at INTEGER
      );
      CREATE INDEX events_outbox_unsent ON events_outbox(seq) WHERE sent_at IS NULL;
      CREATE INDEX events_outbox_cluster ON events_outbox(cluster, seq);
      CREATE TABLE health_states (
        cluster   TEXT NOT NULL,
        condition TEXT NOT NULL,
        state     TEXT NOT NULL CHECK (state IN ('ok', 'breached')),
        since     INTEGER NOT NULL,
        data      TEXT,
        PRIMARY KEY (cluster, condition)
      );
    `,
    postgres: `
      CREATE TABLE events_outbox (
        seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id      TEXT NOT NULL UNIQUE,
        cluster TEXT NOT NULL,
        kind    TEXT NOT NULL,
        time    BIGINT NOT NULL,
        payload BYTEA NOT NULL,
        sent_at BIGINT
      );
      CREATE INDEX events_outbox_unsent ON events_outbox(seq) WHERE sent_at IS NULL;
      CREATE INDEX events_outbox_cluster ON events_outbox(cluster, seq);
      CREATE TABLE health_states (
        cluster   TEXT NOT NULL,
        condition TEXT NOT NULL,
        state     TEXT NOT NULL CHECK (state IN ('ok', 'breached')),
        since     BIGINT NOT NULL,
        data      JSONB,
        PRIMARY KEY (cluster, condition)
      );
    `,
  },
  {
    description:
      'policies.health (per-policy health thresholds); schedule_runs admits drill schedules; jobs admit capture (drill source counts)',
    // schedule_runs and jobs are rebuilt for their CHECK constraints (SQLite cannot alter one in
    // place); jobs keep their rowids, which order jobs created in the same millisecond.
    sqlite: `
      ALTER TABLE policies ADD COLUMN health TEXT NOT NULL DEFAULT '{}';
      CREATE TABLE schedule_runs_v2 (
        cluster  TEXT NOT NULL,
        type     TEXT NOT NULL CHECK (type IN ('full', 'diff', 'incr', 'drill')),
        last_run INTEGER NOT NULL,
        PRIMARY KEY (cluster, type)
      );
      INSERT INTO schedule_runs_v2 (cluster, type, last_run) SELECT cluster, type, last_run FROM schedule_runs;
      DROP TABLE schedule_runs;
      ALTER TABLE schedule_runs_v2 RENAME TO schedule_runs;
      CREATE TABLE jobs_v3 (
        id            TEXT PRIMARY KEY,
        cluster       TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('backup', 'restore', 'expire', 'verify', 'drill', 'capture')),
        state         TEXT NOT NULL CHECK (state IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')),
        agent_id      TEXT NOT NULL,
        params        TEXT,
        created_at    INTEGER NOT NULL,
        started_at    INTEGER,
        finished_at   INTEGER,
        error_code    TEXT,
        error_message TEXT,
        progress      TEXT,
        result        TEXT
      );
      INSERT INTO jobs_v3 (rowid, id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, error_code, error_message, progress, result)
        SELECT rowid, id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, error_code, error_message, progress, result FROM jobs;
      DROP TABLE jobs;
      ALTER TABLE jobs_v3 RENAME TO jobs;
      CREATE INDEX jobs_cluster_created ON jobs(cluster, created_at);
      CREATE INDEX jobs_active ON jobs(state) WHERE state IN ('queued', 'dispatched', 'running');
      CREATE INDEX jobs_cluster_kind ON jobs(cluster, kind, created_at);
    `,
    postgres: `
      ALTER TABLE policies ADD COLUMN health JSONB NOT NULL DEFAULT '{}'::jsonb;
      ALTER TABLE schedule_runs DROP CONSTRAINT schedule_runs_type_check;
      ALTER TABLE schedule_runs ADD CONSTRAINT schedule_runs_type_check CHECK (type IN ('full', 'diff', 'incr', 'drill'));
      ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
      ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('backup', 'restore', 'expire', 'verify', 'drill', 'capture'));
      CREATE INDEX jobs_cluster_kind ON jobs(cluster, kind, created_at);
    `,
  },
  {
    description:
      'agents.wal_health (the WAL health of the last heartbeat: pg_wal space, replication slot, stream lag, WAL archived)',
    sqlite: `
      ALTER TABLE agents ADD COLUMN wal_health TEXT;
    `,
    postgres: `
      ALTER TABLE agents ADD COLUMN wal_health JSONB;
    `,
  },
  {
    description:
      'jobs admit check (pgfleet check: does WAL archiving work end to end); agents.archive_setup (archive_mode and archive_command of the last heartbeat, and whether it goes through pgfleet)',
    // jobs is rebuilt for its CHECK constraint as in version 5 (rowids kept: they order jobs created in the same millisecond).
    sqlite: `
      ALTER TABLE agents ADD COLUMN archive_setup TEXT;
      CREATE TABLE jobs_v4 (
        id            TEXT PRIMARY KEY,
        cluster       TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('backup', 'restore', 'expire', 'verify', 'drill', 'capture', 'check')),
        state         TEXT NOT NULL CHECK (state IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')),
        agent_id      TEXT NOT NULL,
        params        TEXT,
        created_at    INTEGER NOT NULL,
        started_at    INTEGER,
        finished_at   INTEGER,
        error_code    TEXT,
        error_message TEXT,
        progress      TEXT,
        result        TEXT
      );
      INSERT INTO jobs_v4 (rowid, id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, error_code, error_message, progress, result)
        SELECT rowid, id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, error_code, error_message, progress, result FROM jobs;
      DROP TABLE jobs;
      ALTER TABLE jobs_v4 RENAME TO jobs;
      CREATE INDEX jobs_cluster_created ON jobs(cluster, created_at);
      CREATE INDEX jobs_active ON jobs(state) WHERE state IN ('queued', 'dispatched', 'running');
      CREATE INDEX jobs_cluster_kind ON jobs(cluster, kind, created_at);
    `,
    postgres: `
      ALTER TABLE agents ADD COLUMN archive_setup JSONB;
      ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
      ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('backup', 'restore', 'expire', 'verify', 'drill', 'capture', 'check'));
    `,
  },
  {
    description:
      "agents.role and agents.replay (HA clusters: primary or standby per host, and a standby's replay position and lag)",
    sqlite: `
      ALTER TABLE agents ADD COLUMN role TEXT CHECK (role IN ('primary', 'standby'));
      ALTER TABLE agents ADD COLUMN replay TEXT;
    `,
    postgres: `
      ALTER TABLE agents ADD COLUMN role TEXT CHECK (role IN ('primary', 'standby'));
      ALTER TABLE agents ADD COLUMN replay JSONB;
    `,
  },
  {
    description:
      'agents.timeline (the timeline a primary writes: restores follow the live lineage, never a fork another copy archived)',
    sqlite: `
      ALTER TABLE agents ADD COLUMN timeline INTEGER;
    `,
    postgres: `
      ALTER TABLE agents ADD COLUMN timeline BIGINT;
    `,
  },
  {
    description:
      "agents keyed by (cluster, id): an agent is its cluster and its id together, so one id in two clusters is two agents and none can squat on another cluster's id",
    // SQLite cannot change a primary key in place: the table is rebuilt with every row kept.
    sqlite: `
      CREATE TABLE agents_v2 (
        cluster       TEXT NOT NULL REFERENCES clusters(name),
        id            TEXT NOT NULL,
        hostname      TEXT NOT NULL,
        version       TEXT NOT NULL,
        connected     INTEGER NOT NULL DEFAULT 0,
        last_seen     INTEGER,
        archiver      TEXT,
        current_lsn   TEXT,
        wal_health    TEXT,
        archive_setup TEXT,
        role          TEXT CHECK (role IN ('primary', 'standby')),
        replay        TEXT,
        timeline      INTEGER,
        PRIMARY KEY (cluster, id)
      );
      INSERT INTO agents_v2 (cluster, id, hostname, version, connected, last_seen, archiver, current_lsn, wal_health, archive_setup, role, replay, timeline)
        SELECT cluster, id, hostname, version, connected, last_seen, archiver, current_lsn, wal_health, archive_setup, role, replay, timeline FROM agents;
      DROP TABLE agents;
      ALTER TABLE agents_v2 RENAME TO agents;
    `,
    postgres: `
      ALTER TABLE agents DROP CONSTRAINT agents_pkey;
      ALTER TABLE agents ADD PRIMARY KEY (cluster, id);
      DROP INDEX agents_cluster;
    `,
  },
  {
    description:
      'jobs admit info (pgfleet info: what the repository holds) and restore-points (the named restore points in the archived WAL)',
    // jobs is rebuilt for its CHECK constraint as in version 5 (rowids kept: they order jobs created in the same millisecond).
    sqlite: `
      CREATE TABLE jobs_v5 (
        id            TEXT PRIMARY KEY,
        cluster       TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('backup', 'restore', 'expire', 'verify', 'drill', 'capture', 'check', 'info', 'restore-points')),
        state         TEXT NOT NULL CHECK (state IN ('queued', 'dispatched', 'running', 'succeeded', 'failed', 'cancelled')),
        agent_id      TEXT NOT NULL,
        params        TEXT,
        created_at    INTEGER NOT NULL,
        started_at    INTEGER,
        finished_at   INTEGER,
        error_code    TEXT,
        error_message TEXT,
        progress      TEXT,
        result        TEXT
      );
      INSERT INTO jobs_v5 (rowid, id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, error_code, error_message, progress, result)
        SELECT rowid, id, cluster, kind, state, agent_id, params, created_at, started_at, finished_at, error_code, error_message, progress, result FROM jobs;
      DROP TABLE jobs;
      ALTER TABLE jobs_v5 RENAME TO jobs;
      CREATE INDEX jobs_cluster_created ON jobs(cluster, created_at);
      CREATE INDEX jobs_active ON jobs(state) WHERE state IN ('queued', 'dispatched', 'running');
      CREATE INDEX jobs_cluster_kind ON jobs(cluster, kind, created_at);
    `,
    postgres: `
      ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
      ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('backup', 'restore', 'expire', 'verify', 'drill', 'capture', 'check', 'info', 'restore-points'));
    `,
  },
  {
    description:
      "jobs admit rotate-key (pgfleet repo rotate-key: an agent re-wraps the cluster's data keys from its previous key to its current one)",
    ...jobKindsMigration(KINDS_WITH_ROTATE_KEY),
  },
  {
    description:
      'jobs admit recover-table (pgfleet recover-table: tables as they were at a target, loaded into the live cluster under pgfleet_recovered)',
    ...jobKindsMigration([...KINDS_WITH_ROTATE_KEY, 'recover-table']),
  },
  {
    description: 'jobs admit wal-search (pgfleet wal search: the destructive transactions in the archived WAL)',
    ...jobKindsMigration([...KINDS_WITH_ROTATE_KEY, 'recover-table', 'wal-search']),
  },
  {
    description:
      'several controllers on one catalog: the controllers alive (heartbeat), which one holds each agent stream, the messages one controller leaves for a stream another holds, and the fencing epoch of each leadership',
    sqlite: `
      CREATE TABLE controllers (
        id         TEXT PRIMARY KEY,
        address    TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        leads      TEXT NOT NULL DEFAULT ''
      );
      CREATE TABLE agent_streams (
        cluster       TEXT NOT NULL,
        agent_id      TEXT NOT NULL,
        controller_id TEXT NOT NULL,
        since         INTEGER NOT NULL,
        PRIMARY KEY (cluster, agent_id)
      );
      CREATE TABLE agent_messages (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        controller_id TEXT NOT NULL,
        cluster       TEXT NOT NULL,
        agent_id      TEXT NOT NULL,
        payload       BLOB NOT NULL,
        created_at    INTEGER NOT NULL
      );
      CREATE INDEX agent_messages_controller ON agent_messages(controller_id, seq);
      CREATE TABLE leadership_epochs (
        name  TEXT PRIMARY KEY,
        epoch BIGINT NOT NULL
      );
    `,
    postgres: `
      CREATE TABLE controllers (
        id         TEXT PRIMARY KEY,
        address    TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        last_seen  BIGINT NOT NULL,
        leads      TEXT NOT NULL DEFAULT ''
      );
      CREATE TABLE agent_streams (
        cluster       TEXT NOT NULL,
        agent_id      TEXT NOT NULL,
        controller_id TEXT NOT NULL,
        since         BIGINT NOT NULL,
        PRIMARY KEY (cluster, agent_id)
      );
      CREATE TABLE agent_messages (
        seq           BIGSERIAL PRIMARY KEY,
        controller_id TEXT NOT NULL,
        cluster       TEXT NOT NULL,
        agent_id      TEXT NOT NULL,
        payload       BYTEA NOT NULL,
        created_at    BIGINT NOT NULL
      );
      CREATE INDEX agent_messages_controller ON agent_messages(controller_id, seq);
      CREATE TABLE leadership_epochs (
        name  TEXT PRIMARY KEY,
        epoch BIGINT NOT NULL
      );
    `,
  },
  {
    description:
      "the console's history: each cluster's RPO samples downsampled into minute and hour buckets (max and mean), minute buckets pruned sooner",
    sqlite: `
      CREATE TABLE cluster_history (
        cluster    TEXT NOT NULL,
        resolution INTEGER NOT NULL,
        start      INTEGER NOT NULL,
        rpo_max    REAL NOT NULL,
        rpo_sum    REAL NOT NULL,
        samples    INTEGER NOT NULL,
        PRIMARY KEY (cluster, resolution, start)
      );
      CREATE INDEX cluster_history_prune ON cluster_history(resolution, start);
    `,
    postgres: `
      CREATE TABLE cluster_history (
        cluster    TEXT NOT NULL,
        resolution INTEGER NOT NULL,
        start      BIGINT NOT NULL,
        rpo_max    DOUBLE PRECISION NOT NULL,
        rpo_sum    DOUBLE PRECISION NOT NULL,
        samples    INTEGER NOT NULL,
        PRIMARY KEY (cluster, resolution, start)
      );
      CREATE INDEX cluster_history_prune ON cluster_history(resolution, start);
    `,
  },
  {
    description: 'jobs admit dump and restore-dump (pgfleet dump, restore-dump: logical backups)',
    ...jobKindsMigration([...KINDS_WITH_ROTATE_KEY, 'recover-table', 'wal-search', 'dump', 'restore-dump']),
  },
  {
    description:
      "backups indexed in their listing order (stop time, stop LSN, label): a cluster's list, its newest and oldest backup come from the index without a sort",
    sqlite: `
      CREATE INDEX backups_cluster_order ON backups(cluster, stop_time, stop_lsn_num, label);
      DROP INDEX backups_cluster_stop;
    `,
    postgres: `
      CREATE INDEX backups_cluster_order ON backups(cluster, stop_time, stop_lsn_num, label COLLATE "C");
      DROP INDEX backups_cluster_stop;
    `,
  },
  {
    description:
      "dumps: the catalog's record of each complete logical dump (retention marks expired ones), backfilled from succeeded dump jobs (their start and finish times); schedule_runs admits 'logical' (scheduled dumps)",
    sqlite: `
      CREATE TABLE dumps (
        cluster      TEXT NOT NULL,
        label        TEXT NOT NULL,
        job_id       TEXT NOT NULL,
        start_time   INTEGER NOT NULL,
        stop_time    INTEGER NOT NULL,
        size_bytes   INTEGER NOT NULL,
        stored_bytes INTEGER NOT NULL,
        result       TEXT NOT NULL,
        expired_at   INTEGER,
        PRIMARY KEY (cluster, label)
      );
      CREATE INDEX dumps_cluster_order ON dumps(cluster, stop_time, label);
      INSERT INTO dumps (cluster, label, job_id, start_time, stop_time, size_bytes, stored_bytes, result)
        SELECT j.cluster, json_extract(j.result, '$.dump.label'), j.id,
               COALESCE(j.started_at, j.created_at), COALESCE(j.finished_at, j.created_at),
               (SELECT COALESCE(SUM(CAST(json_extract(d.value, '$.size') AS INTEGER)), 0)
                  FROM json_each(j.result, '$.dump.databases') d),
               (SELECT COALESCE(SUM(CAST(json_extract(d.value, '$.storedSize') AS INTEGER)), 0)
                  FROM json_each(j.result, '$.dump.databases') d),
               json_extract(j.result, '$.dump')
          FROM jobs j
         WHERE j.kind = 'dump' AND j.state = 'succeeded' AND json_extract(j.result, '$.dump.label') IS NOT NULL
        ON CONFLICT (cluster, label) DO NOTHING;
      CREATE TABLE schedule_runs_v3 (
        cluster  TEXT NOT NULL,
        type     TEXT NOT NULL CHECK (type IN ('full', 'diff', 'incr', 'drill', 'logical')),
        last_run INTEGER NOT NULL,
        PRIMARY KEY (cluster, type)
      );
      INSERT INTO schedule_runs_v3 (cluster, type, last_run) SELECT cluster, type, last_run FROM schedule_runs;
      DROP TABLE schedule_runs;
      ALTER TABLE schedule_runs_v3 RENAME TO schedule_runs;
    `,
    postgres: `
      CREATE TABLE dumps (
        cluster      TEXT NOT NULL,
        label        TEXT NOT NULL,
        job_id       TEXT NOT NULL,
        start_time   BIGINT NOT NULL,
        stop_time    BIGINT NOT NULL,
        size_bytes   BIGINT NOT NULL,
        stored_bytes BIGINT NOT NULL,
        result       JSONB NOT NULL,
        expired_at   BIGINT,
        PRIMARY KEY (cluster, label)
      );
      CREATE INDEX dumps_cluster_order ON dumps(cluster, stop_time, label COLLATE "C");
      INSERT INTO dumps (cluster, label, job_id, start_time, stop_time, size_bytes, stored_bytes, result)
        SELECT j.cluster, j.result->'dump'->>'label', j.id,
               COALESCE(j.started_at, j.created_at), COALESCE(j.finished_at, j.created_at),
               (SELECT COALESCE(SUM((d->>'size')::bigint), 0) FROM jsonb_array_elements(COALESCE(j.result->'dump'->'databases', '[]'::jsonb)) d),
               (SELECT COALESCE(SUM((d->>'storedSize')::bigint), 0) FROM jsonb_array_elements(COALESCE(j.result->'dump'->'databases', '[]'::jsonb)) d),
               j.result->'dump'
          FROM jobs j
         WHERE j.kind = 'dump' AND j.state = 'succeeded' AND j.result->'dump'->>'label' IS NOT NULL
        ON CONFLICT (cluster, label) DO NOTHING;
      ALTER TABLE schedule_runs DROP CONSTRAINT schedule_runs_type_check;
      ALTER TABLE schedule_runs ADD CONSTRAINT schedule_runs_type_check CHECK (type IN ('full', 'diff', 'incr', 'drill', 'logical'));
    `,
  },
  {
    description:
      'jobs.dispatcher: the controller that sends a queued job to its agent (its creator, or the one sending a drill after its capture; NULL: nobody yet, or a job from before this version); a queued job whose dispatcher died is failed by the scheduler leader unless its agent claims it (DispatcherLost)',
    // A later jobKindsMigration rebuild must carry this column (SQLite): jobKindsMigration(kinds, true).
    sqlite: `ALTER TABLE jobs ADD COLUMN dispatcher TEXT;`,
    postgres: `ALTER TABLE jobs ADD COLUMN dispatcher TEXT;`,
  },
  {
    description: "schedule_runs admits 'dump-drill' (scheduled drills of the newest logical dump, policy --dump-drill)",
    ...scheduleKindsMigration(['full', 'diff', 'incr', 'drill', 'logical', 'dump-drill']),
  },
];

/** The schema version a store is at once every migration is applied. */
export const CATALOG_SCHEMA_VERSION = CATALOG_MIGRATIONS.length;

/** Per-dialect views of the one list (index N-1 is version N). */
export const SQLITE_MIGRATIONS: readonly string[] = CATALOG_MIGRATIONS.map((m) => m.sqlite);
export const POSTGRES_MIGRATIONS: readonly string[] = CATALOG_MIGRATIONS.map((m) => m.postgres);
