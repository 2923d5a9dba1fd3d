/**
 * What `pgfleet wal search` takes from each decoded WAL record (PostgreSQL 15 layouts):
 * - Heap/Heap2 records of the main fork: one row inserted, updated (UPDATE and HOT_UPDATE) or
 *   deleted, or MULTI_INSERT's ntuples rows (COPY, INSERT ... SELECT of many rows). Block 0 is the
 *   relation written (access/heapam_xlog.h: an update's new tuple is block 0).
 * - Transaction records: COMMIT / ABORT (also of prepared transactions: the xid is the prepared
 *   one's, carried in the record), with the commit time and the subtransactions they end
 *   (access/xact.h, ParseCommitRecord: xl_xact_commit, then by xinfo dbinfo, subxacts, ...).
 */

/** A decoded record as the search reads it (the decoder's WalRecord has these and more). */
export interface SearchRecord {
  readonly lsn: number;
  readonly xid: number;
  readonly rmid: number;
  readonly info: number;
  readonly blocks: readonly { spcOid: number; dbOid: number; relNumber: number; fork: number }[];
  mainData(): Buffer;
}

const RM_XACT_ID = 1;
const RM_HEAP2_ID = 9;
const RM_HEAP_ID = 10;
const HEAP_OPMASK = 0x70;
const XLOG_HEAP_INSERT = 0x00;
const XLOG_HEAP_DELETE = 0x10;
const XLOG_HEAP_UPDATE = 0x20;
const XLOG_HEAP_HOT_UPDATE = 0x40;
const XLOG_HEAP2_MULTI_INSERT = 0x50;

const XLOG_XACT_OPMASK = 0x70;
const XLOG_XACT_COMMIT = 0x00;
const XLOG_XACT_ABORT = 0x20;
const XLOG_XACT_COMMIT_PREPARED = 0x30;
const XLOG_XACT_ABORT_PREPARED = 0x40;
const XLOG_XACT_HAS_INFO = 0x80;
const XACT_XINFO_HAS_DBINFO = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS = 1 << 1;
const XACT_XINFO_HAS_RELFILENODES = 1 << 2;
const XACT_XINFO_HAS_INVALS = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE = 1 << 4;
const XACT_XINFO_HAS_DROPPED_STATS = 1 << 8;

/** Microseconds from the Unix epoch to PostgreSQL's (2000-01-01). */
const PG_EPOCH_MS = 946_684_800_000;

export interface HeapChange {
  kind: 'insert' | 'update' | 'delete';
  rows: number;
  rel: { spcOid: number; dbOid: number; relNumber: number };
}

/** The rows a heap record changed, or undefined for other records. */
export function heapChange(r: SearchRecord): HeapChange | undefined {
  if (r.rmid !== RM_HEAP_ID && r.rmid !== RM_HEAP2_ID) return undefined;
  const b = r.blocks[0];
  if (!b || b.fork !== 0) return undefined;
  const op = r.info & HEAP_OPMASK;
  const rel = { spcOid: b.spcOid, dbOid: b.dbOid, relNumber: b.relNumber };
  if (r.rmid === RM_HEAP_ID) {
    if (op === XLOG_HEAP_INSERT) return { kind: 'insert', rows: 1, rel };
    if (op === XLOG_HEAP_DELETE) return { kind: 'delete', rows: 1, rel };
    if (op === XLOG_HEAP_UPDATE || op === XLOG_HEAP_HOT_UPDATE) return { kind: 'update', rows: 1, rel };
    return undefined;
  }
  if (op !== XLOG_HEAP2_MULTI_INSERT) return undefined;
  // xl_heap_multi_insert: uint8 flags, then uint16 ntuples at offset 2.
  const main = r.mainData();
  return main.length >= 4 ? { kind: 'insert', rows: main.readUInt16LE(2), rel } : undefined;
}

export interface TransactionEnd {
  committed: boolean;
  /** The transaction ended: the record's xid, or the prepared transaction's. */
  xid: number;
  subxids: number[];
  time: Date;
  /** Relation files dropped at commit (DROP TABLE, and the old files of TRUNCATE and rewrites). */
  droppedRels: { spcOid: number; dbOid: number; relNumber: number }[];
}

/** The end of a transaction a Transaction record says, or undefined for other records (or one that does not parse). */
export function transactionEnd(r: SearchRecord): TransactionEnd | undefined {
  if (r.rmid !== RM_XACT_ID) return undefined;
  const op = r.info & XLOG_XACT_OPMASK;
  const committed = op === XLOG_XACT_COMMIT || op === XLOG_XACT_COMMIT_PREPARED;
  if (!committed && op !== XLOG_XACT_ABORT && op !== XLOG_XACT_ABORT_PREPARED) return undefined;
  const d = r.mainData();
  if (d.length < 8) return undefined;
  const time = new Date(PG_EPOCH_MS + Number(d.readBigInt64LE(0) / 1000n));
  let p = 8;
  let xinfo = 0;
  const need = (n: number) => p + n <= d.length;
  if (r.info & XLOG_XACT_HAS_INFO) {
    if (!need(4)) return undefined;
    xinfo = d.readUInt32LE(p);
    p += 4;
  }
  if (xinfo & XACT_XINFO_HAS_DBINFO) p += 8;
  const subxids: number[] = [];
  if (xinfo & XACT_XINFO_HAS_SUBXACTS) {
    if (!need(4)) return undefined;
    const n = d.readInt32LE(p);
    p += 4;
    if (n < 0 || !need(4 * n)) return undefined;
    for (let i = 0; i < n; i++) subxids.push(d.readUInt32LE(p + 4 * i));
    p += 4 * n;
  }
  const droppedRels: TransactionEnd['droppedRels'] = [];
  if (xinfo & XACT_XINFO_HAS_RELFILENODES) {
    if (!need(4)) return undefined;
    const n = d.readInt32LE(p);
    p += 4;
    if (n < 0 || !need(12 * n)) return undefined;
    for (let i = 0; i < n; i++)
      droppedRels.push({
        spcOid: d.readUInt32LE(p + 12 * i),
        dbOid: d.readUInt32LE(p + 12 * i + 4),
        relNumber: d.readUInt32LE(p + 12 * i + 8),
      });
    p += 12 * n;
  }
  if (xinfo & XACT_XINFO_HAS_DROPPED_STATS) {
    if (!need(4)) return undefined;
    const n = d.readInt32LE(p);
    p += 4 + 12 * Math.max(0, n);
  }
  // Abort records carry no invalidation messages.
  if (committed && xinfo & XACT_XINFO_HAS_INVALS) {
    if (!need(4)) return undefined;
    const n = d.readInt32LE(p);
    p += 4 + 16 * Math.max(0, n);
  }
  let xid = r.xid;
  if (xinfo & XACT_XINFO_HAS_TWOPHASE) {
    if (!need(4)) return undefined;
    xid = d.readUInt32LE(p);
  }
  return { committed, xid, subxids, time, droppedRels };
}
