import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PgfleetError } from '@pgfleet/core';
import type { ConfigLoader } from '@pgfleet/core/command-line';
import { judgeArchiveCommand, splitShellWords, walPushArgs } from './archive-command.js';

/** Config files by absolute path, as loadConfigFile would return their values. */
function configs(files: Record<string, Record<string, string>>): ConfigLoader {
  return (path) => {
    const values = files[path];
    if (!values) throw new PgfleetError('InvalidConfig', `cannot read config file ${path}: EACCES: permission denied`);
    return values;
  };
}

const judge = (command: string, files: Record<string, Record<string, string>> = {}) =>
  judgeArchiveCommand(command, { cluster: 'shop', pgdata: '/var/lib/postgresql/15/main', loadConfig: configs(files) });

describe('splitShellWords', () => {
  it('keeps quoted words whole and unquotes them', () => {
    assert.deepEqual(
      splitShellWords(`"/opt/node 24/bin/node" '/srv/pg fleet/agent/dist/bin.js' wal-push "%p" --cluster\\ x`).commands,
      [['/opt/node 24/bin/node', '/srv/pg fleet/agent/dist/bin.js', 'wal-push', '%p', '--cluster x']],
    );
    assert.deepEqual(splitShellWords(`a "b \\"c\\" \\$d" e'f'g`).commands, [['a', 'b "c" $d', 'efg']]);
  });

  it('separates commands at shell operators', () => {
    const w = splitShellWords('test ! -f /a/%f && cp %p /a/%f; echo done | logger');
    assert.deepEqual(w.commands, [['test', '!', '-f', '/a/%f'], ['cp', '%p', '/a/%f'], ['echo', 'done'], ['logger']]);
    assert.equal(w.compound, true);
    assert.equal(splitShellWords("cp %p '/a;b/%f'").compound, false);
  });
});

describe('walPushArgs', () => {
  it('finds wal-push run directly, through node, or after exec/env prefixes', () => {
    assert.deepEqual(walPushArgs(['pgfleet-agent', 'wal-push', '%p']), ['wal-push', '%p']);
    assert.deepEqual(walPushArgs(['/usr/local/bin/pgfleet-agent', 'wal-push', '%p', '--config', 'f']), [
      'wal-push',
      '%p',
      '--config',
      'f',
    ]);
    assert.deepEqual(
      walPushArgs([
        '/usr/bin/node',
        '--enable-source-maps',
        '/opt/pgfleet/packages/agent/dist/bin.js',
        'wal-push',
        '%p',
      ]),
      ['wal-push', '%p'],
    );
    // The wal-push bundle, as the installed launcher and bench/run.mjs run it.
    assert.deepEqual(
      walPushArgs([
        '/usr/local/lib/pgfleet/node/bin/node',
        '/usr/local/lib/pgfleet/packages/agent/dist/wal/push-main.cjs',
        'wal-push',
        '%p',
      ]),
      ['wal-push', '%p'],
    );
    assert.deepEqual(walPushArgs(['exec', 'env', 'PGFLEET_LOG_LEVEL=warn', 'pgfleet-agent', 'wal-push', '%p']), [
      'wal-push',
      '%p',
    ]);
  });

  it('is undefined for other programs and other subcommands', () => {
    assert.equal(walPushArgs(['cp', '%p', '/archive/%f']), undefined);
    assert.equal(walPushArgs(['/bin/true']), undefined);
    assert.equal(walPushArgs(['pgfleet-agent', 'wal-fetch', '%f', '%p']), undefined);
    assert.equal(walPushArgs(['node', '/srv/other/dist/bin.js', 'wal-push', '%p']), undefined);
    assert.equal(walPushArgs(['node', '/srv/other/dist/wal/push-main.cjs', 'wal-push', '%p']), undefined);
    assert.equal(walPushArgs(['pgbackrest', '--stanza=shop', 'archive-push', '%p']), undefined);
  });
});

describe('judgeArchiveCommand', () => {
  it('ok: wal-push with --cluster of this cluster, quoted paths, --cluster=form', () => {
    for (const cmd of [
      'pgfleet-agent wal-push %p --cluster shop --repo-path /backup/pgfleet',
      `"/opt/node 24/bin/node" "/srv/pg fleet/packages/agent/dist/bin.js" wal-push "%p" --cluster shop --repo-path "/backup/pg fleet"`,
      'pgfleet-agent wal-push pg_wal/%f --cluster=shop --repo /backup/pgfleet',
    ]) {
      const j = judge(cmd);
      assert.deepEqual([j.verdict, j.viaPgfleet], ['ok', true], `${cmd}: ${j.message}`);
      assert.match(j.message, /runs pgfleet-agent wal-push for cluster shop/);
    }
  });

  it('--config: the cluster comes from the file (relative paths from PGDATA); another cluster there fails', () => {
    const ok = judge('pgfleet-agent wal-push %p --config /etc/pgfleet/agent.yaml', {
      '/etc/pgfleet/agent.yaml': { cluster: 'shop', repo: '/backup' },
    });
    assert.deepEqual([ok.verdict, ok.viaPgfleet], ['ok', true]);
    assert.match(ok.message, /from its config file \/etc\/pgfleet\/agent\.yaml/);
    const relative = judge('pgfleet-agent wal-push %p --config ../agent.yaml', {
      '/var/lib/postgresql/15/agent.yaml': { cluster: 'shop' },
    });
    assert.equal(relative.verdict, 'ok', relative.message);
    const other = judge('pgfleet-agent wal-push %p --config /etc/pgfleet/agent.yaml', {
      '/etc/pgfleet/agent.yaml': { cluster: 'billing' },
    });
    assert.deepEqual([other.verdict, other.viaPgfleet], ['fail', false]);
    assert.match(
      other.message,
      /as cluster 'billing' \(from its config file \/etc\/pgfleet\/agent\.yaml\), but this agent is cluster 'shop'/,
    );
    // A flag wins over the file, as in wal-push itself.
    assert.equal(
      judge('pgfleet-agent wal-push %p --config /etc/a.yaml --cluster shop', { '/etc/a.yaml': { cluster: 'billing' } })
        .verdict,
      'ok',
    );
  });

  it('fails for --cluster naming another cluster', () => {
    const j = judge('pgfleet-agent wal-push %p --cluster billing --repo-path /backup');
    assert.deepEqual([j.verdict, j.viaPgfleet], ['fail', false]);
    assert.match(j.message, /as cluster 'billing', but this agent is cluster 'shop'/);
  });

  it('warns when no cluster is named or the config file cannot be read', () => {
    const none = judge('pgfleet-agent wal-push %p --repo-path /backup');
    assert.deepEqual([none.verdict, none.viaPgfleet], ['warn', true]);
    assert.match(none.message, /PGFLEET_CLUSTER/);
    const unreadable = judge('pgfleet-agent wal-push %p --config /etc/secret.yaml');
    assert.deepEqual([unreadable.verdict, unreadable.viaPgfleet], ['warn', true]);
    assert.match(unreadable.message, /--config \/etc\/secret\.yaml, which the agent cannot read \(.*EACCES/);
  });

  it('fails for other commands: /bin/true, cp %p ..., pgBackRest, a wrapper script', () => {
    for (const cmd of [
      '/bin/true',
      'cp %p /mnt/archive/%f',
      'test ! -f /a/%f && cp %p /a/%f',
      'pgbackrest --stanza=shop archive-push %p',
      '/usr/local/bin/archive.sh %p',
    ]) {
      const j = judge(cmd);
      assert.deepEqual([j.verdict, j.viaPgfleet], ['fail', false], cmd);
      assert.match(j.message, /does not run pgfleet-agent wal-push/);
      assert.ok(j.message.includes(`'${cmd}'`), j.message);
    }
  });

  it('fails when empty or disabled', () => {
    for (const cmd of ['', '   ', '(disabled)']) {
      const j = judge(cmd);
      assert.deepEqual([j.verdict, j.viaPgfleet], ['fail', false]);
      assert.match(j.message, /archive_command is empty/);
    }
  });

  it('fails when wal-push would refuse its arguments or is not given %p', () => {
    const bad = judge('pgfleet-agent wal-push %p --cluster shop --no-such-flag');
    assert.deepEqual([bad.verdict, bad.viaPgfleet], ['fail', false]);
    assert.match(bad.message, /arguments it refuses/);
    const noPath = judge('pgfleet-agent wal-push --cluster shop');
    assert.equal(noPath.verdict, 'fail');
    const literal = judge('pgfleet-agent wal-push /tmp/x --cluster shop');
    assert.equal(literal.verdict, 'fail');
    assert.match(literal.message, /instead of %p/);
  });

  it('warns when wal-push is only part of a compound command', () => {
    const j = judge('pgfleet-agent wal-push %p --cluster shop || true');
    assert.deepEqual([j.verdict, j.viaPgfleet], ['warn', true]);
    assert.match(j.message, /runs more than wal-push/);
  });
});
