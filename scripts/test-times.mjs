// A node:test reporter (scripts/test.sh adds it beside the default spec reporter) recording how
// long each test FILE ran, from its process start to its end, so that every CI log says which
// files make the suite's wall time. At the end of the run it prints the longest files (the first
// 20) with when each started and ended, and keeps the whole list in
// test-artifacts/test-times.txt ($PGFLEET_TEST_ARTIFACTS moves it), rewritten as each file ends
// so a run cut off still leaves what it measured.
//
// node --test runs each file as a child process under a file-level test of the parent, named by
// the file's path as given or globbed (its location is that path resolved):
// test:dequeue of that test is its start (with --test-concurrency it waits for a free slot first),
// test:complete its end with details.duration_ms. Both reach reporters as they happen, while the
// file's own test events are held back until the files before it reported, so the times are the
// runner's, not the order of the output.
import { mkdirSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';

const SHOWN = 20;

/**
 * The file-level test of a file run in its own process: its name is its path as given (test.sh
 * names a few absolutely), its location that path resolved. Shown relative to the working directory.
 */
function fileOf(data) {
  if (data.nesting !== 0 || typeof data.file !== 'string' || resolve(data.name) !== data.file) return undefined;
  return isAbsolute(data.name) ? relative(process.cwd(), data.name) : data.name;
}

const seconds = (ms) => (ms / 1000).toFixed(1).padStart(7);

export default async function* testTimes(source) {
  const runStart = performance.now();
  /** File -> when it started (ms since the run started). */
  const started = new Map();
  /** File -> { start, ms, ok } once it ended. */
  const ended = new Map();
  const artifacts = process.env.PGFLEET_TEST_ARTIFACTS ?? 'test-artifacts';
  const out = join(artifacts, 'test-times.txt');

  const table = (limit) => {
    const rows = [...ended].sort((a, b) => b[1].ms - a[1].ms).slice(0, limit);
    return rows
      .map(
        ([file, t]) =>
          `${seconds(t.ms)} s  ${file}  (started at ${seconds(t.start).trim()} s, ended at ${seconds(t.start + t.ms).trim()} s${t.ok ? '' : ', FAILED'})`,
      )
      .join('\n');
  };
  const summary = () => {
    const wall = performance.now() - runStart;
    const busy = [...ended.values()].reduce((sum, t) => sum + t.ms, 0);
    return `${ended.size} test files ran for ${seconds(busy).trim()} s in all, in a wall time of ${seconds(wall).trim()} s`;
  };
  const save = () => {
    try {
      mkdirSync(artifacts, { recursive: true });
      writeFileSync(out, `# each test file's wall time, longest first\n# ${summary()}\n${table(Infinity)}\n`);
    } catch {
      // a times file that cannot be written must not fail the run: the summary still goes to the log
    }
  };

  for await (const { type, data } of source) {
    if (type !== 'test:dequeue' && type !== 'test:complete') continue;
    const file = fileOf(data);
    if (file === undefined) continue;
    const now = performance.now() - runStart;
    if (type === 'test:dequeue') {
      started.set(file, now);
      continue;
    }
    const start = started.get(file) ?? now - (data.details?.duration_ms ?? 0);
    ended.set(file, { start, ms: data.details?.duration_ms ?? now - start, ok: data.details?.passed !== false });
    save();
  }

  save();
  if (ended.size === 0) return;
  yield `\n# The ${Math.min(SHOWN, ended.size)} longest test files (all of them in ${out}); ${summary()}:\n${table(SHOWN)}\n`;
}
