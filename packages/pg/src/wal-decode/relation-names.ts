/**
 * Relation file numbers → names as they were at each point of the WAL, by following pg_class.
 *
 * A WAL record names a relation by its file (tablespace/database/relfilenode), never by name. A
 * backup stores a CatalogSnapshot (SQL at backup time: every pg_class and pg_namespace row with
 * its ctid); from there this class follows the heap records that write each database's pg_class
 * and pg_namespace files, so a file seen later maps to the table it belonged to then, through
 * ALTER TABLE ... RENAME, VACUUM FULL / CLUSTER / table rewrites and TRUNCATE (a new relfilenode in
 * the same row), CREATE TABLE and DROP TABLE.
 *
 * How a catalog row is read from WAL (heapam_xlog.h):
 *   - INSERT: the tuple is the block data after xl_heap_header, or, when a full-page image was
 *     taken instead (full_page_writes, first change after a checkpoint), in the image at offnum;
 *   - UPDATE / HOT_UPDATE: the new version likewise, but on the same page its bytes may be
 *     prefix/suffix-compressed against the old version (XLH_UPDATE_PREFIX/SUFFIX_FROM_OLD), so
 *     the tuples' bytes are kept by ctid as records and images show them. The snapshot gives
 *     fields, not bytes: when an old version's bytes were never seen, they are rebuilt from the
 *     fields the snapshot has, at their fixed offsets (pg_class's name, namespace, relfilenode,
 *     toast and kind are all fixed-width and come before any nullable column); the bytes in
 *     between are unknown, which only matters for columns nobody reads here.
 *   - DELETE: the ctid alone.
 * Catalog changes count when their transaction commits (kept per xid, applied at COMMIT with its
 * subtransactions in WAL order, dropped at ABORT), so an aborted RENAME changes nothing.
 *
 * Limits: commits before the snapshot's LSN are taken as already in it; relations are keyed by
 * database and relfilenode (not tablespace); mapped catalogs other than pg_class are not named;
 * a database created after the snapshot is unknown ("unknown relation spc/db/rel").
 */
import type { HeapChange, XactRecord } from './rmgr-records.js';
import {
  interpretHeapRecord,
  interpretRelmapRecord,
  interpretXactRecord,
  XLH_UPDATE_PREFIX_FROM_OLD,
  XLH_UPDATE_SUFFIX_FROM_OLD,
} from './rmgr-records.js';
import type { RelFileLocator, WalRecord } from './wal-reader.js';
import { RM_HEAP2_ID, RM_HEAP_ID, RM_XLOG_ID, lsnNumber } from './wal-format.js';

/**
 * What a backup stores to name relations later (catalog-snapshot.ts): per database, the WAL
 * position read first, before the transaction (every commit after it is replayed, so one not yet
 * visible to the snapshot is not lost), then in one REPEATABLE READ transaction e.g.
 *   select c.oid, c.relfilenode, c.relnamespace, c.relname, c.relkind, c.reltoastrelid,
 *          (c.ctid::text::point)[0]::int as block, (c.ctid::text::point)[1]::int as offset from pg_class c;
 *   select n.oid, n.nspname, (n.ctid::text::point)[0]::int, (n.ctid::text::point)[1]::int from pg_namespace n;
 *   select pg_relation_filenode('pg_class'), pg_relation_filenode('pg_namespace');
 * and the lowest of the per-database LSNs as `lsn`.
 */
export interface CatalogSnapshot {
  /** WAL position (text LSN) the snapshot shows the catalog at */
  lsn: string;
  databases: CatalogSnapshotDatabase[];
}

export interface CatalogSnapshotDatabase {
  /** this database's own snapshot LSN when it differs from the snapshot's */
  lsn?: string;
  oid: number;
  name: string;
  /** pg_relation_filenode('pg_class'): pg_class is a mapped catalog, its own row says 0 */
  pgClassRelNumber: number;
  /** pg_relation_filenode('pg_namespace') */
  pgNamespaceRelNumber: number;
  namespaces: { oid: number; name: string; block: number; offset: number }[];
  relations: CatalogSnapshotRelation[];
}

export interface CatalogSnapshotRelation {
  oid: number;
  /** pg_class.relfilenode (0 for mapped catalogs) */
  relNumber: number;
  namespaceOid: number;
  name: string;
  /** pg_class.relkind: r table, p partitioned, i index, t toast, S sequence, v view, m matview, f foreign */
  kind: string;
  /** pg_class.reltoastrelid (0: none) */
  toastOid?: number;
  /** a partition's parent (pg_inherits.inhparent where relispartition); absent otherwise and in older snapshots */
  parentOid?: number;
  /** the row's ctid */
  block: number;
  offset: number;
}

/** A relation as it was named at some point of the WAL. */
export interface RelationName {
  dbOid: number;
  database: string;
  schema: string;
  name: string;
  oid: number;
  relNumber: number;
  kind: string;
  /** toast table: the table it belongs to */
  toastOf?: { schema: string; name: string; oid: number };
}

/** What a committed transaction did to tables (r, p, m relations; indexes and toast tables are left out). */
export type CatalogEvent =
  | { kind: 'created'; relation: RelationName }
  | { kind: 'dropped'; relation: RelationName }
  | { kind: 'renamed'; relation: RelationName; from: RelationName }
  | { kind: 'truncated' | 'rewritten'; relation: RelationName; oldRelNumber: number };

interface ClassRow {
  oid: number;
  name: string;
  namespaceOid: number;
  relNumber: number;
  kind: string;
  toastOid: number;
}

interface NspRow {
  oid: number;
  name: string;
}

interface PendingOp {
  seq: number;
  db: DbState;
  table: 'class' | 'nsp';
  ctid: number;
  /** undefined: the row at ctid is deleted */
  row?: ClassRow | NspRow;
}

const ctidKey = (blk: number, off: number) => blk * 65536 + off;
const TUPLE_HEADER = 23; // offsetof(HeapTupleHeaderData, t_bits)
const XL_HEAP_HEADER = 5; // xl_heap_header { uint16 t_infomask2; uint16 t_infomask; uint8 t_hoff }
const LP_NORMAL = 1;
const NAMEDATALEN = 64;
/** Fixed offsets in pg_class's data (after t_hoff), PostgreSQL 15 (catalog/pg_class.h). */
const PGC = { oid: 0, relname: 4, relnamespace: 68, relfilenode: 88, reltoastrelid: 108, relkind: 115, end: 116 };
/** pg_namespace: oid, nspname. */
const PGN = { oid: 0, nspname: 4, end: 68 };
const TABLE_KINDS = new Set(['r', 'p', 'm']);

function readName(d: Buffer, at: number): string {
  const z = d.indexOf(0, at);
  return d.toString('utf8', at, z < 0 || z > at + NAMEDATALEN ? at + NAMEDATALEN : z);
}

function parseClassRow(d: Buffer): ClassRow | undefined {
  if (d.length < PGC.end) return undefined;
  return {
    oid: d.readUInt32LE(PGC.oid),
    name: readName(d, PGC.relname),
    namespaceOid: d.readUInt32LE(PGC.relnamespace),
    relNumber: d.readUInt32LE(PGC.relfilenode),
    kind: String.fromCharCode(d[PGC.relkind]!),
    toastOid: d.readUInt32LE(PGC.reltoastrelid),
  };
}

function parseNspRow(d: Buffer): NspRow | undefined {
  if (d.length < PGN.end) return undefined;
  return { oid: d.readUInt32LE(PGN.oid), name: readName(d, PGN.nspname) };
}

/** Rebuilt bytes of a snapshot row whose tuple was never seen: the known fields at their offsets. */
function synthesizeClassBytes(r: ClassRow, len: number): Buffer {
  const b = Buffer.alloc(Math.max(len, PGC.end));
  b.writeUInt32LE(r.oid, PGC.oid);
  b.write(r.name, PGC.relname, NAMEDATALEN - 1, 'utf8');
  b.writeUInt32LE(r.namespaceOid, PGC.relnamespace);
  b.writeUInt32LE(r.relNumber, PGC.relfilenode);
  b.writeUInt32LE(r.toastOid, PGC.reltoastrelid);
  b[PGC.relkind] = r.kind.charCodeAt(0);
  return b;
}

function synthesizeNspBytes(r: NspRow, len: number): Buffer {
  const b = Buffer.alloc(Math.max(len, PGN.end));
  b.writeUInt32LE(r.oid, PGN.oid);
  b.write(r.name, PGN.nspname, NAMEDATALEN - 1, 'utf8');
  return b;
}

/** The data part (after t_hoff) of every normal tuple of a heap page image. */
function pageTuples(page: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  const lower = page.readUInt16LE(12);
  for (let off = 1, at = 24; at + 4 <= lower && at + 4 <= page.length; off++, at += 4) {
    const lp = page.readUInt32LE(at);
    const lpOff = lp & 0x7fff;
    const flags = (lp >>> 15) & 3;
    const len = lp >>> 17;
    if (flags !== LP_NORMAL || len < TUPLE_HEADER || lpOff + len > page.length) continue;
    const hoff = page[lpOff + 22]!;
    if (hoff < TUPLE_HEADER || hoff > len) continue;
    out.set(off, page.subarray(lpOff + hoff, lpOff + len));
  }
  return out;
}

class DbState {
  readonly classRows = new Map<number, ClassRow>();
  readonly nspRows = new Map<number, NspRow>();
  readonly byOid = new Map<number, ClassRow>();
  readonly byRelNumber = new Map<number, ClassRow>();
  readonly nspByOid = new Map<number, NspRow>();
  readonly toastOwner = new Map<number, number>();
  /** physical: tuple data bytes by ctid, for prefix/suffix-compressed updates */
  readonly classBytes = new Map<number, Buffer>();
  readonly nspBytes = new Map<number, Buffer>();

  constructor(
    readonly oid: number,
    readonly name: string,
    public classFile: number,
    readonly nspFile: number,
    /** commits at or before this LSN are in the snapshot already */
    readonly snapshotLsn: number,
  ) {}

  putClass(ctid: number, row: ClassRow): void {
    this.delClass(ctid);
    this.classRows.set(ctid, row);
    this.byOid.set(row.oid, row);
    if (row.relNumber !== 0) this.byRelNumber.set(row.relNumber, row);
    if (row.toastOid !== 0) this.toastOwner.set(row.toastOid, row.oid);
  }

  delClass(ctid: number): void {
    const old = this.classRows.get(ctid);
    if (!old) return;
    this.classRows.delete(ctid);
    if (this.byOid.get(old.oid) === old) this.byOid.delete(old.oid);
    if (this.byRelNumber.get(old.relNumber) === old) this.byRelNumber.delete(old.relNumber);
    if (old.toastOid !== 0 && this.toastOwner.get(old.toastOid) === old.oid) this.toastOwner.delete(old.toastOid);
  }

  putNsp(ctid: number, row: NspRow): void {
    this.delNsp(ctid);
    this.nspRows.set(ctid, row);
    this.nspByOid.set(row.oid, row);
  }

  delNsp(ctid: number): void {
    const old = this.nspRows.get(ctid);
    if (!old) return;
    this.nspRows.delete(ctid);
    if (this.nspByOid.get(old.oid) === old) this.nspByOid.delete(old.oid);
  }

  /** Names handed out since the last catalog change here (a commit's changes clear it). */
  readonly named = new Map<ClassRow, RelationName>();

  describe(row: ClassRow): RelationName {
    let n = this.named.get(row);
    if (!n) this.named.set(row, (n = this.describeNow(row)));
    return n;
  }

  private describeNow(row: ClassRow): RelationName {
    const owner = row.kind === 't' ? this.byOid.get(this.toastOwner.get(row.oid) ?? 0) : undefined;
    return {
      dbOid: this.oid,
      database: this.name,
      schema: this.nspByOid.get(row.namespaceOid)?.name ?? `namespace ${row.namespaceOid}`,
      name: row.name,
      oid: row.oid,
      relNumber: row.relNumber,
      kind: row.kind,
      ...(owner
        ? { toastOf: { schema: this.nspByOid.get(owner.namespaceOid)?.name ?? '', name: owner.name, oid: owner.oid } }
        : {}),
    };
  }
}

export class RelationNames {
  private readonly dbs = new Map<number, DbState>();
  private readonly snapshotLsn: number;
  private readonly pending = new Map<number, PendingOp[]>();
  /** files written whole (XLOG_FPI) per xid: one sign of a rewrite (VACUUM FULL) rather than a TRUNCATE */
  private readonly written = new Map<number, Set<number>>();
  private seq = 0;

  constructor(snapshot: CatalogSnapshot) {
    this.snapshotLsn = lsnNumber(snapshot.lsn);
    for (const d of snapshot.databases) {
      const lsn = d.lsn === undefined ? this.snapshotLsn : lsnNumber(d.lsn);
      const db = new DbState(d.oid, d.name, d.pgClassRelNumber, d.pgNamespaceRelNumber, lsn);
      for (const n of d.namespaces) db.putNsp(ctidKey(n.block, n.offset), { oid: n.oid, name: n.name });
      for (const r of d.relations) {
        db.putClass(ctidKey(r.block, r.offset), {
          oid: r.oid,
          name: r.name,
          namespaceOid: r.namespaceOid,
          relNumber: r.relNumber,
          kind: r.kind,
          toastOid: r.toastOid ?? 0,
        });
      }
      this.dbs.set(d.oid, db);
    }
  }

  /** The relation a file belongs to now, or undefined (see describe() for the unknown case). */
  relation(locator: RelFileLocator): RelationName | undefined {
    const db = this.dbs.get(locator.dbOid);
    const row = db?.byRelNumber.get(locator.relNumber);
    return row && db ? db.describe(row) : undefined;
  }

  /** "db.schema.name", or "unknown relation spc/db/rel" for a file that no known row names. */
  describe(locator: RelFileLocator): string {
    const r = this.relation(locator);
    return r
      ? `${r.database}.${r.schema}.${r.name}`
      : `unknown relation ${locator.spcOid}/${locator.dbOid}/${locator.relNumber}`;
  }

  /** True when the record writes a followed catalog file or ends a transaction: what a filtered stream must keep. */
  isCatalogRecord(r: WalRecord): boolean {
    if (r.rmid !== RM_HEAP_ID && r.rmid !== RM_HEAP2_ID)
      return interpretXactRecord(r) !== undefined || interpretRelmapRecord(r) !== undefined;
    const b = r.blocks[0];
    const db = b && this.dbs.get(b.dbOid);
    return db !== undefined && (b!.relNumber === db.classFile || b!.relNumber === db.nspFile);
  }

  /**
   * Follows one record. Returns the catalog events of a transaction this record commits
   * (empty for other records).
   */
  observe(
    r: WalRecord,
    heap: HeapChange | undefined = interpretHeapRecord(r),
    xact: XactRecord | undefined = undefined,
  ): CatalogEvent[] {
    const rmid = r.rmid;
    if (rmid === RM_HEAP_ID || rmid === RM_HEAP2_ID) {
      const b = heap?.block ?? r.blocks[0];
      if (!b) return [];
      const db = this.dbs.get(b.dbOid);
      if (db && b.fork === 0 && (b.relNumber === db.classFile || b.relNumber === db.nspFile)) {
        this.followCatalog(r, db, b.relNumber === db.classFile ? 'class' : 'nsp', heap);
      }
      // Rows inserted into a new file do not make it a rewrite: TRUNCATE and a reload in one
      // transaction does that too, and must show as the truncate it is (see commit()).
      return [];
    }
    if (rmid === RM_XLOG_ID) {
      // XLOG_FPI (0xB0): pages written whole, as VACUUM FULL / CLUSTER write their new file;
      // XLOG_FPI_FOR_HINT (0xA0): a page logged for a hint bit, a catalog page's bytes included.
      const op = r.info & 0xf0;
      if (op === 0xb0) for (const b of r.blocks) this.noteWrittenFile(r.xid, b);
      if (op === 0xb0 || op === 0xa0) this.learnImages(r);
      return [];
    }
    const relmap = interpretRelmapRecord(r);
    if (relmap) {
      const db = this.dbs.get(relmap.dbOid);
      const f = relmap.files.get(1259); // pg_class's OID
      if (db && f !== undefined) db.classFile = f;
      return [];
    }
    const x = xact ?? interpretXactRecord(r);
    if (!x) return [];
    if (x.kind === 'commit' || x.kind === 'commit-prepared') return this.commit([x.xid, ...x.subxacts], r.lsn);
    if (x.kind === 'abort' || x.kind === 'abort-prepared') this.forget([x.xid, ...x.subxacts]);
    return [];
  }

  /**
   * A file `xid` wrote whole pages into (XLOG_FPI, as a rewrite copies pages). Only files
   * no committed row names yet can be a rewrite's new file, so the common case costs one lookup.
   * Keyed by file number alone: a transaction writes in one database.
   */
  noteWrittenFile(xid: number, b: RelFileLocator): void {
    if (xid === 0 || (xid === this.lastWrittenXid && b.relNumber === this.lastWrittenRel)) return;
    if (this.dbs.get(b.dbOid)?.byRelNumber.has(b.relNumber)) return;
    this.lastWrittenXid = xid;
    this.lastWrittenRel = b.relNumber;
    let s = this.written.get(xid);
    if (!s) this.written.set(xid, (s = new Set()));
    s.add(b.relNumber);
  }

  private lastWrittenXid = 0;
  private lastWrittenRel = 0;

  /** True when `xids` have catalog changes waiting for their commit (names may change at it). */
  hasPendingChanges(xids: readonly number[]): boolean {
    for (const x of xids) if (this.pending.has(x)) return true;
    return false;
  }

  /** Every applied image of a followed catalog page tells all its tuples' bytes. */
  private learnImages(r: WalRecord): void {
    for (const b of r.blocks) {
      if (!b.hasImage || !b.applyImage || b.fork !== 0) continue;
      const db = this.dbs.get(b.dbOid);
      if (!db || (b.relNumber !== db.classFile && b.relNumber !== db.nspFile)) continue;
      const page = r.blockImage(b);
      if (!page) continue;
      const m = b.relNumber === db.classFile ? db.classBytes : db.nspBytes;
      for (const [off, bytes] of pageTuples(page)) m.set(ctidKey(b.blkno, off), Buffer.from(bytes));
    }
  }

  private followCatalog(r: WalRecord, db: DbState, table: 'class' | 'nsp', heap: HeapChange | undefined): void {
    const bytesMap = table === 'class' ? db.classBytes : db.nspBytes;
    this.learnImages(r);
    if (!heap || heap.kind === 'other' || heap.kind === 'truncate' || !heap.block) return;
    const blk = heap.block.blkno;
    const parse = (d: Buffer) => (table === 'class' ? parseClassRow(d) : parseNspRow(d));
    const ops: PendingOp[] = [];
    if (heap.kind === 'delete') {
      ops.push({ seq: this.seq++, db, table, ctid: ctidKey(blk, heap.offnum) });
    } else if (heap.kind === 'insert' && r.rmid === RM_HEAP_ID) {
      const bytes = this.newTuple(r, heap, undefined);
      if (!bytes) return;
      const key = ctidKey(blk, heap.offnum);
      bytesMap.set(key, bytes);
      const row = parse(bytes);
      if (row) ops.push({ seq: this.seq++, db, table, ctid: key, row });
    } else if (heap.kind === 'update' || heap.kind === 'hot-update') {
      const oldKey = ctidKey(heap.oldBlock!.blkno, heap.oldOffnum);
      const old = bytesMap.get(oldKey) ?? ((len: number) => this.synthesize(db, table, oldKey, len));
      const bytes = this.newTuple(r, heap, old);
      if (!bytes) return;
      const key = ctidKey(blk, heap.offnum);
      bytesMap.set(key, bytes);
      const row = parse(bytes);
      ops.push({ seq: this.seq++, db, table, ctid: oldKey });
      if (row) ops.push({ seq: this.seq++, db, table, ctid: key, row });
    }
    if (ops.length === 0) return;
    const list = this.pending.get(r.xid);
    if (list) list.push(...ops);
    else this.pending.set(r.xid, ops);
  }

  /** Bytes of length `len` standing for a row known only by its fields (the new version is taken to be as long as the old). */
  private synthesize(db: DbState, table: 'class' | 'nsp', key: number, len: number): Buffer | undefined {
    if (table === 'class') {
      const row = db.classRows.get(key);
      return row ? synthesizeClassBytes(row, len) : undefined;
    }
    const row = db.nspRows.get(key);
    return row ? synthesizeNspBytes(row, len) : undefined;
  }

  /** The new tuple's data bytes (after t_hoff): from the block data (rebuilding prefix/suffix from `old`) or from the page image. */
  private newTuple(
    r: WalRecord,
    heap: HeapChange,
    oldOrSynth: Buffer | ((len: number) => Buffer | undefined) | undefined,
  ): Buffer | undefined {
    const b = heap.block!;
    const data = r.blockData(b);
    if (!data) {
      const page = b.hasImage ? r.blockImage(b) : undefined;
      const t = page && pageTuples(page).get(heap.offnum);
      return t ? Buffer.from(t) : undefined;
    }
    let p = 0;
    let prefix = 0;
    let suffix = 0;
    if (heap.kind === 'update' || heap.kind === 'hot-update') {
      if (heap.flags & XLH_UPDATE_PREFIX_FROM_OLD) {
        if (data.length < 2) return undefined;
        prefix = data.readUInt16LE(0);
        p += 2;
      }
      if (heap.flags & XLH_UPDATE_SUFFIX_FROM_OLD) {
        if (data.length < p + 2) return undefined;
        suffix = data.readUInt16LE(p);
        p += 2;
      }
    }
    if (data.length < p + XL_HEAP_HEADER) return undefined;
    const hoff = data[p + 4]!;
    p += XL_HEAP_HEADER;
    const bitmap = hoff - TUPLE_HEADER;
    if (bitmap < 0 || data.length < p + bitmap) return undefined;
    const middle = data.subarray(p + bitmap);
    if (prefix === 0 && suffix === 0) return Buffer.from(middle);
    const old = typeof oldOrSynth === 'function' ? oldOrSynth(prefix + middle.length + suffix) : oldOrSynth;
    if (!old || old.length < prefix || old.length < suffix) return undefined;
    return Buffer.concat([old.subarray(0, prefix), middle, old.subarray(old.length - suffix)]);
  }

  private forget(xids: number[]): void {
    this.lastWrittenXid = 0;
    for (const x of xids) {
      this.pending.delete(x);
      this.written.delete(x);
    }
  }

  /** Applies the catalog changes of a committed transaction (and its subtransactions), in WAL order. */
  private commit(xids: number[], commitLsn: number): CatalogEvent[] {
    let ops: PendingOp[] = [];
    const written = new Set<number>();
    if (!this.hasPendingChanges(xids)) {
      this.forget(xids);
      return [];
    }
    for (const x of xids) {
      const p = this.pending.get(x);
      if (p) ops.push(...p);
      const w = this.written.get(x);
      if (w) for (const f of w) written.add(f);
    }
    this.forget(xids);
    // Commits the snapshot already shows.
    if (ops.length === 0) return [];
    ops = ops.filter((op) => commitLsn > op.db.snapshotLsn);
    ops.sort((a, b) => a.seq - b.seq);
    // A rewrite (VACUUM FULL, CLUSTER, an ALTER TABLE that rewrites) builds the new file as a
    // transient relation of its own (make_new_heap: another pg_class row, whose file is then
    // swapped in); TRUNCATE gives the table a new file directly. So a new file that another row of
    // this transaction held first is a rewrite's, even when nothing was written into it.
    const firstHolder = new Map<number, number>();
    for (const op of ops)
      if (op.table === 'class' && op.row) {
        const row = op.row as ClassRow;
        if (!firstHolder.has(row.relNumber)) firstHolder.set(row.relNumber, row.oid);
      }
    const before = new Map<string, { db: DbState; row: ClassRow | undefined; name: RelationName | undefined }>();
    for (const op of ops) {
      if (op.table !== 'class') continue;
      const oids = [op.row?.oid, op.db.classRows.get(op.ctid)?.oid];
      for (const oid of oids) {
        if (oid === undefined) continue;
        const k = `${op.db.oid}/${oid}`;
        if (before.has(k)) continue;
        const row = op.db.byOid.get(oid);
        before.set(k, { db: op.db, row, name: row ? op.db.describe(row) : undefined });
      }
    }
    for (const op of ops) {
      op.db.named.clear();
      if (op.table === 'class') {
        if (op.row) op.db.putClass(op.ctid, op.row as ClassRow);
        else op.db.delClass(op.ctid);
      } else if (op.row) op.db.putNsp(op.ctid, op.row as NspRow);
      else op.db.delNsp(op.ctid);
    }
    const events: CatalogEvent[] = [];
    for (const [k, was] of before) {
      const oid = Number(k.slice(k.indexOf('/') + 1));
      const now = was.db.byOid.get(oid);
      const kind = now?.kind ?? was.row?.kind ?? '';
      if (!TABLE_KINDS.has(kind)) continue;
      if (!was.row && now) events.push({ kind: 'created', relation: was.db.describe(now) });
      else if (was.row && !now) events.push({ kind: 'dropped', relation: was.name! });
      else if (was.row && now) {
        const relation = was.db.describe(now);
        if (was.row.relNumber !== now.relNumber && now.relNumber !== 0) {
          const holder = firstHolder.get(now.relNumber);
          const rewritten = written.has(now.relNumber) || (holder !== undefined && holder !== oid);
          events.push({ kind: rewritten ? 'rewritten' : 'truncated', relation, oldRelNumber: was.row.relNumber });
        }
        if (was.name!.name !== relation.name || was.name!.schema !== relation.schema) {
          events.push({ kind: 'renamed', relation, from: was.name! });
        }
      }
    }
    return events;
  }
}
