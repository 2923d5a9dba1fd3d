import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseCommandLineWith,
  pickOptions,
  resolveSettings,
  settingKey,
  settingsOf,
  type CommandSettings,
  type ProgramSpec,
  type Settings,
} from './command-line.js';
import { PgfleetError } from './errors.js';

const PROGRAM = {
  name: 'demo',
  summary: 'a demo program',
  options: [
    { name: 'config', type: 'string', description: 'config file', cliOnly: true },
    { name: 'cluster', type: 'string', description: 'cluster name' },
    { name: 'pg-port', type: 'integer', description: 'port', default: 5432, min: 1, max: 65535 },
    { name: 'log-level', type: 'string', description: 'level', default: 'info', choices: ['info', 'debug'] },
    { name: 'compress', type: 'string', description: 'codec', choices: ['zstd', 'none'] },
    { name: 'checksum-delta', type: 'boolean', description: 'by content' },
    { name: 's3-access-key-id', type: 'string', description: 'key id' },
    { name: 'full', type: 'string', description: 'a cron' },
  ],
  commands: [
    {
      name: 'run',
      summary: 'run',
      options: ['config', 'cluster', 'pg-port', 'log-level', 'compress', 'checksum-delta'],
    },
    {
      name: 'verify',
      summary: 'verify',
      options: ['full', 'log-level'],
      localOptions: [{ name: 'full', type: 'boolean', description: 'read everything' }],
    },
  ],
} as const satisfies ProgramSpec;

/** Compile-time equality: the test does not build unless the inferred type is exactly `Want`. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const same = <A, B>(ok: Equal<A, B>) => assert.equal(ok, true);

test('setting keys are the option names in camelCase, in the type and at run time', () => {
  assert.equal(settingKey('pg-port'), 'pgPort');
  assert.equal(settingKey('s3-access-key-id'), 's3AccessKeyId');
  assert.equal(settingKey('repo2'), 'repo2');
  const s = settingsOf(PROGRAM.options, {});
  assert.deepEqual(Object.keys(s), [
    'config',
    'cluster',
    'pgPort',
    'logLevel',
    'compress',
    'checksumDelta',
    's3AccessKeyId',
    'full',
  ]);
});

test('value types come from the table: defaults always set, choices as unions, flags boolean', () => {
  type Run = CommandSettings<typeof PROGRAM, 'run'>;
  same<Run['pgPort'], number>(true);
  same<Run['logLevel'], 'info' | 'debug'>(true);
  same<Run['compress'], 'zstd' | 'none' | undefined>(true);
  same<Run['cluster'], string | undefined>(true);
  same<Run['checksumDelta'], boolean>(true);
  same<keyof Run, 'config' | 'cluster' | 'pgPort' | 'logLevel' | 'compress' | 'checksumDelta'>(true);
  // A command's local option wins over the program's option of the same name.
  same<CommandSettings<typeof PROGRAM, 'verify'>['full'], boolean>(true);
  // Required options are set.
  same<NonNullable<Run['cluster']>, CommandSettings<typeof PROGRAM, 'run', 'cluster'>['cluster']>(true);
  same<Settings<(typeof PROGRAM.options)[number]>['full'], string | undefined>(true);
});

test('resolveSettings reads the parsed values of a command, with defaults and false for absent flags', () => {
  const parsed = parseCommandLineWith(PROGRAM, ['run', '--pg-port', '6000', '--cluster', 'db1'], {}, null);
  const s = resolveSettings(PROGRAM, 'run', parsed.options, ['cluster']);
  assert.deepEqual(s, {
    config: undefined,
    cluster: 'db1',
    pgPort: 6000,
    logLevel: 'info',
    compress: undefined,
    checksumDelta: false,
  });
  const cluster: string = s.cluster; // typed as set: no cast, no check
  assert.equal(cluster, 'db1');
  const verify = resolveSettings(
    PROGRAM,
    'verify',
    parseCommandLineWith(PROGRAM, ['verify', '--full'], {}, null).options,
  );
  assert.equal(verify.full, true);
  // Values from a config file carry no defaults: the settings add them.
  assert.equal(settingsOf(PROGRAM.options, {})['pgPort'], 5432);
});

test('a required option that is unset or empty fails with InvalidConfig naming every way to set it', () => {
  for (const values of [{}, { cluster: '' }]) {
    assert.throws(
      () => resolveSettings(PROGRAM, 'run', values, ['cluster']),
      (e: unknown) =>
        PgfleetError.is(e, 'InvalidConfig') &&
        e.message ===
          "missing required option 'cluster': set --cluster, PGFLEET_CLUSTER or 'cluster:' in the config file",
    );
  }
  assert.throws(
    () => resolveSettings(PROGRAM, 'run', {}, ['config']),
    (e: unknown) =>
      PgfleetError.is(e, 'InvalidConfig') && e.message === "missing required option 'config': set --config",
  );
});

test('pickOptions types the settings of a group of options', () => {
  const specs = pickOptions(PROGRAM.options, ['log-level', 'pg-port']);
  assert.deepEqual(
    specs.map((s) => s.name),
    ['log-level', 'pg-port'],
  );
  const s = settingsOf(specs, { 'pg-port': 7000 });
  same<typeof s, { readonly logLevel: 'info' | 'debug'; readonly pgPort: number }>(true);
  assert.deepEqual(s, { logLevel: 'info', pgPort: 7000 });
  assert.throws(
    () => pickOptions(PROGRAM.options as readonly { name: string; type: 'string'; description: string }[], ['nope']),
    (e: unknown) => PgfleetError.is(e, 'Internal'),
  );
});

test('a list flag given several times reads as one comma list; other flags keep their last value', () => {
  const program = {
    name: 'demo',
    summary: 'a demo program',
    options: [
      { name: 'table', type: 'string', description: 'tables', cliOnly: true, list: true },
      { name: 'database', type: 'string', description: 'database', cliOnly: true },
    ],
    commands: [{ name: 'recover', summary: 'recover', options: ['table', 'database'] }],
  } as const satisfies ProgramSpec;
  const parsed = parseCommandLineWith(
    program,
    ['recover', '--table', 'public.a', '--table', 'public.b,public.c', '--database', 'x', '--database', 'y'],
    {},
    null,
  );
  assert.deepEqual(parsed.options, { table: 'public.a,public.b,public.c', database: 'y' });
  assert.equal(parseCommandLineWith(program, ['recover', '--table', 'public.a'], {}, null).options.table, 'public.a');
});
