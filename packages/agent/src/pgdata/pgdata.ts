/**
 * Facts read straight from the data directory, so the agent (and wal-push, which PostgreSQL runs
 * with PGDATA as its working directory) know which database system they serve without a
 * connection: PG_VERSION, and the system identifier, the first 8 bytes of global/pg_control
 * (ControlFileData.system_identifier, native-endian uint64).
 */
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PgfleetError } from '@pgfleet/core';

export interface PgdataFacts {
  majorVersion: number;
  systemIdentifier: string;
}

export async function readPgdataFacts(pgdata: string): Promise<PgdataFacts> {
  let version: string;
  try {
    const s = await stat(pgdata);
    if (!s.isDirectory()) throw new PgfleetError('PgdataMissing', 'not a directory'); // becomes the detail below
    version = (await readFile(join(pgdata, 'PG_VERSION'), 'utf8')).trim();
  } catch (err) {
    throw new PgfleetError(
      'PgdataMissing',
      `PGDATA ${pgdata} is not a PostgreSQL data directory (${(err as Error).message})`,
      { cause: err },
    );
  }
  const fh = await open(join(pgdata, 'global', 'pg_control'), 'r').catch((err: unknown) => {
    throw new PgfleetError('PgdataMissing', `PGDATA ${pgdata} has no global/pg_control (${(err as Error).message})`, {
      cause: err,
    });
  });
  try {
    const buf = Buffer.alloc(8);
    await fh.read(buf, 0, 8, 0);
    return { majorVersion: Number.parseInt(version, 10), systemIdentifier: buf.readBigUInt64LE(0).toString() };
  } finally {
    await fh.close();
  }
}
