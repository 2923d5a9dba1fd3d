/**
 * The physical streaming replication protocol, as pg_receivewal speaks it
 * (https://www.postgresql.org/docs/current/protocol-replication.html). On a connection opened
 * with replication=true, START_REPLICATION enters CopyBoth mode; pg-copy-streams' `both` gives
 * a duplex stream whose chunks are whole CopyData payloads, one per chunk (alignOnCopyDataFrame
 * plus readableObjectMode):
 *   server -> client  'w' XLogData:  int64 dataStart, int64 walEnd, int64 sendTime, bytes WAL
 *                     'k' keepalive: int64 walEnd, int64 sendTime, byte replyRequested
 *   client -> server  'r' standby status update: int64 write, int64 flush, int64 apply,
 *                     int64 clock, byte replyRequested
 * Times are microseconds since 2000-01-01 UTC. A physical slot's restart_lsn follows the flush
 * position we report, so a client must report flush only for WAL it has fsynced.
 */
import type { Duplex } from 'node:stream';
import type pg from 'pg';
import copyStreams from 'pg-copy-streams';
import { PgfleetError } from '@pgfleet/core';
import { Lsn } from './lsn.js';

const PG_EPOCH_MS = 946_684_800_000;

export type ReplicationMessage =
  | { kind: 'xlogdata'; dataStart: bigint; walEnd: bigint; sendTime: bigint; data: Buffer }
  | { kind: 'keepalive'; walEnd: bigint; sendTime: bigint; replyRequested: boolean }
  | { kind: 'unknown'; tag: number };

/** Parses one CopyData payload of a physical replication stream. */
export function parseReplicationMessage(buf: Buffer): ReplicationMessage {
  const tag = buf[0];
  if (tag === 0x77 /* w */) {
    if (buf.length < 25) throw new PgfleetError('WalStreamFailed', `short XLogData message (${buf.length} bytes)`);
    return {
      kind: 'xlogdata',
      dataStart: buf.readBigUInt64BE(1),
      walEnd: buf.readBigUInt64BE(9),
      sendTime: buf.readBigInt64BE(17),
      data: buf.subarray(25),
    };
  }
  if (tag === 0x6b /* k */) {
    if (buf.length < 18) throw new PgfleetError('WalStreamFailed', `short keepalive message (${buf.length} bytes)`);
    return {
      kind: 'keepalive',
      walEnd: buf.readBigUInt64BE(1),
      sendTime: buf.readBigInt64BE(9),
      replyRequested: buf[17] === 1,
    };
  }
  return { kind: 'unknown', tag: tag ?? -1 };
}

/** Microseconds since 2000-01-01, PostgreSQL's TimestampTz. */
export function pgNow(nowMs: number = Date.now()): bigint {
  return BigInt(nowMs - PG_EPOCH_MS) * 1000n;
}

/** The 'r' message: written and flushed (fsynced) positions; apply is left invalid (0) like pg_receivewal. */
export function standbyStatusUpdate(write: bigint, flush: bigint, replyRequested = false, nowMs?: number): Buffer {
  const b = Buffer.alloc(34);
  b[0] = 0x72; // r
  b.writeBigUInt64BE(write, 1);
  b.writeBigUInt64BE(flush, 9);
  b.writeBigUInt64BE(0n, 17);
  b.writeBigInt64BE(pgNow(nowMs), 25);
  b[33] = replyRequested ? 1 : 0;
  return b;
}

export interface IdentifySystem {
  systemIdentifier: string;
  timeline: number;
  xlogpos: Lsn;
}

export async function identifySystem(client: pg.Client): Promise<IdentifySystem> {
  const r = await client.query('IDENTIFY_SYSTEM');
  const row = r.rows[0];
  return {
    systemIdentifier: String(row.systemid),
    timeline: Number(row.timeline),
    xlogpos: Lsn.parse(String(row.xlogpos)),
  };
}

/** wal_segment_size in bytes (SHOW prints it with a unit, e.g. "16MB"). */
export async function walSegmentSize(client: pg.Client): Promise<number> {
  const text = String((await client.query('SHOW wal_segment_size')).rows[0].wal_segment_size);
  const m = /^(\d+)\s*(B|kB|MB|GB)?$/.exec(text.trim());
  if (!m) throw new PgfleetError('WalStreamFailed', `cannot read wal_segment_size '${text}'`);
  const unit = { B: 1, kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3 }[(m[2] ?? 'B') as 'B'];
  return Number(m[1]) * unit;
}

/** Slot names allow [a-z0-9_] up to 63 bytes. */
export function replicationSlotName(prefix: string, cluster: string): string {
  return `${prefix}_${cluster.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`.slice(0, 63);
}

/**
 * START_REPLICATION on a replication connection; the returned duplex yields one CopyData payload
 * per chunk (parse with parseReplicationMessage) and takes status updates. It ends when the
 * server ends the timeline (CopyDone) and errors with the server's error.
 */
export function startPhysicalReplication(client: pg.Client, slot: string, start: Lsn, timeline: number): Duplex {
  const sql = `START_REPLICATION SLOT ${slot} PHYSICAL ${start.toString()} TIMELINE ${timeline}`;
  // @types/pg-copy-streams lacks `both` (the CopyBoth duplex); the module has it since 5.1.
  const both = (
    copyStreams as unknown as {
      both: (
        text: string,
        options: { alignOnCopyDataFrame: boolean; readableObjectMode: boolean },
      ) => Duplex & pg.Submittable;
    }
  ).both;
  // Object mode on the readable side: a byte stream would merge consecutive CopyData payloads
  // into one chunk on read(), and the message boundaries (each with its own dataStart) are lost.
  return client.query(both(sql, { alignOnCopyDataFrame: true, readableObjectMode: true }));
}
