/**
 * The fleet status behind `pgfleet status` (ListClusters): per cluster, on top of what the catalog
 * holds about its agent and backups, the figures an on-call DBA looks at first: RPO and the
 * health conditions raised (health.ts), the archive state, the next job a schedule will start
 * (schedule.ts), the last verify verdict and the last (good) restore drill with its RTO.
 *
 * An HA cluster has one agent per host: `hosts` lists each with its role and a standby's lag, and
 * the cluster's own figures (agent, archiver, RPO) are the primary's.
 *
 * Everything is read from the catalog, so any controller sharing it answers the same; only the
 * streamed LSN of a streaming agent comes from this controller's health monitor (it is not
 * stored), and without it RPO is judged from archiving alone, which can only overstate it.
 */
import { fromJson, type MessageInitShape } from '@bufbuild/protobuf';
import { timeSlicer } from '@pgfleet/core';
import {
  FLEET_POLICY_SCOPE,
  type AgentRecord,
  type ClusterRecord,
  type DumpRecord,
  type HealthStateRecord,
  type JobRecord,
  type ScheduleKind,
} from '@pgfleet/catalog';
import {
  DrillResultSchema,
  VerifyResultSchema,
  type ClusterHostSchema,
  type ClusterInfoSchema,
  type DrillSummarySchema,
  type DumpSummarySchema,
  type ScheduledJobSchema,
  type VerifySummarySchema,
} from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import { clusterInfo, serverRoleToProto, timestampOfMs, walHealthFromRecord, type JobResultJson } from '../wire.js';
import { standbyLag } from '../agents/choice.js';
import { archiveFailing, archiverFromJson, groupByCluster, observedAgent, pickAgent, rpoSeconds } from './health.js';
import { effectiveSchedules, settingsOf, type EffectivePolicy } from '../schedule/policy.js';
import { BACKUP_PRECEDENCE, fireWindows } from '../schedule/schedule.js';
import { decodePageToken, encodePageToken, pageSizeOf } from '../admin/paging.js';

type ClusterInfoInit = MessageInitShape<typeof ClusterInfoSchema>;
type ScheduledJobInit = MessageInitShape<typeof ScheduledJobSchema>;
type ClusterHostInit = MessageInitShape<typeof ClusterHostSchema>;
type DrillSummaryInit = MessageInitShape<typeof DrillSummarySchema>;
type VerifySummaryInit = MessageInitShape<typeof VerifySummarySchema>;
type DumpSummaryInit = MessageInitShape<typeof DumpSummarySchema>;

/** How far back `last good drill` looks among a cluster's succeeded drill jobs. */
const GOOD_DRILL_SCAN = 50;

/** Health conditions (health.ts, stored per cluster) -> the alert names ClusterInfo.alerts uses. */
const ALERT_NAMES: Record<string, string> = {
  rpo: 'rpo-breached',
  archive: 'archive-failing',
  backup_stale: 'backup-stale',
  agent_silent: 'agent-silent',
  wal_gap: 'wal-gap',
  dump_stale: 'dump-stale',
};

/**
 * One page of the fleet's status (ListClusters), in cluster name order: the page's clusters by
 * keyset (the token names the last one returned), then every figure of those clusters alone. A
 * page costs what it returns, whatever the fleet's size: at 10,000 clusters the first page no
 * longer computes the whole fleet's status for the later ones to be cut from.
 */
export async function listClusterStatusPage(
  ctx: ControllerContext,
  req: { pageSize: number; pageToken: string },
): Promise<{ clusters: ClusterInfoInit[]; nextPageToken: string }> {
  const size = pageSizeOf(req.pageSize);
  const token = decodePageToken(req.pageToken);
  // One more than the page: whether another page follows, without a count of the fleet.
  const found = await ctx.store.listClusters({ after: token?.after ?? '', limit: size + 1 });
  const page = found.slice(0, size);
  const clusters = await clusterStatusRows(
    ctx,
    page,
    page.map((c) => c.name),
  );
  return {
    clusters,
    nextPageToken: found.length > size ? encodePageToken({ after: page.at(-1)!.name }) : '',
  };
}

/** Every cluster's status, by name. */
export async function listClusterStatus(ctx: ControllerContext): Promise<ClusterInfoInit[]> {
  return clusterStatusRows(ctx, await ctx.store.listClusters(), undefined);
}

/**
 * The status rows of `clusters`: the catalog is read for `names` (those clusters; undefined: the
 * whole fleet) with a fixed number of queries, never a few per cluster.
 */
async function clusterStatusRows(
  ctx: ControllerContext,
  clusters: readonly ClusterRecord[],
  names: readonly string[] | undefined,
): Promise<ClusterInfoInit[]> {
  const now = ctx.now();
  const [policies, runs, states, allAgents, latest, oldest, verifies, drillJobs, goodDrillJobs, dumps] =
    await Promise.all([
      ctx.store.listPolicies(names && [FLEET_POLICY_SCOPE, ...names]),
      ctx.store.listScheduleRuns(names),
      ctx.store.listHealthStates(names),
      ctx.store.listAgents(names),
      ctx.store.latestBackups(names),
      ctx.store.oldestBackupStopTimes(names),
      ctx.store.latestJobsPerCluster({
        kind: 'verify',
        state: 'succeeded',
        perCluster: 1,
        ...(names ? { clusters: names } : {}),
      }),
      // The newest drill that ended, whichever way (a running one has no verdict yet).
      ctx.store.latestJobsPerCluster({ kind: 'drill', perCluster: 10, ...(names ? { clusters: names } : {}) }),
      ctx.store.latestJobsPerCluster({
        kind: 'drill',
        state: 'succeeded',
        perCluster: GOOD_DRILL_SCAN,
        ...(names ? { clusters: names } : {}),
      }),
      ctx.store.latestDumps(names),
    ]);
  const settings = new Map(policies.map((p) => [p.scope, settingsOf(p)]));
  const fleet = settings.get(FLEET_POLICY_SCOPE);
  // By cluster, then kind: a key string built per cluster and kind was a sixth of nextScheduledJob.
  const lastRuns = new Map<string, Map<string, number>>();
  for (const r of runs) {
    const of = lastRuns.get(r.cluster);
    if (of) of.set(r.type, r.lastRun);
    else lastRuns.set(r.cluster, new Map([[r.type, r.lastRun]]));
  }
  const agentsOf = groupByCluster(allAgents);
  const lastBackupOf = new Map(latest.map((b) => [b.cluster, b]));
  const pitrFromOf = new Map(oldest.map((b) => [b.cluster, b.stopTime]));
  const lastDumpOf = new Map(dumps.map((d) => [d.cluster, d]));
  const verifiesOf = groupByCluster(verifies);
  const drillsOf = groupByCluster(drillJobs);
  const goodDrillsOf = groupByCluster(goodDrillJobs);
  const statesOf = groupByCluster(states);
  const row = (c: ClusterRecord): ClusterInfoInit => {
    const agents = agentsOf.get(c.name) ?? [];
    const runsOf = lastRuns.get(c.name);
    const verify = verifiesOf.get(c.name) ?? [];
    const drills = drillsOf.get(c.name) ?? [];
    const goodDrills = goodDrillsOf.get(c.name) ?? [];
    const agent = pickAgent(agents);
    const eff = effectiveSchedules(fleet, settings.get(c.name));
    const lastDrill = drills.map(drillSummaryFromJob).find((d) => d !== undefined);
    const lastGoodDrill = goodDrills.map(drillSummaryFromJob).find((d) => d?.ok === true);
    const rpo = clusterRpo(ctx, c, agent, now);
    const raised = statesOf.get(c.name) ?? [];
    const pitrFrom = pitrFromOf.get(c.name);
    return clusterInfo(c, agent, lastBackupOf.get(c.name), {
      rpoSeconds: rpo ?? 0,
      rpoKnown: rpo !== undefined,
      archiveState: archiveState(agent, raised),
      alerts: alertsOf(raised, agent),
      nextJob: nextScheduledJob(c.name, eff, (kind) => runsOf?.get(kind), now),
      lastVerify: verify[0] && verifySummaryFromJob(verify[0]),
      lastDrill,
      lastGoodDrill,
      ...(agent?.walHealth ? { wal: walHealthFromRecord(agent.walHealth) } : {}),
      ...(agent?.archiveSetup ? { archiveSetup: agent.archiveSetup } : {}),
      // What the connected agent reported in its Hello (not kept once it disconnects).
      repositories: agent ? [...(ctx.sessions.get(agent.cluster, agent.id)?.repositories ?? [])] : [],
      hosts: clusterHosts(agents),
      // The oldest backup's consistent point is where a cluster's PITR window starts.
      ...(pitrFrom !== undefined ? { pitrFrom: timestampOfMs(pitrFrom) } : {}),
      ...(lastDumpOf.has(c.name) ? { lastDump: dumpSummary(lastDumpOf.get(c.name)!) } : {}),
    });
  };
  const infos: ClusterInfoInit[] = [];
  // Building a cluster's row is synchronous CPU (cron fire times above all): a fleet's status
  // takes seconds, during which the controller must go on serving heartbeats and other calls.
  const slice = timeSlicer();
  for (const c of clusters) {
    await slice();
    infos.push(row(c));
  }
  return infos;
}

/** A dump row as status shows it (the newest complete dump of a cluster). */
export function dumpSummary(d: DumpRecord): DumpSummaryInit {
  const result = d.result as { seconds?: number; databases?: unknown[] } | null;
  return {
    label: d.label,
    jobId: d.jobId,
    time: timestampOfMs(d.stopTime),
    size: BigInt(d.sizeBytes),
    storedSize: BigInt(d.storedBytes),
    seconds: typeof result?.seconds === 'number' ? result.seconds : (d.stopTime - d.startTime) / 1000,
    databases: Array.isArray(result?.databases) ? result.databases.length : 0,
  };
}

/**
 * Every host of the cluster as its agent last reported it, the primary first, then standbys,
 * then hosts whose role is not known; connected before away. A standby's byte lag is measured
 * against the primary's current LSN when a primary's agent is connected (the standby cannot see
 * the primary's position itself).
 */
export function clusterHosts(agents: readonly AgentRecord[]): ClusterHostInit[] {
  const primaryLsn = agents.find((a) => a.role === 'primary' && a.connected)?.currentLsn;
  const order = (a: AgentRecord) =>
    (a.role === 'primary' ? 0 : a.role === 'standby' ? 1 : 2) * 2 + (a.connected ? 0 : 1);
  return [...agents]
    .sort((x, y) => order(x) - order(y) || (x.id < y.id ? -1 : x.id > y.id ? 1 : 0))
    .map((a) => {
      const lag = a.role === 'standby' ? standbyLag(a, primaryLsn) : undefined;
      return {
        agentId: a.id,
        hostname: a.hostname,
        connected: a.connected,
        ...(a.lastSeen !== null ? { lastSeen: timestampOfMs(a.lastSeen) } : {}),
        role: serverRoleToProto(a.role),
        currentLsn: a.currentLsn ?? '',
        lagBytes: BigInt(lag?.againstPrimary ? lag.bytes : 0),
        lagKnown: lag?.againstPrimary === true,
        receiveReplayBytes: BigInt(a.replay?.receiveReplayBytes ?? 0),
        replayLagSeconds: a.replay?.replayLagSeconds ?? 0,
      };
    });
}

function clusterRpo(
  ctx: ControllerContext,
  cluster: ClusterRecord,
  agent: AgentRecord | undefined,
  now: number,
): number | undefined {
  if (!agent) return undefined;
  const streamedLsn = ctx.health?.assessments?.().get(cluster.name)?.obs.agent?.streamedLsn ?? '';
  return rpoSeconds({
    cluster: cluster.name,
    now,
    clusterCreatedAt: cluster.createdAt,
    agent: observedAgent(agent, streamedLsn),
  });
}

/**
 * ok, failing, not via pgfleet or unknown: failing when pg_stat_archiver says so or the archive
 * condition is raised; not via pgfleet when the agent's last heartbeat found archive_mode off or an
 * archive_command that does not run wal-push for the cluster (pg_stat_archiver counts '/bin/true'
 * as archived, so without this the state would say ok while no WAL reaches the repository).
 */
export function archiveState(agent: AgentRecord | undefined, states: readonly HealthStateRecord[]): string {
  const archiver = archiverFromJson(agent?.archiver);
  if (states.some((s) => s.condition === 'archive' && s.state === 'breached')) return 'failing';
  if (agent?.archiveSetup && !agent.archiveSetup.viaPgfleet) return 'not via pgfleet';
  if (!archiver) return 'unknown';
  return archiveFailing(archiver) ? 'failing' : 'ok';
}

/** The alert of a cluster whose archive_command bypasses pgfleet (see archiveState). */
export const ARCHIVE_BYPASS_ALERT = 'archive-not-via-pgfleet';

function alertsOf(states: readonly HealthStateRecord[], agent: AgentRecord | undefined): string[] {
  const alerts = new Set<string>();
  if (agent?.archiveSetup && !agent.archiveSetup.viaPgfleet) alerts.add(ARCHIVE_BYPASS_ALERT);
  for (const s of states) {
    if (s.state !== 'breached') continue;
    // agent_silent may carry the agent id (agent_silent:<id>).
    const base = s.condition.split(':')[0]!;
    alerts.add(ALERT_NAMES[base] ?? s.condition);
  }
  return [...alerts].sort();
}

/** The kinds a schedule can start, in the order a tie at one time is resolved (as the scheduler does). */
const SCHEDULE_KINDS: readonly ScheduleKind[] = [...BACKUP_PRECEDENCE, 'drill', 'logical', 'dump-drill'];

/** The cron of each schedule kind in a policy. */
function cronOf(
  policy: Pick<EffectivePolicy, 'schedules' | 'drill' | 'logical' | 'dumpDrill'>,
  kind: ScheduleKind,
): string | undefined {
  if (kind === 'drill') return policy.drill;
  if (kind === 'logical') return policy.logical;
  if (kind === 'dump-drill') return policy.dumpDrill;
  return policy.schedules[kind];
}

/**
 * The next job the cluster's schedules start: a run already due (missed while the agent was
 * away, or never run) is reported at the fire time it stands for, which is in the past; otherwise
 * the earliest next fire time over full, diff, incr, drill, logical and dump-drill (spread offset included).
 */
export function nextScheduledJob(
  cluster: string,
  policy: Pick<EffectivePolicy, 'schedules' | 'drill' | 'logical' | 'dumpDrill' | 'spreadMinutes'>,
  lastRun: (kind: ScheduleKind) => number | undefined,
  now: number,
): ScheduledJobInit | undefined {
  let best: { kind: ScheduleKind; at: number; cron: string } | undefined;
  for (const kind of SCHEDULE_KINDS) {
    const cron = cronOf(policy, kind);
    if (!cron) continue;
    // Drills and dumps are spread like backups (schedule/loop.ts, due-runs.ts).
    const schedule = { cluster, type: kind, cron, spreadMinutes: policy.spreadMinutes };
    let at: number;
    try {
      // dueRuns' rule on the shared fire windows (schedule.ts): due when the latest fire time at
      // or before now is after the last run (or it never ran), else the next fire time.
      const last = lastRun(kind);
      const w = fireWindows.around(schedule, now);
      at = last === undefined || w.latest > last ? w.latest : w.next;
    } catch {
      continue; // a bad cron is reported by the scheduler; status shows the others
    }
    if (!best || at < best.at) best = { kind, at, cron };
  }
  return best && { kind: best.kind, time: timestampOfMs(best.at), schedule: best.cron };
}

function resultOf(job: JobRecord): JobResultJson {
  return (job.result ?? {}) as JobResultJson;
}

/** The verdict of a finished verify job (undefined while it runs or when it left no result). */
export function verifySummaryFromJob(job: JobRecord): VerifySummaryInit | undefined {
  const json = resultOf(job).verify;
  if (job.state !== 'succeeded' || json === undefined) return undefined;
  const v = fromJson(VerifyResultSchema, json, { ignoreUnknownFields: true });
  return {
    jobId: job.id,
    time: timestampOfMs(job.finishedAt ?? job.createdAt),
    ok: v.ok,
    full: v.full,
    backupsTotal: v.backups.length,
    backupsRestorable: v.backups.filter((b) => b.restorable).length,
    problems: v.problems.length,
  };
}

/**
 * The summary of a drill job that ended (undefined while it is queued or running). A drill is
 * good only when the job succeeded and its DrillResult says ok; a failed job, or one whose result
 * is absent or unreadable, is a failed drill with the first reason known.
 */
export function drillSummaryFromJob(job: JobRecord): DrillSummaryInit | undefined {
  if (job.state !== 'succeeded' && job.state !== 'failed' && job.state !== 'cancelled') return undefined;
  const base = { jobId: job.id, time: timestampOfMs(job.finishedAt ?? job.createdAt) };
  const json = resultOf(job).drill;
  let result;
  try {
    result =
      json === undefined || json === null
        ? undefined
        : fromJson(DrillResultSchema, json, { ignoreUnknownFields: true });
  } catch {
    result = undefined;
  }
  const ok = job.state === 'succeeded' && result?.ok === true;
  const reason = ok
    ? ''
    : (result?.reasons[0] ??
      (job.error
        ? `${job.error.code} ${job.error.message}`
        : job.state === 'succeeded'
          ? 'the drill reported no result'
          : job.state));
  return {
    ...base,
    ok,
    rtoSeconds: result?.rtoSeconds ?? 0,
    backupLabel: result?.backupLabel ?? '',
    dumpLabel: result?.dumpLabel ?? '',
    reason,
  };
}
