// `--version` on every installed binary: the package version and the Node it runs on (pgfleet
// needs Node 24), printed without loading a command, exit 0. Options may precede it too.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './harness.js';

const BINARIES = [
  ['pgfleet', 'cli'],
  ['pgfleet-agent', 'agent'],
  ['pgfleet-controller', 'controller'],
] as const;

describe('--version', () => {
  for (const [name, pkg] of BINARIES) {
    it(`${name} --version names the binary, its package version and the Node version`, () => {
      const { version } = JSON.parse(readFileSync(join(REPO_ROOT, 'packages', pkg, 'package.json'), 'utf8')) as {
        version: string;
      };
      const bin = join(REPO_ROOT, 'packages', pkg, 'dist', 'bin.js');
      const text = execFileSync(process.execPath, [bin, '--version'], { encoding: 'utf8' });
      assert.equal(text, `${name} ${version} (node ${process.version})\n`);
      assert.equal(execFileSync(process.execPath, [bin, 'version'], { encoding: 'utf8' }), text);
    });
  }
});
