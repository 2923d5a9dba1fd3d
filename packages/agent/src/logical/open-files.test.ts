import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { processTreeOpenFiles } from './open-files.js';

/**
 * A process like pg_dump's leader: it opens `a` for writing, starts a child (a worker) that opens
 * `b`, and then closes on command: "close-a" closes a, "close-b" makes the worker close b. Each
 * step is acknowledged on stdout, so the test waits on what happened, never on time.
 */
const LEADER = `
const fs = require('node:fs');
const { spawn } = require('node:child_process');
const [a, b] = process.argv.slice(1);
const fa = fs.openSync(a, 'w');
fs.writeSync(fa, 'data');
const worker = spawn(process.execPath, ['-e', \`
  const fs = require('node:fs');
  const fb = fs.openSync(process.argv[1], 'w');
  console.log('open');
  process.stdin.on('data', () => { fs.closeSync(fb); console.log('closed'); });
\`, b], { stdio: ['pipe', 'pipe', 'inherit'] });
worker.stdout.once('data', () => console.log('ready'));
require('node:readline').createInterface({ input: process.stdin }).on('line', (l) => {
  if (l === 'close-a') { fs.closeSync(fa); console.log('a closed'); }
  if (l === 'close-b') { worker.stdout.once('data', () => console.log('b closed')); worker.stdin.write('x'); }
  if (l === 'exit') { worker.kill(); process.exit(0); }
});
`;

describe('processTreeOpenFiles', () => {
  const dirs: string[] = [];
  const children: ChildProcess[] = [];
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('sees the files a process and its descendants have open in the directory, and not once they are closed', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgfleet-open-files-'));
    dirs.push(dir);
    const a = join(dir, '1.dat.gz');
    const b = join(dir, '2.dat.gz');
    await writeFile(join(dir, 'toc.dat'), 'closed long ago');
    const leader = spawn(process.execPath, ['-e', LEADER, a, b], { stdio: ['pipe', 'pipe', 'inherit'] });
    children.push(leader);
    const lines = createInterface({ input: leader.stdout! })[Symbol.asyncIterator]();
    const said = async (what: string) => assert.equal((await lines.next()).value, what);
    await said('ready');
    const probe = processTreeOpenFiles(leader.pid!, dir);
    assert.deepEqual([...(await probe())!].sort(), ['1.dat.gz', '2.dat.gz']);
    leader.stdin!.write('close-a\n');
    await said('a closed');
    assert.deepEqual([...(await probe())!], ['2.dat.gz'], "the worker's file is still open");
    leader.stdin!.write('close-b\n');
    await said('b closed');
    assert.deepEqual([...(await probe())!], []);
    leader.stdin!.write('exit\n');
    await once(leader, 'exit');
    // The process gone: nothing of it is open.
    assert.deepEqual([...(await probe())!], []);
  });

  it('finds descendants by the ppid in /proc/<pid>/stat where the kernel has no children files', async () => {
    // A /proc of real directories and symlinks: pid 100 (no task/*/children), its child 101
    // (comm with spaces and parentheses) holding 3.dat.gz, an unrelated 200 holding 4.dat.gz.
    const root = await mkdtemp(join(tmpdir(), 'pgfleet-fake-proc-'));
    dirs.push(root);
    const proc = join(root, 'proc');
    await mkdir(join(root, 'spool'));
    // The links name the real path, as the kernel's do.
    const dir = await realpath(join(root, 'spool'));
    for (const n of ['3.dat.gz', '4.dat.gz']) await writeFile(join(dir, n), '');
    const processOf = async (pid: number, ppid: number, comm: string, files: string[]) => {
      await mkdir(join(proc, String(pid), 'task', String(pid)), { recursive: true });
      await mkdir(join(proc, String(pid), 'fd'));
      await writeFile(join(proc, String(pid), 'stat'), `${pid} (${comm}) S ${ppid} ${pid} ${pid} 0 -1\n`);
      let fd = 3;
      for (const f of files) await symlink(join(dir, f), join(proc, String(pid), 'fd', String(fd++)));
    };
    await processOf(100, 1, 'pg_dump', []);
    await processOf(101, 100, 'pg dump) S 1 (x', ['3.dat.gz']);
    await processOf(200, 1, 'other', ['4.dat.gz']);
    assert.deepEqual([...(await processTreeOpenFiles(100, dir, proc)())!], ['3.dat.gz']);
    // A process whose descriptors cannot be read: no answer, never "closed".
    await rm(join(proc, '101', 'fd'), { recursive: true });
    await writeFile(join(proc, '101', 'fd'), 'not a directory');
    assert.equal(await processTreeOpenFiles(100, dir, proc)(), undefined);
  });
});
