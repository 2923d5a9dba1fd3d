// The verify job against a real posix repository in a temp directory: verdicts, references between
// backups, incomplete backups, WAL gaps inside and after a backup's own WAL, timeline switches;
// then archived WAL objects damaged every way verify's default (fast) mode must see, for every
// codec and in an encrypted cluster, with --full seeing them too.
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, test } from 'node:test';
import { silentLogger } from '@pgfleet/core';
import {
  codecExtension,
  encodeFile,
  fixedKeys,
  PosixDriver,
  Repository,
  type Codec,
  type ManifestFile,
} from '@pgfleet/storage';
import { TEST_MANIFEST_KEYS, testWalKey } from '@pgfleet/storage/testing';
import { manifestFile, segmentName, tempRepositories, testBackupWriter } from '../testing/repository-fixtures.js';
import { walLikeSegment, WAL_FIXTURE_SYSTEM_ID } from '../testing/wal-fixtures.js';
import { runVerify, type VerifyOutcome } from './verify.js';

const C = 'main';
const SEG = 1024 * 1024;
const DATA = Buffer.from('data');
const SHA = createHash('sha256').update(DATA).digest('hex');
let repo: Repository;
let root: string;
const newRepository = tempRepositories('pgfleet-verify-');
const backup = testBackupWriter(() => repo, C, DATA, { walSegmentSize: SEG });

const seg = segmentName;
const file = (path: string, backup: string, sha = SHA): ManifestFile => manifestFile(path, backup, sha);

/** Backups here start and stop at the same instant. */
const at = (time: string) => ({ startTime: time, stopTime: time });

/**
 * Backup `label` of base/1 and base/2 read from the backups named (`base2Sha`: base/2's sha256 as
 * the entry says), taken on 2026-01-01 at `hour`:01 with WAL from segment `from` to `to` of
 * timeline 1.
 */
const backupOf = (
  label: string,
  type: 'full' | 'incr',
  span: { from: number; to?: number; hour: number },
  base1: string,
  base2: string,
  base2Sha = SHA,
) =>
  backup(
    label,
    type,
    seg(1, span.from),
    seg(1, span.to ?? span.from),
    [file('base/1', base1), file('base/2', base2, base2Sha)],
    at(`2026-01-01T${String(span.hour).padStart(2, '0')}:01:00Z`),
  );

/** A file of backup F9, which has no manifest (an incomplete backup). */
const incompleteF9 = () => repo.driver.put(repo.backupFileKey(C, 'F9', 'base/1', 'none'), DATA);

/** Archives `body` as WAL file `name` the way the agent does (one pass, block form); returns its key. */
async function archive(r: Repository, name: string, body: Buffer, codec: Codec = 'zstd'): Promise<string> {
  const dir = join(root, 'incoming');
  await mkdir(dir, { recursive: true });
  const path = join(dir, name);
  await writeFile(path, body);
  const { sha256 } = await r.archiveWal(C, name, path, codec, body.length);
  return testWalKey(C, name, sha256, codecExtension(codec));
}

/** Keys of the WAL archived by `wal`, by name. */
const walKeys = new Map<string, string>();

async function wal(name: string, body?: Buffer): Promise<void> {
  walKeys.set(name, await archive(repo, name, body ?? walLikeSegment(name, SEG)));
}

const walKey = (name: string) => walKeys.get(name)!;

const verify = (full = false) => runVerify({ cluster: C, repo, full, log: silentLogger() });

beforeEach(async () => {
  ({ repo, root } = newRepository());
  walKeys.clear();
  await repo.ensureClusterInfo(C, {
    systemIdentifier: WAL_FIXTURE_SYSTEM_ID.toString(),
    pgVersionNum: 150000,
    walSegmentSize: SEG,
  });
  // F1 (WAL 2..3) <- I1 (reads base/1 from F1; WAL 5..5); WAL 1..10 on timeline 1.
  await backupOf('F1', 'full', { from: 2, to: 3, hour: 0 }, 'F1', 'F1');
  await backupOf('I1', 'incr', { from: 5, hour: 1 }, 'F1', 'I1');
  for (let n = 1; n <= 10; n++) await wal(seg(1, n));
});

describe('verify job', () => {
  test('a clean repository: every backup restorable to the end of the newest segment', async () => {
    const v = await verify();
    assert.deepEqual(v.problems, []);
    assert.equal(v.ok, true);
    assert.deepEqual(
      v.backups.map((b) => [b.label, b.restorable, b.fromLsn, b.toLsn, b.toTimeline]),
      [
        ['F1', true, '0/2', '0/B00000', 1],
        ['I1', true, '0/2', '0/B00000', 1],
      ],
    );
    assert.deepEqual(v.walNewest, [seg(1, 10)]);
    assert.equal(v.walSegmentsChecked, 10);
  });

  test('a reference to a missing backup, and one to a backup describing other bytes', async () => {
    await backupOf('I2', 'incr', { from: 6, hour: 2 }, 'F0', 'F1', 'b'.repeat(64));
    const v = await verify();
    const refs = v.problems.filter((p) => p.kind === 'bad-reference').map((p) => [p.label, p.path]);
    assert.deepEqual(refs, [
      ['I2', 'base/1'],
      ['I2', 'base/2'],
    ]);
    // base/1 of F0 is not there at all; base/2 of F1 is there with other bytes.
    assert.deepEqual(
      v.problems.filter((p) => p.kind !== 'bad-reference').map((p) => [p.kind, p.label, p.path]),
      [
        ['missing-file', 'I2', 'base/1'],
        ['checksum-mismatch', 'I2', 'base/2'],
      ],
    );
    const i2 = v.backups.find((b) => b.label === 'I2')!;
    assert.equal(i2.restorable, false);
    assert.match(i2.reasons.join('\n'), /bad reference: base\/1 reads from backup F0, which is not in the repository/);
    assert.equal(v.backups.find((b) => b.label === 'I1')!.restorable, true);
    assert.equal(v.ok, false);
  });

  test('a backup without a manifest is incomplete, not a fault; a corrupt manifest is', async () => {
    await incompleteF9();
    let v = await verify();
    assert.deepEqual(
      v.problems.map((p) => [p.kind, p.label]),
      [['incomplete-backup', 'F9']],
    );
    assert.equal(v.ok, true);
    await repo.driver.put(`${C}/backup/F9/backup.manifest`, Buffer.from('{"format": 1, "label": "F9"'));
    v = await verify();
    assert.deepEqual(
      v.problems.map((p) => [p.kind, p.label, p.key]),
      [['manifest-corrupt', 'F9', `${C}/backup/F9/backup.manifest`]],
    );
    assert.deepEqual(
      v.backups.map((b) => [b.label, b.restorable]),
      [
        ['F1', true],
        ['I1', true],
        ['F9', false],
      ],
    );
    assert.match(
      v.backups[2]!.reasons[0]!,
      /^manifest corrupt: manifest of backup F9 of cluster main .* carries no authentication code/,
    );
  });

  test("a gap inside a backup's own WAL makes it unrestorable; after it, it ends the range", async () => {
    await repo.driver.delete([walKey(seg(1, 3))]);
    await repo.driver.delete([walKey(seg(1, 7))]);
    const v = await verify();
    assert.deepEqual(
      v.problems.map((p) => [p.kind, p.lsnFrom, p.lsnTo, p.segments]),
      [
        ['wal-gap', '0/300000', '0/400000', [seg(1, 3)]],
        ['wal-gap', '0/700000', '0/800000', [seg(1, 7)]],
      ],
    );
    const [f1, i1] = v.backups;
    assert.equal(f1!.restorable, false);
    assert.match(
      f1!.reasons[0]!,
      /WAL gap \[0\/300000, 0\/400000\) on timeline 1: segment 000000010000000000000003 missing, inside the WAL the backup needs/,
    );
    assert.equal(i1!.restorable, true);
    assert.equal(i1!.toLsn, '0/700000');
    assert.match(i1!.reasons[0]!, /^recovery stops at 0\/700000: WAL gap \[0\/700000, 0\/800000\)/);
  });

  test('planted WAL (no MAC, a wrong one) is named and never used: a planted copy alone breaks continuity, one beside the genuine copy does not', async () => {
    const forged = Buffer.from('forged');
    const sha = createHash('sha256').update(forged).digest('hex');
    // Beside the genuine segment 4; instead of segment 7 (deleted); a crafted history for timeline 2.
    const beside = `${C}/wal/${seg(1, 4).slice(0, 16)}/${seg(1, 4)}-${sha}.zst`;
    const instead = `${C}/wal/${seg(1, 7).slice(0, 16)}/${seg(1, 7)}-${sha}-${'0'.repeat(32)}.zst`;
    const history = `${C}/wal/timelines/00000002.history-${sha}`;
    await repo.driver.delete([walKey(seg(1, 7))]);
    for (const key of [beside, instead, history]) await repo.driver.put(key, forged);
    for (let n = 9; n <= 12; n++) await wal(seg(2, n));
    const v = await verify();
    assert.deepEqual(
      v.problems.map((p) => [p.kind, p.path, p.key]).sort(),
      [
        ['wal-unauthenticated', '00000002.history', history],
        ['wal-unauthenticated', seg(1, 4), beside],
        ['wal-unauthenticated', seg(1, 7), instead],
      ].sort(),
    );
    // Timeline 2 is not followed: its only history is planted.
    assert.deepEqual(
      v.backups.map((b) => [b.label, b.toLsn, b.toTimeline]),
      [
        ['F1', '0/700000', 1],
        ['I1', '0/700000', 1],
      ],
    );
  });

  test('an empty stored segment is named and breaks continuity', async () => {
    await truncate(join(root, walKey(seg(1, 5))), 0);
    const v = await verify();
    assert.deepEqual(
      v.problems.map((p) => [p.kind, p.path]),
      [['wal-empty', seg(1, 5)]],
    );
    assert.equal(v.backups[1]!.restorable, false);
    assert.equal(v.backups[0]!.restorable, true);
    assert.equal(v.backups[0]!.toLsn, '0/500000');
  });

  test('follows a timeline history to the newer timeline', async () => {
    await wal('00000002.history', Buffer.from('1\t0/900100\tno recovery target specified\n'));
    for (let n = 9; n <= 12; n++) await wal(seg(2, n));
    const v = await verify();
    assert.deepEqual(v.problems, []);
    assert.deepEqual(
      v.backups.map((b) => [b.label, b.toLsn, b.toTimeline]),
      [
        ['F1', '0/D00000', 2],
        ['I1', '0/D00000', 2],
      ],
    );
    assert.deepEqual(v.walNewest, [seg(1, 10), seg(2, 12)]);
  });

  test('checks the archive as it lists it: the first WAL object is read after one directory is listed, a forged name in a later one is still named', async () => {
    // Four more timeline+log directories after 0000000100000000, the last with a forged copy beside a genuine one.
    const names = [1, 2, 3, 4].map((log) => `00000001${log.toString(16).toUpperCase().padStart(8, '0')}00000000`);
    for (const n of names) await wal(n);
    const forged = `${C}/wal/${names[3]!.slice(0, 16)}/${names[3]}-${SHA}-${'0'.repeat(32)}.zst`;
    await repo.driver.put(forged, DATA);
    let listed = 0;
    let listedAtFirstRead: number | undefined;
    const listWalKeys = repo.listWalKeys.bind(repo);
    repo.listWalKeys = async function* (cluster) {
      for await (const batch of listWalKeys(cluster)) {
        listed++;
        yield batch;
      }
    };
    const walk = repo.objects.walk.bind(repo.objects);
    repo.objects.walk = (...a) => {
      listedAtFirstRead ??= listed;
      return walk(...a);
    };
    const v = await verify();
    assert.equal(listed, 5);
    // The first directory, and at most the next one listed ahead while it is checked.
    assert.ok(listedAtFirstRead !== undefined && listedAtFirstRead <= 2, `${listedAtFirstRead} directories listed`);
    assert.deepEqual(
      v.problems.filter((p) => p.kind === 'wal-unauthenticated').map((p) => [p.path, p.key]),
      [[names[3], forged]],
    );
    assert.equal(v.walSegmentsChecked, 15);
    assert.deepEqual(v.walNewest, [names[3]]);
  });

  test('manifests are read as streams, never whole; a backup checked before the backup it reads from, and a corrupt one referred to before its turn, reported once at its turn', async () => {
    repo.readManifest = () => Promise.reject(new Error('verify read a manifest whole'));
    // A0 and A1 sort before the backups they read from.
    await backupOf('A0', 'incr', { from: 6, hour: 2 }, 'F1', 'A0');
    await backupOf('A1', 'incr', { from: 7, hour: 3 }, 'F9', 'A1');
    await incompleteF9();
    await repo.driver.put(`${C}/backup/F9/backup.manifest`, Buffer.from('{"format": 1, "label": "F9"'));
    const v = await verify();
    assert.deepEqual(
      v.problems.map((p) => [p.kind, p.label, p.path]),
      [
        ['bad-reference', 'A1', 'base/1'],
        ['manifest-corrupt', 'F9', 'backup.manifest'],
      ],
    );
    assert.deepEqual(
      v.backups.map((b) => [b.label, b.restorable, b.filesChecked]),
      [
        ['F1', true, 2],
        ['I1', true, 2],
        ['A0', true, 2],
        ['A1', false, 2],
        ['F9', false, 0],
      ],
    );
  });
});

/**
 * Archived WAL objects damaged the ways the issue lists, one segment each, in every codec and in
 * an encrypted cluster: default verify finds each with its kind by walking the stored frames and
 * decoding only the first; --full finds the same segments. Segments of 2 MiB: two frames each.
 */
describe('verify: damaged WAL objects, found without decompressing them', () => {
  const SEG2 = 2 << 20;
  const OTHER_SYSID = 7000000000000000001n;
  /** The encrypted form's header and per-frame overhead (docs/repository-format.md, "Encryption"). */
  const CIPHER_HEADER = 29;
  const CIPHER_FRAME_OVERHEAD = 21;

  /** A repository of 2 MiB segments 1..8 on timeline 1 (segment 8 of another cluster), plaintext or encrypted. */
  async function archiveOf(codec: Codec, encrypted: boolean) {
    ({ root } = newRepository());
    repo = new Repository(
      new PosixDriver(root),
      TEST_MANIFEST_KEYS,
      encrypted ? fixedKeys({ [C]: randomBytes(32) }) : undefined,
    );
    await repo.ensureClusterInfo(C, {
      systemIdentifier: WAL_FIXTURE_SYSTEM_ID.toString(),
      pgVersionNum: 150000,
      walSegmentSize: SEG2,
    });
    const keys = new Map<string, string>();
    for (let n = 1; n <= 8; n++) {
      const name = seg(1, n);
      // Segment 8 comes from another cluster (another system identifier), archived under this one's name.
      keys.set(
        name,
        await archive(repo, name, walLikeSegment(name, SEG2, n === 8 ? OTHER_SYSID : WAL_FIXTURE_SYSTEM_ID), codec),
      );
    }
    return keys;
  }

  /** Where the first frame of a segment's stored object ends (the block form: encodeFile gives it frame by frame; gzip: a third in). */
  async function firstFrameEnd(name: string, object: string, codec: Codec, encrypted: boolean): Promise<number> {
    const path = join(root, 'incoming', name);
    if (codec === 'none') return encrypted ? CIPHER_HEADER + CIPHER_FRAME_OVERHEAD + SEG2 / 2 : SEG2 / 2;
    // One deflate stream, no frames: a third of it.
    if (codec === 'gzip') return Math.floor((await readFile(object)).length / 3);
    const { stored } = await encodeFile(path, codec as 'zstd' | 'lz4');
    return (encrypted ? CIPHER_HEADER + CIPHER_FRAME_OVERHEAD : 0) + stored[0]!.length;
  }

  const problemsOf = (v: VerifyOutcome) =>
    v.problems
      .filter((p) => p.kind !== 'wal-gap')
      .map((p) => [p.path, p.kind])
      .sort();

  const cases: { codec: Codec; encrypted: boolean }[] = [
    { codec: 'zstd', encrypted: false },
    { codec: 'lz4', encrypted: false },
    { codec: 'none', encrypted: false },
    { codec: 'gzip', encrypted: false },
    { codec: 'zstd', encrypted: true },
    { codec: 'none', encrypted: true },
  ];
  for (const { codec, encrypted } of cases) {
    test(`${codec}${encrypted ? ', encrypted' : ''}: cut in half, cut at a frame boundary, emptied, bytes appended, swapped, another cluster's`, async (t) => {
      const keys = await archiveOf(codec, encrypted);
      const path = (n: number) => join(root, keys.get(seg(1, n))!);
      let v = await verify();
      assert.deepEqual(
        problemsOf(v),
        [[seg(1, 8), 'wal-foreign']],
        "undamaged, only the other cluster's segment is found",
      );
      assert.deepEqual(v.walNewest, [seg(1, 8)]);

      const half = await readFile(path(2));
      await writeFile(path(2), half.subarray(0, half.length >> 1));
      await truncate(path(3), await firstFrameEnd(seg(1, 3), path(3), codec, encrypted));
      await truncate(path(4), 0);
      await writeFile(path(5), Buffer.concat([await readFile(path(5)), Buffer.from('appended bytes')]));
      // Segment 7's stored bytes under segment 6's name (same codec, same cluster).
      await writeFile(path(6), await readFile(path(7)));

      const cutKind = codec === 'gzip' ? undefined : 'wal-truncated';
      const expected = new Map<string, string | undefined>([
        [seg(1, 2), cutKind],
        [seg(1, 3), cutKind],
        [seg(1, 4), 'wal-empty'],
        // none: the stored size says it; encrypted: bytes after the last frame; the others: no frame there.
        [seg(1, 5), 'wal-corrupt'],
        // Encrypted: segment 7's frames fail authentication under segment 6's key; plaintext: its page header is segment 7's.
        [seg(1, 6), encrypted ? 'wal-corrupt' : 'wal-foreign'],
        [seg(1, 8), 'wal-foreign'],
      ]);
      v = await verify();
      for (const p of v.problems)
        if (p.kind !== 'wal-gap') t.diagnostic(`${p.kind}: ${p.message.replace(/ \(main\/wal\/.*\)$/, '')}`);
      const found = problemsOf(v);
      assert.deepEqual(
        found.map(([p]) => p),
        [...expected.keys()],
        `default verify flags exactly the damaged segments: ${JSON.stringify(v.problems, null, 1)}`,
      );
      for (const [p, kind] of found) {
        const want = expected.get(p!);
        // gzip has no frames: a cut object's trailer gives an arbitrary size, below a segment or above it.
        if (want === undefined) assert.ok(kind === 'wal-truncated' || kind === 'wal-corrupt', `${p}: ${kind}`);
        else assert.equal(kind, want, `${p}: ${JSON.stringify(v.problems.find((x) => x.path === p))}`);
      }
      for (const p of v.problems.filter((x) => x.kind !== 'wal-gap')) assert.equal(p.key, keys.get(p.path));
      assert.match(
        v.problems.find((p) => p.path === seg(1, 8))!.message,
        /belongs to database system 7000000000000000001/,
      );
      if (!encrypted)
        assert.match(v.problems.find((p) => p.path === seg(1, 6))!.message, /holds WAL of another position/);

      const full = await verify(true);
      assert.deepEqual(
        problemsOf(full).map(([p]) => p),
        [...expected.keys()],
        `--full flags the same segments: ${JSON.stringify(full.problems, null, 1)}`,
      );
    });
  }

  test('default verify decodes only the first frame of each segment: a flipped byte inside a later frame is left to --full', async () => {
    const keys = await archiveOf('zstd', false);
    const p = join(root, keys.get(seg(1, 2))!);
    const bytes = await readFile(p);
    const end = await firstFrameEnd(seg(1, 2), p, 'zstd', false);
    // A byte inside the second frame's compressed data (past its headers): structure and size still hold.
    const at = end + Math.floor((bytes.length - end) / 2);
    bytes[at] = bytes[at]! ^ 0x01;
    await writeFile(p, bytes);
    const fast = await verify();
    assert.deepEqual(
      problemsOf(fast).filter(([n]) => n !== seg(1, 8)),
      [],
      'the walk cannot see inside a frame',
    );
    const full = await verify(true);
    assert.deepEqual(
      problemsOf(full).filter(([n]) => n !== seg(1, 8)),
      [[seg(1, 2), 'wal-corrupt']],
    );
  });
});
