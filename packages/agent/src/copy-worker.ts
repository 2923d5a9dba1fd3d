/**
 * A copy worker thread (copy-pool.ts): runs backup/restore/hash tasks against its own Repository
 * on the posix root it was given, so hashing, page checks, (de)compression and file I/O of
 * several files run on several cores while the main thread only plans and records.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort, workerData } from 'node:worker_threads';
import { PosixDriver, Repository } from '@pgfleet/storage';
import { runCopyTask, serialiseError, setGcHook, type CopyTask } from './copy-tasks.js';

const { repoRoot } = workerData as { repoRoot: string };
const repo = new Repository(new PosixDriver(repoRoot));

// Every one-shot (de)compression allocates a native zstd context and its output outside the V8
// heap, freed only when a full GC finalises them; with a tiny heap V8 waits until 100-200 MB of
// that has piled up per thread. A full GC of this small heap every 128 calls or 16 MiB keeps the
// agent's RSS bounded (measured on 637 MB of PGDATA: restore peak 343 -> ~200 MB, for ~10-20% more CPU).
// V8 flags are per process: the flag is left on (turning it off could race another worker's start);
// it only gives vm contexts created later a `gc` global.
setFlagsFromString('--expose-gc');
let gc: ((o?: { type: 'minor' | 'major'; execution?: 'sync' }) => void) | undefined;
try {
  gc = runInNewContext('gc') as typeof gc;
} catch {
  gc = undefined; // no GC hook: correct, only less frugal with memory
}
setGcHook(gc ? () => gc({ type: 'major', execution: 'sync' }) : undefined);

parentPort!.on('message', (m: { id: number; task: CopyTask }) => {
  runCopyTask(repo, m.task).then(
    (result) => parentPort!.postMessage({ id: m.id, result }),
    (err: unknown) => parentPort!.postMessage({ id: m.id, error: serialiseError(err) }),
  );
});
