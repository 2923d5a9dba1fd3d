/**
 * `pgfleet status [--cluster X]`: the fleet at a glance, one row per cluster: agent state, last
 * backup and its age, RPO, archive state, the next scheduled job, the last verify verdict, the
 * last drill and the RTO of the last good one, and the health alerts raised. Ages are computed
 * against this machine's clock; `--output json` gives the exact times (ClusterInfo messages).
 * Below it, one row per host (agent) of each cluster: its role (primary or standby, from
 * pg_is_in_recovery()) and a standby's lag, so an HA cluster's hosts and a failover are visible.
 * With several controllers on one catalog, a last table lists them: which answered, which leads
 * the scheduler and health evaluation, which died, and how many agent streams each holds.
 */
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { PgfleetError } from '@pgfleet/core';
import {
  ClusterInfoSchema,
  ControllerInfoSchema,
  ServerRole,
  type ClusterHost,
  type ClusterInfo,
  type ControllerInfo,
} from '@pgfleet/proto';
import { formatAge, formatBytes, formatTable } from './format.js';
import { JsonText, jsonList, writeJson } from './json-text.js';
import { clusterPages, out, stdoutJson, typeName, type Admin } from './output.js';

export async function statusCommand(admin: Admin, cluster: string | undefined, json: boolean): Promise<number> {
  // Each page is turned into its JSON text or table cells while the controller builds the next
  // (clusterPages asks for it first); nothing is printed until every page came, so a failing page
  // prints nothing but its error.
  const now = Date.now();
  // Kept as bytes: a kept chunk string is a rope of thousands of small pieces (measured: +40% CPU).
  const chunks: Buffer[] = [];
  const text = new JsonText((chunk) => chunks.push(Buffer.from(chunk)));
  const list = jsonList(text, ClusterInfoSchema, '  ');
  const statusRows: string[][] = [];
  const hostRows: string[][] = [];
  let count = 0;
  for await (const page of clusterPages(admin)) {
    const shown = cluster === undefined ? page : page.filter((c) => c.name === cluster);
    count += shown.length;
    if (json) list.add(shown);
    else {
      for (const c of shown) statusRows.push(statusCells(c, now));
      hostRows.push(...hostCells(shown, now));
    }
  }
  if (cluster !== undefined && count === 0) {
    throw new PgfleetError('UnknownCluster', `cluster '${cluster}' is not known to the controller`);
  }
  // A controller older than ListControllers answers UNIMPLEMENTED: its status goes without them.
  const controllers = await admin.listControllers({}).then(
    (r) => r.controllers,
    () => [],
  );
  // JSON: the clusters and every controller of the catalog (a lone one too: which leads what).
  if (json) {
    list.end();
    text.end();
    process.stdout.write('{\n  "clusters": ');
    for (const chunk of chunks) process.stdout.write(chunk);
    const outText = stdoutJson();
    outText.push(',\n  "controllers": ');
    writeJson(outText, ControllerInfoSchema, controllers, '  ');
    outText.push('\n}\n');
    outText.end();
  } else {
    out(`${statusTable(statusRows)}${hostsTable(hostRows)}${describeControllers(controllers, now)}`);
  }
  return 0;
}

/** The controllers table (after a blank line), or '' for a lone controller (nothing to tell apart). */
export function describeControllers(controllers: readonly ControllerInfo[], now: number): string {
  if (controllers.length < 2) return '';
  const rows = controllers.map((c) => [
    `${c.address}${c.answering ? ' *' : ''}`,
    c.alive ? 'alive' : `DEAD (silent ${ago(c.lastSeen, now)})`,
    ago(c.started, now),
    String(c.agentsHeld),
    c.leads.length ? c.leads.join(',') : '-',
  ]);
  return `\n\n${formatTable(['CONTROLLER', 'STATE', 'UP', 'AGENTS', 'LEADS'], rows)}`;
}

const ago = (t: ClusterInfo['lastSeen'], now: number): string => (t ? formatAge((now - timestampMs(t)) / 1000) : '-');

const STATUS_HEADER = [
  'CLUSTER',
  'AGENT',
  'LAST BACKUP',
  'AGE',
  'LAST DUMP',
  'RPO',
  'ARCHIVE',
  'NEXT JOB',
  'VERIFY',
  'DRILL',
  'ALERTS',
];

/** The status table; `now` (ms) is the clock ages are measured against. */
export function describeStatus(clusters: readonly ClusterInfo[], now: number): string {
  return statusTable(clusters.map((c) => statusCells(c, now)));
}

function statusTable(rows: string[][]): string {
  if (rows.length === 0) return 'no clusters yet: a cluster appears when its agent first connects';
  return formatTable(STATUS_HEADER, rows);
}

/** A cluster's row of the status table. */
function statusCells(c: ClusterInfo, now: number): string[] {
  return [
    c.name,
    c.agentConnected ? 'connected' : c.agentId ? `gone ${ago(c.lastSeen, now)}` : 'none',
    c.lastBackup ? `${c.lastBackup.label} (${typeName(c.lastBackup.type)})` : '-',
    ago(c.lastBackup?.stopTime, now),
    // The newest complete logical dump and its age (pgfleet dumps lists them all).
    c.lastDump ? `${c.lastDump.label} ${ago(c.lastDump.time, now)} ago` : '-',
    c.rpoKnown ? formatAge(c.rpoSeconds) : '-',
    c.archiveState || 'unknown',
    nextJob(c, now),
    c.lastVerify ? `${c.lastVerify.ok ? 'ok' : 'FAILED'} ${ago(c.lastVerify.time, now)} ago` : '-',
    drill(c),
    c.alerts.length ? c.alerts.join(',') : '-',
  ];
}

const ROLE_NAMES: Record<ServerRole, string> = {
  [ServerRole.UNSPECIFIED]: 'unknown',
  [ServerRole.PRIMARY]: 'primary',
  [ServerRole.STANDBY]: 'standby',
};

/** The hosts table (after a blank line), or '' when no cluster has an agent yet. */
export function describeHosts(clusters: readonly ClusterInfo[], now: number): string {
  return hostsTable(hostCells(clusters, now));
}

function hostsTable(rows: string[][]): string {
  if (rows.length === 0) return '';
  return `\n\n${formatTable(['CLUSTER', 'AGENT', 'HOST', 'ROLE', 'STATE', 'LSN', 'LAG'], rows)}`;
}

/** The hosts table's rows of these clusters. */
function hostCells(clusters: readonly ClusterInfo[], now: number): string[][] {
  return clusters.flatMap((c) =>
    c.hosts.map((h) => [
      c.name,
      h.agentId,
      h.hostname,
      ROLE_NAMES[h.role] ?? 'unknown',
      h.connected ? 'connected' : `gone ${ago(h.lastSeen, now)}`,
      h.currentLsn || '-',
      lag(h),
    ]),
  );
}

/** A standby's lag: bytes behind the primary (or, without the primary's position, received but not replayed) and replay delay. */
function lag(h: ClusterHost): string {
  if (h.role !== ServerRole.STANDBY) return '-';
  const bytes = h.lagKnown ? `${formatBytes(h.lagBytes)} behind` : `${formatBytes(h.receiveReplayBytes)} not replayed`;
  return h.replayLagSeconds > 0 ? `${bytes}, replay ${formatAge(h.replayLagSeconds)}` : bytes;
}

function nextJob(c: ClusterInfo, now: number): string {
  const j = c.nextJob;
  if (!j?.time) return '-';
  const wait = (timestampMs(j.time) - now) / 1000;
  // A run already due waits for the scheduler's next round (or for the agent to come back).
  return wait <= 0 ? `${j.kind} due` : `${j.kind} in ${formatAge(wait)}`;
}

function drill(c: ClusterInfo): string {
  const last = c.lastDrill;
  const good = c.lastGoodDrill;
  const rto = (s: number) => `RTO ${s < 100 ? s.toFixed(1) : Math.round(s)}s`;
  if (!last) return '-';
  if (last.ok) return `ok, ${rto(last.rtoSeconds)}`;
  return good ? `FAILED; last good ${rto(good.rtoSeconds)}` : 'FAILED; none good';
}
