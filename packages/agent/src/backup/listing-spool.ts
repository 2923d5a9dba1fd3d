/**
 * A backup's PGDATA listing, kept in local files between the walk and the copy instead of in
 * memory (issue 16: ~210 B per file as objects, 21 MB at 100k files, and the sort's copies).
 *
 * The copy takes files largest first, so that the threads finish together instead of one thread
 * copying a big file alone at the end. An exact order would need the whole listing; a rough one
 * does as well: each file goes into the local file of its size class (a few classes, each 8x the
 * next), and the copy reads the classes from the largest down. Files of one class differ in size
 * by at most 8x, and files above the chunk size are split into chunks that run on several threads
 * at once anyway (backup.ts FileCopier), so what is left running at the end is small either way.
 *
 * The files are the agent's own, 0600 in a 0700 directory named for the cluster and the agent's
 * process (entry-spool.ts makeSpoolDir: swept after a crash), removed by close().
 */
import { createReadStream, type ReadStream } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { PgdataEntry } from '../pgdata/walk.js';
import { makeSpoolDir } from './entry-spool.js';

/** Lower bounds of the size classes, largest first; the last one takes every file. */
export const SIZE_CLASSES = [64 << 20, 8 << 20, 1 << 20, 128 << 10, 16 << 10, 2 << 10, 0] as const;

/** Lines gathered per class before one write (a write per file would be a syscall per file). */
const FLUSH_BYTES = 64 << 10;

export class ListingSpool {
  /** Files added. */
  count = 0;
  /** Their bytes, as listed. */
  bytes = 0;
  private readonly pending: string[][] = SIZE_CLASSES.map(() => []);
  private readonly pendingBytes: number[] = SIZE_CLASSES.map(() => 0);
  private writing: Promise<unknown> = Promise.resolve();
  /** The class file being read back: a copy that fails stops reading mid-file, close() ends it. */
  private reading: ReadStream | undefined;

  private constructor(
    private readonly dir: string,
    private readonly handles: FileHandle[],
  ) {}

  /** A spool for a backup of `cluster`, in `parent` (the system's temporary directory unless told). */
  static async create(cluster: string, parent?: string): Promise<ListingSpool> {
    const dir = await makeSpoolDir(cluster, parent);
    const handles: FileHandle[] = [];
    try {
      for (let i = 0; i < SIZE_CLASSES.length; i++) handles.push(await open(classFile(dir, i), 'wx', 0o600));
      return new ListingSpool(dir, handles);
    } catch (err) {
      await Promise.all(handles.map((h) => h.close().catch(() => {})));
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  add(f: PgdataEntry): void {
    this.count++;
    this.bytes += f.size;
    const c = sizeClass(f.size);
    const line = `${JSON.stringify([f.path, f.size, f.mtimeMs, f.mode])}\n`;
    this.pending[c]!.push(line);
    this.pendingBytes[c]! += line.length;
    if (this.pendingBytes[c]! >= FLUSH_BYTES) this.flush(c);
  }

  private flush(c: number): void {
    if (this.pending[c]!.length === 0) return;
    const text = this.pending[c]!.join('');
    this.pending[c] = [];
    this.pendingBytes[c] = 0;
    // One write at a time, in order; a failure is seen by the next flush or by files().
    this.writing = this.writing.then(() => this.handles[c]!.write(text));
  }

  /** Every file added, largest size class first (within a class in the order added), read back from the files. */
  async *files(): AsyncGenerator<PgdataEntry> {
    for (let c = 0; c < SIZE_CLASSES.length; c++) this.flush(c);
    await this.writing;
    for (let c = 0; c < SIZE_CLASSES.length; c++) {
      this.reading = createReadStream(classFile(this.dir, c));
      const lines = createInterface({ input: this.reading, crlfDelay: Infinity });
      for await (const line of lines) {
        if (line === '') continue;
        const [path, size, mtimeMs, mode] = JSON.parse(line) as [string, number, number, number];
        yield { path, size, mtimeMs, mode };
      }
    }
  }

  async close(): Promise<void> {
    this.reading?.destroy();
    await this.writing.catch(() => {});
    await Promise.all(this.handles.map((h) => h.close().catch(() => {})));
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** The index in SIZE_CLASSES of the class a file of `size` bytes belongs to. */
export function sizeClass(size: number): number {
  return SIZE_CLASSES.findIndex((min) => size >= min);
}

function classFile(dir: string, c: number): string {
  return join(dir, `listing-${c}.jsonl`);
}
