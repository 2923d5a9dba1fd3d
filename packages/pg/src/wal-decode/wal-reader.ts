/**
 * A reader of PostgreSQL 15 WAL records from segment bytes (the work of xlogreader.c's
 * XLogReadRecord + DecodeXLogRecord), for searching archived WAL without pg_waldump.
 *
 * WAL is a sequence of 8 KiB pages, each with a page header (a long one on a segment's first page);
 * records are 8-byte aligned and may cross pages and segments, their own 24-byte header included.
 * A page whose first bytes continue a record from the page before says so (XLP_FIRST_IS_CONTRECORD
 * with xlp_rem_len bytes left), which is what lets decoding START at any segment: the continuation
 * is skipped, since the decoder of the previous range completes that record. With `endBefore`, a
 * decoder stops before the first record that starts at or after that LSN and still completes one
 * that started before it, from the next segment fed. Ranges [a, b) and [b, c) decoded this way
 * give exactly the records of [a, c), so ranges can be decoded in parallel.
 *
 * The end of valid WAL is found as PostgreSQL finds it: a page whose header is not the one
 * expected there (magic, xlp_pageaddr, timeline going backwards: a recycled or zeroed page), a
 * zero or impossible record length, a record whose xl_prev does not point at the record before
 * (stale bytes of a recycled segment), an unknown rmgr, a body that does not parse, or (with
 * `checkCrc`) a CRC mismatch. The decoder stops there and reports where and why; it never throws
 * on damaged input except for the one thing it must refuse: WAL of another PostgreSQL major.
 *
 * The common path allocates no copies: a record that fits in its page is read in place and the
 * block data and images are located by offset, materialised only when asked for.
 */
import { PgfleetError } from '@pgfleet/core';
import { WAL_PAGE_MAGIC } from '../wal-header.js';
import { rebuildBlockImage } from './block-image.js';
import { crc32cUpdate } from './crc32c.js';
import {
  BKPBLOCK_FORK_MASK,
  BKPBLOCK_HAS_DATA,
  BKPBLOCK_HAS_IMAGE,
  BKPBLOCK_SAME_REL,
  BKPBLOCK_WILL_INIT,
  BKPIMAGE_APPLY,
  BKPIMAGE_COMPRESSED,
  BKPIMAGE_HAS_HOLE,
  LONG_PAGE_HEADER_SIZE,
  PG15_WAL_PAGE_MAGIC,
  RECORD_CRC_OFFSET,
  RECORD_HEADER_SIZE,
  RECORD_MAX_SIZE,
  RM_MAX_BUILTIN_ID,
  RM_MIN_CUSTOM_ID,
  RM_XLOG_ID,
  SHORT_PAGE_HEADER_SIZE,
  XLOG_SWITCH,
  XLP_ALL_FLAGS,
  XLP_FIRST_IS_CONTRECORD,
  XLP_FIRST_IS_OVERWRITE_CONTRECORD,
  XLP_LONG_HEADER,
  XLR_BLOCK_ID_DATA_LONG,
  XLR_BLOCK_ID_DATA_SHORT,
  XLR_BLOCK_ID_ORIGIN,
  XLR_BLOCK_ID_TOPLEVEL_XID,
  XLR_MAX_BLOCK_ID,
  lsnText,
} from './wal-format.js';

/** The relation file a block belongs to (RelFileNode in PostgreSQL 15, RelFileLocator from 16). */
export interface RelFileLocator {
  spcOid: number;
  dbOid: number;
  relNumber: number;
}

/** One block reference of a record. Offsets point into the record's `buf`. */
export interface WalBlockRef extends RelFileLocator {
  id: number;
  /** 0 main, 1 fsm, 2 vm, 3 init */
  fork: number;
  blkno: number;
  hasImage: boolean;
  /** the image is replayed (false: kept only for wal_consistency_checking) */
  applyImage: boolean;
  willInit: boolean;
  hasData: boolean;
  bimgInfo: number;
  holeOffset: number;
  holeLength: number;
  imageOffset: number;
  imageLength: number;
  dataOffset: number;
  dataLength: number;
}

/** A decoded record. Its bytes are buf[base, base + totLen): in place in a segment, or a copy when it crossed a page. */
export class WalRecord {
  constructor(
    /** LSN of the record's first byte */
    readonly lsn: number,
    /** LSN just past its last byte (not aligned) */
    readonly endLsn: number,
    readonly totLen: number,
    readonly xid: number,
    readonly prevLsn: number,
    readonly info: number,
    readonly rmid: number,
    readonly buf: Buffer,
    readonly base: number,
    readonly blocks: WalBlockRef[],
    readonly mainDataOffset: number,
    readonly mainDataLength: number,
    /** XLR_BLOCK_ID_TOPLEVEL_XID: the top transaction of a subtransaction's record (wal_level=logical only) */
    readonly toplevelXid: number,
    private readonly blockSize: number,
  ) {}

  /** The rmgr's own bits of xl_info (the low 4 are the record's). */
  get rmgrInfo(): number {
    return this.info & 0xf0;
  }

  mainData(): Buffer {
    return this.buf.subarray(this.mainDataOffset, this.mainDataOffset + this.mainDataLength);
  }

  blockData(b: WalBlockRef): Buffer | undefined {
    return b.hasData ? this.buf.subarray(b.dataOffset, b.dataOffset + b.dataLength) : undefined;
  }

  /** The full page of block `b` (hole zero-filled, decompressed), or undefined without an image or when it is corrupt. */
  blockImage(b: WalBlockRef): Buffer | undefined {
    return b.hasImage ? rebuildBlockImage(this.buf, b, this.blockSize) : undefined;
  }

  /** Bytes of all block images (pg_waldump's "rec" length is totLen minus this). */
  get imageBytes(): number {
    let n = 0;
    for (const b of this.blocks) if (b.hasImage) n += b.imageLength;
    return n;
  }
}

/** Why decoding stopped, and where the next record would have started. */
export interface WalDecodeEnd {
  reason:
    | 'range-end' // the next record starts at or after endBefore
    | 'end-of-wal' // zeroed space, a page that is not the expected one, a record that is not valid
    | 'incomplete' // the input ended inside a record (feed the next segment to complete it)
    | 'input-end'; // the input ended at a record boundary
  lsn: number;
  detail: string;
}

export interface WalDecoderOptions {
  /** wal_segment_size of the cluster (bytes) */
  segmentSize: number;
  /** LSN of a record start to begin at (e.g. a backup's start); default: the first record starting in the first segment fed */
  startLsn?: number;
  /** stop before the first record starting at or after this LSN */
  endBefore?: number;
  /** verify each record's CRC-32C (a mismatch ends the WAL, as in recovery) */
  checkCrc?: boolean;
}

const align8 = (n: number) => (n + 7) & ~7;

/**
 * A record that crosses pages, being gathered. The buffer grows as pages arrive (up to `need`):
 * a damaged length field must not allocate up to 1 GiB before the next page's xlp_rem_len shows
 * it is wrong.
 */
interface Partial {
  lsn: number;
  need: number;
  buf: Buffer;
  have: number;
}

const PARTIAL_INITIAL = 64 * 1024;

/**
 * Push segments in order with feed(); each call yields the records that complete in it. After the
 * last feed, end() says why decoding stopped. The decoder keeps at most one partial record.
 */
export class WalDecoder {
  private readonly segmentSize: number;
  private readonly endBefore: number;
  private readonly checkCrc: boolean;
  private blockSize = 0;
  /** where the next record starts (undefined before the first segment) */
  private next: number | undefined;
  private prevRecord = 0;
  private nextSegment: number | undefined;
  private timeline = 0;
  private partial: Partial | undefined;
  /** skipping the continuation of a record begun before the first segment fed */
  private skipping = false;
  private stop: WalDecodeEnd | undefined;
  /** records abandoned by an overwrite-contrecord (their LSNs) */
  readonly abortedRecords: number[] = [];

  constructor(private readonly opts: WalDecoderOptions) {
    const s = opts.segmentSize;
    if (!Number.isInteger(s) || s < 1 << 20 || s > 1 << 30 || (s & (s - 1)) !== 0) {
      throw new PgfleetError(
        'WalDecodeInputInvalid',
        `WAL segment size ${s} is not a power of two from 1 MiB to 1 GiB`,
      );
    }
    this.segmentSize = s;
    this.endBefore = opts.endBefore ?? Number.POSITIVE_INFINITY;
    this.checkCrc = opts.checkCrc ?? false;
  }

  /** Why and where decoding stopped (or would stop now, if no more input comes). */
  end(): WalDecodeEnd {
    if (this.stop) return this.stop;
    if (this.partial) {
      return {
        reason: 'incomplete',
        lsn: this.partial.lsn,
        detail: `the record at ${lsnText(this.partial.lsn)} continues past the last segment given`,
      };
    }
    const at = this.next ?? 0;
    return { reason: 'input-end', lsn: at, detail: `the input ends at ${lsnText(at)}` };
  }

  get stopped(): boolean {
    return this.stop !== undefined;
  }

  private finish(reason: WalDecodeEnd['reason'], lsn: number, detail: string): void {
    this.stop = { reason, lsn, detail };
    this.partial = undefined;
  }

  /**
   * Decodes `segment` (a whole segment's bytes; a shorter buffer is a cut segment, decoded up to
   * its last whole page) that starts at LSN `segmentStart`.
   */
  *feed(segment: Buffer, segmentStart: number): Generator<WalRecord> {
    if (this.stop) return;
    const segSize = this.segmentSize;
    if (segmentStart % segSize !== 0 || segment.length > segSize) {
      throw new PgfleetError(
        'WalDecodeInputInvalid',
        `a WAL segment must start at a multiple of ${segSize} and hold at most ${segSize} bytes (got ${segment.length} bytes at ${lsnText(segmentStart)})`,
      );
    }
    if (this.nextSegment === undefined) {
      this.checkFirstPage(segment, segmentStart);
      if (this.stop) return;
      const start = this.opts.startLsn;
      if (start !== undefined && start >= segmentStart + segSize) {
        // The start lies beyond this segment: nothing to decode here.
        return;
      }
      if (start !== undefined && start > segmentStart) this.next = start;
      else {
        this.next = segmentStart;
        this.skipping = true;
      }
      this.prevRecord = 0;
    } else if (segmentStart !== this.nextSegment) {
      this.finish(
        'end-of-wal',
        this.next ?? segmentStart,
        `segment at ${lsnText(segmentStart)} does not follow the one before (expected ${lsnText(this.nextSegment)})`,
      );
      return;
    }
    this.nextSegment = segmentStart + segSize;
    const pageSize = this.blockSize;
    const wholePages = Math.floor(segment.length / pageSize);
    let pageIndex = Math.floor((this.next! - segmentStart) / pageSize);
    for (; pageIndex < wholePages; pageIndex++) {
      const pageOff = pageIndex * pageSize;
      const pageEnd = pageOff + pageSize;
      const pageLsn = segmentStart + pageOff;
      const hdr = this.pageHeaderSize(segment, pageOff, pageLsn);
      if (hdr === 0) return;
      const info = segment.readUInt16LE(pageOff + 2);
      const remLen = segment.readUInt32LE(pageOff + 16);
      let pos = Math.max(this.next! - segmentStart, pageOff);
      if (pos === pageOff) pos += hdr;
      if (this.partial) {
        if (info & XLP_FIRST_IS_CONTRECORD) {
          const p = this.partial;
          const want = p.need - p.have;
          if (remLen !== want) {
            this.finish(
              'end-of-wal',
              p.lsn,
              `page ${lsnText(pageLsn)} continues ${remLen} bytes of a record, the record at ${lsnText(p.lsn)} needs ${want}`,
            );
            return;
          }
          const take = Math.min(want, pageEnd - pos);
          if (p.have + take > p.buf.length) {
            const grown = Buffer.allocUnsafe(Math.min(p.need, Math.max(p.buf.length * 2, p.have + take)));
            p.buf.copy(grown, 0, 0, p.have);
            p.buf = grown;
          }
          segment.copy(p.buf, p.have, pos, pos + take);
          p.have += take;
          if (p.have < p.need) {
            this.next = pageLsn + pageSize;
            continue;
          }
          this.partial = undefined;
          const recEnd = segmentStart + pos + take;
          pos = align8(pos + take);
          this.next = segmentStart + pos;
          const rec = this.decodeRecord(p.buf, 0, p.lsn, recEnd);
          if (!rec) return;
          yield rec;
          if (this.afterRecord(rec, segmentStart)) return;
          pos = this.next - segmentStart;
          if (pos >= pageEnd) continue;
        } else if (info & XLP_FIRST_IS_OVERWRITE_CONTRECORD) {
          // The record was cut by a crash and never completed; WAL goes on with a new record here
          // (an XLOG_OVERWRITE_CONTRECORD that names it).
          this.abortedRecords.push(this.partial.lsn);
          this.partial = undefined;
        } else {
          this.finish(
            'end-of-wal',
            this.partial.lsn,
            `page ${lsnText(pageLsn)} does not continue the record at ${lsnText(this.partial.lsn)}`,
          );
          return;
        }
      } else if (this.skipping && pos === pageOff + hdr) {
        if (info & XLP_FIRST_IS_CONTRECORD) {
          // The tail of a record that began before the first segment: its decoder owns it.
          if (remLen > pageEnd - pos) {
            this.next = pageLsn + pageSize;
            continue;
          }
          pos = align8(pos + remLen);
        }
        this.skipping = false;
      } else this.skipping = false;
      this.next = segmentStart + pos;
      // Records starting in this page.
      while (pos < pageEnd) {
        const lsn = segmentStart + pos;
        if (lsn >= this.endBefore) {
          this.finish('range-end', lsn, `the next record starts at ${lsnText(lsn)}, at or after the range's end`);
          return;
        }
        // A record starts 8-aligned, so its length field never crosses the page.
        const totLen = segment.readUInt32LE(pos);
        if (totLen < RECORD_HEADER_SIZE || totLen > RECORD_MAX_SIZE) {
          this.finish(
            'end-of-wal',
            lsn,
            totLen === 0
              ? `no record at ${lsnText(lsn)} (zeroed space)`
              : `invalid record length ${totLen} at ${lsnText(lsn)}`,
          );
          return;
        }
        if (pos + RECORD_HEADER_SIZE <= pageEnd && !this.validHeader(segment, pos, lsn)) return;
        if (pos + totLen <= pageEnd) {
          const rec = this.decodeRecord(segment, pos, lsn, lsn + totLen);
          if (!rec) return;
          pos = align8(pos + totLen);
          this.next = segmentStart + pos;
          yield rec;
          if (this.afterRecord(rec, segmentStart)) return;
          pos = this.next - segmentStart;
          continue;
        }
        const buf = Buffer.allocUnsafe(Math.min(totLen, Math.max(PARTIAL_INITIAL, pageEnd - pos)));
        segment.copy(buf, 0, pos, pageEnd);
        this.partial = { lsn, need: totLen, buf, have: pageEnd - pos };
        this.next = pageLsn + pageSize;
        break;
      }
      if (!this.partial) this.next = Math.max(this.next!, pageLsn + pageSize);
    }
    if (wholePages * pageSize < segSize) {
      const at = this.partial?.lsn ?? this.next!;
      this.finish('end-of-wal', at, `the segment at ${lsnText(segmentStart)} is cut short (${segment.length} bytes)`);
    }
  }

  /** After a record is yielded: true when this segment is done (XLOG_SWITCH fills the rest of it with nothing). */
  private afterRecord(rec: WalRecord, segmentStart: number): boolean {
    this.prevRecord = rec.lsn;
    if (rec.rmid === RM_XLOG_ID && (rec.info & 0xf0) === XLOG_SWITCH) {
      this.next = segmentStart + this.segmentSize;
      // A switch record ending exactly at the segment's end needs nothing skipped.
      return true;
    }
    return false;
  }

  /** Reads the first segment's long header: the format check, block size and timeline. */
  private checkFirstPage(segment: Buffer, segmentStart: number): void {
    if (segment.length < LONG_PAGE_HEADER_SIZE) {
      this.finish('end-of-wal', segmentStart, `the segment at ${lsnText(segmentStart)} has no page header`);
      return;
    }
    const magic = segment.readUInt16LE(0);
    if (magic !== PG15_WAL_PAGE_MAGIC) {
      const major = Object.entries(WAL_PAGE_MAGIC).find(([, m]) => m === magic)?.[0];
      throw new PgfleetError(
        'WalFormatUnsupported',
        major === undefined
          ? `the WAL segment at ${lsnText(segmentStart)} does not start with a WAL page header (magic 0x${magic.toString(16)})`
          : `the WAL segment at ${lsnText(segmentStart)} was written by PostgreSQL ${major} (page magic 0x${magic.toString(16)}); this decoder reads PostgreSQL 15 WAL (0x${PG15_WAL_PAGE_MAGIC.toString(16)})`,
      );
    }
    const info = segment.readUInt16LE(2);
    const segSize = segment.readUInt32LE(32);
    const blockSize = segment.readUInt32LE(36);
    if ((info & XLP_LONG_HEADER) === 0 || segSize !== this.segmentSize) {
      throw new PgfleetError(
        'WalDecodeInputInvalid',
        `the WAL segment at ${lsnText(segmentStart)} says its segment size is ${segSize}, the decoder was given ${this.segmentSize}`,
      );
    }
    if (blockSize < 1024 || blockSize > 32768 || (blockSize & (blockSize - 1)) !== 0) {
      this.finish('end-of-wal', segmentStart, `impossible WAL block size ${blockSize}`);
      return;
    }
    this.blockSize = blockSize;
  }

  /** The page's header size after checking it is the page expected at `pageLsn` (0: WAL ends here). */
  private pageHeaderSize(segment: Buffer, pageOff: number, pageLsn: number): number {
    const magic = segment.readUInt16LE(pageOff);
    const info = segment.readUInt16LE(pageOff + 2);
    const tli = segment.readUInt32LE(pageOff + 4);
    const addr = segment.readUInt32LE(pageOff + 8) + segment.readUInt32LE(pageOff + 12) * 0x1_0000_0000;
    const long = (info & XLP_LONG_HEADER) !== 0;
    let why: string | undefined;
    if (magic !== PG15_WAL_PAGE_MAGIC) why = `bad page magic 0x${magic.toString(16)}`;
    else if ((info & ~XLP_ALL_FLAGS) !== 0) why = `bad page info bits 0x${info.toString(16)}`;
    else if (long !== (pageOff === 0)) why = 'long page header where a short one belongs (or the reverse)';
    else if (addr !== pageLsn) why = `page address ${lsnText(addr)} (a recycled or misplaced page)`;
    else if (tli < this.timeline) why = `timeline ${tli} after timeline ${this.timeline}`;
    if (why !== undefined) {
      const at = this.partial?.lsn ?? Math.max(this.next ?? pageLsn, pageLsn);
      this.finish('end-of-wal', at, `WAL page at ${lsnText(pageLsn)} is not valid: ${why}`);
      return 0;
    }
    this.timeline = tli;
    return long ? LONG_PAGE_HEADER_SIZE : SHORT_PAGE_HEADER_SIZE;
  }

  /** The checks of ValidXLogRecordHeader on a header that is whole in its page. */
  private validHeader(buf: Buffer, pos: number, lsn: number): boolean {
    const rmid = buf[pos + 17]!;
    if (rmid > RM_MAX_BUILTIN_ID && rmid < RM_MIN_CUSTOM_ID) {
      this.finish('end-of-wal', lsn, `invalid resource manager id ${rmid} at ${lsnText(lsn)}`);
      return false;
    }
    if (this.prevRecord !== 0) {
      const prev = buf.readUInt32LE(pos + 8) + buf.readUInt32LE(pos + 12) * 0x1_0000_0000;
      if (prev !== this.prevRecord) {
        this.finish(
          'end-of-wal',
          lsn,
          `record at ${lsnText(lsn)} has incorrect prev-link ${lsnText(prev)} (expected ${lsnText(this.prevRecord)})`,
        );
        return false;
      }
    }
    return true;
  }

  /** DecodeXLogRecord: the block headers, then images and data in block order, then the main data. */
  private decodeRecord(buf: Buffer, base: number, lsn: number, endLsn: number): WalRecord | undefined {
    const totLen = buf.readUInt32LE(base);
    // Headers split across pages are checked only now that they are whole.
    if (base === 0 && buf.length === totLen && !this.validHeader(buf, 0, lsn)) return undefined;
    const end = base + totLen;
    if (this.checkCrc) {
      let c = crc32cUpdate(0xffffffff, buf, base + RECORD_HEADER_SIZE, end);
      c = crc32cUpdate(c, buf, base, base + RECORD_CRC_OFFSET);
      if ((c ^ 0xffffffff) >>> 0 !== buf.readUInt32LE(base + RECORD_CRC_OFFSET)) {
        this.finish('end-of-wal', lsn, `incorrect resource manager data checksum in record at ${lsnText(lsn)}`);
        return undefined;
      }
    }
    const blocks: WalBlockRef[] = [];
    let p = base + RECORD_HEADER_SIZE;
    let dataTotal = 0;
    let mainLen = 0;
    let toplevelXid = 0;
    let lastLocator: WalBlockRef | undefined;
    let bad: string | undefined;
    const blockSize = this.blockSize;
    while (end - p > dataTotal) {
      const id = buf[p]!;
      if (id === XLR_BLOCK_ID_DATA_SHORT) {
        if (end - p < 2) break;
        mainLen = buf[p + 1]!;
        p += 2;
        dataTotal += mainLen;
        break;
      }
      if (id === XLR_BLOCK_ID_DATA_LONG) {
        if (end - p < 5) break;
        mainLen = buf.readUInt32LE(p + 1);
        p += 5;
        dataTotal += mainLen;
        break;
      }
      if (id === XLR_BLOCK_ID_ORIGIN) {
        p += 3;
        continue;
      }
      if (id === XLR_BLOCK_ID_TOPLEVEL_XID) {
        if (end - p < 5) break;
        toplevelXid = buf.readUInt32LE(p + 1);
        p += 5;
        continue;
      }
      if (id > XLR_MAX_BLOCK_ID || (blocks.length > 0 && id <= blocks[blocks.length - 1]!.id)) {
        bad = `invalid block id ${id}`;
        break;
      }
      if (end - p < 4) break;
      const flags = buf[p + 1]!;
      const dataLength = buf.readUInt16LE(p + 2);
      p += 4;
      const hasImage = (flags & BKPBLOCK_HAS_IMAGE) !== 0;
      const hasData = (flags & BKPBLOCK_HAS_DATA) !== 0;
      if (hasData !== dataLength > 0) {
        bad = `block ${id}: data length ${dataLength} with has-data ${hasData}`;
        break;
      }
      let bimgInfo = 0;
      let holeOffset = 0;
      let holeLength = 0;
      let imageLength = 0;
      if (hasImage) {
        if (end - p < 5) break;
        imageLength = buf.readUInt16LE(p);
        holeOffset = buf.readUInt16LE(p + 2);
        bimgInfo = buf[p + 4]!;
        p += 5;
        if (bimgInfo & BKPIMAGE_COMPRESSED) {
          if (bimgInfo & BKPIMAGE_HAS_HOLE) {
            if (end - p < 2) break;
            holeLength = buf.readUInt16LE(p);
            p += 2;
          }
        } else if (bimgInfo & BKPIMAGE_HAS_HOLE) holeLength = blockSize - imageLength;
        const compressed = (bimgInfo & BKPIMAGE_COMPRESSED) !== 0;
        const hasHole = (bimgInfo & BKPIMAGE_HAS_HOLE) !== 0;
        if (
          imageLength === 0 ||
          (hasHole && (holeOffset === 0 || holeLength === 0 || imageLength === blockSize)) ||
          (!hasHole && (holeOffset !== 0 || holeLength !== 0)) ||
          (!compressed && !hasHole && imageLength !== blockSize) ||
          holeOffset + holeLength > blockSize
        ) {
          bad = `block ${id}: inconsistent image (length ${imageLength}, hole ${holeOffset}+${holeLength})`;
          break;
        }
        dataTotal += imageLength;
      }
      dataTotal += dataLength;
      let spcOid: number;
      let dbOid: number;
      let relNumber: number;
      if (flags & BKPBLOCK_SAME_REL) {
        if (!lastLocator) {
          bad = `block ${id}: same-rel without a previous relation`;
          break;
        }
        spcOid = lastLocator.spcOid;
        dbOid = lastLocator.dbOid;
        relNumber = lastLocator.relNumber;
      } else {
        if (end - p < 12) break;
        spcOid = buf.readUInt32LE(p);
        dbOid = buf.readUInt32LE(p + 4);
        relNumber = buf.readUInt32LE(p + 8);
        p += 12;
      }
      if (end - p < 4) break;
      const blkno = buf.readUInt32LE(p);
      p += 4;
      const b: WalBlockRef = {
        id,
        spcOid,
        dbOid,
        relNumber,
        fork: flags & BKPBLOCK_FORK_MASK,
        blkno,
        hasImage,
        applyImage: (bimgInfo & BKPIMAGE_APPLY) !== 0,
        willInit: (flags & BKPBLOCK_WILL_INIT) !== 0,
        hasData,
        bimgInfo,
        holeOffset,
        holeLength,
        imageOffset: 0,
        imageLength,
        dataOffset: 0,
        dataLength,
      };
      blocks.push(b);
      lastLocator = b;
    }
    if (bad === undefined && end - p !== dataTotal)
      bad = 'block headers and data lengths do not add up to the record length';
    if (bad !== undefined) {
      this.finish('end-of-wal', lsn, `record at ${lsnText(lsn)} does not parse: ${bad}`);
      return undefined;
    }
    for (const b of blocks) {
      if (b.hasImage) {
        b.imageOffset = p;
        p += b.imageLength;
      }
      if (b.hasData) {
        b.dataOffset = p;
        p += b.dataLength;
      }
    }
    return new WalRecord(
      lsn,
      endLsn,
      totLen,
      buf.readUInt32LE(base + 4),
      buf.readUInt32LE(base + 8) + buf.readUInt32LE(base + 12) * 0x1_0000_0000,
      buf[base + 16]!,
      buf[base + 17]!,
      buf,
      base,
      blocks,
      p,
      mainLen,
      toplevelXid,
      blockSize,
    );
  }
}

export interface WalSegmentBytes {
  bytes: Buffer;
  /** LSN of the segment's first byte (WalSegmentName.parse(name, size).startLsn) */
  startLsn: number;
}

/** Decodes whole segments held in memory: every record, and why decoding stopped. */
export function decodeWalSegments(
  segments: readonly WalSegmentBytes[],
  opts: WalDecoderOptions,
): { records: WalRecord[]; end: WalDecodeEnd; abortedRecords: number[] } {
  const d = new WalDecoder(opts);
  const records: WalRecord[] = [];
  for (const s of segments) {
    for (const r of d.feed(s.bytes, s.startLsn)) records.push(r);
    if (d.stopped) break;
  }
  return { records, end: d.end(), abortedRecords: d.abortedRecords };
}
