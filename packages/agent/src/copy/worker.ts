/**
 * A copy worker thread (copy-pool.ts): runs backup/restore/hash tasks against its own driver for
 * the posix repository root it was given, so hashing, page checks, (de)compression and file I/O of
 * several files run on several cores (the main thread runs tasks too, besides planning and
 * recording).
 */
import { parentPort, workerData } from 'node:worker_threads';
// Light entries only (see copy-tasks.ts): a thread that imported all of @pgfleet/storage, core
// and pg would carry ~45 MB of code and take ~120 ms of CPU to start.
import { PosixDriver } from '@pgfleet/storage/posix-driver';
import { runCopyTask, serialiseError, type CopyTask } from './tasks.js';

const { repoRoot } = workerData as { repoRoot: string };
const driver = new PosixDriver(repoRoot);

parentPort!.on('message', (m: { id: number; task: CopyTask }) => {
  runCopyTask(driver, m.task).then(
    (result) => parentPort!.postMessage({ id: m.id, result }),
    (err: unknown) => parentPort!.postMessage({ id: m.id, error: serialiseError(err) }),
  );
});
