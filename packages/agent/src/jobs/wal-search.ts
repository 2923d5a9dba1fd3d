/** The WAL search job (WalSearchJob): searchWal over the archived WAL, reported as WalSearchResult. */
import { timestampDate, timestampFromDate } from '@bufbuild/protobuf/wkt';
import { PgfleetError, parseQualifiedTableName } from '@pgfleet/core';
import { lsnString, searchWal } from '../wal-search/search.js';
import { DESTRUCTIVE_KINDS, type SearchFilter, type SearchKind } from '../wal-search/transactions.js';
import type { AgentJobKind } from './job-kind.js';

const KINDS: readonly SearchKind[] = [...DESTRUCTIVE_KINDS, 'all'];
const DEFAULT_LIMIT = 50;
/** The most transactions one search returns, whoever asks (the list is kept in memory while it runs). */
const MAX_LIMIT = 10_000;

export const walSearchJob: AgentJobKind<'walSearch'> = {
  async run(r, ctx) {
    const kinds = r.kinds.map((k) => k.toLowerCase());
    for (const k of kinds)
      if (!(KINDS as readonly string[]).includes(k))
        throw new PgfleetError('WalSearchInvalid', `kind '${k}' is not one of ${KINDS.join(', ')}`);
    const table = r.table ? parseQualifiedTableName(r.table) : undefined;
    if (r.table && !table) throw new PgfleetError('WalSearchInvalid', `'${r.table}' is not a table name (schema.name)`);
    const filter: SearchFilter = {
      ...(r.since ? { since: timestampDate(r.since) } : {}),
      ...(r.until ? { until: timestampDate(r.until) } : {}),
      ...(table ? { table } : {}),
      ...(r.database ? { database: r.database } : {}),
      kinds: kinds.length > 0 ? (kinds as SearchKind[]) : DESTRUCTIVE_KINDS,
      minRows: Number(r.minRows),
      limit: Math.min(r.limit || DEFAULT_LIMIT, MAX_LIMIT),
    };
    const found = await searchWal({
      repo: ctx.repo,
      cluster: ctx.settings.cluster,
      filter,
      currentTimeline: await ctx.liveTimeline(ctx.settings.cluster, r.currentTimeline),
      log: ctx.log,
      progress: ctx.progress,
      signal: ctx.signal,
    });
    return {
      case: 'walSearch',
      value: {
        transactions: found.transactions.map((x) => ({
          xid: x.xid,
          commitTime: timestampFromDate(x.commitTime),
          commitLsn: lsnString(x.commitLsn),
          firstLsn: lsnString(x.firstLsn),
          timeline: x.timeline,
          tables: x.tables.map((t) => ({
            ...t,
            rowsDeleted: BigInt(t.rowsDeleted),
            rowsUpdated: BigInt(t.rowsUpdated),
            rowsInserted: BigInt(t.rowsInserted),
          })),
        })),
        matched: found.matched,
        backupLabel: found.backupLabel,
        snapshot: found.snapshot,
        fromSegment: found.fromSegment,
        toSegment: found.toSegment,
        segmentsRead: found.segmentsRead,
        bytesRead: BigInt(found.bytesRead),
        elapsedSeconds: found.elapsedSeconds,
        timeline: found.timeline,
        transactionsSeen: BigInt(found.transactionsSeen),
        stoppedEarly: found.stoppedEarly,
      },
    };
  },
};
