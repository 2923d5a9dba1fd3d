/**
 * A copy worker thread (copy/pool.ts): runs backup/restore/hash tasks against the repository it
 * opens from the specs it was started with, so hashing, page checks, (de)compression and file I/O
 * of several files run on several cores (the main thread runs tasks too, besides planning and
 * recording).
 */
import { parentPort, workerData } from 'node:worker_threads';
// Light entries only (see copy/tasks.ts): a thread that imported all of @pgfleet/storage, core
// and pg would carry ~45 MB of code and take ~120 ms of CPU to start.
import { fixedKeys, openRepository } from '@pgfleet/storage/open-repository';
import { RateLimiter } from './rate-limit.js';
import { runCopyTask, serialiseError, type CopyTask, type CopyWorkerData } from './tasks.js';

const { specs, keys, rate } = workerData as CopyWorkerData;
// The agent's one bucket, mapped from the parent's shared memory: every thread advances the same one.
const limiter = rate ? new RateLimiter(rate) : undefined;
// Tasks that arrive while it opens wait for it (a local repository opens at once).
const opening = openRepository(specs, undefined, fixedKeys(keys));
opening.catch(() => {}); // each task reports the failure

parentPort!.on('message', (m: { id: number; task: CopyTask }) => {
  opening
    .then((repo) => runCopyTask(repo, m.task, limiter))
    .then(
      (result) => {
        // Whole-object reads hand their buffer over instead of copying it (copy/tasks.ts ReadObjectTask).
        const bytes = (result as { bytes?: Uint8Array }).bytes;
        const transfer = bytes && bytes.byteOffset === 0 ? [bytes.buffer as ArrayBuffer] : [];
        parentPort!.postMessage({ id: m.id, result }, transfer);
      },
      (err: unknown) => parentPort!.postMessage({ id: m.id, error: serialiseError(err) }),
    );
});
