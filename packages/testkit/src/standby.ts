/**
 * A streaming standby of a running test PostgreSQL, made the way a DBA makes one:
 * `pg_basebackup -R` (standby.signal + primary_conninfo) with WAL streamed during the copy, then
 * started on its own port. Failover tests promote it (pg_ctl promote), which ends its timeline
 * and starts a new one, exactly what Patroni or a manual failover does.
 */
import path from 'node:path';
import { makeTempDir, removeDir, runAsPostgres } from './os-user.js';
import { startPostgres, type PgInstance, type PgInstanceOptions } from './postgres.js';
import { sleep } from '@pgfleet/core/async';

export interface StandbyInstance extends PgInstance {
  /** pg_ctl promote -w: ends recovery, starts the next timeline; resolves once it accepts writes. */
  promote(): Promise<void>;
}

export interface StandbyOptions extends Pick<
  PgInstanceOptions,
  'archiveCommand' | 'restoreCommand' | 'settings' | 'startTimeoutMs'
> {
  /** a physical replication slot on the primary to stream from (created here) */
  slot?: string;
}

export async function startStandby(primary: PgInstance, opts: StandbyOptions = {}): Promise<StandbyInstance> {
  const parent = await makeTempDir('pg-standby');
  const dataDir = path.join(parent, 'data');
  try {
    const args = [
      '-D',
      dataDir,
      '-h',
      primary.host,
      '-p',
      String(primary.port),
      '-U',
      'postgres',
      '-R',
      '-X',
      'stream',
      '-c',
      'fast',
      '--no-sync',
    ];
    if (opts.slot) args.push('-C', '-S', opts.slot);
    await runAsPostgres(path.join(primary.binDir, 'pg_basebackup'), args, { cwd: parent, timeoutMs: 300_000 });
  } catch (err) {
    await removeDir(parent);
    throw new Error(`startStandby: pg_basebackup failed: ${(err as Error).message}`, { cause: err });
  }
  let pg: PgInstance;
  try {
    pg = await startPostgres({ ...opts, dataDir, settings: { hot_standby: 'on', ...opts.settings } });
  } catch (err) {
    await removeDir(parent);
    throw err;
  }
  const stop = pg.stop.bind(pg);
  return Object.assign(pg, {
    async stop() {
      await stop();
      await removeDir(parent);
    },
    async promote() {
      await runAsPostgres(path.join(pg.binDir, 'pg_ctl'), ['-D', dataDir, '-w', '-t', '120', 'promote'], {
        cwd: parent,
        timeoutMs: 150_000,
      });
      for (let i = 0; i < 600; i++) {
        const [r] = await pg.query<{ r: boolean }>('select pg_is_in_recovery() as r');
        if (r && !r.r) return;
        await sleep(100);
      }
      throw new Error('startStandby: promoted standby still in recovery after 60 s');
    },
  });
}
