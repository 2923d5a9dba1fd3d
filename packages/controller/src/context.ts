/**
 * What the controller's services share: the catalog, the connected agents, the job watchers and
 * the settings agents receive. One object so handlers stay plain functions and tests can build
 * it with any CatalogStore.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from '@pgfleet/core';
import type { CatalogStore, JobRecord } from '@pgfleet/catalog';
import type { ManifestKeys } from '@pgfleet/storage/manifest-auth';
import type { RepositorySpec } from '@pgfleet/storage/repository-url';
import type { AgentSessions } from './agents/sessions.js';
import type { HeartbeatBatcher, HelloBatcher } from './agents/heartbeats.js';
import type { SharedRead } from './agents/shared-read.js';
import type { JobWatchers } from './jobs/watchers.js';
import type { CountedManifestHead } from '@pgfleet/storage';

export interface ControllerContext {
  store: CatalogStore;
  /** This controller process among those sharing the catalog (agents/peers.ts). */
  controllerId: string;
  /** Its beat and the delivery of messages other controllers leave for its streams; absent until it listens. */
  peers?: { deliver(): void };
  sessions: AgentSessions;
  /** Heartbeats on their way into the catalog, written in batches (agents/heartbeats.ts). */
  heartbeats: HeartbeatBatcher;
  /** Hellos on their way into the catalog, in batches as well (a connect storm). */
  hellos: HelloBatcher;
  /** The catalog's active jobs, one read shared by the Hellos that ask at once (agents/shared-read.ts). */
  activeJobs: SharedRead<JobRecord[]>;
  watchers: JobWatchers;
  logger: Logger;
  /** The repositories every job names (Job.repositories); empty: each agent uses its own. */
  repositories: RepositorySpec[];
  /**
   * What the scheduler's per-repository limit counts against: the repositories' canonical URLs,
   * or one shared key when agents bring their own (the controller cannot tell which they share).
   */
  repositoryKey: string;
  heartbeatIntervalSeconds: number;
  /** Every cluster's manifest key (from the manifest secret): each job carries its own cluster's only. */
  manifestKeys: ManifestKeys;
  /** Milliseconds since the epoch; injectable so tests control time. */
  now: () => number;
  /** Running Connect handlers, so shutdown can let them record the disconnect before the catalog closes. */
  connections: Set<Promise<void>>;
  /** Clusters that finished a backup since the scheduler's last look: their retention is due. */
  retentionDue: Set<string>;
  /**
   * Mutual TLS is on: every agent stream carries a verified certificate (checked by the service's
   * authorize hook) and Hello must match its identity. Absent (tests, dev mode) means off.
   */
  agentCertificates?: boolean;
  /**
   * Milliseconds an agent has to reconnect and claim its unfinished jobs (Hello.running_job_ids)
   * before they fail; see reclaimJobsLater in agents/service.ts.
   */
  jobReclaimGraceMs: number;
  /** Pending reclaim checks by agent id ('*': the start-up check), cleared on shutdown. */
  reclaimTimers: Map<string, NodeJS.Timeout>;
  /** Set while the controller shuts down: streams it cuts are not agents going away. */
  closing?: boolean;
  /**
   * The repository as the controller reads it (its --repo, unless --reported-backup-check facts):
   * a reported backup's manifest must be there and agree with the report. Absent: the facts alone.
   */
  manifests?: ManifestReader;
  /** Called after a commit that wrote outbox events: the relay publishes now (absent without NATS). */
  notifyEvents?: () => void;
  /** Evaluates cluster health on heartbeats (health.ts); absent in tests that do not need it. */
  /** The controller's health thresholds (flags): what a policy that sets none runs under. */
  healthDefaults?: {
    rpoSeconds: number;
    staleBackupSeconds: number;
    silenceSeconds: number;
    staleDumpSeconds?: number;
  };
  health?: {
    onHeartbeat(agentId: string, cluster: string, beat: { streamedLsn: string; currentLsn: string }): Promise<void>;
    /** A policy changed: thresholds are read again at the next evaluation. */
    policiesChanged?(): void;
    /** The latest assessment per cluster (status reads the streamed LSN, which only lives here). */
    assessments?(): ReadonlyMap<string, { obs: { agent?: { streamedLsn?: string } } }>;
  };
}

/** Reads a backup's manifest from the controller's own view of the repository (jobs/backup-admission.ts). */
export interface ManifestReader {
  readonly location: string;
  /** The manifest's head and file count, authenticated and checked, its entries never held (Repository.readManifestHead). */
  readManifestHead(cluster: string, label: string): Promise<CountedManifestHead>;
}

/** Tells the relay that events were committed. */
export function eventsCommitted(ctx: ControllerContext): void {
  ctx.notifyEvents?.();
}

/** Publishes job records to WatchJob streams after the catalog has recorded them. */
export function publishJobs(ctx: ControllerContext, jobs: readonly JobRecord[]): void {
  for (const job of jobs) ctx.watchers.publish(job);
}

export const CONTROLLER_VERSION: string = (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string })
      .version;
  } catch {
    return '0.0.0';
  }
})();
