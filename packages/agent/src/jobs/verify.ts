/** The verify job (VerifyJob): runVerify over the cluster's repository, reported as VerifyResult. */
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { backupTypeToProto } from '@pgfleet/proto';
import { runVerify, type VerifyOutcome } from '../verify/verify.js';
import type { AgentJobKind } from './job-kind.js';
import { verifyDumps } from '../logical/verify-dump.js';

export function verifyResultToProto(v: VerifyOutcome) {
  return {
    full: v.full,
    backups: v.backups.map((b) => ({
      label: b.label,
      type: backupTypeToProto(b.type),
      restorable: b.restorable,
      fromLsn: b.fromLsn,
      ...(b.fromTime && !Number.isNaN(b.fromTime.getTime()) ? { fromTime: timestampFromDate(b.fromTime) } : {}),
      toLsn: b.toLsn,
      toTimeline: b.toTimeline,
      reasons: b.reasons,
      filesChecked: b.filesChecked,
      bytesChecked: BigInt(b.bytesChecked),
    })),
    problems: v.problems.map((p) => ({
      kind: p.kind,
      label: p.label,
      path: p.path,
      key: p.key,
      message: p.message,
      timeline: p.timeline ?? 0,
      lsnFrom: p.lsnFrom ?? '',
      lsnTo: p.lsnTo ?? '',
      segments: p.segments ?? [],
    })),
    walSegmentsChecked: v.walSegmentsChecked,
    walNewest: v.walNewest,
    ok: v.ok,
    timelines: v.timelines.map((t) => ({
      timeline: t.timeline,
      parent: t.parent,
      switchLsn: t.switchLsn,
      ...(t.startedAt ? { startedAt: timestampFromDate(t.startedAt) } : {}),
      newestSegment: t.newestSegment,
      onLiveLineage: t.onLiveLineage,
      liveKnown: t.liveKnown,
    })),
  };
}

export const verifyJob: AgentJobKind<'verify'> = {
  async run(v, ctx) {
    const out = await runVerify({
      cluster: ctx.settings.cluster,
      repo: ctx.repo,
      full: v.full,
      currentTimeline: await ctx.liveTimeline(ctx.settings.cluster, v.currentTimeline),
      concurrency: Math.max(2, ctx.settings.workers),
      log: ctx.log,
      progress: ctx.progress,
      signal: ctx.signal,
    });
    // Dumps the catalog records (pgfleet dump), checked after the backups and WAL.
    const dumps = await verifyDumps({
      cluster: ctx.settings.cluster,
      repo: ctx.repo,
      dumps: v.dumps,
      ...(ctx.settings.pgBinDir ? { pgBinDir: ctx.settings.pgBinDir } : {}),
      scratchDir: ctx.settings.scratchDir,
      log: ctx.log,
      signal: ctx.signal,
    });
    const result = verifyResultToProto(out);
    return { case: 'verify', value: { ...result, dumps, ok: result.ok && dumps.every((d) => d.ok) } };
  },
};
