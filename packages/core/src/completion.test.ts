import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { ProgramSpec } from './command-line.js';
import { completionScript } from './completion.js';

const PROGRAM = {
  name: 'demo-tool',
  summary: 'a demo',
  options: [
    { name: 'type', type: 'string', description: "backup type: 'full' [default]", choices: ['full', 'incr'] },
    { name: 'wait', type: 'boolean', description: 'wait: until done' },
    { name: 'token', type: 'string', description: 'bearer token', secret: true },
    { name: 'full', type: 'string', description: 'cron of fulls' },
  ],
  commands: [
    { name: 'backup', summary: 'take a backup', options: ['type', 'wait', 'token'] },
    {
      name: 'verify',
      summary: 'check it',
      options: ['full'],
      localOptions: [{ name: 'full', type: 'boolean', description: 'read every file' }],
    },
  ],
} as const satisfies ProgramSpec;

function bashComplete(words: string[]): string[] {
  const script = completionScript(PROGRAM, 'bash');
  const out = execFileSync('bash', [
    '-c',
    `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _demo_tool; printf '%s\\n' "\${COMPREPLY[@]}"`,
  ]).toString();
  return out.split('\n').filter(Boolean).sort();
}

test('bash completion follows the table: commands, per-command flags, choices, secrets as --x-file', () => {
  assert.deepEqual(bashComplete(['demo-tool', '']), ['backup', 'help', 'verify', 'version']);
  assert.deepEqual(bashComplete(['demo-tool', 'backup', '--']), ['--help', '--token-file', '--type', '--wait']);
  assert.deepEqual(bashComplete(['demo-tool', 'backup', '--type', '']), ['full', 'incr']);
  // verify's local --full is a boolean: the word after it is not its value, and it takes no choices
  assert.deepEqual(bashComplete(['demo-tool', 'verify', '--f']), ['--full']);
  // a value flag before the command: its value is not taken for the command
  assert.deepEqual(bashComplete(['demo-tool', '--token-file', 'x', 'backup', '--w']), ['--wait']);
});

test('zsh completion quotes descriptions so _arguments reads them', () => {
  const zsh = completionScript(PROGRAM, 'zsh');
  assert.match(zsh, /^#compdef demo-tool$/m);
  assert.match(zsh, /'--type=\[backup type - full \(default\)\]:value:\(full incr\)'/);
  assert.match(zsh, /'--wait\[wait - until done\]'/);
  assert.match(zsh, /verify\) _arguments '--full\[read every file\]'/);
});
