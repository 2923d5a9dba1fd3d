/**
 * pgfleet-agent commands (bin.ts dispatches here for everything but wal-push, wal/push-client.ts):
 * every command loads core (pino, zod, yaml) here and gRPC/protobuf only for `run`.
 */
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { exitWith } from '@pgfleet/core/errors';
import { parseAgentId } from '@pgfleet/core/names';
import { hostname } from 'node:os';
import { parseDuration, type LogFormat, type Logger } from '@pgfleet/core';
import {
  AGENT_PROGRAM,
  defaultScratchDir,
  defaultSocketPath,
  defaultStreamSpool,
  keySourceFromSettings,
  repositoriesFromSettings,
  s3CredentialsFromSettings,
  type AgentSettings,
} from './options.js';
import { clusterKeyFileOf } from './security/cluster-key.js';

/** How long SIGTERM/SIGINT waits for running jobs to clean up before the process exits anyway. */
const STOP_GRACE_MS = 30_000;

async function main(argv: string[]): Promise<number> {
  const { createLogger, helpText, parseCommandLine, parseSize, resolveSettings, sleep, versionText } =
    await import('@pgfleet/core');
  const parsed = parseCommandLine(AGENT_PROGRAM, argv);
  if (parsed.version) {
    process.stdout.write(`${versionText(AGENT_PROGRAM, new URL('../package.json', import.meta.url))}\n`);
    return 0;
  }
  if (parsed.help) {
    process.stdout.write(`${helpText(AGENT_PROGRAM, parsed.command.name ? parsed.command : undefined)}\n`);
    return 0;
  }
  const o = parsed.options;
  // --log-format is the same for every command (the table gives it one default), so it is read here.
  const format = o['log-format'] as LogFormat | undefined;
  const logger = (level: string): Logger =>
    createLogger({ level, ...(format ? { format } : {}) }).child({ component: parsed.command.name });

  switch (parsed.command.name) {
    case 'wal-fetch':
      return (await import('./wal/fetch.js')).walFetchCommand(o, parsed.positionals, logger);
    case 'wal-prefetch':
      return (await import('./wal/fetch.js')).walPrefetchCommand(o, parsed.positionals, logger);
    case 'rotate-key':
      return (await import('./rotate-key.js')).rotateKeyCommand(o, logger);
    case 'run': {
      // The daemon lives on every database host under a memory budget (150 MB, issue 16). V8's
      // default heap growth lets a job's garbage pile up to several times what is live (a
      // 100k-file backup peaked at 330 MB with ~60 MB live); a heap sized close to its live data
      // keeps RSS flat for a little more GC work, which the copy (zstd, hashing, I/O outside the
      // heap) does not notice. Process-wide, so the copy threads' heaps follow it too.
      setFlagsFromString('--optimize-for-size');
      const run = resolveSettings(AGENT_PROGRAM, 'run', o, ['cluster', 'pgdata']);
      const { cluster, pgdata } = run;
      const log = logger(run.logLevel);
      // archive_command derives the default socket from its working directory, which is a real path.
      const realPgdata = (() => {
        try {
          return realpathSync(pgdata);
        } catch {
          return pgdata; // start() reports the missing PGDATA with its error code
        }
      })();
      const s3Credentials = s3CredentialsFromSettings(run);
      const encryption = keySourceFromSettings(run);
      // Checked at start, like every setting: a level the codec does not take fails here, not at the first backup.
      const { compressLevel } = await import('@pgfleet/storage/codec-names');
      const level = run.compressLevel === undefined ? undefined : compressLevel(run.compress, run.compressLevel);
      const maxRateBytes = run.maxRate === undefined ? undefined : parseSize(run.maxRate, 'max-rate');
      const settings: AgentSettings = {
        controller: run.controller,
        cluster,
        // The default is checked too: a hostname outside the rule needs an explicit --agent-id.
        agentId: parseAgentId(run.agentId ?? `${hostname()}-${cluster}`, '--agent-id'),
        pgdata,
        pg: {
          host: run.pgHost,
          port: run.pgPort,
          user: run.pgUser,
          database: run.pgDatabase,
          ...(run.pgPassword ? { password: run.pgPassword } : {}),
        },
        ...(run.pgBinDir ? { pgBinDir: run.pgBinDir } : {}),
        repositories: repositoriesFromSettings(run),
        ...(s3Credentials ? { s3Credentials } : {}),
        ...(encryption ? { encryption } : {}),
        ...(parsed.configFile ? { configFile: resolve(parsed.configFile) } : {}),
        compress: run.compress,
        ...(level !== undefined ? { compressLevel: level } : {}),
        ...(maxRateBytes !== undefined ? { maxRateBytes } : {}),
        checksumDelta: run.checksumDelta,
        fileIncremental: run.fileIncremental,
        wholeBlocks: run.wholeBlocks,
        blockMinBytes: run.blockMinSize,
        resumeWindowMs: run.resumeWindow.trim() === '0' ? 0 : parseDuration(run.resumeWindow, 'resume-window'),
        workers: run.workers,
        archiveTimeoutSec: run.archiveTimeout,
        socket: run.socket || defaultSocketPath(realPgdata),
        archiveAhead: run.archiveAhead,
        archiveWatchReady: run.archiveWatchReady,
        stream: run.stream,
        streamSpool: run.streamSpool || defaultStreamSpool(realPgdata),
        scratchDir: run.scratchDir || defaultScratchDir(realPgdata),
        dumpSpoolMaxBytes: parseSize(run.dumpSpoolMax, 'dump-spool-max'),
        dumpStoreEarly: run.dumpStoreEarly === 'on',
        ...(run.tlsDir ? { tlsDir: run.tlsDir } : {}),
        clusterKeyFile: clusterKeyFileOf(run, realPgdata),
        ...(run.enrollToken ? { enrollToken: run.enrollToken } : {}),
        ...(run.caCert ? { caCert: run.caCert } : {}),
        ...(run.insecure ? { insecure: true } : {}),
      };
      const { AgentDaemon } = await import('./daemon.js');
      const daemon = new AgentDaemon(settings, log);
      const stop = () => {
        log.info('stopping');
        // Aborted jobs clean up before the process goes (a drill stops its throwaway PostgreSQL and
        // removes its copy: seconds): wait for them, at most STOP_GRACE_MS; the WAL services get
        // 2 s as ever. The same signal again ends the process at once.
        void Promise.all([daemon.stop(), sleep(2000)]).then(() => process.exit(0));
        setTimeout(() => process.exit(0), STOP_GRACE_MS).unref();
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      await daemon.start();
      return 0;
    }
    default:
      return 2;
  }
}

/** Runs one pgfleet-agent command line (argv without node and script) and exits with its code. */
export function runAgentCommand(argv: string[]): void {
  const run = argv[0] === 'wal-push' ? import('./wal/push-client.js').then((m) => m.walPushCommand(argv)) : main(argv);
  exitWith(run, 'pgfleet-agent: ');
}
