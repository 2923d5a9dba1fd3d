/** The backup job (BackupJob): runBackup on this agent's cluster, reported as the manifest's BackupInfo. */
import { PgfleetError } from '@pgfleet/core';
import { backupInfoFromManifest, backupResumeFromProto, backupTypeFromProto } from '@pgfleet/proto';
import { runBackup } from '../backup/backup.js';
import type { AgentJobKind } from './job-kind.js';
import { runFullCheck } from './check.js';

export const backupJob: AgentJobKind<'backup'> = {
  async run(message, ctx) {
    const s = ctx.settings;
    // A type this build does not know is taken as full, as UNSPECIFIED is.
    const type = backupTypeFromProto(message.type) ?? 'full';
    // The controller starts one at a time; this holds for jobs it resent or a second controller too.
    const release = ctx.exclusive('backup');
    if (!release)
      throw new PgfleetError('BackupInProgress', `a backup of cluster ${s.cluster} is already running on this agent`);
    try {
      const manifest = await runBackup({
        cluster: s.cluster,
        pgdata: s.pgdata,
        pg: s.pg,
        repo: ctx.repo,
        codec: s.compress,
        ...(s.compressLevel !== undefined ? { level: s.compressLevel } : {}),
        ...(ctx.rateLimit ? { rateLimit: ctx.rateLimit } : {}),
        type,
        checksumDelta: s.checksumDelta === true,
        blockIncremental: s.fileIncremental !== true,
        blockDeltas: s.wholeBlocks !== true,
        blockMinBytes: s.blockMinBytes,
        resume: backupResumeFromProto(message.resume),
        resumeWindowMs: s.resumeWindowMs,
        // Stopped by a user: nothing is kept; interrupted (the agent stopping, a failure): kept to be continued.
        keepInterrupted: () => !ctx.signal.aborted || ctx.stopping(),
        workers: s.workers,
        archiveTimeoutMs: s.archiveTimeoutSec * 1000,
        // The first backup of the cluster proves archiving end to end before it copies anything (see runBackup).
        checkArchiving: () => runFullCheck(ctx, s.archiveTimeoutSec * 1000),
        // On a standby: the controller forwards this to the primary's agent (agent.proto WalSwitch).
        requestWalSwitch: (lsn) => ctx.requestWalSwitch(lsn.toString()),
        log: ctx.log,
        progress: ctx.progress,
        signal: ctx.signal,
      });
      return { case: 'backup', value: backupInfoFromManifest(manifest, ctx.job.jobId) };
    } finally {
      release();
    }
  },
};
