/**
 * A backup an agent reports is a claim, not a fact: before it becomes a catalog row (which
 * `--target latest`, retention and drills then trust) the controller checks it against what it
 * knows without the agent. A compromised or broken agent host must not be able to plant a
 * backup with a path for a label, another database's system identifier, an LSN or time from the
 * future, or one that is not in the repository at all.
 *
 * Checked for every reported backup (admitBackupFacts, pure):
 *  - the label is what the agent's backupLabel makes (YYYYMMDD-HHMMSS + F/D/I for its type): no
 *    '/', no '..', nothing a key or a path could be built from but the backup's own directory;
 *  - the system identifier is the cluster's (the catalog's, fixed when its first agent came);
 *  - start LSN <= stop LSN, neither zero, and stop no further than the cluster's agents have
 *    reported their server to be (the agent beats once right before its result, so the last
 *    heartbeat is at or past a real stop LSN);
 *  - start time <= stop time, the start not before the job was created and the stop not after
 *    now, both give or take CLOCK_SKEW_MS; the timeline is 1 or more, prior and WAL names well formed.
 * With the repository (the controller's --repo, unless --reported-backup-check facts): the
 * manifest is read from it and must say exactly what the agent reported (admitBackupManifest).
 */
import { PgfleetError, asPgfleetError } from '@pgfleet/core';
import type { BackupRecord, JobError } from '@pgfleet/catalog';
import { Lsn } from '@pgfleet/pg';
import type { CountedManifestHead, Repository } from '@pgfleet/storage';
import { repositoryUrl, type RepositorySpec } from '@pgfleet/storage/repository-url';
import type { ManifestKeys } from '@pgfleet/storage/manifest-auth';
import type { ControllerContext, ManifestReader } from '../context.js';
import { backupRecordDifferences } from '../wire.js';

/** How far agent and controller clocks may disagree (NTP keeps a fleet within a second). */
export const CLOCK_SKEW_MS = 5 * 60_000;

/** backupLabel (core ids.ts): UTC date, time and the type letter. */
const LABEL = /^\d{8}-\d{6}[FDI]$/;
const TYPE_LETTER = { full: 'F', diff: 'D', incr: 'I' } as const;
/** A WAL segment file name: timeline, log and segment, 8 hex digits each. */
const WAL_NAME = /^[0-9A-F]{24}$/;

/** What the controller knows of the cluster and the job, independently of the report. */
export interface BackupAdmissionFacts {
  /** The cluster's system identifier (catalog). */
  systemIdentifier: string;
  /** The furthest position the cluster's agents reported in heartbeats; undefined: none reported. */
  reportedLsn: Lsn | undefined;
  /** When the job was created (controller clock). */
  jobCreatedAt: number;
  now: number;
}

/** Why the reported backup cannot be believed; empty when it is plausible. */
export function backupFactsProblems(b: BackupRecord, facts: BackupAdmissionFacts): string[] {
  const problems: string[] = [];
  if (!LABEL.test(b.label))
    problems.push(`label '${printable(b.label)}' is not a backup label (YYYYMMDD-HHMMSS and F, D or I)`);
  else if (b.label.at(-1) !== TYPE_LETTER[b.type])
    problems.push(`label ${b.label} does not end in ${TYPE_LETTER[b.type]}, the letter of a ${b.type} backup`);
  if (b.priorLabel !== '' && !LABEL.test(b.priorLabel))
    problems.push(`prior label '${printable(b.priorLabel)}' is not a backup label`);
  if (b.systemIdentifier !== facts.systemIdentifier)
    problems.push(
      `system identifier ${printable(b.systemIdentifier)} is not the cluster's (${facts.systemIdentifier})`,
    );
  problems.push(...lsnProblems(b, facts.reportedLsn));
  problems.push(...timeProblems(b, facts));
  if (!Number.isSafeInteger(b.timeline) || b.timeline < 1) problems.push(`timeline ${b.timeline} is not 1 or more`);
  if (!WAL_NAME.test(b.walStart) || !WAL_NAME.test(b.walStop))
    problems.push(`WAL range '${printable(b.walStart)}'..'${printable(b.walStop)}' is not two WAL segment names`);
  return problems;
}

function lsnProblems(b: BackupRecord, reported: Lsn | undefined): string[] {
  if (!Lsn.isValid(b.startLsn) || !Lsn.isValid(b.stopLsn))
    return [`LSNs '${printable(b.startLsn)}'..'${printable(b.stopLsn)}' are not LSNs`];
  const start = Lsn.parse(b.startLsn);
  const stop = Lsn.parse(b.stopLsn);
  const problems: string[] = [];
  if (start.compare(Lsn.ZERO) === 0) problems.push('start LSN is 0/0');
  if (start.compare(stop) > 0) problems.push(`start LSN ${b.startLsn} is after stop LSN ${b.stopLsn}`);
  if (reported && stop.compare(reported) > 0)
    problems.push(`stop LSN ${b.stopLsn} is beyond the cluster's reported position ${reported.toString()}`);
  return problems;
}

function timeProblems(b: BackupRecord, facts: BackupAdmissionFacts): string[] {
  const problems: string[] = [];
  const iso = (ms: number) => (Number.isFinite(ms) && Math.abs(ms) < 8.64e15 ? new Date(ms).toISOString() : String(ms));
  if (b.startTime > b.stopTime) problems.push(`start time ${iso(b.startTime)} is after stop time ${iso(b.stopTime)}`);
  if (b.stopTime > facts.now + CLOCK_SKEW_MS)
    problems.push(`stop time ${iso(b.stopTime)} is in the future (controller time ${iso(facts.now)})`);
  if (b.startTime < facts.jobCreatedAt - CLOCK_SKEW_MS)
    problems.push(`start time ${iso(b.startTime)} is before the job was created (${iso(facts.jobCreatedAt)})`);
  return problems;
}

/** A reported string shown in a message: bounded, control characters escaped (it came from the wire). */
function printable(s: string): string {
  const cut = s.length > 80 ? `${s.slice(0, 80)}…` : s;
  return JSON.stringify(cut).slice(1, -1);
}

/** The manifest must say what the agent reported: a row is a summary of its manifest. */
export function backupManifestProblems(b: BackupRecord, fromManifest: BackupRecord): string[] {
  const differing = backupRecordDifferences(b, fromManifest);
  return differing.length === 0 ? [] : [`the manifest in the repository says otherwise about ${differing.join(', ')}`];
}

/**
 * The controller's own reader of the repositories it names, opened at the first report (a
 * controller that never receives one never touches the repository). S3 credentials come from the
 * controller's environment (the AWS default chain); read access to the manifests is enough.
 */
export function repositoryManifestReader(
  specs: readonly RepositorySpec[],
  manifestKeys: ManifestKeys,
  encryptionKey: { file?: string; command?: string; previousFile?: string; previousCommand?: string } = {},
): ManifestReader & { close(): void } {
  let opened: Promise<Repository> | undefined;
  const open = () => {
    // Loaded on first use: the drivers (the AWS SDK) stay out of a controller that never needs them.
    // With the manifest keys a manifest is believed only when its MAC is the cluster's (h2).
    opened ??= import('@pgfleet/storage').then(
      async ({ MirroredDriver, keyResolver, openRepositoryDriver, Repository }) => {
        const drivers = await Promise.all(specs.map((spec) => openRepositoryDriver(spec)));
        // Encrypted clusters: their manifests are read with the key source of --encryption-key-file/-command (%c).
        const keys = keyResolver(encryptionKey);
        return new Repository(drivers.length === 1 ? drivers[0]! : new MirroredDriver(drivers), manifestKeys, keys);
      },
    );
    opened.catch(() => (opened = undefined));
    return opened;
  };
  return {
    location: specs.map(repositoryUrl).join(' '),
    readManifestHead: async (cluster, label) => (await open()).readManifestHead(cluster, label),
    close: () =>
      void opened?.then(
        (r) => r.close(),
        () => undefined,
      ),
  };
}

/**
 * Every check the controller can make of a reported backup; the error that fails the job (and
 * keeps it out of the catalog) when one does not hold, undefined when the backup may be recorded.
 */
export async function admitReportedBackup(
  ctx: ControllerContext,
  job: { id: string; cluster: string; createdAt: number },
  backup: BackupRecord,
  toRecord: (m: CountedManifestHead) => BackupRecord,
): Promise<JobError | undefined> {
  const cluster = await ctx.store.getCluster(job.cluster);
  const facts: BackupAdmissionFacts = {
    systemIdentifier: cluster?.systemIdentifier ?? '',
    reportedLsn: furthest((await ctx.store.listAgents(job.cluster)).map((a) => a.currentLsn)),
    jobCreatedAt: job.createdAt,
    now: ctx.now(),
  };
  const problems = backupFactsProblems(backup, facts);
  // A label that is not a label is never used to build a repository key.
  if (problems.length === 0 && ctx.manifests)
    problems.push(...(await manifestProblems(ctx.manifests, backup, toRecord)));
  if (problems.length === 0) return undefined;
  const error = new PgfleetError(
    'ReportedBackupRefused',
    `the reported backup ${printable(backup.label)} of cluster '${job.cluster}' was not recorded: ${problems.join('; ')}`,
  );
  return { code: error.code, message: error.message };
}

async function manifestProblems(
  reader: ManifestReader,
  backup: BackupRecord,
  toRecord: (m: CountedManifestHead) => BackupRecord,
): Promise<string[]> {
  let manifest: CountedManifestHead;
  try {
    manifest = await reader.readManifestHead(backup.cluster, backup.label);
  } catch (err) {
    const e = asPgfleetError(err);
    return e.errorName === 'UnknownBackup'
      ? [`it has no manifest in ${reader.location}`]
      : [`its manifest could not be read from ${reader.location} (${e.code} ${e.message})`];
  }
  return backupManifestProblems(backup, toRecord(manifest));
}

/** The furthest valid LSN of those given; undefined when none is. */
function furthest(lsns: readonly (string | null)[]): Lsn | undefined {
  let best: Lsn | undefined;
  for (const text of lsns) {
    if (!text || !Lsn.isValid(text)) continue;
    const lsn = Lsn.parse(text);
    if (!best || lsn.compare(best) > 0) best = lsn;
  }
  return best;
}
