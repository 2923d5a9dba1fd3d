/**
 * The daemon's WAL side, started and stopped with it: the unix socket archive_command hands
 * segments to (wal-archive-server.ts) and, with --stream, WAL streaming (wal-stream.ts). Both
 * write to the agent's own repository (--repo-path); without one they stay off and wal-push
 * keeps working by itself.
 */
import type { Logger } from '@pgfleet/core';
import { PosixDriver, Repository } from '@pgfleet/storage';
import type { AgentSettings } from './options.js';
import type { PgdataFacts } from './pgdata.js';
import { WalArchiveServer } from './wal-archive-server.js';
import { WalNameLock } from './wal-name-lock.js';
import { WalStreamer } from './wal-stream.js';

export class WalServices {
  private constructor(
    readonly archive: WalArchiveServer | undefined,
    readonly streamer: WalStreamer | undefined,
  ) {}

  static async start(s: AgentSettings, facts: PgdataFacts, log: Logger): Promise<WalServices> {
    if (!s.repoPath) {
      if (s.stream) log.error({ code: 'PGF-1002' }, '--stream needs --repo-path: WAL streaming is off');
      return new WalServices(undefined, undefined);
    }
    const repo = new Repository(new PosixDriver(s.repoPath));
    const lock = new WalNameLock();
    let archive: WalArchiveServer | undefined = new WalArchiveServer({
      socketPath: s.socket,
      pgdata: s.pgdata,
      cluster: s.cluster,
      systemIdentifier: facts.systemIdentifier,
      repo,
      repoPath: s.repoPath,
      codec: s.compress,
      ahead: s.archiveAhead,
      lock,
      log: log.child({ component: 'wal-archive' }),
    });
    try {
      await archive.start();
    } catch (err) {
      // Not fatal: wal-push archives by itself when nobody listens.
      log.error({ socket: s.socket, err: (err as Error).message }, 'cannot listen for wal-push; archive_command will push directly');
      archive = undefined;
    }
    let streamer: WalStreamer | undefined;
    if (s.stream) {
      streamer = new WalStreamer({ cluster: s.cluster, pg: s.pg, spool: s.streamSpool, repo, codec: s.compress, systemIdentifier: facts.systemIdentifier, lock, log: log.child({ component: 'wal-stream' }) });
      streamer.start();
    }
    return new WalServices(archive, streamer);
  }

  get streamedLsn(): string {
    return this.streamer?.streamedLsn ?? '';
  }

  async stop(): Promise<void> {
    await Promise.all([this.archive?.stop(), this.streamer?.stop()]);
  }
}
