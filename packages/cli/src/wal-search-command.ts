/**
 * `pgfleet wal search <cluster>` (issue 15, docs/undo.md "Find the mistake"): starts a WAL search
 * job on one of the cluster's agents and prints the transactions it found, likely culprits first,
 * with the command to run next. Options are checked here before any call, so a typo fails fast
 * with WalSearchInvalid.
 */
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { PgfleetError, parseQualifiedTableName, type OptionValues } from '@pgfleet/core';
import type { MessageInitShape } from '@bufbuild/protobuf';
import {
  WalSearchResultSchema,
  type WalSearchJobSchema,
  type WalSearchResult,
  type WalSearchTable,
} from '@pgfleet/proto';
import { formatBytes, formatTable, formatTime } from './format.js';
import { err, follow, ms, out, printJson, stateName, type Admin } from './output.js';
import { cliSettings } from './program.js';
import { parsedTimeToDate, parseTargetTime } from './target.js';

const KINDS = ['delete', 'update', 'truncate', 'drop', 'all'] as const;

function invalid(message: string, cause?: unknown): PgfleetError {
  return new PgfleetError('WalSearchInvalid', message, cause ? { cause } : {});
}

function searchTime(text: string | undefined, option: string): Date | undefined {
  if (text === undefined) return undefined;
  try {
    return parsedTimeToDate(parseTargetTime(text, option));
  } catch (e) {
    throw invalid(`--${option} '${text}' is not a time (ISO-8601, e.g. 2026-12-06T21:30:00Z)`, e);
  }
}

/** The search the flags ask for, checked (WalSearchInvalid otherwise). */
export function walSearchFromOptions(options: OptionValues): MessageInitShape<typeof WalSearchJobSchema> {
  const s = cliSettings('wal', options);
  const since = searchTime(s.since, 'since');
  const until = searchTime(s.until, 'until');
  if (since && until && until < since) throw invalid(`--until ${s.until} is before --since ${s.since}`);
  let table = '';
  if (s.table !== undefined) {
    const t = parseQualifiedTableName(s.table);
    if (!t) throw invalid(`--table '${s.table}' is not a table name (schema.name, or a name in public)`);
    table = `${t.schema}.${t.name}`;
  }
  const kinds = (s.kind ?? '')
    .split(',')
    .map((k) => k.trim().toLowerCase())
    .filter((k) => k !== '');
  for (const k of kinds)
    if (!(KINDS as readonly string[]).includes(k)) throw invalid(`--kind '${k}' is not one of ${KINDS.join(', ')}`);
  return {
    ...(since ? { since: timestampFromDate(since) } : {}),
    ...(until ? { until: timestampFromDate(until) } : {}),
    table,
    database: s.database ?? '',
    kinds,
    minRows: BigInt(s.minRows ?? 0),
    limit: s.limit,
  };
}

/** `pgfleet wal search <cluster> ...`: the job, then its result as a table or JSON. */
export async function walCommand(
  admin: Admin,
  positionals: readonly string[],
  search: MessageInitShape<typeof WalSearchJobSchema>,
  json: boolean,
): Promise<number> {
  const [action, cluster] = positionals;
  if (action !== 'search' || cluster === undefined)
    throw new PgfleetError('InvalidArgument', `pgfleet wal takes search <cluster>; got '${positionals.join(' ')}'`);
  const { job } = await admin.startWalSearch({ cluster, search });
  err(`${job!.kind} job ${job!.id} ${stateName(job!.state)} to agent ${job!.agentId}`);
  const final = await follow(admin, job!);
  if (!final.walSearch) throw new PgfleetError('Internal', `wal-search job ${final.id} succeeded without a result`);
  if (json) printJson(WalSearchResultSchema, final.walSearch);
  else out(describeWalSearch(cluster, final.walSearch));
  return 0;
}

/** A table's name as shown: schema.name, or the relation file when the name is not known. */
export function tableLabel(t: Pick<WalSearchTable, 'schema' | 'name' | 'relation'>): string {
  return t.name ? `${t.schema}.${t.name}` : `unknown relation ${t.relation}`;
}

function events(t: WalSearchTable): string {
  const e: string[] = [];
  if (t.truncated) e.push('TRUNCATE');
  if (t.dropped) e.push('DROP');
  if (t.rewritten) e.push('rewrite');
  if (t.created) e.push('create');
  if (t.renamedFrom) e.push(`renamed from ${t.renamedFrom}`);
  return e.join(', ');
}

export function describeWalSearch(cluster: string, r: WalSearchResult): string {
  const lines: string[] = [];
  if (r.transactions.length === 0) lines.push('no matching transactions');
  else {
    const rows: string[][] = [];
    for (const x of r.transactions)
      x.tables.forEach((t, i) =>
        rows.push([
          i === 0 ? String(x.xid) : '',
          i === 0 ? formatTime(ms(x.commitTime)) : '',
          i === 0 ? x.commitLsn : '',
          i === 0 ? x.firstLsn : '',
          t.database,
          tableLabel(t),
          String(t.rowsDeleted),
          String(t.rowsUpdated),
          String(t.rowsInserted),
          events(t),
        ]),
      );
    lines.push(
      formatTable(
        [
          'XID',
          'COMMITTED',
          'COMMIT LSN',
          'BEFORE LSN',
          'DATABASE',
          'TABLE',
          'DELETED',
          'UPDATED',
          'INSERTED',
          'EVENTS',
        ],
        rows,
      ),
    );
    const top = r.transactions[0]!;
    const table = top.tables.find((t) => t.name) ?? top.tables[0];
    lines.push(
      '',
      `to undo transaction ${top.xid}: pgfleet restore ${cluster} --before-xid ${top.xid} --to <dir>`,
      ...(table?.name
        ? [
            `or bring its rows back beside today's: pgfleet recover-table ${cluster} --table ${tableLabel(table)} --database ${table.database} --before-xid ${top.xid}`,
          ]
        : []),
    );
  }
  if (r.stoppedEarly) lines.push('', `warning: ${r.stoppedEarly}; later WAL was not read`);
  const rate = r.elapsedSeconds > 0 ? Number(r.bytesRead) / r.elapsedSeconds : 0;
  lines.push(
    '',
    `${r.transactions.length} of ${r.matched} matching transaction(s) shown (${r.transactionsSeen} committed in the range)`,
    r.segmentsRead > 0
      ? `WAL ${r.fromSegment} .. ${r.toSegment}: ${r.segmentsRead} segment(s), ${formatBytes(r.bytesRead)} in ${r.elapsedSeconds.toFixed(1)} s (${formatBytes(rate)}/s), from backup ${r.backupLabel}${r.snapshot ? '' : ' (no catalog snapshot: names come from the WAL only)'}`
      : `no archived WAL to read from backup ${r.backupLabel}`,
  );
  return lines.join('\n');
}
