/**
 * Per-transaction figures of `pgfleet wal search`: the decoded WAL's row changes and catalog
 * events are gathered per transaction id as they stream by, and a transaction counts only when
 * its commit record arrives. The commit record lists the subtransactions it committed, so their
 * changes fold into the top-level transaction here; an abort record (of a whole transaction, or
 * of a subtransaction rolled back to a savepoint) drops what its ids did. Aborted transactions are
 * therefore never listed: nothing they did survived.
 *
 * Memory stays bounded by the transactions in flight (per transaction a counter per table) plus
 * the result: matching transactions are kept in a list cut back to the best `limit` whenever it
 * doubles, so a pgbench archive of millions of small UPDATE transactions costs nothing to rank.
 */

/** A relation file as WAL records name it. */
export interface RelFile {
  spcOid: number;
  dbOid: number;
  relNumber: number;
}

/** Where a relation file belonged when the change happened (schema and name '' when unknown). */
export interface RelationName {
  database: string;
  schema: string;
  name: string;
}

export const relFileText = (r: RelFile): string => `${r.spcOid}/${r.dbOid}/${r.relNumber}`;

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

/** Catalog events the name follower reports for a transaction (table names as they were before its own DDL). */
export type CatalogEvent =
  | { kind: 'truncate' | 'drop' | 'rewrite' | 'create'; rel: RelFile; table: RelationName }
  | { kind: 'rename'; rel: RelFile; table: RelationName; from: RelationName };

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

interface Pending {
  firstLsn: number;
  /** By relation file text. */
  tables: Map<string, TableChange>;
}

const emptyChange = (rel: RelFile, name: RelationName): TableChange => ({
  database: name.database,
  schema: name.schema,
  name: name.name,
  relation: relFileText(rel),
  rowsDeleted: 0,
  rowsUpdated: 0,
  rowsInserted: 0,
  truncated: false,
  dropped: false,
  rewritten: false,
  created: false,
  renamedFrom: '',
});

/** Truncates and drops first, then rows deleted + updated (most first), then commit time (oldest first). */
export function culpritOrder(a: FoundTransaction, b: FoundTransaction): number {
  const ddl = (t: FoundTransaction) => (t.tables.some((x) => x.truncated || x.dropped) ? 1 : 0);
  const rows = (t: FoundTransaction) => t.tables.reduce((n, x) => n + x.rowsDeleted + x.rowsUpdated, 0);
  return ddl(b) - ddl(a) || rows(b) - rows(a) || a.commitTime.getTime() - b.commitTime.getTime();
}

export class TransactionLedger {
  private readonly pending = new Map<number, Pending>();
  private kept: FoundTransaction[] = [];
  /** Transactions that matched (before the limit). */
  matched = 0;
  /** Committed transactions seen. */
  committed = 0;
  /** Every schema.name seen (snapshot names are added by the caller): tells "never existed" from "not touched". */
  readonly namesSeen = new Set<string>();
  /** The newest commit time seen: the search stops reading once it is past --until. */
  newestCommit: Date | undefined;

  constructor(private readonly filter: SearchFilter) {}

  /** Any record of transaction `xid` (a subtransaction's own id included): its first one is "just before". */
  touch(xid: number, lsn: number): Pending {
    let p = this.pending.get(xid);
    if (!p) {
      p = { firstLsn: lsn, tables: new Map() };
      this.pending.set(xid, p);
    }
    return p;
  }

  private table(xid: number, lsn: number, rel: RelFile, name: RelationName): TableChange {
    const p = this.touch(xid, lsn);
    const key = relFileText(rel);
    let t = p.tables.get(key);
    if (!t) {
      t = emptyChange(rel, name);
      p.tables.set(key, t);
      if (name.name) this.namesSeen.add(`${name.schema}.${name.name}`);
    } else if (!t.name && name.name) {
      Object.assign(t, { database: name.database, schema: name.schema, name: name.name });
    }
    return t;
  }

  /** Heap rows inserted, updated or deleted by `xid` in `rel` (named as it was then, when known). */
  rows(
    xid: number,
    lsn: number,
    rel: RelFile,
    name: RelationName,
    kind: 'insert' | 'update' | 'delete',
    n: number,
  ): void {
    const t = this.table(xid, lsn, rel, name);
    if (kind === 'insert') t.rowsInserted += n;
    else if (kind === 'update') t.rowsUpdated += n;
    else t.rowsDeleted += n;
  }

  /** A catalog event of `xid` (TRUNCATE, DROP, rewrite, rename, create) reported by the name follower. */
  catalog(xid: number, lsn: number, e: CatalogEvent): void {
    const t = this.table(xid, lsn, e.rel, e.table);
    this.namesSeen.add(`${e.table.schema}.${e.table.name}`);
    if (e.kind === 'rename') {
      t.renamedFrom = `${e.from.schema}.${e.from.name}`;
      this.namesSeen.add(t.renamedFrom);
    } else if (e.kind === 'truncate') t.truncated = true;
    else if (e.kind === 'drop') t.dropped = true;
    else if (e.kind === 'rewrite') t.rewritten = true;
    else t.created = true;
  }

  /** An abort record: what `xid` and the listed subtransactions did is gone. */
  abort(xid: number, subxids: readonly number[]): void {
    this.pending.delete(xid);
    for (const s of subxids) this.pending.delete(s);
  }

  /** A commit record: the transaction and its subtransactions count from here, at `time`. */
  commit(xid: number, subxids: readonly number[], lsn: number, time: Date, timeline: number): void {
    const top = this.pending.get(xid);
    this.pending.delete(xid);
    const parts = [top, ...subxids.map((s) => this.pending.get(s))].filter((p): p is Pending => p !== undefined);
    for (const s of subxids) this.pending.delete(s);
    this.committed++;
    if (!this.newestCommit || time > this.newestCommit) this.newestCommit = time;
    if (parts.length === 0) return;
    const tables = new Map<string, TableChange>();
    for (const p of parts)
      for (const [key, t] of p.tables) {
        const into = tables.get(key);
        if (!into) tables.set(key, { ...t });
        else mergeChange(into, t);
      }
    const found: FoundTransaction = {
      xid,
      commitTime: time,
      commitLsn: lsn,
      firstLsn: Math.min(...parts.map((p) => p.firstLsn)),
      timeline,
      tables: [...tables.values()],
    };
    const shown = this.select(found);
    if (!shown) return;
    this.matched++;
    this.kept.push(shown);
    if (this.kept.length >= 2 * this.filter.limit + 16) this.trim();
  }

  /** The transaction as the filter shows it (only its matching tables), or undefined when it does not match. */
  private select(x: FoundTransaction): FoundTransaction | undefined {
    const f = this.filter;
    if (f.since && x.commitTime < f.since) return undefined;
    if (f.until && x.commitTime > f.until) return undefined;
    const all = f.kinds.includes('all');
    const tables = x.tables.filter((t) => {
      if (f.database !== undefined && t.database !== f.database) return false;
      if (f.table) {
        const named = t.schema === f.table.schema && t.name === f.table.name;
        if (!named && t.renamedFrom !== `${f.table.schema}.${f.table.name}`) return false;
      }
      if (all) return true;
      return (
        (f.kinds.includes('delete') && t.rowsDeleted > 0) ||
        (f.kinds.includes('update') && t.rowsUpdated > 0) ||
        (f.kinds.includes('truncate') && t.truncated) ||
        (f.kinds.includes('drop') && t.dropped)
      );
    });
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
  }

  /** The matching transactions, likely culprits first, at most `limit`. */
  result(): FoundTransaction[] {
    this.trim();
    return this.kept;
  }
}

function mergeChange(into: TableChange, t: TableChange): void {
  into.rowsDeleted += t.rowsDeleted;
  into.rowsUpdated += t.rowsUpdated;
  into.rowsInserted += t.rowsInserted;
  into.truncated ||= t.truncated;
  into.dropped ||= t.dropped;
  into.rewritten ||= t.rewritten;
  into.created ||= t.created;
  into.renamedFrom ||= t.renamedFrom;
  if (!into.name && t.name) Object.assign(into, { database: t.database, schema: t.schema, name: t.name });
}
