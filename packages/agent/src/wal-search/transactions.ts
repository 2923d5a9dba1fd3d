/**
 * The transactions `pgfleet wal search` shows: each committed transaction's summary (packages/pg
 * TransactionTracker: rows per relation file with subtransactions folded in through the commit
 * record, and the catalog events the pg_class follower saw it commit) becomes one line per table,
 * named as the table was then; the filter keeps what was asked for and the ranking puts likely
 * culprits first. Aborted transactions are never listed: nothing they did survived.
 *
 * Memory stays bounded by the result: matching transactions are kept in a list cut back to the
 * best `limit` whenever it doubles, so a pgbench archive of millions of small UPDATE transactions
 * costs nothing to rank.
 */
import type { CatalogEvent, CatalogSnapshot, RelFileLocator, TransactionSummary } from '@pgfleet/pg';

export type SearchKind = 'delete' | 'update' | 'truncate' | 'drop' | 'all';
export const DESTRUCTIVE_KINDS: readonly SearchKind[] = ['delete', 'update', 'truncate', 'drop'];

/** One table's part in one transaction (what WalSearchTable carries). */
export interface TableChange {
  database: string;
  schema: string;
  /** '' when unknown. */
  name: string;
  relation: string;
  rowsDeleted: number;
  rowsUpdated: number;
  rowsInserted: number;
  truncated: boolean;
  dropped: boolean;
  rewritten: boolean;
  created: boolean;
  renamedFrom: string;
}

export interface FoundTransaction {
  xid: number;
  commitTime: Date;
  commitLsn: number;
  firstLsn: number;
  timeline: number;
  tables: TableChange[];
}

export interface SearchFilter {
  since?: Date;
  until?: Date;
  /** schema.name, as parseQualifiedTableName gives it. */
  table?: { schema: string; name: string };
  database?: string;
  kinds: readonly SearchKind[];
  minRows: number;
  limit: number;
}

/** Truncates and drops first, then rows deleted + updated (most first), then commit time (oldest first). */
export function culpritOrder(a: FoundTransaction, b: FoundTransaction): number {
  const ddl = (t: FoundTransaction) => (t.tables.some((x) => x.truncated || x.dropped) ? 1 : 0);
  const rows = (t: FoundTransaction) => t.tables.reduce((n, x) => n + x.rowsDeleted + x.rowsUpdated, 0);
  return ddl(b) - ddl(a) || rows(b) - rows(a) || a.commitTime.getTime() - b.commitTime.getTime();
}

/** A relation file as text: "spcOid/dbOid/relNumber". */
export const relFileText = (r: RelFileLocator): string => `${r.spcOid}/${r.dbOid}/${r.relNumber}`;

/** A table's line with nothing done to it yet. */
export function tableLine(where: Pick<TableChange, 'database' | 'schema' | 'name' | 'relation'>): TableChange {
  return {
    ...where,
    rowsDeleted: 0,
    rowsUpdated: 0,
    rowsInserted: 0,
    truncated: false,
    dropped: false,
    rewritten: false,
    created: false,
    renamedFrom: '',
  };
}

/** One committed transaction's tables, as shown (unknown relations keep their file). */
export function foundTransaction(
  s: TransactionSummary,
  timeline: number,
  databaseName: (dbOid: number) => string,
): FoundTransaction {
  const tables: TableChange[] = [];
  const byName = new Map<string, TableChange>();
  for (const t of s.tables) {
    const r = t.relation;
    const change = tableLine({
      database: r?.database ?? databaseName(t.locator.dbOid),
      schema: r?.schema ?? '',
      name: r?.name ?? '',
      relation: relFileText(t.locator),
    });
    Object.assign(change, { rowsDeleted: t.deleted, rowsUpdated: t.updated, rowsInserted: t.inserted });
    tables.push(change);
    if (r) byName.set(`${r.dbOid}:${r.oid}`, change);
  }
  for (const e of s.events) tableOfEvent(e, tables, byName, s.droppedFiles);
  return {
    xid: s.xid,
    commitTime: s.time ?? new Date(0),
    commitLsn: s.endRecordLsn,
    firstLsn: s.firstRecordLsn ?? s.endRecordLsn,
    timeline,
    tables,
  };
}

/** Marks the event on its table's line (the same relation by oid: a rewrite or truncate changes the file, not the oid). */
function tableOfEvent(
  e: CatalogEvent,
  tables: TableChange[],
  byName: Map<string, TableChange>,
  dropped: readonly RelFileLocator[],
): void {
  const r = e.relation;
  const key = `${r.dbOid}:${r.oid}`;
  let t = byName.get(key);
  if (!t) {
    // The file the event is about: the old one a truncate, rewrite or drop removed, else the relation's own.
    const old = e.kind === 'truncated' || e.kind === 'rewritten' ? e.oldRelNumber : r.relNumber;
    const file = dropped.find((f) => f.dbOid === r.dbOid && f.relNumber === old);
    t = tableLine({
      database: r.database,
      schema: r.schema,
      name: r.name,
      relation: file ? relFileText(file) : `-/${r.dbOid}/${r.relNumber}`,
    });
    tables.push(t);
    byName.set(key, t);
  }
  if (e.kind === 'renamed') t.renamedFrom = `${e.from.schema}.${e.from.name}`;
  else if (e.kind === 'truncated') t.truncated = true;
  else if (e.kind === 'dropped') t.dropped = true;
  else if (e.kind === 'rewritten') t.rewritten = true;
  else t.created = true;
}

export class SearchResults {
  private kept: FoundTransaction[] = [];
  /** Once `limit` are kept: the last of them, which a newcomer must beat to be kept (saves copying most pgbench-like transactions). */
  private worst: FoundTransaction | undefined;
  private readonly kinds: { all: boolean; delete: boolean; update: boolean; truncate: boolean; drop: boolean };
  private readonly tableName: string | undefined;
  /** Transactions that matched (before the limit). */
  matched = 0;
  /** Committed transactions seen. */
  committed = 0;
  /** With --table: every schema.name seen (learnSnapshot adds the snapshot's), to tell "never existed" from "not touched". */
  readonly namesSeen = new Set<string>();
  /**
   * With --table: "database\0schema.name" of each partition in the snapshot -> the schema.name of
   * its parent, grandparent... Rows are counted per partition file, so `--table parent` must
   * also match lines of its partitions (shown per partition, as they are counted).
   */
  private readonly ancestors = new Map<string, string[]>();
  /** The newest commit time seen: the search stops reading once it is past --until. */
  newestCommit: Date | undefined;

  constructor(private readonly filter: SearchFilter) {
    const k = (kind: SearchKind) => filter.kinds.includes(kind);
    this.kinds = { all: k('all'), delete: k('delete'), update: k('update'), truncate: k('truncate'), drop: k('drop') };
    this.tableName = filter.table ? `${filter.table.schema}.${filter.table.name}` : undefined;
  }

  /**
   * What the starting backup's catalog snapshot tells the --table filter: the names that existed,
   * and partitions' ancestors. Partitions created or attached after the snapshot, and tables
   * renamed after it, match by their own names only (pg_inherits is not followed in the WAL).
   */
  learnSnapshot(snapshot: CatalogSnapshot | undefined): void {
    if (this.tableName === undefined) return;
    for (const d of snapshot?.databases ?? []) {
      const schemas = new Map(d.namespaces.map((n) => [n.oid, n.name]));
      const byOid = new Map(d.relations.map((r) => [r.oid, r]));
      const qualified = (r: { namespaceOid: number; name: string }) => `${schemas.get(r.namespaceOid) ?? ''}.${r.name}`;
      for (const r of d.relations) {
        this.namesSeen.add(qualified(r));
        const up: string[] = [];
        // Bounded: a damaged snapshot with a parent cycle must not loop.
        for (let p = byOid.get(r.parentOid ?? 0); p && up.length < 64; p = byOid.get(p.parentOid ?? 0))
          up.push(qualified(p));
        if (up.length > 0) this.ancestors.set(`${d.name}\0${qualified(r)}`, up);
      }
    }
  }

  /** True when the line is the --table table: by its name, its name before a rename, or as a partition of it. */
  private isTable(t: TableChange, tableName: string): boolean {
    const own = `${t.schema}.${t.name}`;
    if (own === tableName || t.renamedFrom === tableName) return true;
    return this.ancestors.size > 0 && (this.ancestors.get(`${t.database}\0${own}`)?.includes(tableName) ?? false);
  }

  /** A committed transaction: counted, and kept when it matches. */
  add(found: FoundTransaction): void {
    this.committed++;
    if (!this.newestCommit || found.commitTime > this.newestCommit) this.newestCommit = found.commitTime;
    if (this.tableName !== undefined)
      for (const t of found.tables) {
        if (t.name) this.namesSeen.add(`${t.schema}.${t.name}`);
        if (t.renamedFrom) this.namesSeen.add(t.renamedFrom);
      }
    const shown = this.select(found);
    if (!shown) return;
    this.matched++;
    if (this.worst && culpritOrder(shown, this.worst) >= 0) return;
    this.kept.push(shown);
    if (this.kept.length >= 2 * this.filter.limit + 16) this.trim();
  }

  private shows(t: TableChange): boolean {
    const f = this.filter;
    const k = this.kinds;
    if (f.database !== undefined && t.database !== f.database) return false;
    if (this.tableName !== undefined && !this.isTable(t, this.tableName)) return false;
    return (
      k.all ||
      (k.delete && t.rowsDeleted > 0) ||
      (k.update && t.rowsUpdated > 0) ||
      (k.truncate && t.truncated) ||
      (k.drop && t.dropped)
    );
  }

  /** The transaction as the filter shows it (only its matching tables), or undefined when it does not match. */
  private select(x: FoundTransaction): FoundTransaction | undefined {
    const f = this.filter;
    if (f.since && x.commitTime < f.since) return undefined;
    if (f.until && x.commitTime > f.until) return undefined;
    const tables = x.tables.filter((t) => this.shows(t));
    if (tables.length === 0) return undefined;
    const ddl = tables.some((t) => t.truncated || t.dropped);
    const rows = tables.reduce((n, t) => n + t.rowsDeleted + t.rowsUpdated, 0);
    if (!ddl && rows < f.minRows) return undefined;
    tables.sort(
      (a, b) =>
        Number(b.truncated || b.dropped) - Number(a.truncated || a.dropped) ||
        b.rowsDeleted + b.rowsUpdated - (a.rowsDeleted + a.rowsUpdated),
    );
    return { ...x, tables };
  }

  private trim(): void {
    this.kept.sort(culpritOrder);
    this.kept.length = Math.min(this.kept.length, this.filter.limit);
    if (this.kept.length === this.filter.limit) this.worst = this.kept.at(-1);
  }

  /** The matching transactions, likely culprits first, at most `limit`. */
  result(): FoundTransaction[] {
    this.trim();
    return this.kept;
  }
}
