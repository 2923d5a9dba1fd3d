/**
 * scripts/install.sh, as a user runs it: into a fresh prefix (no user creation, units and configs
 * in the prefix too), then the installed launchers with a PATH holding no other node, the
 * installed systemd units checked by systemd-analyze, the installed bash completion loaded by
 * bash, and a real PostgreSQL whose archive_command is the installed `pgfleet-agent wal-push`:
 * the segment it archives is fetched back with the installed `wal-fetch`, byte for byte.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  chownToPostgres,
  makeTempDir,
  removeDir,
  run,
  runAsPostgres,
  startPostgres,
  type PgInstance,
} from '@pgfleet/testkit';
import { REPO_ROOT, waitFor } from './harness.js';

const BINARIES = ['pgfleet', 'pgfleet-agent', 'pgfleet-controller'] as const;

function haveCommand(name: string): Promise<boolean> {
  return run('sh', ['-c', `command -v ${name}`]).then(
    () => true,
    () => false,
  );
}

describe('scripts/install.sh', { timeout: 300_000 }, () => {
  let dir: string;
  let prefix: string;
  let etc: string;
  let units: string;

  before(async () => {
    dir = await makeTempDir('install');
    prefix = join(dir, 'prefix');
    etc = join(dir, 'etc');
    units = join(dir, 'systemd');
    await run(
      'bash',
      [join(REPO_ROOT, 'scripts/install.sh'), '--prefix', prefix, '--sysconfdir', etc, '--unitdir', units, '--no-user'],
      {
        cwd: REPO_ROOT,
        timeoutMs: 240_000,
      },
    );
  });
  after(async () => {
    await removeDir(dir);
  });

  it('puts the three binaries on PATH, bound to Node 24, with no other node on PATH', async () => {
    for (const bin of BINARIES) {
      // PATH is only the prefix's bin: the launcher must not look for any node.
      const { stdout } = await run(bin, ['--version'], { env: { PATH: join(prefix, 'bin') } });
      assert.match(stdout, new RegExp(`^${bin} \\d+\\.\\d+\\.\\d+ \\(node v24\\.`), stdout);
    }
    const help = await run('pgfleet', ['--help'], { env: { PATH: join(prefix, 'bin') } });
    assert.match(help.stdout, /Usage: pgfleet <command>/);
  });

  it('installs systemd units that run the installed launchers and pass systemd-analyze verify', async () => {
    const controller = await readFile(join(units, 'pgfleet-controller.service'), 'utf8');
    assert.match(
      controller,
      new RegExp(`^ExecStart=${prefix}/bin/pgfleet-controller run --config ${etc}/controller.yaml$`, 'm'),
    );
    assert.match(
      controller,
      /^ReadWritePaths=.* -\/backup\/pgfleet$/m,
      'a missing /backup/pgfleet must not fail the start',
    );
    const agent = await readFile(join(units, 'pgfleet-agent.service'), 'utf8');
    assert.match(agent, new RegExp(`^ExecStart=${prefix}/bin/pgfleet-agent run --config ${etc}/agent.yaml$`, 'm'));
    for (const f of ['controller.yaml', 'agent.yaml', 'fleet.yaml']) {
      assert.equal(await readFile(join(etc, f), 'utf8'), await readFile(join(REPO_ROOT, 'deploy/config', f), 'utf8'));
    }
    // .ci/run installs systemd (which ships systemd-analyze) on a fresh machine; elsewhere the
    // unit text checks above still hold.
    if (await haveCommand('systemd-analyze')) {
      const out = await run('systemd-analyze', [
        'verify',
        join(units, 'pgfleet-controller.service'),
        join(units, 'pgfleet-agent.service'),
      ]);
      assert.doesNotMatch(out.stderr, /pgfleet.*(not executable|No such file|bad|invalid)/i, out.stderr);
    }
  });

  it('installs bash completion generated from the option tables', async () => {
    for (const bin of BINARIES) {
      const file = join(prefix, 'share/bash-completion/completions', bin);
      const { stdout } = await run('bash', ['-c', `source "${file}" && complete -p ${bin}`]);
      assert.match(stdout, new RegExp(`complete -o default -F _${bin.replace(/-/g, '_')} ${bin}`));
    }
    // Completing `pgfleet backup --ty` offers --type, and its value the table's choices.
    const complete = (words: string[]) =>
      run('bash', [
        '-c',
        `source "${join(prefix, 'share/bash-completion/completions/pgfleet')}"; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _pgfleet; printf '%s\\n' "\${COMPREPLY[@]}"`,
      ]).then((r) => r.stdout.trim().split('\n'));
    assert.deepEqual(await complete(['pgfleet', 'backup', '--ty']), ['--type']);
    assert.deepEqual((await complete(['pgfleet', 'backup', '--type', ''])).sort(), ['diff', 'full', 'incr']);
    assert.ok((await complete(['pgfleet', 'ba'])).includes('backup'));
    const zsh = await readFile(join(prefix, 'share/zsh/site-functions/_pgfleet'), 'utf8');
    assert.match(zsh, /^#compdef pgfleet$/m);
    assert.match(zsh, /'--type=\[[^\]]*\]:value:\(full diff incr\)'/);
  });

  describe('archive_command = the installed pgfleet-agent wal-push', () => {
    let pg: PgInstance;
    let repo: string;
    let keyFile: string;

    before(async () => {
      repo = join(dir, 'repo');
      await run('mkdir', ['-p', repo]);
      await chownToPostgres(repo);
      keyFile = join(dir, 'cluster.key');
      await writeFile(keyFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
      await chownToPostgres(keyFile);
      // The prefix is read by the postgres user that runs archive_command.
      await chmod(dir, 0o755);
      const args = `--cluster inst --repo-path '${repo}' --cluster-key-file '${keyFile}'`;
      pg = await startPostgres({ archiveCommand: `'${prefix}/bin/pgfleet-agent' wal-push %p ${args}` });
    });
    after(async () => {
      await pg?.stop();
    });

    it('archives a segment that the installed wal-fetch returns byte for byte', async () => {
      await pg.query('CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 10000) g');
      const [row] = await pg.query<{ f: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS f');
      const segment = row!.f;
      await pg.query('SELECT pg_switch_wal()');
      await waitFor(
        `${segment} archived`,
        async () => {
          const [a] = await pg.query<{ last: string | null; failed: string }>(
            'SELECT last_archived_wal AS last, failed_count AS failed FROM pg_stat_archiver',
          );
          assert.equal(Number(a!.failed), 0, `archive_command failed:\n${await pg.log()}`);
          return a!.last !== null && a!.last >= segment;
        },
        60_000,
      );
      const fetched = join(dir, 'fetched');
      await runAsPostgres(join(prefix, 'bin/pgfleet-agent'), [
        'wal-fetch',
        segment,
        fetched,
        '--cluster',
        'inst',
        '--repo-path',
        repo,
        '--cluster-key-file',
        keyFile,
      ]);
      const original = await readFile(join(pg.dataDir, 'pg_wal', segment));
      assert.ok((await readFile(fetched)).equals(original), `${segment} fetched back identical`);
    });
  });
});
