/** The logical backup jobs: DumpJob (runDump, reported as DumpResult) and RestoreDumpJob (runRestoreDump). */
import { PgfleetError } from '@pgfleet/core';
import { isCodec } from '@pgfleet/storage';
import { runDump } from '../logical/dump.js';
import { runRestoreDump } from '../logical/restore-dump.js';
import type { AgentJobKind } from './job-kind.js';

export const dumpJob: AgentJobKind<'dump'> = {
  async run(d, ctx) {
    const s = ctx.settings;
    const out = await runDump({
      jobId: ctx.job.jobId,
      cluster: s.cluster,
      label: d.label,
      repo: ctx.repo,
      // pg_dump compresses (see logical/dump.ts): stored as written, checksummed and encrypted.
      codec: 'none',
      pg: s.pg,
      ...(s.pgBinDir ? { pgBinDir: s.pgBinDir } : {}),
      scratchDir: s.scratchDir,
      spoolMaxBytes: s.dumpSpoolMaxBytes,
      databases: d.databases,
      jobs: d.jobs,
      lockWaitTimeoutMs: d.lockWaitTimeoutMs,
      withPasswords: d.withPasswords,
      uploads: Math.max(2, s.workers),
      storeEarly: s.dumpStoreEarly,
      log: ctx.log,
      progress: ctx.progress,
      signal: ctx.signal,
    });
    return { case: 'dump', value: out };
  },
};

export const restoreDumpJob: AgentJobKind<'restoreDump'> = {
  async run(r, ctx) {
    const s = ctx.settings;
    if (!r.database) throw new PgfleetError('DumpInvalid', 'the job names no dumped database');
    if (!isCodec(r.codec)) throw new PgfleetError('DumpInvalid', `dump codec '${r.codec}' is not one this agent reads`);
    const out = await runRestoreDump({
      jobId: ctx.job.jobId,
      cluster: r.cluster,
      agentCluster: s.cluster,
      label: r.label,
      database: r.database,
      codec: r.codec,
      toDatabase: r.toDatabase,
      tables: r.tables,
      schemas: r.schemas,
      jobs: r.jobs,
      clean: r.clean,
      ...(r.globals ? { globals: { file: r.globals, withPasswords: r.globalsWithPasswords } } : {}),
      repo: ctx.repo,
      pg: s.pg,
      ...(s.pgBinDir ? { pgBinDir: s.pgBinDir } : {}),
      scratchDir: s.scratchDir,
      downloads: Math.max(2, s.workers),
      log: ctx.log,
      progress: ctx.progress,
      signal: ctx.signal,
    });
    return { case: 'restoreDump', value: out };
  },
};
