import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const COMPILE_CACHE = new URL('./compile-cache.js', import.meta.url).href;

/** Runs `bundle` the way the CLI's bin.js does, in a process whose temporary directory is `tmp`. */
async function runBundle(tmp: string, bundle: string, ...args: string[]): Promise<string> {
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: tmp };
  delete env.NODE_DISABLE_COMPILE_CACHE;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { runBundleWithCodeCache } from ${JSON.stringify(COMPILE_CACHE)}; runBundleWithCodeCache(${JSON.stringify(bundle)}, 'command');`,
      ...args,
    ],
    { env },
  );
  return stdout;
}

// A bundle as esbuild writes it: CommonJS, import.meta.url defined as __bundleUrl, a function
// that only runs after the top level (the code a cache made after the run adds).
const bundleSource = (word: string) => `const { basename } = require('node:path');
function greet(args) { return '${word} ' + args.join(',') + ' ' + basename(__filename) + ' ' + basename(new URL(__bundleUrl).pathname); }
process.stdout.write(greet(process.argv.slice(1)) + '\\n');
`;

/** A bundle saying 'hello' in a fresh directory, and the temporary directory its runs get. */
async function withBundle(body: (bundle: string, tmp: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'pgfleet-bundle-cache-'));
  try {
    const bundle = join(dir, 'b.cjs');
    await writeFile(bundle, bundleSource('hello'));
    const tmp = join(dir, 'tmp');
    await mkdir(tmp);
    await body(bundle, tmp);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('a bundle runs with its code cache, and another build of it never runs with the old cache', () =>
  withBundle(async (bundle, tmp) => {
    assert.equal(await runBundle(tmp, bundle, 'a', 'b'), 'hello a,b b.cjs b.cjs\n');
    const cacheDir = join(tmp, `pgfleet-compile-cache-${process.getuid!()}`);
    const cached = (await readdir(cacheDir)).filter((f) => f.endsWith('.v8cache'));
    assert.equal(cached.length, 1, 'the first run writes the cache when it exits');
    assert.equal((await stat(join(cacheDir, cached[0]!))).mode & 0o077, 0, 'readable by its user only');
    assert.equal(await runBundle(tmp, bundle, 'c'), 'hello c b.cjs b.cjs\n');

    // Same length, other code: V8 alone would take the old cache (it checks only the length).
    await writeFile(bundle, bundleSource('howdy'));
    assert.equal(await runBundle(tmp, bundle, 'd'), 'howdy d b.cjs b.cjs\n');
    assert.equal(await runBundle(tmp, bundle, 'e'), 'howdy e b.cjs b.cjs\n');
  }));

test('a cache directory others can write to is not used', () =>
  withBundle(async (bundle, tmp) => {
    const cacheDir = join(tmp, `pgfleet-compile-cache-${process.getuid!()}`);
    await mkdir(cacheDir, { recursive: true });
    await chmod(cacheDir, 0o777);
    assert.equal(await runBundle(tmp, bundle, 'a'), 'hello a b.cjs b.cjs\n');
    assert.deepEqual(await readdir(cacheDir), []);
  }));

test('a cache file damaged on disk is never handed to V8: the bundle runs from source and the cache is written again', () =>
  withBundle(async (bundle, tmp) => {
    assert.equal(await runBundle(tmp, bundle, 'a'), 'hello a b.cjs b.cjs\n');
    const cacheDir = join(tmp, `pgfleet-compile-cache-${process.getuid!()}`);
    const [name] = (await readdir(cacheDir)).filter((f) => f.endsWith('.v8cache'));
    const file = join(cacheDir, name!);
    const good = await readFile(file);
    const damaged = Buffer.from(good);
    damaged[damaged.length >> 1]! ^= 0xff; // one byte of V8's data, the header intact
    await writeFile(file, damaged);
    assert.equal(await runBundle(tmp, bundle, 'b'), 'hello b b.cjs b.cjs\n');
    assert.notDeepEqual(await readFile(file), damaged, 'the damaged cache is replaced');
    assert.deepEqual(
      (await readdir(cacheDir)).filter((f) => f.endsWith('.tmp')),
      [],
      'no temporary file is left',
    );
  }));
