// The agent's repository options: --repo/--repo2/--repo-path and S3 credentials from flags,
// environment and the config file, on every command that touches the repository; and the
// restore_command a restore writes for them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, helpText, parseCommandLine, PgfleetError, settingsOf } from '@pgfleet/core';
import { repositoryUrl } from '@pgfleet/storage';
import { AGENT_PROGRAM, repositoriesFromSettings, repositoryIdentity, s3CredentialsFromSettings } from './options.js';
import { restoreCommand } from './restore/restore.js';

/** The typed settings of a command line (every option of the table; the repository ones are on every command here). */
const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
  settingsOf(AGENT_PROGRAM.options, parseCommandLine(AGENT_PROGRAM, argv, env).options);
const S3 = 's3://backups/prod?endpoint=http://127.0.0.1:9000&path-style=true';

test('every repository command takes --repo, --repo2 and S3 credentials from flags, environment or the config file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgfleet-agent-opts-'));
  try {
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `cluster: main\nrepo: /srv/repo\nrepo2: "${S3}"\ns3-access-key-id: AKIDFILE\ns3-secret-access-key: from-file\n`,
    );
    for (const command of [['run'], ['wal-push', 'pg_wal/x'], ['wal-fetch', 'x', 'y'], ['wal-prefetch', 'x', 'y']]) {
      const o = parse([...command, '--config', config]);
      assert.deepEqual(repositoriesFromSettings(o).map(repositoryUrl), ['/srv/repo', S3], command[0]);
      assert.deepEqual(s3CredentialsFromSettings(o), { accessKeyId: 'AKIDFILE', secretAccessKey: 'from-file' });
    }
    // Flags and environment win over the file; --repo-path stays the posix shorthand.
    const o = parse(['wal-fetch', 'x', 'y', '--config', config, '--repo-path', '/other'], {
      PGFLEET_REPO2: '',
      PGFLEET_S3_SECRET_ACCESS_KEY: 'from-env',
    });
    assert.throws(() => repositoriesFromSettings(o), /set one of them/, 'repo from the file and repo-path from a flag');
    const flags = parse(['wal-fetch', 'x', 'y', '--repo-path', '/other'], {
      PGFLEET_S3_ACCESS_KEY_ID: 'AKIDENV',
      PGFLEET_S3_SECRET_ACCESS_KEY: 'from-env',
    });
    assert.deepEqual(repositoriesFromSettings(flags), [{ case: 'posix', value: { path: '/other' } }]);
    assert.deepEqual(s3CredentialsFromSettings(flags), { accessKeyId: 'AKIDENV', secretAccessKey: 'from-env' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("restore_command's repository flags override the config file's, which still gives the credentials", () => {
  const dir = mkdtempSync(join(tmpdir(), 'pgfleet-agent-opts-'));
  try {
    const config = join(dir, 'agent.yaml');
    writeFileSync(
      config,
      `repo-path: /srv/old\nrepo2: "${S3}"\ns3-access-key-id: AKID\ns3-secret-access-key: secret\n`,
    );
    // What the daemon writes for a job naming one repository (daemon.ts walFetchArgs).
    const o = parse([
      'wal-fetch',
      'x',
      'y',
      '--cluster',
      'c',
      '--repo',
      's3://other/c1',
      '--repo-path',
      '',
      '--repo2',
      '',
      '--config',
      config,
    ]);
    assert.deepEqual(repositoriesFromSettings(o).map(repositoryUrl), ['s3://other/c1']);
    assert.deepEqual(s3CredentialsFromSettings(o), { accessKeyId: 'AKID', secretAccessKey: 'secret' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('S3 credentials: both or neither (the AWS default chain)', () => {
  assert.equal(s3CredentialsFromSettings(parse(['run'])), undefined);
  assert.throws(
    () => s3CredentialsFromSettings(parse(['run', '--s3-access-key-id', 'AKID'])),
    (e: unknown) => PgfleetError.is(e, 'InvalidConfig') && /'s3-secret-access-key' is missing/.test(e.message),
  );
  const help = helpText(
    AGENT_PROGRAM,
    AGENT_PROGRAM.commands.find((c) => c.name === 'run'),
  );
  for (const s of [
    '--repo',
    '--repo2',
    '--repo-path',
    '--s3-access-key-id',
    '--s3-secret-access-key',
    'PGFLEET_REPO2',
    'PGFLEET_S3_SECRET_ACCESS_KEY',
  ])
    assert.ok(help.includes(s), s);
});

test('bad repository URLs fail with PGF-1002 naming the option', () => {
  assert.throws(
    () => repositoriesFromSettings(parse(['run', '--repo', 's3://bucket/x?endpoint=minio:9000'])),
    (e: unknown) =>
      PgfleetError.is(e, 'InvalidConfig') &&
      e.code === ErrorCodes.InvalidConfig.code &&
      /option 'repo'/.test(e.message),
  );
  assert.throws(
    () => repositoriesFromSettings(parse(['run', '--repo', '/a', '--repo2', 'relative'])),
    (e: unknown) => PgfleetError.is(e, 'InvalidConfig') && /option 'repo2'/.test(e.message),
  );
});

test('wal-push names its repositories to the daemon by canonical URL', () => {
  assert.equal(repositoryIdentity(repositoriesFromSettings({ repoPath: '/srv/repo/' })), '/srv/repo');
  assert.equal(repositoryIdentity(repositoriesFromSettings({ repo: 'posix:/srv/repo', repo2: S3 })), `/srv/repo ${S3}`);
});

test('restore_command quotes S3 URLs for the shell and carries the config file, never a secret', () => {
  const cmd = restoreCommand("o'brien", ['--repo', '/srv/repo', '--repo2', S3, '--config', '/etc/pgfleet/agent.yaml']);
  assert.ok(cmd.includes(`--repo /srv/repo --repo2 '${S3}'`), cmd);
  // What the shell hands wal-fetch is exactly the arguments (the '&' does not end the command).
  const argv = execFileSync('/bin/sh', ['-c', `printf '%s\\n' ${cmd.slice(cmd.indexOf('--cluster'))}`], {
    encoding: 'utf8',
  })
    .trimEnd()
    .split('\n');
  assert.deepEqual(argv, [
    '--cluster',
    "o'brien",
    '--repo',
    '/srv/repo',
    '--repo2',
    S3,
    '--config',
    '/etc/pgfleet/agent.yaml',
  ]);
  // A literal '%' (a percent-encoded S3 prefix) is doubled: PostgreSQL expands %f, %p and %% in it.
  const pct = restoreCommand('main', ['--repo', 's3://b/my%20prefix?path-style=true']);
  assert.ok(pct.includes("'s3://b/my%%20prefix?path-style=true'") && pct.includes('wal-fetch "%f" "%p"'), pct);
});
