/**
 * Exact row counts of a dump, read from what pg_dump wrote (docs/logical.md): a dump drill must
 * compare the restored tables with the rows the dump really holds, and pg_class.reltuples is an
 * estimate. Counting the source with count(*) at dump time would be a second scan of every table
 * outside pg_dump's snapshot; the dump's own files say it for the price of reading them again.
 *
 * In directory format (-Fd) every table's data is its own file `<dumpId>.dat[.gz]`, holding the
 * server's COPY ... TO stdout output in text format: one line per row (a newline, carriage return
 * or backslash inside a value is written as \n, \r, \\, so a row never spans lines; an empty line
 * is a row of one empty string), then the line `\.` (a data line can never be that: a backslash
 * in data is doubled) and pg_dump's trailing blank lines. So rows = the lines before `\.`.
 *
 * Which table a file belongs to is in the TOC: `pg_restore --list` prints each TABLE DATA entry as
 * `<dumpId>; <tableoid> <oid> TABLE DATA <schema> <name> <owner>`, the oid being the table's
 * pg_class oid (names are printed unquoted, so they are never parsed).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import { createGunzip, type Gunzip } from 'node:zlib';
import { PgfleetError } from '@pgfleet/core';
import { exitCode, tail } from '../pg-tools.js';

/** Counts the rows of COPY text data fed to it in chunks of any size (module header). */
export class CopyRowCounter {
  /** Lines ended before the terminator. */
  private lines = 0;
  /** Bytes of the current line seen so far, up to 3 (only whether it is `\.` matters). */
  private lineLen = 0;
  private lineIsTerminator = true;
  /** The `\.` line was seen: what follows is not data. */
  terminated = false;

  push(chunk: Uint8Array): void {
    let pos = 0;
    while (pos < chunk.length && !this.terminated) {
      // The first bytes of a line decide whether it is `\.`; the rest is skipped with indexOf.
      while (this.lineLen < 3 && pos < chunk.length && chunk[pos] !== 0x0a) {
        const want = this.lineLen === 0 ? 0x5c : this.lineLen === 1 ? 0x2e : -1;
        if (chunk[pos] !== want) this.lineIsTerminator = false;
        this.lineLen++;
        pos++;
      }
      const nl = chunk.indexOf(0x0a, pos);
      if (nl < 0) return;
      if (this.lineIsTerminator && this.lineLen === 2) {
        this.terminated = true;
        return;
      }
      this.lines++;
      this.lineLen = 0;
      this.lineIsTerminator = true;
      pos = nl + 1;
    }
  }

  /** The rows, once the whole file was pushed; undefined when it did not end with `\.` (not COPY data as pg_dump writes it). */
  get rows(): number | undefined {
    return this.terminated ? this.lines : undefined;
  }
}

/** Bytes of decompressed COPY text handed to the counter at once (zlib's default is 16 KiB). */
const GUNZIP_CHUNK = 256 * 1024;

/**
 * Counts the rows of one table data file fed to it chunk by chunk as pg_dump wrote it (`.dat`, or
 * gzip's `.dat.gz`): the count of a file read once, while it is stored (spool-drain.ts). `end`
 * answers undefined for bytes that are not whole COPY data (no `\.` line), and rejects for gzip
 * that does not end as a complete gzip stream (a file cut short).
 */
export class CopyRowTap {
  private readonly counter = new CopyRowCounter();
  private readonly gunzip: Gunzip | undefined;
  /** The gunzip's end (or its error); handled at once so an error waits for push or end. */
  private readonly done: Promise<void>;

  constructor(gzip: boolean) {
    if (!gzip) {
      this.gunzip = undefined;
      this.done = Promise.resolve();
      return;
    }
    // Output in large pieces: the count runs per piece on this thread, the inflate on the threadpool.
    const z = createGunzip({ chunkSize: GUNZIP_CHUNK });
    z.on('data', (d: Buffer) => this.counter.push(d));
    this.gunzip = z;
    this.done = finished(z);
    this.done.catch(() => {});
  }

  /** Feeds the next bytes; waits while the decompressor is behind (backpressure). */
  async push(chunk: Buffer): Promise<void> {
    const z = this.gunzip;
    if (!z) {
      this.counter.push(chunk);
      return;
    }
    if (z.errored) throw z.errored;
    if (!z.write(chunk)) await Promise.race([once(z, 'drain'), this.done]);
  }

  /** The rows, once every byte was pushed (see the class). */
  async end(): Promise<number | undefined> {
    this.gunzip?.end();
    await this.done;
    return this.counter.rows;
  }

  /** Stops the decompressor of a file given up on. */
  destroy(): void {
    this.gunzip?.destroy();
  }
}

/**
 * The rows of one table data file of a -Fd dump (`.dat` or gzip's `.dat.gz`, pg_dump's default);
 * undefined for other compressions (lz4, zstd: not what the agent asks pg_dump for) or a file
 * that is not COPY data.
 */
export async function countCopyRows(path: string, signal?: AbortSignal): Promise<number | undefined> {
  const gz = path.endsWith('.dat.gz');
  if (!gz && !path.endsWith('.dat')) return undefined;
  const tap = new CopyRowTap(gz);
  try {
    for await (const chunk of createReadStream(path, signal ? { signal } : {})) await tap.push(chunk as Buffer);
    return await tap.end();
  } finally {
    tap.destroy();
  }
}

/** `<dumpId>; <tableoid> <oid> TABLE DATA ...` of `pg_restore --list`. */
const TABLE_DATA_RE = /^(\d+); \d+ (\d+) TABLE DATA /;

/** Parses `pg_restore --list` output: table oid -> dump id of its TABLE DATA entry. */
export function tableDataEntries(list: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of list.split('\n')) {
    const m = TABLE_DATA_RE.exec(line);
    if (m) out.set(m[2]!, m[1]!);
  }
  return out;
}

/** Runs `pg_restore --list` on a -Fd dump directory: table oid -> dump id (see tableDataEntries). */
export async function readTableDataEntries(pgRestore: string, dir: string): Promise<Map<string, string>> {
  const child = spawn(pgRestore, ['--list', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const err = tail(child.stderr);
  const code = await exitCode(child);
  if (code !== 0)
    throw new PgfleetError('DumpFailed', `pg_restore --list of ${dir} failed (exit ${code}): ${err() || 'no message'}`);
  return tableDataEntries(out);
}
