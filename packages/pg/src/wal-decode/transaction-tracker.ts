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
  /** dbOid -> relNumber -> counts */
  byDb: Map<number, Map<number, Counts>>;
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
      const s = this.state(xid, r.lsn);
      const b = heap?.block;
      if (!heap || !b || heap.rows === 0 || b.fork !== 0) return undefined;
      let db = s.byDb.get(b.dbOid);
      if (!db) s.byDb.set(b.dbOid, (db = new Map()));
      let c = db.get(b.relNumber);
      if (!c) {
        c = {
          locator: { spcOid: b.spcOid, dbOid: b.dbOid, relNumber: b.relNumber },
          inserted: 0,
          updated: 0,
          deleted: 0,
        };
        db.set(b.relNumber, c);
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
      this.names.observe(r);
      return undefined;
    }
    const ids = [x.xid, ...x.subxacts];
    let firstLsn: number | undefined;
    const merged = new Map<string, Counts>();
    for (const id of ids) {
      const s = this.open.get(id);
      if (!s) continue;
      this.open.delete(id);
      if (firstLsn === undefined || s.firstLsn < firstLsn) firstLsn = s.firstLsn;
      for (const db of s.byDb.values()) {
        for (const c of db.values()) {
          const k = `${c.locator.dbOid}/${c.locator.relNumber}`;
          const m = merged.get(k);
          if (!m) merged.set(k, { ...c });
          else {
            m.inserted += c.inserted;
            m.updated += c.updated;
            m.deleted += c.deleted;
          }
        }
      }
    }
    const committed = x.kind === 'commit' || x.kind === 'commit-prepared';
    // Names before the commit's own catalog changes: for tables this transaction drops.
    const before = new Map<string, RelationName | undefined>();
    for (const [k, c] of merged) before.set(k, this.names.relation(c.locator));
    const events = this.names.observe(r);
    const tables: TableChanges[] = [];
    for (const [k, c] of merged) {
      const relation = (committed ? this.names.relation(c.locator) : undefined) ?? before.get(k);
      if (relation ? relation.oid < FIRST_NORMAL_OID || relation.kind === 't' : c.locator.relNumber < FIRST_NORMAL_OID)
        continue;
      tables.push({
        locator: c.locator,
        ...(relation ? { relation } : {}),
        label: relation ? `${relation.database}.${relation.schema}.${relation.name}` : this.names.describe(c.locator),
        inserted: c.inserted,
        updated: c.updated,
        deleted: c.deleted,
      });
    }
    return {
      xid: x.xid,
      subxacts: x.subxacts,
      outcome: committed ? 'committed' : 'aborted',
      endRecordLsn: r.lsn,
      ...(x.time ? { time: x.time, timeMicros: x.timeMicros! } : {}),
      firstRecordLsn: firstLsn,
      ...(x.dbOid !== undefined ? { dbOid: x.dbOid } : {}),
      tables,
      events,
      droppedFiles: x.droppedFiles,
    };
  }

  private state(xid: number, lsn: number): XactState {
    let s = this.open.get(xid);
    if (!s) this.open.set(xid, (s = { firstLsn: lsn, byDb: new Map() }));
    return s;
  }
}
