/**
 * Per-transaction summaries of what WAL records did, for `pgfleet wal search`: rows inserted,
 * updated and deleted per table, catalog events (created, dropped, renamed, truncated, rewritten),
 * the commit time and LSN, and the LSN of the transaction's first record (recovering with
 * recovery_target_lsn there and inclusive off stops just before the transaction).
 *
 * With wal_level=replica a subtransaction's records carry its own xid and nothing ties it to its
 * parent until the parent's commit record lists it, so counts are kept per xid and merged at
 * COMMIT / ABORT. Names are resolved right after the commit's catalog changes apply (so a table
 * created and filled in one transaction is named); a table the same transaction drops is named as
 * it was before.
 */
import { RelationNames, type CatalogEvent, type RelationName } from './relation-names.js';
import { interpretHeapRecord, interpretXactRecord } from './rmgr-records.js';
import type { RelFileLocator, WalRecord } from './wal-reader.js';
import { RM_HEAP2_ID, RM_HEAP_ID, RM_XACT_ID } from './wal-format.js';

/** FirstNormalObjectId: file numbers and OIDs below it belong to the system catalogs. */
const FIRST_NORMAL_OID = 16384;

export interface TableChanges {
  locator: RelFileLocator;
  /** undefined when no known catalog row names the file (label says "unknown relation ...") */
  relation?: RelationName;
  /** "database.schema.table" or "unknown relation spc/db/rel" */
  label: string;
  inserted: number;
  updated: number;
  deleted: number;
}

export interface TransactionSummary {
  xid: number;
  subxacts: number[];
  outcome: 'committed' | 'aborted';
  /** LSN of the COMMIT / ABORT record */
  endRecordLsn: number;
  time?: Date;
  timeMicros?: number;
  /** LSN of the transaction's first record (of it or a subtransaction) seen; undefined if none was */
  firstRecordLsn: number | undefined;
  dbOid?: number;
  tables: TableChanges[];
  events: CatalogEvent[];
  /** relation files the commit removed (dropped tables, old files of truncates and rewrites) */
  droppedFiles: RelFileLocator[];
}

interface Counts {
  locator: RelFileLocator;
  inserted: number;
  updated: number;
  deleted: number;
}

interface XactState {
  firstLsn: number;
  /** per file; a transaction touches few, so an array searched linearly beats maps (and their garbage) */
  counts: Counts[];
}

export class TransactionTracker {
  private readonly open = new Map<number, XactState>();

  constructor(readonly names: RelationNames) {}

  /** Transactions with records seen and no end yet (xid -> LSN of their first record). */
  openTransactions(): Map<number, number> {
    return new Map([...this.open].map(([x, s]) => [x, s.firstLsn]));
  }

  /** Follows one record; returns the summary of a transaction this record commits or aborts. */
  observe(r: WalRecord): TransactionSummary | undefined {
    const rmid = r.rmid;
    const xid = r.xid;
    if (rmid === RM_HEAP_ID || rmid === RM_HEAP2_ID) {
      const heap = interpretHeapRecord(r);
      this.names.observe(r, heap);
      if (xid === 0) return undefined;
      const s = xid === this.lastXid ? this.lastState! : this.state(xid, r.lsn);
      const b = heap?.block;
      if (!heap || !b || heap.rows === 0 || b.fork !== 0) return undefined;
      let c: Counts | undefined;
      for (const o of s.counts) {
        if (o.locator.relNumber === b.relNumber && o.locator.dbOid === b.dbOid) {
          c = o;
          break;
        }
      }
      if (!c) {
        c = {
          locator: { spcOid: b.spcOid, dbOid: b.dbOid, relNumber: b.relNumber },
          inserted: 0,
          updated: 0,
          deleted: 0,
        };
        s.counts.push(c);
      }
      if (heap.kind === 'insert') c.inserted += heap.rows;
      else if (heap.kind === 'delete') c.deleted += heap.rows;
      else if (heap.kind === 'update' || heap.kind === 'hot-update') c.updated += heap.rows;
      return undefined;
    }
    if (rmid !== RM_XACT_ID) {
      this.names.observe(r);
      if (xid !== 0 && r.blocks.length > 0) this.state(xid, r.lsn);
      return undefined;
    }
    const x = interpretXactRecord(r);
    if (
      !x ||
      !(x.kind === 'commit' || x.kind === 'commit-prepared' || x.kind === 'abort' || x.kind === 'abort-prepared')
    ) {
      this.names.observe(r, undefined, x);
      return undefined;
    }
    this.lastXid = 0;
    this.lastState = undefined;
    const ids = [x.xid, ...x.subxacts];
    let firstLsn: number | undefined;
    const merged: Counts[] = [];
    for (const id of ids) {
      const s = this.open.get(id);
      if (!s) continue;
      this.open.delete(id);
      if (firstLsn === undefined || s.firstLsn < firstLsn) firstLsn = s.firstLsn;
      {
        for (const c of s.counts) {
          // Subtransactions are few: a linear search merges them without building keys.
          const m =
            ids.length > 1
              ? merged.find((o) => o.locator.relNumber === c.locator.relNumber && o.locator.dbOid === c.locator.dbOid)
              : undefined;
          if (!m) merged.push(c);
          else {
            m.inserted += c.inserted;
            m.updated += c.updated;
            m.deleted += c.deleted;
          }
        }
      }
    }
    const committed = x.kind === 'commit' || x.kind === 'commit-prepared';
    // Names before the commit's own catalog changes, for tables this transaction drops (only
    // transactions that change the catalog need them).
    const changes = this.names.hasPendingChanges(ids);
    const before = merged.map((c) => (changes ? this.names.relation(c.locator) : undefined));
    const events = this.names.observe(r, undefined, x);
    const tables: TableChanges[] = [];
    for (let i = 0; i < merged.length; i++) {
      const c = merged[i]!;
      const relation = (committed ? this.names.relation(c.locator) : undefined) ?? before[i];
      if (relation ? relation.oid < FIRST_NORMAL_OID || relation.kind === 't' : c.locator.relNumber < FIRST_NORMAL_OID)
        continue;
      tables.push({
        locator: c.locator,
        ...(relation ? { relation } : {}),
        label: relation ? this.label(relation) : this.names.describe(c.locator),
        inserted: c.inserted,
        updated: c.updated,
        deleted: c.deleted,
      });
    }
    const summary: TransactionSummary = {
      xid: x.xid,
      subxacts: x.subxacts,
      outcome: committed ? 'committed' : 'aborted',
      endRecordLsn: r.lsn,
      firstRecordLsn: firstLsn,
      tables,
      events,
      droppedFiles: x.droppedFiles,
    };
    if (x.time) {
      summary.time = x.time;
      summary.timeMicros = x.timeMicros!;
    }
    if (x.dbOid !== undefined) summary.dbOid = x.dbOid;
    return summary;
  }

  private state(xid: number, lsn: number): XactState {
    let s = this.open.get(xid);
    if (!s) this.open.set(xid, (s = { firstLsn: lsn, counts: [] }));
    this.lastXid = xid;
    this.lastState = s;
    return s;
  }

  /** The last transaction's state: records of one transaction come in runs. */
  private lastXid = 0;
  private lastState: XactState | undefined;
  private readonly labels = new WeakMap<RelationName, string>();

  private label(r: RelationName): string {
    let l = this.labels.get(r);
    if (l === undefined) this.labels.set(r, (l = `${r.database}.${r.schema}.${r.name}`));
    return l;
  }
}
