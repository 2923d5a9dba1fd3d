/**
 * `pgfleet verify` of logical dumps (docs/logical.md): for each dump the catalog records, every
 * file (and the globals) is read back from the repository, decoded and checked against the size
 * and sha256 of the record; each database's toc.dat must be listable by pg_restore --list, and
 * every table of the record must be in that list. Nothing is written to the repository.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { Writable } from 'node:stream';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { type Logger } from '@pgfleet/core';
import type { DumpFile, DumpResult, VerifyDumpVerdictSchema } from '@pgfleet/proto';
import { isCodec, type Repository } from '@pgfleet/storage';
import { exitCode, tail } from '../pg-tools.js';
import { clientBinDir } from './dump.js';

export type VerifyDumpVerdictInit = MessageInitShape<typeof VerifyDumpVerdictSchema>;

export interface VerifyDumpsOptions {
  cluster: string;
  repo: Repository;
  dumps: readonly DumpResult[];
  pgBinDir?: string;
  scratchDir: string;
  log: Logger;
  signal: AbortSignal;
}

/** A sink that only counts: the read path checks size and sha256 as the bytes pass. */
const discard = () =>
  new Writable({
    write(_chunk, _enc, cb) {
      cb();
    },
  });

export async function verifyDumps(o: VerifyDumpsOptions): Promise<VerifyDumpVerdictInit[]> {
  const out: VerifyDumpVerdictInit[] = [];
  for (const d of o.dumps) {
    o.signal.throwIfAborted();
    out.push(await verifyDump(o, d));
  }
  return out;
}

async function verifyDump(o: VerifyDumpsOptions, d: DumpResult): Promise<VerifyDumpVerdictInit> {
  const reasons: string[] = [];
  let filesChecked = 0;
  let bytesChecked = 0;
  if (!isCodec(d.codec)) return { label: d.label, ok: false, reasons: [`unknown codec '${d.codec}'`] };
  const prefix = o.repo.dumpPrefix(o.cluster, d.label);
  const check = async (key: string, f: DumpFile, what: string, dest: Writable = discard()) => {
    try {
      await o.repo.readObject(
        key,
        d.codec as Parameters<Repository['readObject']>[1],
        { sha256: f.sha256, size: Number(f.size) },
        dest,
      );
      filesChecked++;
      bytesChecked += Number(f.size);
      return true;
    } catch (err) {
      if (o.signal.aborted) throw err;
      reasons.push(`${what}: ${(err as Error).message}`);
      return false;
    }
  };
  if (d.globals) await check(`${prefix}/globals.sql`, d.globals, 'globals.sql');
  const binDir = clientBinDir(o.pgBinDir, d.serverMajor * 10000);
  for (const db of d.databases) {
    for (const f of db.files) {
      if (f.name === 'toc.dat') continue;
      await check(`${prefix}/${db.dir}/${f.name}`, f, `database ${db.name} file ${f.name}`);
    }
    const toc = db.files.find((f) => f.name === 'toc.dat');
    if (!toc) {
      reasons.push(`database ${db.name}: no toc.dat in the record`);
      continue;
    }
    const dir = await mkdtemp(join(o.scratchDir, 'pgfleet-verify-dump-'));
    try {
      if (
        !(await check(
          `${prefix}/${db.dir}/toc.dat`,
          toc,
          `database ${db.name} file toc.dat`,
          createWriteStream(join(dir, 'toc.dat')),
        ))
      )
        continue;
      const listed = await pgRestoreList(join(binDir, 'pg_restore'), dir, o.signal);
      if (listed.code !== 0) {
        reasons.push(`database ${db.name}: pg_restore --list failed (exit ${listed.code}): ${listed.stderr}`);
        continue;
      }
      for (const t of db.tables) {
        const entry = new RegExp(
          `^\\d+; \\d+ \\d+ (TABLE|MATERIALIZED VIEW) ${escape(t.schema)} ${escape(t.name)} `,
          'm',
        );
        if (!entry.test(listed.stdout))
          reasons.push(`database ${db.name}: table ${t.schema}.${t.name} is not in the dump's table of contents`);
      }
    } finally {
      await rm(dir, { recursive: true, force: true }).catch(() => {});
    }
  }
  o.log.info({ label: d.label, ok: reasons.length === 0, filesChecked }, 'dump verified');
  return { label: d.label, ok: reasons.length === 0, reasons, filesChecked, bytesChecked: BigInt(bytesChecked) };
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** pg_restore --list of a directory holding toc.dat: reads only the table of contents. */
async function pgRestoreList(
  path: string,
  dir: string,
  signal: AbortSignal,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(path, ['--list', '--format=directory', dir], { stdio: ['ignore', 'pipe', 'pipe'], signal });
  let stdout = '';
  child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
  const err = tail(child.stderr);
  const code = await exitCode(child);
  return { code, stdout, stderr: err() || 'no message' };
}
