// Secret options: never from a flag, from the environment, the config file or a file only its owner reads.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { helpText, parseCommandLineWith, type ProgramSpec } from './command-line.js';
import { loadConfigFile } from './options.js';
import { ErrorCodes, PgfleetError } from './errors.js';

const PROGRAM = {
  name: 'demo',
  summary: 'a demo program',
  options: [
    { name: 'config', type: 'string', description: 'config file', cliOnly: true },
    { name: 'pg-password', type: 'string', description: 'password', secret: true },
  ],
  commands: [{ name: 'run', summary: 'run', options: ['config', 'pg-password'] }],
} as const satisfies ProgramSpec;

let dir = '';
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'pgfleet-secret-options-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
  parseCommandLineWith(PROGRAM, ['run', ...argv], env, loadConfigFile).options['pg-password'];

function file(name: string, text: string, mode = 0o600): string {
  const path = join(dir, name);
  writeFileSync(path, text, { mode });
  return path;
}

test('a secret flag is refused with PGF-1021, naming every other way and not echoing the value', () => {
  for (const argv of [['--pg-password', 'hunter2'], ['--pg-password=hunter2']]) {
    assert.throws(
      () => parse(argv),
      (e: unknown) =>
        PgfleetError.is(e, 'SecretOnCommandLine') &&
        e.code === ErrorCodes.SecretOnCommandLine.code &&
        !e.message.includes('hunter2') &&
        /PGFLEET_PG_PASSWORD, --pg-password-file \(or PGFLEET_PG_PASSWORD_FILE\), or 'pg-password:' in the config file/.test(
          e.hint,
        ),
    );
  }
});

test('a secret comes from the environment, its file (flag, environment, config key) or the config file', () => {
  const secretFile = file('pw', 'from-file\n');
  assert.equal(parse([], { PGFLEET_PG_PASSWORD: 'from-env' }), 'from-env');
  assert.equal(parse(['--pg-password-file', secretFile]), 'from-file');
  assert.equal(parse([], { PGFLEET_PG_PASSWORD_FILE: secretFile }), 'from-file');
  // The file named on the command line wins over the environment, as a flag would.
  assert.equal(parse(['--pg-password-file', secretFile], { PGFLEET_PG_PASSWORD: 'from-env' }), 'from-file');
  const inline = file('inline.yaml', 'pg-password: from-config\n');
  assert.equal(parse(['--config', inline]), 'from-config');
  const byFile = file('by-file.yaml', `pg-password-file: ${secretFile}\n`);
  assert.equal(parse(['--config', byFile]), 'from-file');
});

test('a secret file others can read, or an empty one, is refused naming the file', () => {
  const open = file('open', 'x\n', 0o644);
  assert.throws(
    () => parse(['--pg-password-file', open]),
    (e: unknown) => PgfleetError.is(e, 'SecretFileUnsafe') && e.message.includes(open) && /chmod o-r/.test(e.hint),
  );
  const empty = file('empty', '\n');
  assert.throws(
    () => parse([], { PGFLEET_PG_PASSWORD_FILE: empty }),
    (e: unknown) => PgfleetError.is(e, 'InvalidConfig') && /PGFLEET_PG_PASSWORD_FILE: .* is empty/.test(e.message),
  );
});

test('--help shows the file option and where a secret may come from, never a flag for the secret itself', () => {
  const help = helpText(PROGRAM, PROGRAM.commands[0]);
  assert.match(help, /--pg-password-file <path>/);
  assert.match(help, /secret, never a flag: PGFLEET_PG_PASSWORD/);
  assert.doesNotMatch(help, /--pg-password </);
});
