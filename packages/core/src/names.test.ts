/**
 * The one rule for cluster names, agent ids and backup labels, and the option rows that ask for
 * it: whatever a repository key, a certificate or a catalog row is built from must fit.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PgfleetError } from './errors.js';
import { parseCommandLineWith, type ProgramSpec } from './command-line.js';
import { configSchema } from './options.js';
import { isAgentId, isBackupLabel, isClusterName, parseClusterName, quoteInput } from './names.js';

test('cluster names: lower-case single path segments of at most 63 characters that alias nothing', () => {
  for (const ok of ['main', 'c1', 'db-0042.prod', 'a_b', '0', 'x'.repeat(63)]) assert.ok(isClusterName(ok), ok);
  // shop/wal lands inside shop's WAL prefix; Shop and shop are one directory on a case-insensitive disk.
  for (const bad of [
    '',
    'shop/wal',
    'Shop',
    '..',
    'a..b',
    '.hidden',
    '-x',
    '_x',
    'a b',
    'a\\b',
    'x'.repeat(64),
    'é',
    '*',
  ])
    assert.ok(!isClusterName(bad), bad);
});

test('agent ids and backup labels: bounded, printable, one path segment', () => {
  for (const ok of ['agent-1', 'db1.example.com:main', 'pg@db1', 'x'.repeat(128)]) assert.ok(isAgentId(ok), ok);
  for (const bad of ['', 'x/y', 'db1/a,b', '..', 'a..b', 'a b', 'x'.repeat(129), '\u0000'])
    assert.ok(!isAgentId(bad), bad);
  for (const ok of ['20261124-153012F', '20260301-010000F_20260302-010000I', 'b1', 'A'])
    assert.ok(isBackupLabel(ok), ok);
  for (const bad of ['', '../../etc/fake-F', 'a/b', '..', 'x'.repeat(129)]) assert.ok(!isBackupLabel(bad), bad);
});

test('a refusal never echoes a long or hostile value whole', () => {
  const huge = 'A'.repeat(1_000_000);
  const err = (() => {
    try {
      parseClusterName(huge, 'Hello.cluster');
    } catch (e) {
      return e;
    }
  })();
  assert.ok(PgfleetError.is(err, 'InvalidClusterName'));
  assert.ok(err.message.length < 400, `${err.message.length} characters`);
  assert.match(err.message, /^Hello\.cluster: "A{64}\.\.\." \(1000000 characters\) is not a cluster name/);
  assert.equal(quoteInput('a\nb'), '"a\\nb"');
});

const program = {
  name: 'p',
  summary: 's',
  options: [
    { name: 'config', type: 'string', cliOnly: true, description: 'c' },
    { name: 'cluster', type: 'string', format: 'cluster-name', description: 'c' },
    { name: 'agent-id', type: 'string', format: 'agent-id', description: 'a' },
  ],
  commands: [{ name: 'run', summary: 'r', options: ['config', 'cluster', 'agent-id'] }],
} as const satisfies ProgramSpec;

test('an option row with a format: flags, environment and config files follow the rule', () => {
  const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseCommandLineWith(program, argv, env, null);
  assert.equal(parse(['run', '--cluster', 'shop']).options.cluster, 'shop');
  assert.throws(
    () => parse(['run', '--cluster', 'shop/wal']),
    (e) => PgfleetError.is(e, 'InvalidClusterName') && /--cluster: "shop\/wal" is not a cluster name/.test(e.message),
  );
  assert.throws(
    () => parse(['run'], { PGFLEET_AGENT_ID: 'x/y' }),
    (e) => PgfleetError.is(e, 'InvalidAgentId') && /PGFLEET_AGENT_ID/.test(e.message),
  );
  const schema = configSchema(program.options);
  assert.equal(schema.safeParse({ cluster: 'shop' }).success, true);
  const bad = schema.safeParse({ cluster: '../shop' });
  assert.equal(bad.success, false);
  assert.match(bad.error?.issues[0]?.message ?? '', /not a cluster name/);
});
