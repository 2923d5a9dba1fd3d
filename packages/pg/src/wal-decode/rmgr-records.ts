/**
 * What the few records `wal search` needs say, read from a decoded WalRecord (PostgreSQL 15):
 *   - Heap / Heap2 (access/heapam_xlog.h): which rows a record inserts, updates or deletes;
 *   - Transaction (access/xact.h, ParseCommitRecord/ParseAbortRecord): commit and abort with
 *     their time, subtransactions and dropped relation files;
 *   - Storage (catalog/storage_xlog.h): relation files created and truncated;
 *   - XLOG (catalog/pg_control.h): segment switch, restore point, overwritten contrecord;
 *   - RelMap (utils/relmapper.h): a mapped catalog's new file (VACUUM FULL pg_class).
 * Each returns undefined for records of other rmgrs or too short to be what they claim.
 */
import type { RelFileLocator, WalBlockRef, WalRecord } from './wal-reader.js';
import {
  RM_HEAP2_ID,
  RM_HEAP_ID,
  RM_RELMAP_ID,
  RM_SMGR_ID,
  RM_XACT_ID,
  RM_XLOG_ID,
  XLOG_OVERWRITE_CONTRECORD,
  XLOG_RESTORE_POINT,
  XLOG_SWITCH,
  readTimestampTz,
  readTimestampTzMicros,
} from './wal-format.js';

// Heap opcodes (xl_info & XLOG_HEAP_OPMASK).
const XLOG_HEAP_OPMASK = 0x70;
const XLOG_HEAP_INSERT = 0x00;
const XLOG_HEAP_DELETE = 0x10;
const XLOG_HEAP_UPDATE = 0x20;
const XLOG_HEAP_TRUNCATE = 0x30;
const XLOG_HEAP_HOT_UPDATE = 0x40;
const XLOG_HEAP_CONFIRM = 0x50;
const XLOG_HEAP_LOCK = 0x60;
const XLOG_HEAP_INPLACE = 0x70;
/** the record (re)initialises the page: xl_heap_multi_insert then omits its offsets */
export const XLOG_HEAP_INIT_PAGE = 0x80;
const XLOG_HEAP2_MULTI_INSERT = 0x50;
const XLOG_HEAP2_LOCK_UPDATED = 0x60;

export const XLH_UPDATE_PREFIX_FROM_OLD = 0x20;
export const XLH_UPDATE_SUFFIX_FROM_OLD = 0x40;

export type HeapChangeKind = 'insert' | 'delete' | 'update' | 'hot-update' | 'truncate' | 'other';

export interface HeapChange {
  kind: HeapChangeKind;
  /** rows the record inserts, deletes or updates (MULTI_INSERT: its ntuples; 'other' and 'truncate': 0) */
  rows: number;
  /** the page written: the inserted/deleted tuple's, the new version's for an update */
  block?: WalBlockRef;
  /** update: the old version's page (block 1, or block 0 when both are on one page) */
  oldBlock?: WalBlockRef;
  /** insert/delete: the tuple's line pointer; update: the new version's */
  offnum: number;
  /** update: the old version's line pointer */
  oldOffnum: number;
  /** xl_heap_* flags */
  flags: number;
  /** TRUNCATE (wal_level=logical only): the database and the truncated tables' OIDs (not file numbers) */
  truncate?: { dbOid: number; relOids: number[] };
}

/** The row change a Heap or Heap2 record makes, or undefined for maintenance records (prune, vacuum, freeze, visibility, rewrite mapping). */
export function interpretHeapRecord(r: WalRecord): HeapChange | undefined {
  const info = r.info;
  const d = r.buf;
  const m = r.mainDataOffset;
  const len = r.mainDataLength;
  if (r.rmid === RM_HEAP_ID) {
    const op = info & XLOG_HEAP_OPMASK;
    const block = r.blocks[0];
    switch (op) {
      case XLOG_HEAP_INSERT:
        if (len < 3 || !block) return undefined;
        return { kind: 'insert', rows: 1, block, offnum: d.readUInt16LE(m), oldOffnum: 0, flags: d[m + 2]! };
      case XLOG_HEAP_DELETE:
        if (len < 8 || !block) return undefined;
        return { kind: 'delete', rows: 1, block, offnum: d.readUInt16LE(m + 4), oldOffnum: 0, flags: d[m + 7]! };
      case XLOG_HEAP_UPDATE:
      case XLOG_HEAP_HOT_UPDATE:
        if (len < 14 || !block) return undefined;
        return {
          kind: op === XLOG_HEAP_UPDATE ? 'update' : 'hot-update',
          rows: 1,
          block,
          oldBlock: r.blocks.find((b) => b.id === 1) ?? block,
          offnum: d.readUInt16LE(m + 12),
          oldOffnum: d.readUInt16LE(m + 4),
          flags: d[m + 7]!,
        };
      case XLOG_HEAP_TRUNCATE: {
        // xl_heap_truncate { Oid dbId; uint32 nrelids; uint8 flags; Oid relids[] }: relids at 12 (4-aligned).
        if (len < 12) return undefined;
        const n = d.readUInt32LE(m + 4);
        const relOids: number[] = [];
        for (let i = 0; i < n && 12 + 4 * i + 4 <= len; i++) relOids.push(d.readUInt32LE(m + 12 + 4 * i));
        return {
          kind: 'truncate',
          rows: 0,
          offnum: 0,
          oldOffnum: 0,
          flags: d[m + 8]!,
          truncate: { dbOid: d.readUInt32LE(m), relOids },
        };
      }
      case XLOG_HEAP_CONFIRM:
      case XLOG_HEAP_LOCK:
      case XLOG_HEAP_INPLACE:
        return { kind: 'other', rows: 0, ...(block ? { block } : {}), offnum: 0, oldOffnum: 0, flags: 0 };
    }
    return undefined;
  }
  if (r.rmid === RM_HEAP2_ID) {
    const op = info & XLOG_HEAP_OPMASK;
    const block = r.blocks[0];
    if (op === XLOG_HEAP2_MULTI_INSERT) {
      // xl_heap_multi_insert { uint8 flags; uint16 ntuples; OffsetNumber offsets[] }
      if (len < 4 || !block) return undefined;
      return { kind: 'insert', rows: d.readUInt16LE(m + 2), block, offnum: 0, oldOffnum: 0, flags: d[m]! };
    }
    if (op === XLOG_HEAP2_LOCK_UPDATED) {
      return { kind: 'other', rows: 0, ...(block ? { block } : {}), offnum: 0, oldOffnum: 0, flags: 0 };
    }
  }
  return undefined;
}

// Transaction opcodes (xl_info & XLOG_XACT_OPMASK).
const XLOG_XACT_OPMASK = 0x70;
const XLOG_XACT_HAS_INFO = 0x80;
const XACT_OPS = [
  'commit',
  'prepare',
  'abort',
  'commit-prepared',
  'abort-prepared',
  'assignment',
  'invalidations',
] as const;
const XACT_XINFO_HAS_DBINFO = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS = 1 << 1;
const XACT_XINFO_HAS_RELFILENODES = 1 << 2;
const XACT_XINFO_HAS_INVALS = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE = 1 << 4;
const XACT_XINFO_HAS_GID = 1 << 7;
const XACT_XINFO_HAS_DROPPED_STATS = 1 << 8;

export type XactKind = (typeof XACT_OPS)[number];

export interface XactRecord {
  kind: XactKind;
  /** the transaction this record ends: the prepared one's for COMMIT/ABORT PREPARED, the top one's for ASSIGNMENT */
  xid: number;
  /** commit/abort time (TimestampTz) */
  time?: Date;
  /** the same in microseconds since the Unix epoch */
  timeMicros?: number;
  subxacts: number[];
  /** relation files the commit (or abort) removes: dropped tables, the old files of rewrites and truncates */
  droppedFiles: RelFileLocator[];
  dbOid?: number;
  tsOid?: number;
  gid?: string;
}

/** COMMIT / ABORT (and the PREPARED variants), ASSIGNMENT; PREPARE and INVALIDATIONS with their xid only. */
export function interpretXactRecord(r: WalRecord): XactRecord | undefined {
  if (r.rmid !== RM_XACT_ID) return undefined;
  const kind = XACT_OPS[(r.info & XLOG_XACT_OPMASK) >> 4];
  if (kind === undefined) return undefined;
  const d = r.buf;
  let p = r.mainDataOffset;
  const end = p + r.mainDataLength;
  const out: XactRecord = { kind, xid: r.xid, subxacts: [], droppedFiles: [] };
  if (kind === 'assignment') {
    // xl_xact_assignment { TransactionId xtop; int nsubxacts; TransactionId xsub[] }
    if (end - p < 8) return undefined;
    out.xid = d.readUInt32LE(p);
    const n = d.readInt32LE(p + 4);
    for (let i = 0; i < n && p + 12 + 4 * i <= end; i++) out.subxacts.push(d.readUInt32LE(p + 8 + 4 * i));
    return out;
  }
  if (kind === 'prepare' || kind === 'invalidations') return out;
  // xl_xact_commit / xl_xact_abort { TimestampTz xact_time } then optional parts announced by xinfo.
  if (end - p < 8) return undefined;
  out.timeMicros = readTimestampTzMicros(d, p);
  out.time = new Date(Math.floor(out.timeMicros / 1000));
  p += 8;
  let xinfo = 0;
  if (r.info & XLOG_XACT_HAS_INFO) {
    if (end - p < 4) return undefined;
    xinfo = d.readUInt32LE(p);
    p += 4;
  }
  const need = (n: number) => end - p >= n;
  if (xinfo & XACT_XINFO_HAS_DBINFO) {
    if (!need(8)) return undefined;
    out.dbOid = d.readUInt32LE(p);
    out.tsOid = d.readUInt32LE(p + 4);
    p += 8;
  }
  if (xinfo & XACT_XINFO_HAS_SUBXACTS) {
    if (!need(4)) return undefined;
    const n = d.readInt32LE(p);
    p += 4;
    if (n < 0 || !need(4 * n)) return undefined;
    for (let i = 0; i < n; i++) out.subxacts.push(d.readUInt32LE(p + 4 * i));
    p += 4 * n;
  }
  if (xinfo & XACT_XINFO_HAS_RELFILENODES) {
    if (!need(4)) return undefined;
    const n = d.readInt32LE(p);
    p += 4;
    if (n < 0 || !need(12 * n)) return undefined;
    for (let i = 0; i < n; i++, p += 12) {
      out.droppedFiles.push({
        spcOid: d.readUInt32LE(p),
        dbOid: d.readUInt32LE(p + 4),
        relNumber: d.readUInt32LE(p + 8),
      });
    }
  }
  if (xinfo & XACT_XINFO_HAS_DROPPED_STATS) {
    // xl_xact_stats_items { int nitems; xl_xact_stats_item { int kind; Oid dboid; Oid objoid } items[] }
    if (!need(4)) return undefined;
    const n = d.readInt32LE(p);
    p += 4 + 12 * Math.max(0, n);
  }
  if (xinfo & XACT_XINFO_HAS_INVALS) {
    // xl_xact_invals { int nmsgs; SharedInvalidationMessage msgs[] (16 bytes each) }
    if (!need(4)) return undefined;
    const n = d.readInt32LE(p);
    p += 4 + 16 * Math.max(0, n);
  }
  if (xinfo & XACT_XINFO_HAS_TWOPHASE) {
    if (!need(4)) return undefined;
    out.xid = d.readUInt32LE(p);
    p += 4;
    if (xinfo & XACT_XINFO_HAS_GID && p < end) {
      const z = d.indexOf(0, p);
      const gEnd = z < 0 || z > end ? end : z;
      out.gid = d.toString('utf8', p, gEnd);
    }
  }
  return out;
}

const XLOG_SMGR_CREATE = 0x10;
const XLOG_SMGR_TRUNCATE = 0x20;

export interface SmgrRecord {
  kind: 'create' | 'truncate';
  locator: RelFileLocator;
  /** create: the fork created */
  fork: number;
  /** truncate: the new length in blocks */
  blocks: number;
}

/** xl_smgr_create { RelFileNode rnode; ForkNumber forkNum } and xl_smgr_truncate { BlockNumber blkno; RelFileNode rnode; int flags }. */
export function interpretSmgrRecord(r: WalRecord): SmgrRecord | undefined {
  if (r.rmid !== RM_SMGR_ID) return undefined;
  const d = r.buf;
  const m = r.mainDataOffset;
  const op = r.info & 0xf0;
  if (op === XLOG_SMGR_CREATE && r.mainDataLength >= 16) {
    return { kind: 'create', locator: readLocator(d, m), fork: d.readInt32LE(m + 12), blocks: 0 };
  }
  if (op === XLOG_SMGR_TRUNCATE && r.mainDataLength >= 16) {
    return { kind: 'truncate', locator: readLocator(d, m + 4), fork: 0, blocks: d.readUInt32LE(m) };
  }
  return undefined;
}

function readLocator(d: Buffer, p: number): RelFileLocator {
  return { spcOid: d.readUInt32LE(p), dbOid: d.readUInt32LE(p + 4), relNumber: d.readUInt32LE(p + 8) };
}

export type XlogRecordInfo =
  | { kind: 'switch' }
  | { kind: 'restore-point'; name: string; time: Date }
  | { kind: 'overwrite-contrecord'; overwrittenLsn: number; time: Date };

/** The XLOG rmgr records a search shows. */
export function interpretXlogRecord(r: WalRecord): XlogRecordInfo | undefined {
  if (r.rmid !== RM_XLOG_ID) return undefined;
  const op = r.info & 0xf0;
  const d = r.buf;
  const m = r.mainDataOffset;
  if (op === XLOG_SWITCH) return { kind: 'switch' };
  if (op === XLOG_RESTORE_POINT && r.mainDataLength >= 9) {
    // xl_restore_point { TimestampTz rp_time; char rp_name[MAXFNAMELEN] }
    const end = m + r.mainDataLength;
    const z = d.indexOf(0, m + 8);
    return {
      kind: 'restore-point',
      name: d.toString('utf8', m + 8, z < 0 || z > end ? end : z),
      time: timestampTz(d, m),
    };
  }
  if (op === XLOG_OVERWRITE_CONTRECORD && r.mainDataLength >= 16) {
    // xl_overwrite_contrecord { XLogRecPtr overwritten_lsn; TimestampTz overwrite_time }
    return {
      kind: 'overwrite-contrecord',
      overwrittenLsn: d.readUInt32LE(m) + d.readUInt32LE(m + 4) * 0x1_0000_0000,
      time: timestampTz(d, m + 8),
    };
  }
  return undefined;
}

const timestampTz = readTimestampTz;

const XLOG_RELMAP_UPDATE = 0x00;
const RELMAP_HEADER = 8;

/** A relation map update: the files of mapped catalogs (pg_class, ...) of one database, or shared ones (dbOid 0). */
export function interpretRelmapRecord(
  r: WalRecord,
): { dbOid: number; tsOid: number; files: Map<number, number> } | undefined {
  if (r.rmid !== RM_RELMAP_ID || (r.info & 0xf0) !== XLOG_RELMAP_UPDATE || r.mainDataLength < 12) return undefined;
  const d = r.buf;
  const m = r.mainDataOffset;
  // xl_relmap_update { Oid dbid; Oid tsid; int32 nbytes; char data[] }, data = RelMapFile
  // { int32 magic; int32 num_mappings; RelMapping { Oid mapoid; RelFileNumber mapfilenumber } mappings[64]; ... }
  const nbytes = d.readInt32LE(m + 8);
  const files = new Map<number, number>();
  if (nbytes >= RELMAP_HEADER && 12 + nbytes <= r.mainDataLength) {
    const n = d.readInt32LE(m + 16);
    for (let i = 0; i < n && 12 + RELMAP_HEADER + 8 * (i + 1) <= 12 + nbytes; i++) {
      const at = m + 12 + RELMAP_HEADER + 8 * i;
      files.set(d.readUInt32LE(at), d.readUInt32LE(at + 4));
    }
  }
  return { dbOid: d.readUInt32LE(m), tsOid: d.readUInt32LE(m + 4), files };
}
