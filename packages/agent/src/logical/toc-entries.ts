/**
 * Which table each data file of a -Fd dump holds, from its TOC: `pg_restore --list` prints each
 * TABLE DATA entry as `<dumpId>; <tableoid> <oid> TABLE DATA <schema> <name> <owner>`, the oid
 * being the table's pg_class oid (names are printed unquoted, so they are never parsed). The dump
 * keeps the row counts (dump-snapshot.ts) of the tables with such an entry: what pg_dump dumped.
 */
import { spawn } from 'node:child_process';
import { PgfleetError } from '@pgfleet/core';
import { exitCode, tail } from '../pg-tools.js';

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
