/**
 * The catalog storage interface: what the controller knows about clusters, agents, backups and
 * jobs. It is an index over the repositories plus job history, so it holds plain records and no
 * protocol types. Every method is async so the PostgreSQL implementation (for several controllers)
 * implements the same interface as the embedded SQLite one; both pass one test suite
 * (catalog-suite.ts). Times are milliseconds since the
 * Unix epoch.
 */

export type BackupKind = 'full' | 'diff' | 'incr';
/** listJobs: newest first, optionally only one cluster's, one kind's and/or one state's. */
/**
 * Which clusters a fleet-wide read covers: one cluster by name, or a set of names (a page of the
 * fleet's status, a slice of the health round: what it reads grows with the page, not the fleet);
 * undefined: every cluster.
 */
export type ClusterSelection = string | readonly string[];

/** A page of clusters by name (listClusters). */
export interface ClusterPage {
  /** Names sorting after this one (byte order); '' or absent: from the first. */
  after?: string;
  limit: number;
}

/** One RPO sample of a cluster (recordClusterSamples). */
export interface ClusterSample {
  cluster: string;
  at: number;
  rpoSeconds: number;
}

export interface JobFilter {
  cluster?: string;
  /** Only these clusters' jobs (a page of the fleet's status); with `cluster`, both apply. */
  clusters?: readonly string[];
  kind?: JobKind;
  state?: JobStateName;
  limit?: number;
}

export type JobKind =
  | 'backup'
  | 'restore'
  | 'expire'
  | 'verify'
  | 'drill'
  | 'capture'
  | 'check'
  | 'info'
  | 'restore-points'
  | 'rotate-key'
  | 'recover-table'
  | 'wal-search'
  | 'dump'
  | 'restore-dump';
export type JobStateName = 'queued' | 'dispatched' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export const TERMINAL_JOB_STATES: readonly JobStateName[] = ['succeeded', 'failed', 'cancelled'];

export function isTerminalJobState(state: JobStateName): boolean {
  return TERMINAL_JOB_STATES.includes(state);
}

export interface ClusterRecord {
  name: string;
  systemIdentifier: string;
  /** server_version_num, e.g. 170002. */
  pgVersion: number;
  createdAt: number;
}

/**
 * Who an agent is: its cluster and its id together (the pair its certificate names,
 * pgfleet://agent/<cluster>/<agent id>). The same id in two clusters is two agents.
 */
export interface AgentRef {
  readonly cluster: string;
  readonly agentId: string;
}

/** One string per agent, for maps keyed by agent: NUL is in no cluster name or agent id, so two pairs never share one. */
export function agentRefKey(a: AgentRef): string {
  return `${a.cluster}\u0000${a.agentId}`;
}

export interface AgentRecord {
  id: string;
  cluster: string;
  hostname: string;
  version: string;
  connected: boolean;
  lastSeen: number | null;
  /** pg_stat_archiver figures as JSON (the controller stores the protocol message's JSON form). */
  archiver: unknown;
  currentLsn: string | null;
  /** What the agent last reported of its cluster's WAL (Heartbeat.wal); null before the first report. */
  walHealth: AgentWalHealth | null;
  /** How the cluster archives WAL (Heartbeat.archive_setup); null before the first report. */
  archiveSetup: AgentArchiveSetup | null;
  /** What its PostgreSQL was at the last heartbeat; null: not known (down, or no report yet). */
  role: ServerRoleName | null;
  /** A standby's replay figures at the last heartbeat (null on a primary). */
  replay: AgentReplay | null;
  /** The timeline it last wrote as a primary (null: never reported). */
  timeline: number | null;
}

/** A controller of the catalog, alive while its heartbeat (lastSeen) is fresh. */
export interface ControllerRecord {
  id: string;
  /** Where agents and admins reach it (--listen as it announces itself). */
  address: string;
  startedAt: number;
  lastSeen: number;
  /** The leaderships (tryAcquireLeadership names: scheduler, health) it held at its last beat, sorted. */
  leads: string[];
}

/**
 * A leadership as one acquisition of it: the epoch grows at every acquisition (by any
 * controller), so a write carrying an older one comes from a leader that has since lost it.
 */
export interface LeadershipFence {
  name: string;
  epoch: number;
}

/** Which controller holds an agent's Connect stream: jobs for the agent go through that one. */
export interface AgentStreamRecord extends AgentRef {
  controllerId: string;
  since: number;
}

/** A message for an agent whose stream another controller holds, left in the catalog for that one to send. */
export interface AgentMessageRecord extends AgentRef {
  seq: number;
  payload: Uint8Array;
}

/** Heartbeat.archive_setup as the catalog keeps it: the protocol message's fields in camelCase. */
export interface AgentArchiveSetup {
  archiveMode: string;
  archiveCommand: string;
  /** archive_mode is on and archive_command runs pgfleet-agent wal-push for this cluster. */
  viaPgfleet: boolean;
  /** What is wrong ('' when nothing is). */
  problem: string;
}

/** pg_is_in_recovery() false: primary; true: standby. */
export type ServerRoleName = 'primary' | 'standby';

/** Heartbeat.replay as the catalog keeps it: what a standby sees of its own lag. */
export interface AgentReplay {
  /** pg_last_wal_receive_lsn() ('' without streaming). */
  receiveLsn: string;
  /** pg_last_wal_replay_lsn(). */
  replayLsn: string;
  receiveReplayBytes: number;
  /** pg_last_xact_replay_timestamp() in ms (null: nothing replayed yet). */
  lastReplayTime: number | null;
  replayLagSeconds: number;
}

/**
 * Heartbeat.wal as the catalog keeps it: the protocol message's fields in camelCase, 64-bit
 * counts as numbers (byte counts stay far below 2^53).
 */
export interface AgentWalHealth {
  /** pg_wal: bytes in use, and free/total bytes of its filesystem. */
  pgWalBytes: number;
  pgWalFreeBytes: number;
  pgWalTotalBytes: number;
  /** The agent's replication slot ('' when there is none). */
  slotName: string;
  slotActive: boolean;
  slotRestartLsn: string;
  /** WAL the slot holds back in pg_wal (current LSN - restart_lsn). */
  slotRetainedBytes: number;
  /** pg_replication_slots.wal_status: reserved, extended, unreserved or lost. */
  slotWalStatus: string;
  streamLagBytes: number;
  streamLagSeconds: number;
  /** Since the agent started: WAL segments and their bytes it put into the repository. */
  walSegmentsArchived: number;
  walBytesArchived: number;
}

/** What recordHeartbeat stores (absent: keep the last reported value). */
export interface HeartbeatFigures {
  archiver?: unknown;
  currentLsn?: string;
  walHealth?: AgentWalHealth;
  archiveSetup?: AgentArchiveSetup;
  /**
   * The role at this heartbeat, null when not known (PostgreSQL down): unlike the figures above
   * it is replaced, never kept, so a host whose server stopped is not taken for a primary. Set
   * together with `replay` (null unless a standby). Absent: both kept.
   */
  role?: ServerRoleName | null;
  replay?: AgentReplay | null;
  /** The timeline a primary writes (absent: kept). */
  timeline?: number;
}

/** An agent as its Hello introduces it: itself and the database system it runs on. */
export interface ConnectingAgent {
  id: string;
  cluster: string;
  hostname: string;
  version: string;
  systemIdentifier: string;
  pgVersion: number;
}

/** One Hello of a batch (connectAgents): the agent and the events committed with it. */
export interface ConnectingHello {
  agent: ConnectingAgent;
  events?: readonly OutboxEventInput[];
}

/** One heartbeat of one agent, received at `at` (ms): what recordHeartbeats stores. */
export interface AgentHeartbeat {
  agent: AgentRef;
  figures: HeartbeatFigures;
  at: number;
}

/**
 * The beats of a batch folded into one per agent (in the order each agent first appears), each
 * the same as applying that agent's beats one after the other: a later beat's figures replace
 * what it reports and keep what it leaves out (role and replay go together). One row update per
 * agent then says what the sequence said, also where a batch holds two beats of one agent.
 */
export function foldHeartbeats(beats: readonly AgentHeartbeat[]): AgentHeartbeat[] {
  const byAgent = new Map<string, AgentHeartbeat>();
  for (const b of beats) {
    const key = agentRefKey(b.agent);
    const before = byAgent.get(key);
    if (!before) {
      byAgent.set(key, b);
      continue;
    }
    const f = b.figures;
    const merged: HeartbeatFigures = { ...before.figures };
    if (f.archiver !== undefined && f.archiver !== null) merged.archiver = f.archiver;
    if (f.currentLsn) merged.currentLsn = f.currentLsn;
    if (f.walHealth) merged.walHealth = f.walHealth;
    if (f.archiveSetup) merged.archiveSetup = f.archiveSetup;
    if (f.role !== undefined) {
      merged.role = f.role;
      merged.replay = f.replay ?? null;
    }
    if (f.timeline !== undefined) merged.timeline = f.timeline;
    byAgent.set(key, { agent: before.agent, figures: merged, at: b.at });
  }
  return [...byAgent.values()];
}

export interface BackupRecord {
  cluster: string;
  label: string;
  type: BackupKind;
  /** LSNs in PostgreSQL's text form 'X/Y'; the store also keeps a numeric form to sort and compare. */
  startLsn: string;
  stopLsn: string;
  startTime: number;
  stopTime: number;
  timeline: number;
  systemIdentifier: string;
  pgVersion: number;
  sizeBytes: number;
  storedBytes: number;
  fileCount: number;
  walStart: string;
  walStop: string;
  jobId: string;
  priorLabel: string;
  /** Pinned backups are never expired. Reads always set it; an insert without it stores false. */
  pinned?: boolean;
}

/**
 * A complete logical dump (pgfleet dump, docs/logical.md). The catalog holds no protocol types:
 * `result` is the dump's DumpResult in its JSON form (what the agent wrote as dump.json); the
 * other fields are copies for listing, ordering and health.
 */
export interface DumpRecord {
  cluster: string;
  label: string;
  jobId: string;
  startTime: number;
  stopTime: number;
  /** Content bytes of its databases' files, and the bytes stored. */
  sizeBytes: number;
  storedBytes: number;
  result: unknown;
  /** When retention expired it (its objects deleted from the repository); null: complete. Reads always set it. */
  expiredAt?: number | null;
}

/** The policies row of the fleet default; every other scope is a cluster name. */
export const FLEET_POLICY_SCOPE = '*';

/**
 * Backup schedules of a policy; an absent key is inherited (cluster -> fleet -> none). A cron
 * expression of '' means "not scheduled" and overrides an inherited one.
 */
export interface PolicySchedules {
  full?: string;
  diff?: string;
  incr?: string;
  /** Restore drill schedule (cron); '' = not scheduled. */
  drill?: string;
  /** Logical dump schedule (cron, `--logical`); '' = not scheduled. */
  logical?: string;
  /** Dump drill schedule (cron, `--dump-drill`: a drill of the newest dump); '' = not scheduled. */
  dumpDrill?: string;
  spreadMinutes?: number;
  /** Which host of an HA cluster backups run on (scheduled and manual ones alike). */
  backupFrom?: BackupFrom;
  /** Whether a schedule that never ran fires its latest due time at once (unset: no, the next cron time). */
  catchUp?: boolean;
}

/** primary: the primary only; standby: a caught-up standby only; prefer-standby: a standby if one is fit, else the primary. */
export type BackupFrom = 'primary' | 'standby' | 'prefer-standby';
export const BACKUP_FROM_VALUES: readonly BackupFrom[] = ['primary', 'standby', 'prefer-standby'];

/** Health thresholds of a policy (seconds); an absent key is inherited (cluster -> fleet -> controller flags). */
export interface PolicyHealth {
  rpoSeconds?: number;
  staleBackupSeconds?: number;
  silenceSeconds?: number;
  /** dump.stale: the newest complete dump older than this (only for clusters with a logical schedule or dumps). */
  staleDumpSeconds?: number;
}

/** What a scheduled run is of: a backup type or a restore drill. */
export type ScheduleKind = BackupKind | 'drill' | 'logical' | 'dump-drill';

/** Retention settings of a policy; an absent key is inherited (cluster -> fleet -> default). */
export interface PolicyRetention {
  pitrWindowDays?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  minFull?: number;
  /** Whether the scheduler expires on its own (unset: no; only `pgfleet retention apply`). */
  autoExpire?: boolean;
  /** Seconds from the retention.planned event to the automatic expire job. */
  expireGraceSeconds?: number;
  /** Logical dumps kept by GFS tiers of their own (never counted with physical backups). */
  logicalDaily?: number;
  logicalWeekly?: number;
  logicalMonthly?: number;
  logicalYearly?: number;
  /** Never fewer complete dumps than this. */
  logicalMin?: number;
}

export interface PolicyRecord {
  /** A cluster name, or FLEET_POLICY_SCOPE for the fleet default. */
  scope: string;
  schedules: PolicySchedules;
  retention: PolicyRetention;
  health: PolicyHealth;
  updatedAt: number;
}

/** When a cluster's scheduled backup of a type last started (the fire time it stood for). */
export interface ScheduleRunRecord {
  cluster: string;
  type: ScheduleKind;
  lastRun: number;
}

/**
 * A one-time enrollment token. Only its hash is stored (SHA-256 of the token the operator was
 * shown): a copy of the catalog does not let anyone enroll an agent.
 */
export interface EnrollmentTokenRecord {
  tokenHash: string;
  /** The only cluster an agent enrolling with it may speak for. */
  cluster: string;
  createdAt: number;
  expiresAt: number;
  usedAt: number | null;
  /** The agent that used it. */
  agentId: string | null;
}

/** The outcome of using an enrollment token: it works once, before it expires. */
export type EnrollmentTokenUse =
  | { ok: true; token: EnrollmentTokenRecord }
  | { ok: false; reason: 'unknown' | 'used' | 'expired'; token?: EnrollmentTokenRecord };

export type AdminRole = 'viewer' | 'operator' | 'admin';
export const ADMIN_ROLES: readonly AdminRole[] = ['viewer', 'operator', 'admin'];

/** An admin API bearer token; only its hash is stored. */
export interface AdminTokenRecord {
  id: string;
  /** Unique among tokens that are not revoked. */
  name: string;
  role: AdminRole;
  tokenHash: string;
  createdAt: number;
  revokedAt: number | null;
}

export interface JobError {
  /** A PGF-xxxx code from the error registry. */
  code: string;
  message: string;
}

export interface JobRecord {
  id: string;
  cluster: string;
  kind: JobKind;
  state: JobStateName;
  agentId: string;
  params: unknown;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  error: JobError | null;
  progress: unknown;
  result: unknown;
  /**
   * The controller (ControllerRecord.id) that sends the job to its agent: its creator, or the one
   * that claimed it (claimJobDispatch). Null: nobody is sending it (a drill waiting for its source
   * capture, or a job from before the catalog recorded it). Reads always set it.
   */
  dispatcher?: string | null;
}

export interface NewJob {
  id: string;
  cluster: string;
  kind: JobKind;
  agentId: string;
  params: unknown;
  /**
   * The controller creating the job, which sends it next; recorded in the insert itself, so a
   * controller killed between creating the job and sending it leaves a job that names it
   * (failLostDispatches). Absent: nobody sends it yet.
   */
  dispatcher?: string;
}

export interface TransitionOptions {
  error?: JobError;
  result?: unknown;
  /** Inserted in the same transaction as a transition to 'succeeded' (a backup job's outcome). */
  backup?: BackupRecord;
  /** Inserted in the same transaction as a transition to 'succeeded' (a dump job's outcome). */
  dump?: DumpRecord;
  /** Outbox events reporting this transition: written in its transaction, and only if the job moved. */
  events?: readonly OutboxEventInput[];
}

/**
 * An event for the outbox (docs/events.md). The catalog holds no protocol types: `payload` is the
 * encoded pgfleet.v1.Event (protobuf binary) the controller built; the other fields are copies
 * for listing and filtering.
 */
export interface OutboxEventInput {
  id: string;
  cluster: string;
  kind: string;
  /** ms since the epoch. */
  time: number;
  payload: Uint8Array;
}

export interface OutboxEventRecord extends OutboxEventInput {
  /** Increasing in commit order (per catalog). */
  seq: number;
  /** When the relay had the event acknowledged by the bus; null while unsent. */
  sentAt: number | null;
}

/** Builds the events for a job the store changed (used where the store picks the jobs itself). */
export type JobEventsFactory = (job: JobRecord) => readonly OutboxEventInput[];

/** One health condition of a cluster (rpo, archive, backup_stale, agent_silent:<id>) and its hysteresis state. */
export interface HealthStateRecord {
  cluster: string;
  condition: string;
  state: 'ok' | 'breached';
  /** When the condition entered its state (ms). */
  since: number;
  /** Figures the controller keeps with the state (e.g. failed_count at the breach). */
  data: unknown;
}

/**
 * The bucket sizes (seconds) of a cluster's history (the console's charts): every sample goes into
 * a minute and an hour bucket, and minute buckets are pruned sooner, so charts of the last day are
 * fine-grained and those of months stay small (the controller prunes: health/history.ts).
 */
export const HISTORY_RESOLUTIONS = [60, 3600] as const;
export type HistoryResolution = (typeof HISTORY_RESOLUTIONS)[number];

/** One bucket of a cluster's downsampled history. */
export interface ClusterHistoryBucket {
  cluster: string;
  resolution: HistoryResolution;
  /** Start of the bucket (ms, a multiple of resolution * 1000). */
  start: number;
  /** The largest RPO sampled in the bucket, and the mean of its samples (seconds). */
  rpoMaxSeconds: number;
  rpoAvgSeconds: number;
  samples: number;
}

export interface TransitionOutcome {
  job: JobRecord;
  /** False when the job already was in the requested state (a repeated, idempotent transition). */
  changed: boolean;
}

export interface CatalogStore {
  close(): Promise<void>;

  /**
   * Records a cluster on first sight. A cluster's system identifier never changes: another one
   * under the same name is a different cluster and is refused with SystemIdMismatch. The PG
   * version is updated (a minor update changes server_version_num, not the identifier).
   */
  upsertCluster(
    cluster: { name: string; systemIdentifier: string; pgVersion: number },
    now: number,
  ): Promise<ClusterRecord>;
  getCluster(name: string): Promise<ClusterRecord | undefined>;
  /** The named clusters the catalog holds, by name (byte order); unknown names are left out. */
  getClusters(names: readonly string[]): Promise<ClusterRecord[]>;
  /**
   * Clusters by name in byte order; with `page`, only the first `limit` whose name sorts after
   * `after` (keyset paging: what a page of status or a slice of the health round reads).
   */
  listClusters(page?: ClusterPage): Promise<ClusterRecord[]>;

  /**
   * Registers (or re-registers) an agent as connected. Agents are keyed by (cluster, id): the same
   * id under another cluster is another agent with a row of its own, so an agent of one cluster
   * can neither take over nor squat on the id of another cluster's agent, its jobs or its row.
   */
  upsertAgent(
    agent: { id: string; cluster: string; hostname: string; version: string },
    now: number,
    events?: readonly OutboxEventInput[],
  ): Promise<AgentRecord>;
  /**
   * Agents' Hellos, in one transaction. Each Hello records its cluster as upsertCluster registers
   * it (SystemIdMismatch before anything of it is written), its stream held by `controllerId`
   * (recorded before the agent shows as connected, so no controller sees it connected and held by
   * none), and the agent as upsertAgent registers it, with its events; in their order: per Hello
   * undefined (recorded) or the SystemIdMismatch that refused it (nothing of that Hello written,
   * the others recorded). Any other failure rejects the whole batch with nothing written. A connect
   * storm of 10,000 agents is then tens of transactions, not 10,000 waiting for a pool of 10
   * connections (on PostgreSQL those waits outlasted the pool's connect timeout).
   */
  connectAgents(
    hellos: readonly ConnectingHello[],
    controllerId: string,
    now: number,
  ): Promise<Array<Error | undefined>>;
  setAgentConnected(
    agent: AgentRef,
    connected: boolean,
    now: number,
    events?: readonly OutboxEventInput[],
  ): Promise<void>;
  /** Marks every agent disconnected; at controller start no stream is open yet. */
  disconnectAllAgents(now: number): Promise<void>;
  /**
   * Records that the controller is alive (inserted on its first beat), with the leaderships this
   * store holds now (so status can say which controller leads).
   */
  heartbeatController(controller: Omit<ControllerRecord, 'leads'>): Promise<void>;
  /** Forgets a controller that stops cleanly, with the streams it held. */
  removeController(id: string): Promise<void>;
  /** Every controller that has beaten and not been removed, oldest first. */
  listControllers(): Promise<ControllerRecord[]>;
  /** The agent's stream is now held by this controller (whoever held it before). */
  holdAgentStream(agent: AgentRef, controllerId: string, now: number): Promise<void>;
  /**
   * The agent's stream on this controller ended: forgets the holding if it is still this
   * controller's. False when another controller holds the agent now (it moved): its connected
   * flag and jobs are that controller's business.
   */
  releaseAgentStream(agent: AgentRef, controllerId: string): Promise<boolean>;
  /** Every agent stream a controller holds, or only those of `cluster` (a dispatch asks for one of 10,000). */
  listAgentStreams(cluster?: string): Promise<AgentStreamRecord[]>;
  /**
   * Marks disconnected the agents whose stream no live controller holds (no holding, or a holder
   * not seen since `liveSince`: it died), forgets those holdings and the messages left for dead
   * controllers. A SQLite catalog has one controller, `self`: every other one counts as dead.
   */
  releaseDeadStreams(self: string, liveSince: number, now: number): Promise<AgentRef[]>;
  /**
   * This controller still holds the streams of `agents` open: those of them the catalog holds for
   * nobody (another controller took this one for dead and released them, after a pause longer
   * than the lease: a long GC, a starved or frozen host) are held by it again and their agents
   * marked connected. An agent another controller holds now (it moved) is left alone. Returns
   * the agents held again; cheap when nothing is missing (one count).
   */
  reholdAgentStreams(controllerId: string, agents: readonly AgentRef[], now: number): Promise<AgentRef[]>;
  /** Leaves a message for the agent's stream on controller `controllerId`. */
  queueAgentMessage(controllerId: string, agent: AgentRef, payload: Uint8Array, now: number): Promise<void>;
  /**
   * Calls `wake` soon after a message is left for this controller (PostgreSQL LISTEN/NOTIFY on a
   * connection of its own); resolves to the function that stops listening. Absent where one
   * controller is all there is (SQLite). A notification can be lost with its connection: callers
   * poll takeAgentMessages as well.
   */
  listenAgentMessages?(controllerId: string, wake: () => void): Promise<() => Promise<void>>;
  /** Takes (and removes) the oldest messages left for this controller's streams. */
  takeAgentMessages(controllerId: string, limit: number): Promise<AgentMessageRecord[]>;
  /**
   * Stores heartbeats' figures, in the order given; what a beat leaves out keeps its last
   * reported value. A batch (10,000 agents beat 2,000 times a second) is one write, not one per
   * beat; a beat of an agent the catalog does not hold changes nothing.
   */
  recordHeartbeats(beats: readonly AgentHeartbeat[]): Promise<void>;
  getAgent(agent: AgentRef): Promise<AgentRecord | undefined>;
  /** The agents of one cluster, of the named clusters, or of all. */
  listAgents(clusters?: ClusterSelection): Promise<AgentRecord[]>;

  /** Idempotent for the same (cluster, label); ordering of listBackups is by stop time, never by label. */
  insertBackup(backup: BackupRecord): Promise<void>;
  getBackup(cluster: string, label: string): Promise<BackupRecord | undefined>;
  /** The cluster's backups, oldest stop time first. */
  listBackups(cluster: string): Promise<BackupRecord[]>;
  /**
   * The newest backup of each cluster (the last of its listBackups order), one per cluster by
   * name; of `cluster` alone when given. What status and health need, without reading every backup.
   * `end: 'oldest'` gives the first of each instead (where a cluster's PITR window starts).
   */
  latestBackups(clusters?: ClusterSelection, end?: 'newest' | 'oldest'): Promise<BackupRecord[]>;
  /**
   * The stop time of each cluster's oldest backup (latestBackups 'oldest' without the rest of the
   * row), by name; of the named clusters when given. Status shows it as where the PITR window
   * starts: the index answers it without reading a backup row (a third of latestBackups' cost).
   */
  oldestBackupStopTimes(clusters?: readonly string[]): Promise<Array<{ cluster: string; stopTime: number }>>;

  /** Sets or clears a backup's pin; UnknownBackup when the catalog has no such backup. */
  setBackupPinned(cluster: string, label: string, pinned: boolean): Promise<BackupRecord>;
  /** Removes backup rows (after an expire job deleted them from the repository); returns how many existed. */
  deleteBackups(cluster: string, labels: readonly string[]): Promise<number>;

  /** Idempotent for the same (cluster, label): the first record stays (a retried result). */
  insertDump(dump: DumpRecord): Promise<void>;
  /** The cluster's complete dumps (and expired ones with `includeExpired`), oldest stop time first. */
  listDumps(cluster: string, options?: { includeExpired?: boolean }): Promise<DumpRecord[]>;
  /** The newest complete dump of each cluster (of `cluster` alone when given), by cluster name. */
  latestDumps(clusters?: ClusterSelection): Promise<DumpRecord[]>;
  /** Marks dumps expired (retention deleted their objects); returns how many complete ones it marked. */
  markDumpsExpired(cluster: string, labels: readonly string[], now: number): Promise<number>;

  /** The policy of a scope (cluster name or FLEET_POLICY_SCOPE), if one was set. */
  getPolicy(scope: string): Promise<PolicyRecord | undefined>;
  /** Every stored policy (of the given scopes only, when given), fleet default first, then clusters by name. */
  listPolicies(scopes?: readonly string[]): Promise<PolicyRecord[]>;
  /** Replaces the scope's policy as a whole (callers merge). */
  putPolicy(
    policy: { scope: string; schedules: PolicySchedules; retention: PolicyRetention; health?: PolicyHealth },
    now: number,
  ): Promise<PolicyRecord>;
  /** Removes the scope's policy; false when there was none. */
  deletePolicy(scope: string): Promise<boolean>;

  /** Recorded last runs, of one cluster, of the named ones or of all, by cluster then type. */
  listScheduleRuns(clusters?: ClusterSelection): Promise<ScheduleRunRecord[]>;
  /**
   * Records last runs in one transaction. A run never moves back in time: an older value than
   * the stored one (a late second controller) is ignored, so a run is neither repeated nor lost.
   */
  recordScheduleRuns(runs: readonly ScheduleRunRecord[], fence?: LeadershipFence): Promise<void>;

  /** Creates a job in state 'queued'. */
  createJob(job: NewJob, now: number): Promise<JobRecord>;
  /**
   * Creates the job (as createJob) unless `cluster` already has an unfinished job of one of
   * `kinds`: then nothing is created and BackupInProgress names that job. One transaction,
   * serialised per cluster, so of two controllers (or two requests) racing to start a backup or
   * an expire of one cluster exactly one creates its job. A repeat of an existing id behaves as
   * createJob does (the job is its own, not a rival).
   *
   * `runs`: the schedule runs (fire times) the job stands for, recorded in the same transaction
   * (as recordScheduleRuns would), so a scheduled job and the record of its fire time exist
   * together or not at all: a scheduler leader killed between the two can neither leave a fire
   * time without its job nor a job whose fire time its successor fires again.
   */
  createJobIfIdle(
    cluster: string,
    kinds: readonly JobKind[],
    job: NewJob,
    now: number,
    fence?: LeadershipFence,
    runs?: readonly ScheduleRunRecord[],
  ): Promise<JobRecord>;
  /**
   * The fence of a leadership this store holds (after tryAcquireLeadership said true), undefined
   * otherwise. Writes given it (createJobIfIdle, recordScheduleRuns) fail with LeadershipLost, in
   * their own transaction, once another acquisition happened: a paused ex-leader fires nothing.
   */
  leadershipFence(name: string): LeadershipFence | undefined;
  getJob(id: string): Promise<JobRecord | undefined>;
  /** Newest first. */
  listJobs(filter?: JobFilter): Promise<JobRecord[]>;
  /**
   * The newest `perCluster` jobs of each cluster matching the filter (its limit is ignored),
   * newest first within a cluster: one query for what status shows of every cluster.
   */
  latestJobsPerCluster(filter: JobFilter & { perCluster: number }): Promise<JobRecord[]>;
  /** How many jobs there are per cluster, kind and state (metrics). */
  countJobs(): Promise<Array<{ cluster: string; kind: JobKind; state: JobStateName; count: number }>>;
  /** Jobs not yet finished (queued, dispatched, running), oldest first. */
  listActiveJobs(): Promise<JobRecord[]>;
  /**
   * Moves a job along queued -> dispatched -> running -> succeeded|failed|cancelled (a job may
   * also end from queued or dispatched). Repeating the current state is a no-op; anything else
   * illegal throws JobStateConflict; an unknown id throws UnknownJob.
   */
  transitionJob(id: string, to: JobStateName, options: TransitionOptions, now: number): Promise<TransitionOutcome>;
  /**
   * Stores progress and moves a queued or dispatched job to running (a queued one through
   * dispatched: its agent has it, whoever sent it and whether or not the sender lived to record
   * the send). Ignored (changed=false) once the job is terminal. `claimed`: the events of the move
   * to dispatched, written only when the job was still queued (the sender's own would never come).
   */
  updateJobProgress(id: string, progress: unknown, now: number, claimed?: JobEventsFactory): Promise<TransitionOutcome>;
  /**
   * Makes `controllerId` the dispatcher of a job that is still queued, right before it sends the
   * job. Returns the job as it is now: one no longer queued (taken over by failLostDispatches,
   * cancelled, or claimed by its agent) is returned unchanged, and must not be sent.
   */
  claimJobDispatch(id: string, controllerId: string): Promise<JobRecord>;
  /**
   * Fails, in one transaction, the queued jobs whose dispatcher is not `self` and has not been
   * seen since `deadBefore` (a controller row older than that, or none: removed), created before
   * `deadBefore` too: their controller died between creating them and recording the send, and
   * their agent has not claimed them (a claim moves a job out of queued). Jobs without a
   * dispatcher are left alone. With `fence`, refused with LeadershipLost once another controller
   * took that leadership. Returns the failed jobs (their events written with them).
   */
  failLostDispatches(
    self: string,
    deadBefore: number,
    error: JobError,
    now: number,
    events?: JobEventsFactory,
    fence?: LeadershipFence,
  ): Promise<JobRecord[]>;
  /** Fails the agent's non-terminal jobs (of its cluster only), except those listed (still running on a reconnected agent). */
  failActiveJobsOfAgent(
    agent: AgentRef,
    error: JobError,
    now: number,
    except?: readonly string[],
    events?: JobEventsFactory,
  ): Promise<JobRecord[]>;
  /** Fails every non-terminal job (at controller start: no agent stream survives a restart). */
  failAllActiveJobs(error: JobError, now: number, events?: JobEventsFactory): Promise<JobRecord[]>;

  /**
   * Outbox (docs/events.md). appendEvents writes events on their own (a change the catalog does
   * not otherwise record); state changes take an `events` option instead so both commit together.
   */
  appendEvents(events: readonly OutboxEventInput[]): Promise<void>;
  /** Up to `limit` unsent events, lowest seq first. */
  nextUnsentEvents(limit: number): Promise<OutboxEventRecord[]>;
  /** Marks events sent; marking one twice keeps its first time. */
  markEventsSent(seqs: readonly number[], now: number, fence?: LeadershipFence): Promise<void>;
  /** Events (sent or not) in seq order after `afterSeq`, of one cluster or all; limit default 100. */
  listEvents(filter?: { cluster?: string; afterSeq?: number; limit?: number }): Promise<OutboxEventRecord[]>;
  /** The newest `limit` events (of a cluster), returned in seq order. */
  listLatestEvents(filter: { cluster?: string; limit: number }): Promise<OutboxEventRecord[]>;

  /** Health hysteresis states, of one cluster, of the named ones or of all, by cluster then condition. */
  listHealthStates(clusters?: ClusterSelection): Promise<HealthStateRecord[]>;
  /** Replaces a condition's state, writing the events that report the change in the same transaction. */
  /**
   * With `fence` (the health leader's round), refused with LeadershipLost once another controller
   * took the leadership: a paused ex-leader's late round writes no state and no event.
   */
  putHealthState(
    state: HealthStateRecord,
    events?: readonly OutboxEventInput[],
    fence?: LeadershipFence,
  ): Promise<void>;

  /** Adds an RPO sample (seconds, at ms) to the cluster's minute and hour buckets. */
  recordClusterSample(cluster: string, at: number, rpoSeconds: number): Promise<void>;
  /** recordClusterSample for many clusters in one transaction (a health round's slice). */
  recordClusterSamples(samples: readonly ClusterSample[]): Promise<void>;
  /** The cluster's buckets of one resolution starting at or after `since` (ms), oldest first. */
  listClusterHistory(cluster: string, resolution: HistoryResolution, since: number): Promise<ClusterHistoryBucket[]>;
  /** Deletes the buckets of one resolution that start before `before` (ms); returns how many. */
  pruneClusterHistory(resolution: HistoryResolution, before: number): Promise<number>;

  /** Records a new enrollment token (by hash). */
  createEnrollmentToken(
    t: { tokenHash: string; cluster: string; expiresAt: number },
    now: number,
  ): Promise<EnrollmentTokenRecord>;
  /**
   * Marks the token used by the agent, atomically: of two agents racing with one token exactly
   * one gets ok. A used, expired or unknown token is not changed and says why.
   */
  useEnrollmentToken(tokenHash: string, agentId: string, now: number): Promise<EnrollmentTokenUse>;
  /** Enrollment tokens, newest first. */
  listEnrollmentTokens(): Promise<EnrollmentTokenRecord[]>;

  /** Records a new admin token; InvalidArgument when a token that is not revoked has the name. */
  createAdminToken(
    t: { id: string; name: string; role: AdminRole; tokenHash: string },
    now: number,
  ): Promise<AdminTokenRecord>;
  /** The admin token with this hash, unless it is revoked. */
  findAdminToken(tokenHash: string): Promise<AdminTokenRecord | undefined>;
  /** Every admin token (revoked ones too), oldest first. */
  listAdminTokens(): Promise<AdminTokenRecord[]>;
  /** Revokes the token that is not revoked yet with this id or name; undefined when there is none. */
  revokeAdminToken(idOrName: string, now: number): Promise<AdminTokenRecord | undefined>;

  /**
   * Scheduler leadership among controllers sharing this catalog: true when this store holds the
   * named leadership (taking it if free), false while another store holds it. Leadership lasts
   * until releaseLeadership, close, or the loss of the connection that holds it, so a scheduler
   * asks again before every round instead of once. A single-process catalog (SQLite) always
   * answers true.
   */
  tryAcquireLeadership(name: string): Promise<boolean>;
  /** Gives up the named leadership if this store holds it; otherwise a no-op. */
  releaseLeadership(name: string): Promise<void>;
}
