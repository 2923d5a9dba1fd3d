// The controller's option table: precedence, config file validation, required options.
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ErrorCodes, PgfleetError, helpText, parseCommandLine } from '@pgfleet/core';
import { controllerProgram, resolveRunConfig } from './options.js';

const dir = mkdtempSync(join(tmpdir(), 'pgfleet-ctl-opts-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function configFile(text: string): string {
  const path = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(path, text);
  return path;
}

const resolve = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
  resolveRunConfig(parseCommandLine(controllerProgram, argv, env).options);

test('defaults, flags and environment', () => {
  const c = resolve(['run', '--catalog', '/tmp/c.db', '--repo-path', '/srv/repo']);
  assert.deepEqual(c, {
    listen: '127.0.0.1:7420',
    catalogPath: '/tmp/c.db',
    repositories: [{ case: 'posix', value: { path: '/srv/repo' } }],
    reportedBackupCheck: 'manifest',
    heartbeatIntervalSeconds: 5,
    maxConnections: 16384,
    jobReclaimGraceSeconds: 60,
    logFormat: 'auto',
    logLevel: 'info',
    scheduleIntervalSeconds: 30,
    maxBackupsPerRepository: 8,
    maxBackupsPerHost: 2,
    eventStream: { maxAgeSeconds: 604800, maxBytes: 1073741824, duplicateWindowSeconds: 3600 },
    health: { rpoSeconds: 300, staleBackupSeconds: 93600, silenceSeconds: 60, intervalSeconds: 10 },
    metricsListen: '127.0.0.1:7430',
  });
  const n = resolve([
    'run',
    '--catalog',
    '/c',
    '--repo-path',
    '/r',
    '--nats-url',
    'nats://a:4222, nats://b:4222',
    '--rpo-threshold',
    '3',
    '--metrics-listen',
    'off',
  ]);
  assert.deepEqual(
    [n.natsUrl, n.health?.rpoSeconds, n.metricsListen],
    [['nats://a:4222', 'nats://b:4222'], 3, undefined],
  );
  const s = resolve(
    ['run', '--catalog', '/c', '--repo-path', '/r', '--schedule-interval', '1', '--max-backups-per-host', '1'],
    { PGFLEET_MAX_BACKUPS_PER_REPOSITORY: '3' },
  );
  assert.deepEqual([s.scheduleIntervalSeconds, s.maxBackupsPerHost, s.maxBackupsPerRepository], [1, 1, 3]);
  const e = resolve(['run', '--heartbeat-interval', '9'], {
    PGFLEET_CATALOG: '/x.db',
    PGFLEET_REPO_PATH: '/r',
    PGFLEET_HEARTBEAT_INTERVAL: '3',
    PGFLEET_LISTEN: '0.0.0.0:9000',
  });
  assert.deepEqual(
    [e.catalogPath, e.repositories, e.heartbeatIntervalSeconds, e.listen],
    ['/x.db', [{ case: 'posix', value: { path: '/r' } }], 9, '0.0.0.0:9000'],
  );
  // A fleet's agents each hold a connection: the listener's cap is a setting like the others.
  assert.equal(resolve(['run', '--max-connections', '30000'], { PGFLEET_CATALOG: '/x.db' }).maxConnections, 30000);
  assert.equal(resolve(['run'], { PGFLEET_CATALOG: '/x.db', PGFLEET_MAX_CONNECTIONS: '20000' }).maxConnections, 20000);
});

test('a config file is read; flags win over it', () => {
  const path = configFile('catalog: /from/file.db\nrepo-path: /file/repo\nheartbeat-interval: 7\nlog-level: debug\n');
  const c = resolve(['run', '--config', path, '--log-level', 'warn']);
  assert.deepEqual(
    [c.catalogPath, c.repositories, c.heartbeatIntervalSeconds, c.logLevel],
    ['/from/file.db', [{ case: 'posix', value: { path: '/file/repo' } }], 7, 'warn'],
  );
});

test('repositories: --repo and --repo2 as URLs, none at all when agents bring their own', () => {
  const two = resolve([
    'run',
    '--catalog',
    '/c',
    '--repo',
    '/srv/repo',
    '--repo2',
    's3://offsite/prod?endpoint=http://127.0.0.1:9000&path-style=true',
  ]);
  assert.deepEqual(two.repositories, [
    { case: 'posix', value: { path: '/srv/repo' } },
    {
      case: 's3',
      value: { bucket: 'offsite', prefix: 'prod', endpoint: 'http://127.0.0.1:9000', region: '', forcePathStyle: true },
    },
  ]);
  assert.deepEqual(resolve(['run', '--catalog', '/c']).repositories, []);
  assert.throws(
    () => resolve(['run', '--catalog', '/c', '--repo2', '/r2']),
    (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && /'repo2' needs 'repo'/.test(err.message),
  );
  assert.throws(
    () => resolve(['run', '--catalog', '/c', '--repo', '/r', '--repo-path', '/r']),
    (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && /set one of them/.test(err.message),
  );
  assert.throws(
    () => resolve(['run', '--catalog', '/c', '--repo', '/r', '--repo2', 'posix:/r/']),
    (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && /the same repository/.test(err.message),
  );
  assert.throws(
    () => resolve(['run', '--catalog', '/c', '--repo', 's3://Bad_Name']),
    (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && /option 'repo'/.test(err.message),
  );
});

test('an unknown config key is PGF-1002 naming the key', () => {
  const path = configFile('catalog: /c.db\nrepo_path: /r\n');
  assert.throws(
    () => resolve(['run', '--config', path]),
    (err: unknown) =>
      PgfleetError.is(err, 'InvalidConfig') &&
      err.code === ErrorCodes.InvalidConfig.code &&
      err.message.includes('repo_path') &&
      err.message.includes(path),
  );
});

test('a config value of the wrong type names the key and what is allowed', () => {
  const path = configFile('catalog: /c.db\nrepo-path: /r\nlog-level: loud\n');
  assert.throws(
    () => resolve(['run', '--config', path]),
    (err: unknown) =>
      PgfleetError.is(err, 'InvalidConfig') && /log-level/.test(err.message) && /info/.test(err.message),
  );
});

test('missing required options name every way to set them', () => {
  assert.throws(
    () => resolve(['run', '--repo-path', '/r']),
    (err: unknown) =>
      PgfleetError.is(err, 'InvalidConfig') && /catalog/.test(err.message) && /PGFLEET_CATALOG/.test(err.message),
  );
});

test('bad values', () => {
  assert.throws(() => resolve(['run', '--catalog', '/c', '--repo-path', 'relative/repo']), /not an absolute path/);
  assert.throws(
    () => resolve(['run', '--catalog', '/c', '--repo-path', '/r', '--heartbeat-interval', '0']),
    (err: unknown) => PgfleetError.is(err, 'InvalidConfig'),
  );
  assert.throws(() => resolve(['run', '--catalog', '/c', '--repo-path', '/r', '--listen', 'nohost']), /host:port/);
  assert.throws(
    () => resolve(['run', '--catalog', '/c', '--repo-path', '/r', '--schedule-interval', '0']),
    (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && /--schedule-interval/.test(err.message),
  );
  assert.throws(
    () => resolve(['run', '--catalog', '/c', '--repo-path', '/r', '--max-backups-per-repository', '0']),
    (err: unknown) => PgfleetError.is(err, 'InvalidConfig') && /--max-backups-per-repository/.test(err.message),
  );
  assert.throws(
    () => parseCommandLine(controllerProgram, ['serve']),
    (err: unknown) => PgfleetError.is(err, 'UnknownCommand'),
  );
  assert.throws(
    () => parseCommandLine(controllerProgram, ['run', '--bogus']),
    (err: unknown) => PgfleetError.is(err, 'InvalidArgument'),
  );
});

test('help lists every option with its environment variable', () => {
  const text = helpText(controllerProgram, controllerProgram.commands[0]);
  for (const name of [
    '--listen',
    '--catalog',
    '--repo',
    '--repo2',
    '--repo-path',
    '--heartbeat-interval',
    '--log-level',
    'PGFLEET_REPO_PATH',
    'PGFLEET_REPO2',
  ])
    assert.ok(text.includes(name), name);
});
