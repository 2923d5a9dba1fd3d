/**
 * bin.js runs the bundle bundle-cli.mjs builds (dist/cli-main.bundle.cjs), so that is what every
 * CLI test here and in test/ exercises: it must be built from the modules as they are now, and
 * give what the unbundled ES modules give (bin.js falls back to them when the bundle is missing).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const DIST = fileURLToPath(new URL('.', import.meta.url));
const run = async (entry: string, args: string[]) => {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [entry, ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
};

describe('the CLI bundle', () => {
  it('is built from the ES modules beside it, as they are now', async () => {
    const inputs = JSON.parse(await readFile(new URL('./cli-main.inputs.json', import.meta.url), 'utf8')) as Record<
      string,
      string
    >;
    assert.ok(Object.keys(inputs).some((f) => f.endsWith('commands.js')));
    for (const [file, sha256] of Object.entries(inputs)) {
      const now = createHash('sha256')
        .update(await readFile(resolve(DIST, file)))
        .digest('hex');
      assert.equal(
        now,
        sha256,
        `dist/cli-main.bundle.cjs was built from another ${file}: run \`npm run build\` in packages/cli (tsc -b alone does not rebuild the bundle)`,
      );
    }
  });

  it('prints the same version, help and errors as the ES modules', async () => {
    for (const args of [['--version'], ['backup', '--help'], ['status', '--controller', '127.0.0.1:1'], ['nosuch']]) {
      const bundled = await run(`${DIST}bin.js`, args);
      const modules = await run(`${DIST}cli-main.js`, args);
      assert.deepEqual(bundled, modules, `pgfleet ${args.join(' ')}`);
      assert.notEqual(bundled.stdout + bundled.stderr, '');
    }
  });
});
