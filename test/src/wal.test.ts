/**
 * WAL archiving through the agent daemon and WAL streaming, with real PostgreSQL, agent and
 * controller processes: archive_command hands segments to the daemon over its unix socket;
 * empty or truncated files are refused so PostgreSQL retries, and nothing wrong lands in the
 * repository; streaming keeps the newest WAL on disk within about a second and survives a
 * kill -9 of the agent without a gap. On a posix and on an S3 repository.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pg from 'pg';
import { chownToPostgres } from '@pgfleet/testkit';
import { AGENT_BIN, REPOSITORY_KINDS, startFleet, waitFor, type Fleet } from './harness.js';
import { assertRepoSegmentsSound, repoWal, segmentsBetween } from './repo-inspect.js';

const SEG = 16 * 1024 * 1024;

for (const kind of REPOSITORY_KINDS)
  describe(`WAL archiving through the agent daemon (${kind} repository)`, { timeout: 600_000 }, () => {
    let fleet: Fleet;

    before(async () => {
      fleet = await startFleet({ cluster: 'walarch', repository: kind });
      await fleet.pg.query('CREATE TABLE t (id serial PRIMARY KEY, filler text)');
    });
    after(async () => {
      await fleet?.stop();
    });

    const write = (rows = 1000) =>
      fleet.pg.query(`INSERT INTO t (filler) SELECT repeat('x', 100) FROM generate_series(1, ${rows})`);

    it('archive_command goes through the socket and the segments land', async () => {
      const segs: string[] = [];
      for (let i = 0; i < 3; i++) {
        await write();
        const [r] = await fleet.pg.query<{ f: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS f');
        segs.push(r!.f);
        await fleet.switchAndArchive();
      }
      const log = await fleet.agent!.log();
      for (const s of segs)
        assert.match(log, new RegExp(`"wal":"${s}".*"via":"socket"`), `${s} archived through the daemon\n${log}`);
      const stored = await repoWal(fleet.repo, 'walarch');
      for (const s of segs) assert.ok(stored.has(s), `${s} in the repository`);
      const [a] = await fleet.pg.query<{ failed: string }>('SELECT failed_count AS failed FROM pg_stat_archiver');
      assert.equal(Number(a!.failed), 0);
    });

    it('an empty, then a truncated file is refused, PostgreSQL retries, archiving continues; nothing wrong is stored', async () => {
      // archive_command becomes a wrapper that, for the next two attempts, hands the daemon an
      // empty and then a truncated copy of the segment (what a torn copy or full disk produces).
      const scratch = join(fleet.dir, 'scratch');
      const wrapper = join(fleet.dir, 'archive-wrapper.sh');
      const socket = join(fleet.pg.dataDir, '..', 'data.pgfleet-agent.sock');
      const agent = `"${process.execPath}" "${AGENT_BIN}" wal-push ${fleet.walArgs} --socket "${socket}"`;
      await writeFile(
        wrapper,
        `#!/bin/sh
set -e
basename "$1" >> "${scratch}/calls"
n=$(cat "${scratch}/bad" 2>/dev/null || echo 0)
if [ "$n" -gt 0 ]; then
  echo $((n - 1)) > "${scratch}/bad"
  mkdir -p "${scratch}/pg_wal"
  f="${scratch}/pg_wal/$(basename "$1")"
  if [ "$n" -eq 2 ]; then : > "$f"; else head -c 65536 "$1" > "$f"; fi
  exec ${agent} "$f"
fi
exec ${agent} "$1"
`,
      );
      await chmod(wrapper, 0o755);
      await mkdir(scratch, { recursive: true });
      await writeFile(join(scratch, 'bad'), '0');
      await chownToPostgres(scratch, { recursive: true });
      await fleet.pg.query(`ALTER SYSTEM SET archive_command = '${wrapper} %p'`);
      await fleet.pg.query('SELECT pg_reload_conf()');
      // The archiver rereads its configuration on its own schedule: archive good segments until one
      // went through the wrapper (it logs every call); from then on every attempt does.
      await waitFor(
        'the archiver to use the wrapper',
        async () => {
          await write(10);
          const [seg] = await fleet.pg.query<{ f: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS f');
          await fleet.switchAndArchive();
          return (await readFile(join(scratch, 'calls'), 'utf8').catch(() => '')).split('\n').includes(seg!.f);
        },
        60_000,
        100,
      );
      await writeFile(join(scratch, 'bad'), '2');

      const [before] = await fleet.pg.query<{ failed: string }>('SELECT failed_count AS failed FROM pg_stat_archiver');
      await write();
      const [seg] = await fleet.pg.query<{ f: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS f');
      await fleet.switchAndArchive();
      const [after] = await fleet.pg.query<{ failed: string; last_failed_wal: string }>(
        'SELECT failed_count AS failed, last_failed_wal FROM pg_stat_archiver',
      );
      assert.equal(Number(after!.failed) - Number(before!.failed), 2, 'two refused attempts, then success');
      assert.equal(after!.last_failed_wal, seg!.f);
      const log = await fleet.agent!.log();
      assert.match(log, new RegExp(`"wal":"${seg!.f}".*"code":"PGF-4002".*is empty`));
      assert.match(log, new RegExp(`"wal":"${seg!.f}".*"code":"PGF-4002".*truncated`));
      assert.ok((await repoWal(fleet.repo, 'walarch')).has(seg!.f));
      const n = await assertRepoSegmentsSound(fleet.repo, 'walarch');
      assert.ok(n >= 4);
      await fleet.pg.query('ALTER SYSTEM RESET archive_command');
      await fleet.pg.query('SELECT pg_reload_conf()');
    });

    it('without a daemon wal-push archives by itself', async () => {
      await fleet.agent!.stop();
      await write();
      const [seg] = await fleet.pg.query<{ f: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS f');
      await fleet.switchAndArchive();
      assert.ok((await repoWal(fleet.repo, 'walarch')).has(seg!.f));
      assert.doesNotMatch(await fleet.agent!.log(), new RegExp(`"wal":"${seg!.f}"`));
      await fleet.startAgent();
    });

    it('streaming and archiving the same segments dedupe by name and checksum', async () => {
      await fleet.agent!.stop();
      await fleet.startAgent(['--stream']);
      await waitFor('stream to start', async () => /"msg":"streaming WAL"/.test(await fleet.agent!.log()), 120_000);
      const segs: string[] = [];
      for (let i = 0; i < 3; i++) {
        await write(5000);
        const [r] = await fleet.pg.query<{ f: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS f');
        segs.push(r!.f);
        await fleet.switchAndArchive();
      }
      await waitFor(
        'streamed segments to be uploaded or deduplicated',
        async () => {
          const log = await fleet.agent!.log();
          return segs.every((s) => new RegExp(`"wal":"${s}".*"via":"stream"`).test(log));
        },
        120_000,
      );
      const log = await fleet.agent!.log();
      assert.doesNotMatch(log, /PGF-4004/, 'stream and archive produced identical segments');
      await assertRepoSegmentsSound(fleet.repo, 'walarch');
    });
  });

/** The agent reported WAL up to $1 as flushed, which it does only after fsyncing it in its spool. */
const FLUSHED_SQL = `SELECT flush_lsn >= $1::pg_lsn AS ok FROM pg_stat_replication WHERE application_name = 'pgfleet-agent-stream'`;

for (const kind of REPOSITORY_KINDS)
  describe(
    `WAL streaming: every commit reaches the spool before its segment ends (the RPO is reported), no gap across kill -9 of the agent (${kind} repository)`,
    { timeout: 600_000 },
    () => {
      let fleet: Fleet;

      before(async () => {
        // No archive_command: whatever reaches the repository came through the stream.
        fleet = await startFleet({ cluster: 'walstream', archive: false, startAgent: false, repository: kind });
        await fleet.pg.query('CREATE TABLE t (id serial PRIMARY KEY, filler text)');
      });
      after(async () => {
        await fleet?.stop();
      });

      const spool = () => join(fleet.pg.dataDir, '..', 'data.pgfleet-stream');
      const current = async () =>
        (
          await fleet.pg.query<{ f: string; l: string }>(
            'SELECT pg_walfile_name(pg_current_wal_lsn()) AS f, pg_current_wal_lsn()::text AS l',
          )
        )[0]!;
      const streamFlushed = (lsn: string) => async () =>
        (await fleet.pg.query<{ ok: boolean }>(FLUSHED_SQL, [lsn]))[0]?.ok === true;

      it('streams into the spool, the slot follows fsynced WAL, the partial segment holds the newest commit', async (t) => {
        await fleet.startAgent(['--stream']);
        await waitFor(
          'replication slot',
          async () =>
            (
              await fleet.pg.query(
                `SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgfleet_walstream' AND active`,
              )
            ).length === 1,
          120_000,
        );
        // One session for the commits and the polls: a connection per poll would add its own start-up to every delay.
        const db = new pg.Client({ connectionString: fleet.pg.connectionString });
        db.on('error', () => {});
        await db.connect();
        const delays: number[] = [];
        try {
          for (let i = 0; i < 5; i++) {
            await db.query('INSERT INTO t (filler) VALUES ($1)', [`commit ${i}`]);
            const t0 = Date.now();
            const { f, l } = (
              await db.query<{ f: string; l: string }>(
                'SELECT pg_walfile_name(pg_current_wal_lsn()) AS f, pg_current_wal_lsn()::text AS l',
              )
            ).rows[0]!;
            await waitFor(
              'stream to flush the commit',
              async () => (await db.query<{ ok: boolean }>(FLUSHED_SQL, [l])).rows[0]?.ok === true,
              120_000,
              20,
            );
            delays.push(Date.now() - t0);
            // The bytes up to the commit are on disk in the spool, identical to the server's segment.
            const [hi, lo] = l.split('/').map((x) => BigInt(`0x${x}`));
            const upto = Number(((hi! << 32n) | lo!) % BigInt(SEG));
            const partial = join(spool(), `${f}.partial`);
            const mine = await readFile(partial);
            const fh = await open(join(fleet.pg.dataDir, 'pg_wal', f), 'r');
            const theirs = Buffer.alloc(upto);
            await fh.read(theirs, 0, upto, 0);
            await fh.close();
            assert.ok(mine.subarray(0, upto).equals(theirs), `spool ${f}.partial holds WAL up to ${l}`);
          }
        } finally {
          await db.end();
        }
        // The RPO (about a second) is a figure, not an assertion: on a loaded machine any bound on it
        // is luck. The outcome asserted above is that each commit reaches the spool's partial segment
        // byte for byte while the segment is still open (archiving is off: only the stream wrote it).
        t.diagnostic(`stream flush delay after commit (ms): ${delays.join(', ')}`);
      });

      it('survives kill -9 of the agent: every segment from the first streamed one is in the repository', async () => {
        const log = await fleet.agent!.log();
        const start = /"start":"([0-9A-F]+\/[0-9A-F]+)".*"msg":"streaming WAL"/.exec(log)![1]!;
        // (pg_walfile_name() names the previous segment for an LSN on a segment boundary: compute it here.)
        const [hi, lo] = start.split('/').map((x) => BigInt(`0x${x}`));
        const firstNo = ((hi! << 32n) | lo!) / BigInt(SEG);
        const first = {
          f: `00000001${(firstNo / 256n).toString(16).toUpperCase().padStart(8, '0')}${(firstNo % 256n).toString(16).toUpperCase().padStart(8, '0')}`,
        };
        for (let i = 0; i < 2; i++) {
          await fleet.pg.query(`INSERT INTO t (filler) SELECT repeat('a', 200) FROM generate_series(1, 5000)`);
          await fleet.pg.query('SELECT pg_switch_wal()');
        }
        fleet.agent!.child.kill('SIGKILL');
        await new Promise((r) => fleet.agent!.child.once('exit', r));
        // Written while no agent runs: the slot keeps it on the server.
        for (let i = 0; i < 3; i++) {
          await fleet.pg.query(`INSERT INTO t (filler) SELECT repeat('b', 200) FROM generate_series(1, 5000)`);
          await fleet.pg.query('SELECT pg_switch_wal()');
        }
        await fleet.pg.query(`INSERT INTO t (filler) VALUES ('after restart')`);
        await fleet.startAgent(['--stream']);
        const now = await current();
        const wanted = segmentsBetween(first!.f, now.f).slice(0, -1);
        assert.ok(wanted.length >= 5, `expected several segments, got ${wanted.join(' ')}`);
        await waitFor(
          'every completed segment in the repository',
          async () => {
            const stored = await repoWal(fleet.repo, 'walstream');
            return wanted.every((s) => stored.has(s));
          },
          60_000,
        );
        await waitFor('stream to catch up', streamFlushed(now.l), 120_000);
        assert.ok(
          existsSync(join(spool(), `${now.f}.partial`)),
          'the current segment is kept as .partial in the spool',
        );
        assert.equal(await assertRepoSegmentsSound(fleet.repo, 'walstream'), wanted.length);
      });
    },
  );
