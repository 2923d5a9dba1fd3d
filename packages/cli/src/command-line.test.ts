// How `pgfleet` reads a command line a person typed: options before the command, typos answered
// with the closest real name, and every bad value named with where it came from.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { PgfleetError, parseCommandLine } from '@pgfleet/core';
import { cliProgram } from './program.js';

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseCommandLine(cliProgram, argv, env);

function fails(argv: string[], name: string, pattern: RegExp, env: NodeJS.ProcessEnv = {}) {
  assert.throws(
    () => parse(argv, env),
    (e: unknown) => PgfleetError.is(e) && e.errorName === name && pattern.test(e.message),
  );
}

test('global options may come before the command', () => {
  const p = parse(['--controller', 'ctl:7420', '--insecure', 'backup', 'shop', '--type', 'incr']);
  assert.equal(p.command.name, 'backup');
  assert.deepEqual(p.positionals, ['shop']);
  assert.equal(p.options.controller, 'ctl:7420');
  assert.equal(p.options.insecure, true);
  assert.equal(p.options.type, 'incr');
  const eq = parse(['--controller=ctl:1', '--output', 'json', 'jobs']);
  assert.deepEqual([eq.command.name, eq.options.controller, eq.options.output], ['jobs', 'ctl:1', 'json']);
  assert.equal(parse(['--controller', 'x', '--help']).help, true);
});

test('a mistyped command or flag is answered with the closest real one', () => {
  fails(['bakcup', 'shop'], 'UnknownCommand', /unknown command 'bakcup'; did you mean 'backup'\?/);
  fails(['backup', 'shop', '--typ', 'incr'], 'InvalidArgument', /unknown option --typ; did you mean --type\?/);
  fails(['--controler', 'x', 'jobs'], 'InvalidArgument', /unknown option --controler; did you mean --controller\?/);
  // A real flag of another command says so instead of guessing.
  fails(['status', '--type', 'incr'], 'InvalidArgument', /--type is not an option of status \(it is one of: backup\)/);
  fails(['backup', 'shop', '--wait=yes'], 'InvalidArgument', /--wait is a switch and takes no value/);
  fails(['backup', 'shop', '--type'], 'InvalidArgument', /--type needs a value \(one of full, diff, incr\)/);
});

test('bad values name their source: the flag, or the environment variable, with a hint for that source', () => {
  // `--daily -1` reaches the range check (not node's "ambiguous argument" text).
  assert.throws(
    () => parse(['policy', 'set', 'shop', '--daily', '-1']),
    (e: unknown) =>
      PgfleetError.is(e, 'InvalidConfig') &&
      e.message === "--daily: '-1' is not allowed; expected an integer from 0 to 100000" &&
      /Correct --daily on the command line/.test(e.hint) &&
      !/config file/.test(e.hint),
  );
  assert.throws(
    () => parse(['jobs'], { PGFLEET_TIMEOUT: 'soon' }),
    (e: unknown) =>
      PgfleetError.is(e, 'InvalidConfig') &&
      e.message ===
        "environment variable PGFLEET_TIMEOUT: 'soon' is not allowed; expected an integer from 1 to 86400" &&
      /unset PGFLEET_TIMEOUT/.test(e.hint),
  );
  // A negative number is still a value where one is allowed to start with '-'.
  assert.equal(parse(['policy', 'set', 'shop', '--daily', '3']).options.daily, 3);
});
