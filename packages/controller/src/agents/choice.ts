/**
 * Which connected agent of a cluster runs a job. An HA cluster has one agent per host, and each
 * reports in its heartbeats whether its PostgreSQL is the primary or a standby (and a standby's
 * replay position). Jobs differ in what they need:
 * - `primary`: jobs that write to the cluster or need pg_switch_wal() (a backup from the primary,
 *   a drill's source capture with its restore point, the WAL switch a standby backup asks for);
 * - `any`: jobs that only read the repository or write elsewhere (restore, verify, expire, a
 *   drill with a target): the primary's agent when there is one, else any connected agent;
 * - `standby` / `prefer-standby`: where a backup runs under `backup_from` (pgBackRest's
 *   backup-standby=y/prefer, CloudNativePG's prefer-standby): only a standby that is fit (its
 *   heartbeat recent, its replay lag below a bound), or such a standby when there is one and the
 *   primary otherwise.
 * An agent whose role is not known (no heartbeat yet, an agent that does not report it) is taken
 * for the primary only when no agent reports being the primary: a single-agent cluster keeps
 * working as before HA clusters existed.
 *
 * The choice is a pure function of the candidates so it is unit-tested without processes;
 * dispatch.ts builds the candidates from this controller's open streams and the catalog's
 * heartbeat figures.
 */
import { PgfleetError } from '@pgfleet/core';
import type { AgentReplay, BackupFrom, ServerRoleName } from '@pgfleet/catalog';
import { Lsn } from '@pgfleet/pg';

export type AgentNeed = 'primary' | 'any' | BackupFrom;

/** A connected agent of the cluster with its last heartbeat's figures. */
export interface AgentCandidate {
  agentId: string;
  hostname: string;
  connectedAt: number;
  role: ServerRoleName | null;
  lastSeen: number | null;
  currentLsn: string | null;
  replay: AgentReplay | null;
  /** The timeline it writes as a primary (null: not reported). */
  timeline?: number | null;
}

export interface StandbyLimits {
  now: number;
  /** A standby further behind the primary than this (bytes) is not used for backups. */
  maxLagBytes: number;
  /** A standby whose last heartbeat is older than this (ms) is not used: its figures are stale. */
  maxSilenceMs: number;
}

/**
 * 256 MiB of WAL (16 segments): a standby that far behind would start its backup at an old
 * checkpoint and make it wait for that much WAL replay; the primary is the better source then.
 */
export const DEFAULT_STANDBY_MAX_LAG_BYTES = 256 * 1024 * 1024;

const byConnectedAt = (a: AgentCandidate, b: AgentCandidate) => a.connectedAt - b.connectedAt;

function lsnValue(text: string | null | undefined): bigint | undefined {
  return text && Lsn.isValid(text) ? Lsn.parse(text).value : undefined;
}

/**
 * A standby's lag in bytes: the primary's current LSN minus the standby's replay LSN when the
 * primary's position is known (its agent reports it), else what the standby received and has not
 * replayed yet (a lower bound). undefined: the standby reported no replay position.
 */
export function standbyLag(
  standby: Pick<AgentCandidate, 'replay'>,
  primaryLsn: string | null | undefined,
): { bytes: number; againstPrimary: boolean } | undefined {
  const replayed = lsnValue(standby.replay?.replayLsn);
  if (replayed === undefined) return undefined;
  const primary = lsnValue(primaryLsn);
  if (primary !== undefined)
    return { bytes: Number(primary > replayed ? primary - replayed : 0n), againstPrimary: true };
  return { bytes: standby.replay?.receiveReplayBytes ?? 0, againstPrimary: false };
}

/**
 * The primary's agent: a connected agent reporting primary, else (no role known) the longest
 * connected one of unknown role. Two reporting primary (a switchover before the old primary's
 * next heartbeat, a split brain): the one on the newer timeline, the promoted one.
 */
function primaryOf(candidates: readonly AgentCandidate[]): AgentCandidate | undefined {
  const primaries = candidates
    .filter((c) => c.role === 'primary')
    .sort((a, b) => (b.timeline ?? 0) - (a.timeline ?? 0) || byConnectedAt(a, b));
  if (primaries[0]) return primaries[0];
  return candidates.filter((c) => c.role === null).sort(byConnectedAt)[0];
}

/** Standbys fit for a backup, least lag first; `why` says why each other standby is not. */
function fitStandbys(
  candidates: readonly AgentCandidate[],
  limits: StandbyLimits,
): { fit: AgentCandidate[]; why: string[] } {
  const primaryLsn = candidates.find((c) => c.role === 'primary')?.currentLsn;
  const fit: { c: AgentCandidate; lag: number }[] = [];
  const why: string[] = [];
  for (const c of candidates.filter((x) => x.role === 'standby').sort(byConnectedAt)) {
    const lag = standbyLag(c, primaryLsn);
    if (c.lastSeen === null || limits.now - c.lastSeen > limits.maxSilenceMs) {
      why.push(
        `${c.agentId} (${c.hostname}) has not reported for ${c.lastSeen === null ? 'ever' : `${Math.round((limits.now - c.lastSeen) / 1000)} s`}`,
      );
    } else if (!lag) {
      why.push(`${c.agentId} (${c.hostname}) reported no replay position`);
    } else if (lag.bytes > limits.maxLagBytes) {
      why.push(
        `${c.agentId} (${c.hostname}) is ${lag.bytes} bytes behind ${lag.againstPrimary ? 'the primary' : 'what it received'} (at most ${limits.maxLagBytes})`,
      );
    } else {
      fit.push({ c, lag: lag.bytes });
    }
  }
  fit.sort((a, b) => a.lag - b.lag || byConnectedAt(a.c, b.c));
  return { fit: fit.map((f) => f.c), why };
}

function describe(candidates: readonly AgentCandidate[]): string {
  return candidates.length === 0
    ? 'none is connected'
    : `connected: ${candidates.map((c) => `${c.agentId} (${c.role ?? 'role unknown'})`).join(', ')}`;
}

/** The agent that runs a job with this need; throws AgentNotConnected or StandbyNotConnected. */
export function chooseAgent(
  cluster: string,
  candidates: readonly AgentCandidate[],
  need: AgentNeed,
  limits: StandbyLimits,
): AgentCandidate {
  if (candidates.length === 0)
    throw new PgfleetError('AgentNotConnected', `no agent of cluster '${cluster}' is connected`);
  if (need === 'any') return primaryOf(candidates) ?? [...candidates].sort(byConnectedAt)[0]!;
  if (need === 'standby' || need === 'prefer-standby') {
    const { fit, why } = fitStandbys(candidates, limits);
    if (fit[0]) return fit[0];
    if (need === 'standby') {
      const reason = why.length ? why.join('; ') : `no agent of a standby is connected (${describe(candidates)})`;
      throw new PgfleetError('StandbyNotConnected', `cannot back up cluster '${cluster}' from a standby: ${reason}`);
    }
  }
  const primary = primaryOf(candidates);
  if (!primary)
    throw new PgfleetError(
      'AgentNotConnected',
      `no agent on the primary of cluster '${cluster}' is connected (${describe(candidates)})`,
    );
  return primary;
}
