/**
 * `pgfleet verify` end to end: a real backup and archived WAL verify clean ("restorable to
 * [stop, end of WAL]"); then one fault at a time is injected into the real repository directory
 * (a flipped byte in a stored backup file, a deleted backup file, a WAL segment missing in the
 * middle, a WAL object truncated to 0 bytes, WAL objects cut in half, cut at a frame boundary,
 * extended or holding another segment's bytes, a corrupt manifest). Verify must name each one
 * precisely (file path, segment name, LSN range, manifest key), give the right verdict and exit
 * non-zero with PGF-5005; after the fault is repaired it verifies clean again.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MAX_FRAME_CONTENT, scanZstdFrames } from '@pgfleet/storage';
import { startFleet, type Fleet, type RunResult } from './harness.js';

const CLUSTER = 'ver';

interface BackupJson {
  label: string;
  stopLsn: string;
  walStart: string;
  walStop: string;
}
interface ProblemJson {
  kind: string;
  label: string;
  path: string;
  key: string;
  message: string;
  timeline: number;
  lsnFrom: string;
  lsnTo: string;
  segments: string[];
}
interface VerdictJson {
  label: string;
  restorable: boolean;
  fromLsn: string;
  toLsn: string;
  toTimeline: number;
  reasons: string[];
  filesChecked: number;
}
interface VerifyJson {
  ok: boolean;
  full: boolean;
  backups: VerdictJson[];
  problems: ProblemJson[];
  walSegmentsChecked: number;
  walNewest: string[];
}
interface ManifestFileJson {
  path: string;
  storedSize: number;
  codec: string;
  backup: string;
  chunks?: unknown[];
}

/** LSN of the first byte of a segment (or, with +1, of the next one). */
function segmentLsn(name: string, segmentSize: number, plus = 0): string {
  const log = BigInt(`0x${name.slice(8, 16)}`);
  const seg = BigInt(`0x${name.slice(16, 24)}`) + BigInt(plus);
  const v = log * 0x100000000n + seg * BigInt(segmentSize);
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;
}

describe('verify: a clean repository, then each fault named precisely', { timeout: 240_000 }, () => {
  let fleet: Fleet;
  let backup: BackupJson;
  let segmentSize: number;
  let backupDir: string;

  /** Archived WAL segments: name -> absolute path of its stored object. */
  async function walObjects(): Promise<Map<string, string>> {
    const base = join(fleet.repoDir, CLUSTER, 'wal');
    const out = new Map<string, string>();
    for (const dir of await readdir(base)) {
      if (dir === 'timelines') continue;
      for (const f of await readdir(join(base, dir))) {
        const m = /^([0-9A-F]{24})-[0-9a-f]{64}/.exec(f);
        if (m) out.set(m[1]!, join(base, dir, f));
      }
    }
    return new Map([...out.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)));
  }

  async function verify(...extra: string[]): Promise<{ r: RunResult; v: VerifyJson }> {
    const r = await fleet.cli('verify', CLUSTER, '--wait', '--output', 'json', ...extra);
    let job: { verify?: VerifyJson };
    try {
      job = JSON.parse(r.stdout) as { verify?: VerifyJson };
    } catch {
      assert.fail(`verify printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    }
    assert.ok(job.verify, `no verify result:\n${r.stdout}\n${r.stderr}`);
    return { r, v: job.verify };
  }

  function assertFailed(r: RunResult, v: VerifyJson): void {
    assert.equal(v.ok, false);
    assert.equal(r.code, 6, `verify should exit 6 (PGF-5005):\n${r.stderr}`);
    assert.match(r.stderr, /PGF-5005/);
  }

  const verdictOf = (v: VerifyJson) => {
    const b = v.backups.find((x) => x.label === backup.label);
    assert.ok(b, `no verdict for ${backup.label}: ${JSON.stringify(v.backups)}`);
    return b;
  };

  /** Injects a fault (returning its repair), runs `check`, repairs. */
  async function withFault(inject: () => Promise<() => Promise<void>>, check: () => Promise<void>): Promise<void> {
    const repair = await inject();
    try {
      await check();
    } finally {
      await repair();
    }
  }

  /** Replaces a file's bytes, returning the repair. */
  async function replaceFile(path: string, bytes: Buffer | null): Promise<() => Promise<void>> {
    const original = await readFile(path);
    if (bytes === null) await rm(path);
    else await writeFile(path, bytes);
    return () => writeFile(path, original);
  }

  before(async () => {
    fleet = await startFleet({ cluster: CLUSTER, controllerArgs: ['--schedule-interval', '3600'] });
    await fleet.pg.query('CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL)');
    await fleet.pg.query("INSERT INTO items SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g");
    const b = await fleet.cli('backup', CLUSTER, '--wait');
    assert.equal(b.code, 0, `backup failed:\n${b.stdout}\n${b.stderr}\n${await fleet.logs()}`);
    // Four more segments after the backup's WAL, so that one can go missing in the middle.
    for (let i = 0; i < 4; i++) {
      await fleet.pg.query(`INSERT INTO items VALUES (${100000 + i}, 'after backup')`);
      await fleet.switchAndArchive();
    }
    const list = await fleet.cli('backups', CLUSTER, '--output', 'json');
    assert.equal(list.code, 0, list.stderr);
    const listed = JSON.parse(list.stdout) as BackupJson[];
    assert.equal(listed.length, 1);
    backup = listed[0]!;
    segmentSize = (
      JSON.parse(await readFile(join(fleet.repoDir, CLUSTER, 'cluster.json'), 'utf8')) as { walSegmentSize: number }
    ).walSegmentSize;
    backupDir = join(fleet.repoDir, CLUSTER, 'backup', backup.label);
  });

  after(async () => {
    await fleet?.stop();
  });

  it('a clean repository is restorable to the end of the archived WAL, fast and full', async () => {
    for (const mode of [[], ['--full']]) {
      const { r, v } = await verify(...mode);
      assert.equal(r.code, 0, `verify ${mode.join(' ')} failed:\n${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
      assert.equal(v.ok, true);
      assert.deepEqual(v.problems, []);
      const b = verdictOf(v);
      assert.equal(b.restorable, true);
      assert.equal(b.fromLsn, backup.stopLsn);
      assert.ok(b.filesChecked > 0);
      const newest = v.walNewest[v.walNewest.length - 1]!;
      assert.equal(b.toLsn, segmentLsn(newest, segmentSize, 1), 'restorable to the end of the newest archived segment');
      assert.ok(newest > backup.walStop, `WAL archived after the backup (newest ${newest}, walStop ${backup.walStop})`);
    }
    const table = await fleet.cli('verify', CLUSTER, '--wait');
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`${backup.label}: restorable to \\[${backup.stopLsn.replace('/', '\\/')} `));
    assert.match(table.stdout, /verify OK/);
  });

  it('a flipped byte in a stored backup file: checksum mismatch in that file, not restorable', async () => {
    const manifest = JSON.parse(await readFile(join(backupDir, 'backup.manifest'), 'utf8')) as {
      files: ManifestFileJson[];
    };
    const file = manifest.files
      .filter((f) => !f.chunks && f.backup === backup.label && f.storedSize > 64)
      .sort((a, b) => b.storedSize - a.storedSize)[0]!;
    const path = join(
      backupDir,
      'pg_data',
      `${file.path}${file.codec === 'zstd' ? '.zst' : file.codec === 'gzip' ? '.gz' : ''}`,
    );
    await withFault(
      async () => {
        const bytes = await readFile(path);
        const flipped = Buffer.from(bytes);
        const at = Math.floor(bytes.length / 2);
        flipped[at] = flipped[at]! ^ 0x40;
        return replaceFile(path, flipped);
      },
      async () => {
        for (const mode of [[], ['--full']]) {
          const { r, v } = await verify(...mode);
          assertFailed(r, v);
          const p = v.problems.filter((x) => x.kind === 'checksum-mismatch');
          assert.equal(p.length, 1, JSON.stringify(v.problems));
          assert.equal(p[0]!.path, file.path);
          assert.equal(p[0]!.label, backup.label);
          assert.ok(path.endsWith(p[0]!.key), `${p[0]!.key} names the object`);
          const b = verdictOf(v);
          assert.equal(b.restorable, false);
          assert.ok(
            b.reasons.some((x) => x.includes(`checksum mismatch in ${file.path}`)),
            b.reasons.join('\n'),
          );
        }
      },
    );
  });

  it('a deleted backup file: missing file named, not restorable', async () => {
    const path = join(backupDir, 'pg_data', 'PG_VERSION.zst');
    await withFault(
      () => replaceFile(path, null),
      async () => {
        const { r, v } = await verify();
        assertFailed(r, v);
        assert.deepEqual(
          v.problems.map((x) => [x.kind, x.path]),
          [['missing-file', 'PG_VERSION']],
        );
        const b = verdictOf(v);
        assert.equal(b.restorable, false);
        assert.ok(
          b.reasons.some((x) => x.startsWith('missing file PG_VERSION')),
          b.reasons.join('\n'),
        );
        const table = await fleet.cli('verify', CLUSTER, '--wait');
        assert.equal(table.code, 6);
        assert.match(table.stdout, new RegExp(`${backup.label}: not restorable: missing file PG_VERSION`));
      },
    );
  });

  it('a WAL segment missing in the middle: the gap as an LSN range with its name; restorable only up to it', async () => {
    const wal = await walObjects();
    const later = [...wal.keys()].filter((n) => n.slice(8) > backup.walStop.slice(8));
    assert.ok(later.length >= 3, `segments after the backup: ${later.join(', ')}`);
    const victim = later[1]!;
    await withFault(
      () => replaceFile(wal.get(victim)!, null),
      async () => {
        const { r, v } = await verify();
        assertFailed(r, v);
        const gaps = v.problems.filter((x) => x.kind === 'wal-gap');
        assert.equal(gaps.length, 1, JSON.stringify(v.problems));
        assert.deepEqual(gaps[0]!.segments, [victim]);
        assert.equal(gaps[0]!.lsnFrom, segmentLsn(victim, segmentSize));
        assert.equal(gaps[0]!.lsnTo, segmentLsn(victim, segmentSize, 1));
        const b = verdictOf(v);
        // The backup itself is intact: it restores, but point-in-time recovery ends at the gap.
        assert.equal(b.restorable, true);
        assert.equal(b.toLsn, segmentLsn(victim, segmentSize));
        assert.ok(
          b.reasons.some((x) => x.includes(victim)),
          b.reasons.join('\n'),
        );
      },
    );
  });

  it('a WAL object truncated to 0 bytes: the empty segment named; the backup needing it is not restorable', async () => {
    const wal = await walObjects();
    const victim = backup.walStop;
    assert.ok(wal.has(victim), `walStop ${victim} archived`);
    await withFault(
      () => replaceFile(wal.get(victim)!, Buffer.alloc(0)),
      async () => {
        const { r, v } = await verify();
        assertFailed(r, v);
        assert.deepEqual(
          v.problems.map((x) => [x.kind, x.path]),
          [['wal-empty', victim]],
        );
        const b = verdictOf(v);
        assert.equal(b.restorable, false);
        assert.ok(
          b.reasons.some((x) => x.includes(victim) && x.includes('consistent')),
          b.reasons.join('\n'),
        );
      },
    );
  });

  it('WAL objects cut in half, cut at a frame boundary, extended, swapped: the default verify names each without decompressing; --full too', async () => {
    const wal = await walObjects();
    const names = [...wal.keys()];
    assert.ok(names.length >= 6, `archived segments: ${names.join(', ')}`);
    const [swappedIn, swapped, extended, boundary, halved] = names.slice(-5) as [
      string,
      string,
      string,
      string,
      string,
    ];
    const kinds = new Map([
      [halved, 'wal-truncated'],
      [boundary, 'wal-truncated'],
      [extended, 'wal-corrupt'],
      [swapped, 'wal-foreign'],
    ]);
    const repairs: (() => Promise<void>)[] = [];
    try {
      const bytes = await readFile(wal.get(halved)!);
      repairs.push(await replaceFile(wal.get(halved)!, bytes.subarray(0, bytes.length >> 1)));
      // Real WAL in the block form: a zstd frame per MiB; keep the first only.
      const b = await readFile(wal.get(boundary)!);
      const first = scanZstdFrames(b, MAX_FRAME_CONTENT, 1)!.length;
      assert.ok(first > 0 && first < b.length, `first frame ends at ${first} of ${b.length}`);
      repairs.push(await replaceFile(wal.get(boundary)!, b.subarray(0, first)));
      const e = await readFile(wal.get(extended)!);
      repairs.push(await replaceFile(wal.get(extended)!, Buffer.concat([e, Buffer.from('appended')])));
      repairs.push(await replaceFile(wal.get(swapped)!, await readFile(wal.get(swappedIn)!)));
      for (const mode of [[], ['--full']]) {
        const { r, v } = await verify(...mode);
        assertFailed(r, v);
        const found = v.problems.filter((x) => x.kind !== 'wal-gap');
        assert.deepEqual(
          found.map((x) => x.path).sort(),
          [...kinds.keys()].sort(),
          `verify ${mode.join(' ')}: ${JSON.stringify(v.problems, null, 1)}`,
        );
        for (const x of found) assert.ok(wal.get(x.path)!.endsWith(x.key), `${x.key} names the object`);
        if (mode.length > 0) continue;
        for (const x of found) assert.equal(x.kind, kinds.get(x.path), `${x.path}: ${x.message}`);
        assert.match(found.find((x) => x.path === swapped)!.message, /holds WAL of another position/);
      }
    } finally {
      for (const repair of repairs) await repair();
    }
  });

  it('a corrupt manifest: reported with its key, the backup not restorable', async () => {
    const path = join(backupDir, 'backup.manifest');
    await withFault(
      async () => replaceFile(path, Buffer.from((await readFile(path, 'utf8')).slice(0, 200))),
      async () => {
        const { r, v } = await verify();
        assertFailed(r, v);
        const p = v.problems.filter((x) => x.kind === 'manifest-corrupt');
        assert.equal(p.length, 1, JSON.stringify(v.problems));
        assert.equal(p[0]!.key, `${CLUSTER}/backup/${backup.label}/backup.manifest`);
        const b = verdictOf(v);
        assert.equal(b.restorable, false);
        assert.match(b.reasons.join('\n'), /manifest corrupt/);
      },
    );
    // Repaired: clean again.
    const { r, v } = await verify();
    assert.equal(r.code, 0, r.stderr);
    assert.equal(v.ok, true);
  });
});
