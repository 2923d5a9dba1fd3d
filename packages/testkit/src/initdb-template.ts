/**
 * New data directories for startPostgres copied from one initdb'd template instead of running
 * initdb for each: initdb costs one to several seconds of CPU on a loaded test machine, a copy a
 * few hundred milliseconds, and the e2e suite starts over a hundred clusters.
 *
 * A copy would share its template's database system identifier, and pgfleet tells clusters apart
 * by it (a repository refuses WAL and backups of another system), so every copy gets a new one:
 * written into pg_control (whose CRC-32C is recomputed) and into the long page header that starts
 * each WAL segment, the two places PostgreSQL keeps it and compares on start
 * (xlogreader.c XLogReaderValidatePageHeader).
 *
 * The template lives in the temp dir under a name derived from the server build and the initdb
 * options, shared by every test process of the machine: the first one to need it runs initdb into
 * a private directory and renames it into place (atomic; a process losing the race uses the
 * winner's). It is a cache: removing it only makes the next start run initdb again.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { open, readdir, rename, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { makeTempDir, removeDir, runAsPostgres } from './os-user.js';

/** initdb's options for every test cluster: trust on local connections, page checksums, UTF8, C locale; no fsync (a test cluster outlives no crash of the machine). */
const INITDB_ARGS = ['-U', 'postgres', '--auth=trust', '--data-checksums', '-E', 'UTF8', '--locale=C', '--no-sync'];
/** Written into the template last: a directory without it is an initdb that did not finish. */
const COMPLETE = 'pgfleet-template-complete';
const WAL_SEGMENT = /^[0-9A-F]{24}$/;
/** XLogLongPageHeaderData: the short header (24 bytes) then xlp_sysid; XLP_LONG_HEADER in xlp_info. */
const XLP_INFO_OFFSET = 2;
const XLP_LONG_HEADER = 0x0002;
const XLP_SYSID_OFFSET = 24;

const templates = new Map<string, Promise<string>>();

/** Creates `dataDir` (its parent must exist and belong to the postgres user) as a new cluster of the build in `binDir`. */
export async function createDataDir(
  binDir: string,
  dataDir: string,
  cwd: string,
  extraInitdbArgs: readonly string[] = [],
): Promise<void> {
  // One template per build and per set of extra initdb arguments (e.g. a WAL segment size).
  const mapKey = JSON.stringify([binDir, extraInitdbArgs]);
  let template = templates.get(mapKey);
  if (!template) {
    template = templateFor(binDir, extraInitdbArgs);
    templates.set(mapKey, template);
    // A failed initdb is not remembered: the next start tries again and reports its own error.
    template.catch(() => templates.delete(mapKey));
  }
  const from = await template;
  // cp -a as the postgres user: modes (0700) and owner as initdb made them.
  await runAsPostgres('cp', ['-a', path.join(from, 'data'), dataDir], { cwd, timeoutMs: 120_000 });
  await giveNewSystemIdentifier(dataDir);
}

/** The directory holding the template's `data` for `binDir`, made once per machine. */
async function templateFor(binDir: string, extraInitdbArgs: readonly string[]): Promise<string> {
  const postgres = statSync(path.join(binDir, 'postgres'));
  const key = createHash('sha256')
    .update(JSON.stringify([binDir, postgres.size, postgres.mtimeMs, INITDB_ARGS, extraInitdbArgs, process.getuid?.()]))
    .digest('hex')
    .slice(0, 16);
  const final = path.join(os.tmpdir(), `pgfleet-initdb-template-${key}`);
  if (existsSync(path.join(final, COMPLETE))) return final;
  const work = await makeTempDir('initdb-template-new');
  try {
    await runAsPostgres(
      path.join(binDir, 'initdb'),
      ['-D', path.join(work, 'data'), ...INITDB_ARGS, ...extraInitdbArgs],
      {
        cwd: work,
        timeoutMs: 120_000,
      },
    );
    await writeFile(path.join(work, COMPLETE), '');
    await rename(work, final);
  } catch (err) {
    await removeDir(work);
    // Another process won the race (rename onto its non-empty directory fails): use its template.
    if (existsSync(path.join(final, COMPLETE))) return final;
    throw err;
  }
  return final;
}

/** A system identifier as PostgreSQL makes one (seconds since 1970 in the high 32 bits), the low bits random. */
function newSystemIdentifier(): bigint {
  return (BigInt(Math.floor(Date.now() / 1000)) << 32n) | BigInt(randomBytes(4).readUInt32LE(0));
}

/** Gives a copied data dir a system identifier of its own: pg_control (with its CRC) and each WAL segment's first page header. */
export async function giveNewSystemIdentifier(dataDir: string, sysid: bigint = newSystemIdentifier()): Promise<bigint> {
  const controlPath = path.join(dataDir, 'global', 'pg_control');
  const control = await open(controlPath, 'r+');
  let old: bigint;
  try {
    const buf = Buffer.alloc(8192);
    const { bytesRead } = await control.read(buf, 0, buf.length, 0);
    const data = buf.subarray(0, bytesRead);
    const crcAt = controlCrcOffset(data);
    old = data.readBigUInt64LE(0);
    data.writeBigUInt64LE(sysid, 0);
    data.writeUInt32LE(crc32c(data.subarray(0, crcAt)), crcAt);
    await control.write(data, 0, crcAt + 4, 0);
  } finally {
    await control.close();
  }
  const walDir = path.join(dataDir, 'pg_wal');
  for (const name of await readdir(walDir)) {
    if (!WAL_SEGMENT.test(name)) continue;
    const fh = await open(path.join(walDir, name), 'r+');
    try {
      const head = Buffer.alloc(XLP_SYSID_OFFSET + 8);
      await fh.read(head, 0, head.length, 0);
      if (
        (head.readUInt16LE(XLP_INFO_OFFSET) & XLP_LONG_HEADER) === 0 ||
        head.readBigUInt64LE(XLP_SYSID_OFFSET) !== old
      )
        continue; // a recycled segment not written yet in this cluster's history: PostgreSQL overwrites it
      head.writeBigUInt64LE(sysid, XLP_SYSID_OFFSET);
      await fh.write(head, XLP_SYSID_OFFSET, 8, XLP_SYSID_OFFSET);
    } finally {
      await fh.close();
    }
  }
  return sysid;
}

/**
 * Where pg_control's CRC sits: ControlFileData ends with the CRC-32C of everything before it
 * (pg_control.h), at an offset that differs between majors. Found as the 4-aligned offset
 * holding the CRC of the bytes before it, so no major's struct layout is written down here.
 */
function controlCrcOffset(data: Buffer): number {
  let crc = 0xffffffff;
  for (let i = 0; i + 4 <= data.length && i < 4096; i++) {
    if (i >= 8 && i % 4 === 0 && (crc ^ 0xffffffff) >>> 0 === data.readUInt32LE(i)) return i;
    crc = crcByte(crc, data[i]!);
  }
  throw new Error('pg_control: no CRC-32C found over its leading bytes (not a pg_control file?)');
}

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

function crcByte(crc: number, byte: number): number {
  return (CRC32C_TABLE[(crc ^ byte) & 0xff]! ^ (crc >>> 8)) >>> 0;
}

/** CRC-32C (Castagnoli) of `data`, as PostgreSQL's INIT/COMP/FIN_CRC32C compute it (bytewise: pg_control is small). */
function crc32c(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of data) crc = crcByte(crc, b);
  return (crc ^ 0xffffffff) >>> 0;
}
