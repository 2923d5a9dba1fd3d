/**
 * WAL fixtures for the agent's unit tests: a data directory and segments just real enough for
 * what wal-push validates (page header magic, timeline, address, system identifier, size), with
 * 1 MiB segments so a test writes little.
 */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TEST_MANIFEST_KEYS } from '@pgfleet/storage/testing';
import { defaultClusterKeyFile, writeClusterKeyFile } from '../security/cluster-key.js';

export const WAL_FIXTURE_SEGMENT_SIZE = 1 << 20;
export const WAL_FIXTURE_SYSTEM_ID = 7441234567890123456n;

/** A complete synthetic WAL segment of `size` bytes whose first page header says what validateWalSegment checks. */
export function segment(name: string, sysid = WAL_FIXTURE_SYSTEM_ID, size = WAL_FIXTURE_SEGMENT_SIZE): Buffer {
  const b = Buffer.alloc(size, 0);
  const segno = BigInt(`0x${name.slice(8, 16)}`) * (0x100000000n / BigInt(size)) + BigInt(`0x${name.slice(16, 24)}`);
  b.writeUInt16LE(0xd110, 0); // PG 15 magic
  b.writeUInt16LE(0x0002, 2); // XLP_LONG_HEADER
  b.writeUInt32LE(Number.parseInt(name.slice(0, 8), 16), 4);
  b.writeBigUInt64LE(segno * BigInt(size), 8);
  b.writeBigUInt64LE(sysid, 24);
  b.writeUInt32LE(size, 32);
  b.writeUInt32LE(8192, 36);
  b.write(name, 100); // distinct content per segment
  return b;
}

/** `root`/data with PG_VERSION, a pg_control holding the fixture system identifier, and pg_wal/archive_status. */
export async function fakePgdata(root: string): Promise<string> {
  const pgdata = join(root, 'data');
  await mkdir(join(pgdata, 'global'), { recursive: true });
  await mkdir(join(pgdata, 'pg_wal', 'archive_status'), { recursive: true });
  await writeFile(join(pgdata, 'PG_VERSION'), '15\n');
  const control = Buffer.alloc(8192);
  control.writeBigUInt64LE(WAL_FIXTURE_SYSTEM_ID, 0);
  await writeFile(join(pgdata, 'global', 'pg_control'), control);
  return pgdata;
}

/**
 * Writes the test key of `cluster` (TEST_MANIFEST_KEYS) where an agent without --tls-dir keeps it
 * for `pgdata` (beside it), as the daemon does when the controller welcomes it. Returns the file.
 */
export async function writeTestClusterKey(pgdata: string, cluster: string): Promise<string> {
  const file = defaultClusterKeyFile(pgdata);
  await writeClusterKeyFile(file, TEST_MANIFEST_KEYS.keyFor(cluster)!);
  return file;
}

/**
 * segment() with WAL-like content after its header, the same every run: text records through
 * 70% of it, then zeros (as after pg_switch_wal), and 20 kB no codec can shrink.
 */
export function walLikeSegment(name: string, size: number, sysid = WAL_FIXTURE_SYSTEM_ID): Buffer {
  const b = segment(name, sysid, size);
  for (let at = 128, i = 0; at < size * 0.7; i++) at += b.write(`${name} record ${i} ${(i * 2654435761) % 1e9};`, at);
  for (let at = 100_000, h = Buffer.from(name); at < 120_000; at += 32)
    (h = createHash('sha256').update(h).digest()).copy(b, at);
  return b;
}
