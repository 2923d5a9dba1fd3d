/** The restore points job (RestorePointsJob): listRestorePoints over the archived WAL, reported as RestorePointList. */
import { timestampDate, timestampFromDate } from '@bufbuild/protobuf/wkt';
import { listRestorePoints } from '../restore/restore-points.js';
import type { AgentJobKind } from './job-kind.js';

export const restorePointsJob: AgentJobKind<'restorePoints'> = {
  async run(r, ctx) {
    const s = ctx.settings;
    const { points, scanned } = await listRestorePoints({
      repo: ctx.repo,
      cluster: s.cluster,
      ...(r.since ? { since: timestampDate(r.since) } : {}),
      ...(r.fromSegment ? { fromSegment: r.fromSegment } : {}),
      ...(s.pgBinDir ? { pgBinDir: s.pgBinDir } : {}),
      log: ctx.log,
      signal: ctx.signal,
    });
    return {
      case: 'restorePoints',
      value: {
        points: points.map((p) => ({
          name: p.name,
          lsn: p.lsn.toString(),
          timeline: p.timeline,
          ...(p.time ? { time: timestampFromDate(p.time) } : {}),
        })),
        fromSegment: scanned.first,
        toSegment: scanned.last,
        segmentsRead: scanned.segmentsRead,
      },
    };
  },
};
