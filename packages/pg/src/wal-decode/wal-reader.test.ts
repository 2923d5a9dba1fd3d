// The WAL reader against PostgreSQL's own: a real PostgreSQL 15 writes a varied workload, its
// archived segments are decoded here and by pg_waldump, record by record. Then: decoding starting
// at each segment boundary and stitching gives the same records; damaged input stops cleanly.
import { strict as assert } from 'node:assert';
import { after, before, test } from 'node:test';
import * as zlib from 'node:zlib';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { startWalCluster, waldump, type ArchivedSegment, type WalCluster, type WaldumpRecord } from '@pgfleet/testkit';
import { rebuildBlockImage } from './block-image.js';
import { crc32c } from './crc32c.js';
import { RMGR_NAMES, FORK_NAMES, lsnNumber, lsnText } from './wal-format.js';
import { WalDecoder, decodeWalSegments, type WalRecord } from './wal-reader.js';
import { interpretHeapRecord, interpretSmgrRecord, interpretXactRecord, interpretXlogRecord } from './rmgr-records.js';

let cluster: WalCluster;
let segs: ArchivedSegment[];
let dump: WaldumpRecord[];
let full: WalRecord[];
let postgresDbOid = 0;

/** Inserts, updates, deletes, COPY (multi-insert), FPIs (plain, pglz, zstd, lz4), 2PC, big records crossing segments, a restore point, a switch. */
const LOGICAL_WORKLOAD = [
  'create table lg (id int primary key, v text)',
  "insert into lg select g, 'x' from generate_series(1, 100) g",
  "begin; savepoint s; insert into lg values (-1, 'sub'); update lg set v = 'y' where id < 10; release s; commit",
  'truncate lg',
  "select pg_create_restore_point('after-logical')",
];

const WORKLOAD = [
  'create table acc (id int primary key, bal int, filler text)',
  "insert into acc select g, 0, repeat('f', 80) from generate_series(1, 20000) g",
  'update acc set bal = bal + 1 where id % 3 = 0',
  'delete from acc where id % 7 = 0',
  'create table big (id int, v text)',
  'alter table big alter column v set storage plain',
  'insert into big select g, repeat(md5(g::text), 240) from generate_series(1, 50) g',
  'copy acc (id, bal, filler) from program \'seq 100001 130000 | sed -e "s/$/\\t1\\tcopied/"\'',
  'checkpoint',
  'update acc set bal = bal + 1 where id % 50 = 1',
  'set wal_compression = pglz; checkpoint; update acc set bal = bal + 2 where id % 50 = 2',
  'set wal_compression = zstd; checkpoint; update acc set bal = bal + 3 where id % 50 = 3',
  'set wal_compression = lz4; checkpoint; update acc set bal = bal + 4 where id % 50 = 4',
  "select pg_logical_emit_message(false, 'pgfleet', repeat('x', 300000)) from generate_series(1, 70)",
  "begin; insert into acc values (-1, 0, 'prepared'); prepare transaction 'p1'",
  "commit prepared 'p1'",
  "begin; insert into acc values (-2, 0, 'prepared'); prepare transaction 'p2'",
  "rollback prepared 'p2'",
  "begin; savepoint a; insert into acc values (-4, 0, 'sub'); release a; savepoint b; insert into acc values (-5, 0, 'sub'); commit",
  "begin; insert into acc values (-6, 0, 'aborted'); rollback",
  'drop table big',
  "select pg_create_restore_point('wal-reader-test')",
  'select pg_switch_wal()',
  'insert into acc values (-3, 0, $$after switch$$)',
  'vacuum acc',
];

before(async () => {
  cluster = await startWalCluster();
  const rows = await cluster.pg.query<{ first: string }>(
    'select pg_walfile_name(pg_current_wal_insert_lsn()) as first',
  );
  const first = rows[0]!.first;
  for (const sql of WORKLOAD) await cluster.pg.query(sql);
  // Then wal_level=logical, for the records only it writes: heap TRUNCATE, and subtransactions'
  // records naming their top transaction (XLR_BLOCK_ID_TOPLEVEL_XID).
  await cluster.pg.query('alter system set wal_level = logical');
  await cluster.pg.restart();
  for (const sql of LOGICAL_WORKLOAD) await cluster.pg.query(sql);
  const db = await cluster.pg.query<{ oid: number }>("select oid::int from pg_database where datname = 'postgres'");
  postgresDbOid = db[0]!.oid;
  const last = await cluster.switchAndArchive();
  segs = await cluster.segments(first, last);
  dump = await waldump(cluster, first, last);
  const r = decodeWalSegments(segs, { segmentSize: cluster.segmentSize });
  full = r.records;
});

after(async () => {
  await cluster?.stop();
});

function forkName(f: number): string {
  return FORK_NAMES[f] ?? String(f);
}

test('every record of the archived segments equals pg_waldump: LSN, prev, rmgr, xid, lengths, block references and FPW', () => {
  assert.ok(segs.length >= 4, `the workload spans several segments (got ${segs.length})`);
  assert.ok(dump.length > 50_000, `pg_waldump printed ${dump.length} records`);
  assert.equal(full.length, dump.length, 'as many records as pg_waldump');
  for (let i = 0; i < dump.length; i++) {
    const w = dump[i]!;
    const r = full[i]!;
    const mine = {
      lsn: lsnText(r.lsn),
      prev: lsnText(r.prevLsn),
      rmgr: RMGR_NAMES[r.rmid] ?? String(r.rmid),
      xid: r.xid,
      totLen: r.totLen,
      recLen: r.totLen - r.imageBytes,
      blocks: r.blocks.map((b) => ({
        id: b.id,
        rel: `${b.spcOid}/${b.dbOid}/${b.relNumber}`,
        fork: forkName(b.fork),
        blk: b.blkno,
        fpw: b.hasImage,
      })),
    };
    const theirs = {
      lsn: lsnText(lsnNumber(w.lsn)),
      prev: lsnText(lsnNumber(w.prev)),
      rmgr: w.rmgr,
      xid: w.xid,
      totLen: w.totLen,
      recLen: w.recLen,
      blocks: w.blocks,
    };
    assert.deepEqual(mine, theirs, `record ${i} at ${w.lsn}: ${w.desc.slice(0, 200)}`);
  }
});

/** TimestampTz as pg_waldump prints it in UTC: 2026-12-06 22:01:47.213965 UTC */
function pgTime(micros: number): string {
  const d = new Date(Math.floor(micros / 1000));
  const frac = String(micros % 1_000_000).padStart(6, '0');
  return `${d.toISOString().slice(0, 19).replace('T', ' ')}.${frac} UTC`;
}

const relPath = (l: { spcOid: number; dbOid: number; relNumber: number }) =>
  l.spcOid === 1663 ? `base/${l.dbOid}/${l.relNumber}` : `pg_tblspc/${l.spcOid}/PG_15_*/${l.dbOid}/${l.relNumber}`;

test('the interpreters read what pg_waldump describes: heap offsets and tuple counts, commit/abort time, subxacts and dropped files, smgr create, restore point', () => {
  const seen = new Map<string, number>();
  const count = (k: string) => seen.set(k, (seen.get(k) ?? 0) + 1);
  for (let i = 0; i < dump.length; i++) {
    const w = dump[i]!;
    const r = full[i]!;
    const at = `${w.lsn} ${w.desc.slice(0, 160)}`;
    if (w.rmgr === 'Heap' || w.rmgr === 'Heap2') {
      const h = interpretHeapRecord(r);
      const op = w.desc.split(' ')[0]!.replace('+INIT', '');
      if (op === 'INSERT' || op === 'DELETE') {
        assert.ok(h && h.kind === op.toLowerCase(), at);
        assert.equal(`off ${h.offnum}`, /off \d+/.exec(w.desc)![0], at);
        count(op);
      } else if (op === 'UPDATE' || op === 'HOT_UPDATE') {
        assert.ok(h && h.kind === (op === 'UPDATE' ? 'update' : 'hot-update'), at);
        const m = /^\S+ off (\d+) .*; new off (\d+)/.exec(w.desc)!;
        assert.deepEqual([h.oldOffnum, h.offnum], [Number(m[1]), Number(m[2])], at);
        count(op);
      } else if (op === 'MULTI_INSERT') {
        assert.ok(h && h.kind === 'insert', at);
        assert.equal(h.rows, Number(/(\d+) tuples/.exec(w.desc)![1]), at);
        count(op);
      }
      if (op === 'TRUNCATE') {
        assert.ok(h && h.kind === 'truncate' && h.truncate, at);
        const relids = / relids((?: \d+)+)/.exec(w.desc)![1]!.trim().split(' ').map(Number);
        assert.deepEqual(h.truncate.relOids, relids, at);
        assert.equal(h.truncate.dbOid, postgresDbOid, at);
        count(op);
      }
    } else if (w.rmgr === 'Transaction') {
      const x = interpretXactRecord(r);
      const op = w.desc.split(' ')[0]!;
      if (['COMMIT', 'ABORT', 'COMMIT_PREPARED', 'ABORT_PREPARED'].includes(op)) {
        assert.ok(x && x.kind === op.toLowerCase().replace('_', '-'), at);
        assert.ok(w.desc.includes(pgTime(x.timeMicros!)), `${at}: ${pgTime(x.timeMicros!)}`);
        const subs = /subxacts: ([\d ]+)/.exec(w.desc)?.[1]?.trim().split(' ').map(Number) ?? [];
        assert.deepEqual(x.subxacts, subs, at);
        const rels = /rels: ([^;]+)/.exec(w.desc)?.[1]?.trim().split(' ') ?? [];
        assert.deepEqual(x.droppedFiles.map(relPath), rels, at);
        if (op.endsWith('PREPARED')) assert.equal(x.xid, Number(/PREPARED (\d+):/.exec(w.desc)![1]), at);
        count(op);
        if (subs.length) count('subxacts');
        if (rels.length) count('rels');
      }
    } else if (w.rmgr === 'Storage' && w.desc.startsWith('CREATE ')) {
      const c = interpretSmgrRecord(r);
      assert.ok(c && c.kind === 'create', at);
      assert.ok(w.desc.startsWith(`CREATE ${relPath(c.locator)}`), at);
      count('CREATE');
    } else if (w.rmgr === 'XLOG' && w.desc.startsWith('RESTORE_POINT')) {
      const x = interpretXlogRecord(r);
      assert.ok(x && x.kind === 'restore-point' && w.desc === `RESTORE_POINT ${x.name}`, at);
      count('RESTORE_POINT');
    }
  }
  const expected = ['INSERT', 'DELETE', 'UPDATE', 'HOT_UPDATE', 'MULTI_INSERT', 'COMMIT', 'ABORT', 'COMMIT_PREPARED'];
  expected.push('ABORT_PREPARED', 'CREATE', 'RESTORE_POINT', 'rels', 'subxacts', 'TRUNCATE');
  // Subtransactions' records at wal_level=logical name their top transaction.
  const sub = full.filter((r) => r.toplevelXid !== 0);
  assert.ok(sub.length > 0, 'records with a top-level xid');
  assert.ok(sub.every((r) => r.toplevelXid < r.xid));
  for (const k of expected) {
    assert.ok((seen.get(k) ?? 0) > 0, `the workload has ${k} records`);
  }
});

test('the workload produced what the comparison is meant to cover', () => {
  const crossesSegment = full.some(
    (r) => Math.floor(r.lsn / cluster.segmentSize) !== Math.floor((r.endLsn - 1) / cluster.segmentSize),
  );
  assert.ok(crossesSegment, 'a record crosses a segment boundary');
  const crossesPage = full.filter((r) => Math.floor(r.lsn / 8192) !== Math.floor((r.endLsn - 1) / 8192)).length;
  assert.ok(crossesPage > 100, `records crossing pages: ${crossesPage}`);
  assert.ok(
    full.some((r) => r.rmid === 0 && r.rmgrInfo === 0x40),
    'an XLOG_SWITCH',
  );
  const images = full.flatMap((r) => r.blocks.filter((b) => b.hasImage).map((b) => ({ r, b })));
  const kinds = new Set(images.map(({ b }) => b.bimgInfo & 0x1c));
  assert.deepEqual(
    [...kinds].sort((a, b) => a - b),
    [0, 0x04, 0x08, 0x10],
    'plain, pglz, lz4 and zstd images',
  );
  // Every image rebuilds to a page whose header is consistent (pd_lower <= pd_upper <= pd_special = 8192 for heap).
  for (const { r, b } of images) {
    const page = r.blockImage(b);
    assert.ok(page, `image of block ${b.blkno} at ${lsnText(r.lsn)} rebuilds`);
    assert.equal(page.length, 8192);
    const lower = page.readUInt16LE(12);
    const upper = page.readUInt16LE(14);
    const special = page.readUInt16LE(16);
    assert.ok(24 <= lower && lower <= upper && upper <= special && special <= 8192, `page header of ${lsnText(r.lsn)}`);
    assert.equal(page.readUInt16LE(18), 8192 | 4, 'pd_pagesize_version');
  }
});

test('with the CRC check on, every record passes it; CRC-32C of the standard check string', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  const r = decodeWalSegments(segs, { segmentSize: cluster.segmentSize, checkCrc: true });
  assert.equal(r.records.length, full.length);
});

test('decoding from each segment boundary with endBefore at the next, then stitching, gives exactly the full decode', () => {
  const size = cluster.segmentSize;
  const stitched: WalRecord[] = [];
  for (let i = 0; i < segs.length; i++) {
    const endBefore = i + 1 < segs.length ? segs[i + 1]!.startLsn : undefined;
    const part = decodeWalSegments(segs.slice(i, i + 2), { segmentSize: size, ...(endBefore ? { endBefore } : {}) });
    if (endBefore !== undefined) assert.equal(part.end.reason, 'range-end', `range ${i}: ${part.end.detail}`);
    stitched.push(...part.records);
  }
  assert.deepEqual(
    stitched.map((r) => r.lsn),
    full.map((r) => r.lsn),
  );
});

test("the decode ends where pg_waldump does: after the last segment's XLOG_SWITCH, or at the zeroed rest of a segment", () => {
  const size = cluster.segmentSize;
  const r = decodeWalSegments(segs, { segmentSize: size });
  const last = full[full.length - 1]!;
  assert.equal(last.rmid, 0);
  assert.equal(last.rmgrInfo, 0x40, 'the last record is the switch');
  assert.equal(r.end.reason, 'input-end');
  assert.equal(r.end.lsn, segs[segs.length - 1]!.startLsn + size);
  // The same segment with everything after the switch record zeroed, and the switch itself gone.
  const lastSeg = segs[segs.length - 1]!;
  const zeroed = Buffer.from(lastSeg.bytes);
  zeroed.fill(0, last.lsn - lastSeg.startLsn);
  const z = decodeWalSegments([...segs.slice(0, -1), { bytes: zeroed, startLsn: lastSeg.startLsn }], {
    segmentSize: size,
  });
  assert.equal(z.end.reason, 'end-of-wal');
  assert.equal(z.end.lsn, last.lsn);
  assert.match(z.end.detail, /zeroed/);
  assert.equal(z.records.length, full.length - 1);
});

test('a start LSN inside a segment begins there', () => {
  const pick = full[Math.floor(full.length / 2)]!;
  const seg = segs.findIndex((s) => s.startLsn <= pick.lsn && pick.lsn < s.startLsn + cluster.segmentSize);
  const r = decodeWalSegments(segs.slice(seg), { segmentSize: cluster.segmentSize, startLsn: pick.lsn });
  assert.equal(r.records[0]!.lsn, pick.lsn);
  assert.equal(r.records.length, full.length - full.indexOf(pick));
});

test('WAL of another major is refused with its own error; a wrong segment size too', () => {
  const other = Buffer.from(segs[0]!.bytes);
  other.writeUInt16LE(0xd113, 0); // PostgreSQL 16
  assert.throws(
    () => decodeWalSegments([{ bytes: other, startLsn: segs[0]!.startLsn }], { segmentSize: cluster.segmentSize }),
    (e: unknown) =>
      e instanceof PgfleetError && e.code === ErrorCodes.WalFormatUnsupported.code && /PostgreSQL 16/.test(e.message),
  );
  assert.throws(
    () => decodeWalSegments(segs.slice(0, 1), { segmentSize: cluster.segmentSize * 2 }),
    (e: unknown) => e instanceof PgfleetError && e.code === ErrorCodes.WalDecodeInputInvalid.code,
  );
});

test('a damaged lz4 image or a zstd image expanding past the page is an unknown page, never a throw', () => {
  const lz4 = full.flatMap((r) => r.blocks.filter((b) => b.hasImage && b.bimgInfo & 0x08).map((b) => ({ r, b })));
  assert.ok(lz4.length > 0, 'lz4 images in the workload');
  const { r, b } = lz4[0]!;
  const image = () => Buffer.from(r.buf.subarray(b.imageOffset, b.imageOffset + b.imageLength));
  const rebuild = (bytes: Buffer, info = b.bimgInfo) =>
    rebuildBlockImage(bytes, { ...b, bimgInfo: info, imageOffset: 0, imageLength: bytes.length }, 8192);
  assert.deepEqual(rebuild(image()), r.blockImage(b), 'the image alone rebuilds the same page');
  // Cut short, a back-reference before the start, a literal run past the end, random flips.
  assert.equal(rebuild(image().subarray(0, b.imageLength - 7)), undefined, 'cut');
  const backRef = Buffer.from([0x0f, 0x00, 0x10]); // no literal, match at offset 16 of nothing
  assert.equal(rebuild(backRef), undefined, 'offset before the output start');
  const longLiteral = Buffer.concat([Buffer.from([0xf0, 0xff, 0xff, 0xff]), Buffer.alloc(64)]);
  assert.equal(rebuild(longLiteral), undefined, 'literal length past the input');
  for (let seed = 1; seed <= 200; seed++) {
    const bytes = image();
    for (let i = 0; i < 4; i++) {
      const at = (seed * 7919 + i * 104729) % bytes.length;
      bytes[at] = bytes[at]! ^ (1 + ((seed + i) % 255));
    }
    const page = rebuild(bytes);
    if (page) assert.equal(page.length, 8192);
  }
  // zstd: a 1 MiB frame of zeros is refused without being expanded beyond the page.
  const bomb = zlib.zstdCompressSync(Buffer.alloc(1 << 20));
  assert.equal(rebuild(bomb, 0x02 | 0x10), undefined, 'zstd output capped at the block size');
  // A compression method this decoder does not know: an unknown page, not an error.
  assert.equal(rebuild(image(), 0x02 | 0x20), undefined, 'unknown method');
});

test('a cut segment, a garbage page and a gap stop cleanly at a record boundary', () => {
  const size = cluster.segmentSize;
  const seg = segs[1]!;
  // Cut: half of the second segment.
  const cut = decodeWalSegments([segs[0]!, { bytes: seg.bytes.subarray(0, size / 2 + 1000), startLsn: seg.startLsn }], {
    segmentSize: size,
  });
  assert.equal(cut.end.reason, 'end-of-wal');
  assert.ok(cut.records.every((r) => r.endLsn <= seg.startLsn + size / 2));
  assert.deepEqual(
    cut.records.map((r) => r.lsn),
    full.slice(0, cut.records.length).map((r) => r.lsn),
  );
  // Garbage page in the middle of the second segment.
  const garbage = Buffer.from(seg.bytes);
  garbage.fill(0x5a, 40 * 8192, 41 * 8192);
  const g = decodeWalSegments([segs[0]!, { bytes: garbage, startLsn: seg.startLsn }], { segmentSize: size });
  assert.equal(g.end.reason, 'end-of-wal');
  assert.match(g.end.detail, /not valid|does not continue/);
  assert.ok(g.records.every((r) => r.endLsn <= seg.startLsn + 41 * 8192));
  // A record crossing a page whose length field is damaged to ~1000 MB: the next page's
  // xlp_rem_len disagrees and decoding stops there (the gathering buffer grows with the pages).
  const crossing = full.find(
    (r) =>
      r.lsn > seg.startLsn &&
      r.endLsn < seg.startLsn + size &&
      Math.floor(r.lsn / 8192) !== Math.floor((r.endLsn - 1) / 8192),
  )!;
  const long = Buffer.from(seg.bytes);
  long.writeUInt32LE(1000 * 1024 * 1024, crossing.lsn - seg.startLsn);
  const l = decodeWalSegments([segs[0]!, { bytes: long, startLsn: seg.startLsn }], { segmentSize: size });
  assert.equal(l.end.reason, 'end-of-wal');
  assert.equal(l.end.lsn, crossing.lsn);
  assert.match(l.end.detail, /continues \d+ bytes of a record/);
  // A gap: segment 0 then segment 2.
  const gap = decodeWalSegments([segs[0]!, segs[2]!], { segmentSize: size });
  assert.equal(gap.end.reason, 'end-of-wal');
  assert.match(gap.end.detail, /does not follow/);
});

test('a record cut by a crash and overwritten (XLP_FIRST_IS_OVERWRITE_CONTRECORD) is abandoned and decoding goes on', () => {
  const size = cluster.segmentSize;
  const seg = segs[1]!;
  const inSeg = full.filter((r) => r.lsn >= seg.startLsn && r.endLsn <= seg.startLsn + size);
  // A record crossing from one page into the next, and a small record to stand in for the new one.
  const i = inSeg.findIndex((r, k) => k > 0 && Math.floor(r.lsn / 8192) + 1 === Math.floor((r.endLsn - 1) / 8192));
  const cut = inSeg[i]!;
  const before = inSeg[i - 1]!;
  const small = inSeg.find(
    (r) => r.rmid !== 0 && r.totLen <= 100 && Math.floor(r.lsn / 8192) === Math.floor((r.endLsn - 1) / 8192),
  )!;
  const bytes = Buffer.from(seg.bytes);
  const page = Math.floor((cut.endLsn - 1) / 8192) * 8192 - seg.startLsn;
  bytes.writeUInt16LE((bytes.readUInt16LE(page + 2) & ~0x0001) | 0x0008, page + 2);
  bytes.writeUInt32LE(0, page + 16);
  bytes.fill(0, page + 24, page + 8192);
  seg.bytes.copy(bytes, page + 24, small.lsn - seg.startLsn, small.lsn - seg.startLsn + small.totLen);
  // Its prev-link: the last record before the abandoned one, as PostgreSQL writes it.
  bytes.writeUInt32LE(before.lsn % 0x1_0000_0000, page + 24 + 8);
  bytes.writeUInt32LE(Math.floor(before.lsn / 0x1_0000_0000), page + 24 + 12);
  const r = decodeWalSegments([segs[0]!, { bytes, startLsn: seg.startLsn }], { segmentSize: size });
  assert.deepEqual(r.abortedRecords, [cut.lsn]);
  const last = r.records[r.records.length - 1]!;
  assert.equal(last.lsn, seg.startLsn + page + 24, 'the record written over the cut one is decoded');
  assert.equal(last.totLen, small.totLen);
  assert.equal(r.records[r.records.length - 2]!.lsn, before.lsn);
  assert.equal(r.end.reason, 'end-of-wal');
});

test('random byte flips never throw anything but a PGF error and never loop', () => {
  const size = cluster.segmentSize;
  let seed = 12345;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed;
  };
  const base = segs[1]!;
  for (let round = 0; round < 60; round++) {
    const bytes = Buffer.from(base.bytes);
    const flips = 1 + (rand() % 20);
    // Flip bytes near the start so that decoding reaches them quickly.
    const span = round % 2 === 0 ? 64 * 1024 : size;
    for (let k = 0; k < flips; k++) {
      const at = rand() % span;
      bytes[at] = bytes[at]! ^ (1 << (rand() % 8));
    }
    try {
      const d = new WalDecoder({ segmentSize: size, checkCrc: round % 3 === 0 });
      let n = 0;
      for (const r of d.feed(bytes, base.startLsn)) {
        n++;
        for (const b of r.blocks) {
          r.blockImage(b);
          r.blockData(b);
        }
        r.mainData();
      }
      for (const _ of d.feed(segs[2]!.bytes, segs[2]!.startLsn)) n++;
      assert.ok(d.end().reason.length > 0 && n >= 0);
    } catch (e) {
      assert.ok(e instanceof PgfleetError, `round ${round}: ${(e as Error).stack}`);
    }
  }
});
