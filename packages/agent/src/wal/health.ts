/**
 * The WAL side of the agent's heartbeat (agent.proto WalHealth): what the controller needs to
 * see a cluster running out of pg_wal space, a replication slot holding WAL back, a WAL stream
 * falling behind, and how much WAL this agent really put into the repository.
 *
 * Per heartbeat this costs one small SQL query and one statfs:
 *   - pg_wal bytes from pg_ls_waldir(); that function is executable only by superusers and
 *     pg_monitor members, so for an agent role without them the first permission error switches
 *     to summing pg_wal's files from the filesystem (the agent runs as the PGDATA owner);
 *   - free/total bytes of pg_wal's filesystem (statfs follows a symlinked pg_wal);
 *   - the agent's slot pgfleet_<cluster> from pg_replication_slots (readable by every role),
 *     reported whenever it exists: a slot left behind by an agent that no longer streams holds
 *     WAL in pg_wal forever, which is exactly what an operator must see.
 * Stream lag is measured against the current LSN the heartbeat read anyway.
 */
import { readdir, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { Logger } from '@pgfleet/core';
import { Lsn, replicationSlotName, type connectPg } from '@pgfleet/pg';
import type { WalHealthSchema } from '@pgfleet/proto';

type PgClient = Awaited<ReturnType<typeof connectPg>>;

export type WalHealthInit = MessageInitShape<typeof WalHealthSchema>;

const SEGMENT_RE = /^[0-9A-F]{24}$/;

/**
 * WAL segments and their (uncompressed) bytes this agent stored in the repository since it
 * started: wal-push hand-offs, push-ahead and streamed segments. Only files the repository did
 * not hold yet count, so a segment both archived and streamed counts once. Other WAL files
 * (.history, .backup, .partial) are not segments and are left out.
 */
export class WalArchivedCounter {
  segments = 0;
  bytes = 0;

  /** Hook for the archive socket and the WAL stream: `name` was stored with `bytes` bytes. */
  readonly stored = (name: string, bytes: number): void => {
    if (!SEGMENT_RE.test(name)) return;
    this.segments++;
    this.bytes += bytes;
  };
}

/**
 * How long the stream has been behind, at heartbeat resolution: the age of the oldest
 * heartbeat sample whose current LSN the stream has still not reached. A stream that keeps
 * up under constant writes (a fraction of a second behind) reports 0, a stopped one the time
 * since the first heartbeat that saw WAL it lacks; it never overstates the lag.
 */
export class StreamLag {
  private readonly behind: Array<{ at: number; lsn: bigint }> = [];

  /** Lag now; `streamed` undefined: not streaming (nothing is measured). */
  observe(now: number, current: bigint | undefined, streamed: bigint | undefined): { bytes: bigint; seconds: number } {
    if (current === undefined || streamed === undefined) {
      this.behind.length = 0;
      return { bytes: 0n, seconds: 0 };
    }
    while (this.behind.length > 0 && this.behind[0]!.lsn <= streamed) this.behind.shift();
    if (current <= streamed) {
      this.behind.length = 0;
      return { bytes: 0n, seconds: 0 };
    }
    // Samples are kept only while the stream is behind them; the oldest decides, so a full list stops growing.
    if (this.behind.length < 10_000 && (this.behind.at(-1)?.lsn ?? -1n) < current)
      this.behind.push({ at: now, lsn: current });
    return { bytes: current - streamed, seconds: Math.max(0, (now - this.behind[0]!.at) / 1000) };
  }
}

export interface WalHealthOptions {
  cluster: string;
  pgdata: string;
  log: Logger;
  /** The WAL stream when the agent streams (--stream). */
  stream?: () => { streamedLsn: string } | undefined;
  archived?: WalArchivedCounter;
  now?: () => number;
}

interface SlotRow {
  slot_name: string | null;
  active: boolean | null;
  restart_lsn: string | null;
  wal_status: string | null;
  retained: string | null;
  pg_wal_bytes?: string | null;
}

const parseLsn = (text: string | undefined): bigint | undefined =>
  text && Lsn.isValid(text) ? Lsn.parse(text).value : undefined;

export class WalHealthCollector {
  /** False once pg_ls_waldir() was refused: pg_wal is then measured on the filesystem. */
  private waldirBySql = true;
  private readonly lag = new StreamLag();
  private readonly slot: string;
  private lastError: string | undefined;

  constructor(private readonly o: WalHealthOptions) {
    this.slot = replicationSlotName('pgfleet', o.cluster);
  }

  /**
   * WAL health at `currentLsn` (the heartbeat's pg_current_wal_lsn, '' when unknown) over
   * `client`; undefined when it cannot be read. It is an extra in the heartbeat: its failure
   * never reports PostgreSQL as down, and is logged once per distinct error, not per beat.
   */
  async collect(client: PgClient, currentLsn: string): Promise<WalHealthInit | undefined> {
    try {
      const health = await this.read(client, currentLsn);
      this.lastError = undefined;
      return health;
    } catch (err) {
      const message = (err as Error).message;
      if (message !== this.lastError) this.o.log.warn({ err: message }, 'WAL health not collected');
      this.lastError = message;
      return undefined;
    }
  }

  private async read(client: PgClient, currentLsn: string): Promise<WalHealthInit> {
    const now = (this.o.now ?? Date.now)();
    const walDir = join(this.o.pgdata, 'pg_wal');
    const [row, fs] = await Promise.all([
      this.query(client, currentLsn),
      statfs(walDir, { bigint: true }).catch(() => undefined),
    ]);
    const pgWalBytes = row.pg_wal_bytes != null ? BigInt(row.pg_wal_bytes) : await walDirBytes(walDir);
    const stream = this.o.stream?.();
    const lag = this.lag.observe(now, parseLsn(currentLsn), stream ? parseLsn(stream.streamedLsn) : undefined);
    return {
      pgWalBytes,
      pgWalFreeBytes: fs ? fs.bavail * fs.bsize : 0n,
      pgWalTotalBytes: fs ? fs.blocks * fs.bsize : 0n,
      slotName: row.slot_name ?? '',
      slotActive: row.active ?? false,
      slotRestartLsn: row.restart_lsn ?? '',
      slotRetainedBytes: row.retained !== null && BigInt(row.retained) > 0n ? BigInt(row.retained) : 0n,
      slotWalStatus: row.wal_status ?? '',
      streamLagBytes: lag.bytes,
      streamLagSeconds: lag.seconds,
      walSegmentsArchived: BigInt(this.o.archived?.segments ?? 0),
      walBytesArchived: BigInt(this.o.archived?.bytes ?? 0),
    };
  }

  private async query(client: PgClient, currentLsn: string): Promise<SlotRow> {
    // One row whether or not the slot exists (LEFT JOIN on a constant row).
    const sql = (waldir: boolean) => `
      SELECT s.slot_name, s.active, s.restart_lsn::text AS restart_lsn, s.wal_status,
             pg_wal_lsn_diff($2::pg_lsn, s.restart_lsn)::bigint::text AS retained
             ${waldir ? ', (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir())::text AS pg_wal_bytes' : ''}
        FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $1`;
    const params = [this.slot, currentLsn || null];
    if (this.waldirBySql) {
      try {
        return (await client.query<SlotRow>(sql(true), params)).rows[0]!;
      } catch (err) {
        // 42501 insufficient_privilege: pg_ls_waldir needs pg_monitor; anything else is a real error.
        if ((err as { code?: string }).code !== '42501') throw err;
        this.waldirBySql = false;
        this.o.log.info(
          { role: client.user },
          'pg_ls_waldir() is not allowed for this role (grant pg_monitor to use it); measuring pg_wal on the filesystem',
        );
      }
    }
    return (await client.query<SlotRow>(sql(false), params)).rows[0]!;
  }
}

/** Sum of the regular files directly in pg_wal, as pg_ls_waldir() counts them (0 when unreadable). */
async function walDirBytes(walDir: string): Promise<bigint> {
  const entries = await readdir(walDir, { withFileTypes: true }).catch(() => []);
  let total = 0n;
  for (const e of entries) {
    if (!e.isFile()) continue;
    const st = await stat(join(walDir, e.name)).catch(() => undefined);
    if (st) total += BigInt(st.size);
  }
  return total;
}
