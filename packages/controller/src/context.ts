/**
 * What the controller's services share: the catalog, the connected agents, the job watchers and
 * the settings agents receive. One object so handlers stay plain functions and tests can build
 * it with any CatalogStore.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from '@pgfleet/core';
import type { CatalogStore, JobRecord } from '@pgfleet/catalog';
import type { AgentSessions } from './agent-sessions.js';
import type { JobWatchers } from './job-watchers.js';

export interface ControllerContext {
  store: CatalogStore;
  sessions: AgentSessions;
  watchers: JobWatchers;
  logger: Logger;
  repoPath: string;
  heartbeatIntervalSeconds: number;
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
  /** Called after a commit that wrote outbox events: the relay publishes now (absent without NATS). */
  notifyEvents?: () => void;
  /** Evaluates cluster health on heartbeats (health.ts); absent in tests that do not need it. */
  health?: { onHeartbeat(agentId: string, cluster: string, beat: { streamedLsn: string; currentLsn: string }): Promise<void> };
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
    return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
})();
