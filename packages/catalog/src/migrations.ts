/**
 * Versioned schema migrations for the SQLite catalog. Each entry is applied once, in order, in
 * one transaction with its row in schema_migrations; entries are never edited after release,
 * only appended.
 */
export const SQLITE_MIGRATIONS: readonly string[] = [
  // 1: clusters, agents, backups, jobs
  `
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
];
