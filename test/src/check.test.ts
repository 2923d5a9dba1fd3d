/**
 * `pgfleet check` end to end, with a real PostgreSQL, controller, agent (as the postgres OS user)
 * and CLI: on a healthy cluster every line is ok and the switched WAL segment is in the
 * repository; with archive_command = '/bin/true' (which pg_stat_archiver counts as archived) the
 * check fails naming archive_command, `pgfleet status` says the archive is not via pgfleet, and the
 * cluster's first backup fails at once with the check's error instead of waiting for its WAL; a
 * repository the agent cannot write fails the repository line; archive_mode = off fails its line.
 * Once archiving is fixed the first backup goes through its check and succeeds. With two
 * repositories (posix + S3) the switched segment must be in each, and both are named.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCodes } from '@pgfleet/core';
import { startFleet, waitFor, type Fleet } from './harness.js';

const CLUSTER = 'chk';

interface CheckJson {
  items: { name: string; verdict: string; message: string }[];
  ok: boolean;
  walSegment: string;
}
interface JobJson {
  id: string;
  state: string;
  error?: { code: string; message: string };
  check?: CheckJson;
  backup?: { label: string };
}
interface StatusJson {
  name: string;
  archiveState: string;
  alerts: string[];
  archiveSetup?: { archiveCommand: string; viaPgfleet: boolean; problem: string };
}

/** Every directory under `dir` (itself included). */
async function directories(dir: string): Promise<string[]> {
  const out = [dir];
  for (const e of await readdir(dir, { withFileTypes: true }))
    if (e.isDirectory()) out.push(...(await directories(join(dir, e.name))));
  return out;
}

describe('pgfleet check: archiving proven end to end, failures named', { timeout: 420_000 }, () => {
  let fleet: Fleet;
  /** Directory modes to put back if a test that made the repository read-only fails half-way. */
  const modes = new Map<string, number>();

  before(async () => {
    fleet = await startFleet({ cluster: CLUSTER });
    await fleet.pg.query('CREATE TABLE t (id int PRIMARY KEY)');
    await fleet.pg.query('INSERT INTO t SELECT generate_series(1, 1000)');
  });

  after(async () => {
    for (const [dir, mode] of modes) await chmod(dir, mode).catch(() => undefined);
    await fleet?.stop();
  });

  async function status(): Promise<StatusJson> {
    const r = await fleet.cli('status', '--cluster', CLUSTER, '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { clusters: StatusJson[] }).clusters[0]!;
  }

  /** The check's line for `name` as printed: verdict, name, message. */
  function line(stdout: string, name: string): string {
    const found = stdout.split('\n').find((l) => new RegExp(`^\\S+\\s+${name}\\s`).test(l));
    assert.ok(found, `no line for ${name} in:\n${stdout}`);
    return found;
  }

  async function setArchiveCommand(value: string | undefined): Promise<void> {
    await fleet.pg.query(
      value === undefined
        ? 'ALTER SYSTEM RESET archive_command'
        : `ALTER SYSTEM SET archive_command = '${value.replace(/'/g, "''")}'`,
    );
    await fleet.pg.query('SELECT pg_reload_conf()');
  }

  it('passes on a healthy cluster: exit 0, every line ok, the switched segment is in the repository', async () => {
    const r = await fleet.cli('check', CLUSTER);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const names = [
      'wal_level',
      'archive_mode',
      'archive_command',
      'max_wal_senders',
      'data_checksums',
      'pg_wal_space',
      'repository',
      'wal_archived',
      'controller',
    ];
    for (const n of names) assert.match(line(r.stdout, n), new RegExp(`^ok\\s+${n}\\s`));
    assert.match(line(r.stdout, 'archive_command'), /runs pgfleet-agent wal-push for cluster chk/);
    assert.match(r.stdout, /^check OK: 9 check\(s\), 0 failed, 0 warning\(s\); WAL segment [0-9A-F]{24} archived in /m);

    const j = await fleet.cli('check', CLUSTER, '--output', 'json', '--timeout', '2m');
    assert.equal(j.code, 0, j.stderr);
    const job = JSON.parse(j.stdout) as JobJson;
    assert.equal(job.state, 'succeeded');
    assert.deepEqual(
      job.check!.items.map((i) => [i.name, i.verdict]),
      names.map((n) => [n, 'ok']),
    );
    assert.equal(job.check!.ok, true);
    assert.match(job.check!.walSegment, /^[0-9A-F]{24}$/);
    assert.equal(
      (await fleet.repo.findWal(CLUSTER, job.check!.walSegment)).length,
      1,
      'the segment the check reported is archived',
    );
  });

  it("archive_command = '/bin/true': status says not via pgfleet, check fails naming archive_command, the first backup fails at once with the check's error", async () => {
    await setArchiveCommand('/bin/true');
    // The agent reads the settings every heartbeat; the status follows without a restart.
    const s = await waitFor('status to show the archive not via pgfleet', async () => {
      const st = await status();
      return st.archiveState === 'not via pgfleet' ? st : undefined;
    });
    assert.ok(s.alerts.includes('archive-not-via-pgfleet'), JSON.stringify(s));
    assert.equal(s.archiveSetup?.archiveCommand, '/bin/true');
    assert.equal(s.archiveSetup?.viaPgfleet, false);
    const table = await fleet.cli('status');
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout.split('\n').find((l) => l.startsWith(`${CLUSTER} `)) ?? '', /not via pgfleet/);

    const r = await fleet.cli('check', CLUSTER);
    assert.equal(r.code, 4, `${r.stdout}\n${r.stderr}`);
    assert.match(
      r.stderr,
      /PGF-4009 check job \S+ failed: WAL archiving of cluster chk does not work: archive_command: archive_command '\/bin\/true' does not run pgfleet-agent wal-push/,
    );
    assert.match(r.stderr, /hint: WAL archiving does not work end to end/);
    assert.match(
      line(r.stdout, 'archive_command'),
      /^FAIL\s+archive_command\s+archive_command '\/bin\/true' does not run pgfleet-agent wal-push: PostgreSQL counts its exit status 0 as archived/,
    );
    assert.match(
      line(r.stdout, 'wal_archived'),
      /^FAIL\s+wal_archived\s+not tried: the failing check\(s\) above \(archive_command\)/,
    );
    assert.match(line(r.stdout, 'archive_mode'), /^ok\s/);
    assert.match(r.stdout, /^check FAILED: 9 check\(s\), 2 failed, 0 warning\(s\)$/m);

    const j = await fleet.cli('check', CLUSTER, '--output', 'json');
    assert.equal(j.code, 4);
    const job = JSON.parse(j.stdout) as JobJson;
    assert.equal(job.state, 'failed');
    assert.equal(job.error?.code, ErrorCodes.ArchiveCheckFailed.code);
    assert.equal(job.check?.items.find((i) => i.name === 'archive_command')?.verdict, 'fail');

    // The cluster has no backup yet: the backup checks first and fails with the check's error, not PGF-4006 after its WAL wait.
    const b = await fleet.cli('backup', CLUSTER, '--wait');
    assert.equal(b.code, 4, `${b.stdout}\n${b.stderr}`);
    assert.match(
      b.stderr,
      /PGF-4009 backup job \S+ failed: WAL archiving of cluster chk does not work: archive_command: archive_command '\/bin\/true' does not run pgfleet-agent wal-push/,
    );
    assert.doesNotMatch(b.stderr, /PGF-4006/);
    assert.deepEqual(await fleet.repo.listBackups(CLUSTER), []);
    const listed = await fleet.cli('backups', CLUSTER, '--output', 'json');
    assert.deepEqual(JSON.parse(listed.stdout), []);

    await setArchiveCommand(undefined);
    await waitFor('status to show the archive ok again', async () => (await status()).archiveState === 'ok');
  });

  it('a repository the agent cannot write fails the repository line, naming it', async () => {
    const repoDirs = await directories(fleet.repoDir);
    for (const d of repoDirs) {
      const mode = (await stat(d)).mode & 0o7777;
      modes.set(d, mode);
      // The agent runs as postgres, who owns these directories; without write permission it can add nothing.
      await chmod(d, mode & ~0o222);
    }
    try {
      const r = await fleet.cli('check', CLUSTER);
      assert.equal(r.code, 4, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stderr, /PGF-4009 .*repository: cannot write to /);
      assert.match(
        line(r.stdout, 'repository'),
        new RegExp(
          `^FAIL\\s+repository\\s+cannot write to ${fleet.repoDir.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: .*EACCES.*make it writable by the agent's OS user`,
        ),
      );
      assert.match(line(r.stdout, 'archive_command'), /^ok\s/);
      assert.match(
        line(r.stdout, 'wal_archived'),
        /^FAIL\s+wal_archived\s+not tried: the failing check\(s\) above \(repository\)/,
      );
    } finally {
      for (const [d, mode] of modes) await chmod(d, mode);
      modes.clear();
    }
  });

  it('once archiving works the first backup passes its check and completes', async () => {
    const r = await fleet.cli('backup', CLUSTER, '--wait', '--output', 'json');
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const label = (JSON.parse(r.stdout) as JobJson).backup!.label;
    assert.deepEqual(
      (await fleet.repo.listBackups(CLUSTER)).map((m) => m.label),
      [label],
    );
  });

  it('archive_mode = off (after a restart) fails the archive_mode line', async () => {
    await fleet.pg.query('ALTER SYSTEM SET archive_mode = off');
    await fleet.pg.restart();
    const r = await fleet.cli('check', CLUSTER);
    assert.equal(r.code, 4, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /PGF-4009 .*archive_mode: archive_mode = off: PostgreSQL archives no WAL/);
    assert.match(
      line(r.stdout, 'archive_mode'),
      /^FAIL\s+archive_mode\s+archive_mode = off: PostgreSQL archives no WAL, so no backup can be restored; set archive_mode = on and restart PostgreSQL/,
    );
    assert.match(line(r.stdout, 'wal_archived'), /^FAIL\s+wal_archived\s+not tried/);
    await waitFor(
      'status to show the archive not via pgfleet',
      async () => (await status()).archiveState === 'not via pgfleet',
    );
  });
});

describe('pgfleet check with two repositories (posix + S3): the segment must reach each', { timeout: 300_000 }, () => {
  let fleet: Fleet;

  before(async () => {
    fleet = await startFleet({ cluster: 'chk2', repository: 'both' });
  });

  after(async () => {
    await fleet?.stop();
  });

  it('passes, naming both repositories, and the segment is in each of them', async () => {
    const r = await fleet.cli('check', 'chk2', '--output', 'json');
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}\n${await fleet.logs()}`);
    const check = (JSON.parse(r.stdout) as JobJson).check!;
    assert.equal(check.ok, true, JSON.stringify(check.items));
    const byName = new Map(check.items.map((i) => [i.name, i]));
    for (const item of [byName.get('repository')!, byName.get('wal_archived')!]) {
      assert.equal(item.verdict, 'ok');
      for (const url of [fleet.repoDir, 's3://pgfleet/chk2'])
        assert.ok(item.message.includes(url), `${item.name} names ${url}: ${item.message}`);
    }
    for (const member of fleet.repoMembers)
      assert.equal(
        (await member.findWal('chk2', check.walSegment)).length,
        1,
        `${member.location} holds ${check.walSegment}`,
      );
  });
});
