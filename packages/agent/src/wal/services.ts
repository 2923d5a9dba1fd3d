/**
 * The daemon's WAL side, started and stopped with it: the unix socket archive_command hands
 * segments to (archive-server.ts) and, with --stream, WAL streaming (stream.ts). Both
 * write to the agent's own repositories (--repo, --repo2: every segment to each); without one
 * they stay off and wal-push keeps working by itself.
 */
import { join } from 'node:path';
import { ErrorCodes, type Logger } from '@pgfleet/core';
import type { Repository } from '@pgfleet/storage';
import { repositoryIdentity, type AgentSettings } from '../options.js';
import type { PgdataFacts } from '../pgdata/pgdata.js';
import { removePushedMarkers, WalArchiveServer } from './archive-server.js';
import { WalArchivedCounter } from './health.js';
import { WalNameLock } from './name-lock.js';
import { WalStreamer } from './stream.js';

export class WalServices {
  private constructor(
    readonly archive: WalArchiveServer | undefined,
    readonly streamer: WalStreamer | undefined,
    /** What the archive socket and the stream stored in the repository (heartbeat WalHealth). */
    readonly archived: WalArchivedCounter = new WalArchivedCounter(),
  ) {}

  /** `repo` is the agent's own repository (a mirror with --repo2), undefined without one. */
  static async start(
    s: AgentSettings,
    facts: PgdataFacts,
    repo: Repository | undefined,
    log: Logger,
  ): Promise<WalServices> {
    // Markers an earlier run left (a crash) vouch for nothing this configuration did.
    await removePushedMarkers(s.pgdata);
    if (!repo) {
      if (s.stream) log.error({ code: ErrorCodes.InvalidConfig.code }, '--stream needs --repo: WAL streaming is off');
      return new WalServices(undefined, undefined);
    }
    const lock = new WalNameLock();
    const archived = new WalArchivedCounter();
    let archive: WalArchiveServer | undefined = new WalArchiveServer({
      socketPath: s.socket,
      pgdata: s.pgdata,
      cluster: s.cluster,
      systemIdentifier: facts.systemIdentifier,
      repo,
      repoPath: repositoryIdentity(s.repositories),
      codec: s.compress,
      ahead: s.archiveAhead,
      // Opt-in: push-ahead from PostgreSQL's .ready files archives even while archive_command is
      // failing or paused on purpose (it is no longer the switch that stops archiving).
      watchReady: s.archiveWatchReady,
      lock,
      onStored: archived.stored,
      log: log.child({ component: 'wal-archive' }),
    });
    try {
      await archive.start();
    } catch (err) {
      // Not fatal: wal-push archives by itself when nobody listens.
      log.error(
        { socket: s.socket, err: (err as Error).message },
        'cannot listen for wal-push; archive_command will push directly',
      );
      archive = undefined;
    }
    let streamer: WalStreamer | undefined;
    if (s.stream) {
      streamer = new WalStreamer({
        cluster: s.cluster,
        pg: s.pg,
        spool: s.streamSpool,
        repo,
        codec: s.compress,
        systemIdentifier: facts.systemIdentifier,
        pgWalDir: join(s.pgdata, 'pg_wal'),
        lock,
        onStored: archived.stored,
        log: log.child({ component: 'wal-stream' }),
      });
      streamer.start();
    }
    return new WalServices(archive, streamer, archived);
  }

  get streamedLsn(): string {
    return this.streamer?.streamedLsn ?? '';
  }

  async stop(): Promise<void> {
    await Promise.all([this.archive?.stop(), this.streamer?.stop()]);
  }
}
