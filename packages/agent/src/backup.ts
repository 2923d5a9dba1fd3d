/**
 * A full physical backup of a running cluster, non-exclusive (pg_backup_start/stop on one held
 * connection: if the agent dies, PostgreSQL ends the backup with the session):
 *   1. refuse when WAL is not archived: a base backup without its WAL cannot be restored;
 *   2. pg_backup_start with a fast checkpoint;
 *   3. copy every PGDATA file in parallel, hashing and compressing in one pass;
 *   4. pg_backup_stop: returns backup_label and forces a switch to a new segment, so the last
 *      segment the backup needs becomes ready for archiving;
 *   5. wait until every segment from start to stop LSN is in the repository (proof that the
 *      backup is restorable, not just copied);
 *   6. write the manifest, last and atomically: before it exists the backup is invisible.
 */
import { createReadStream } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { backupLabel, PgfleetError, type Logger } from '@pgfleet/core';
import { clusterFacts, connectPg, Lsn, parseBackupLabel, WalSegmentName, type PgConnectionOptions } from '@pgfleet/pg';
import type { BackupManifest, Codec, ManifestFile, Repository } from '@pgfleet/storage';
import { listPgdata } from './pgdata-walk.js';
import { runPool } from './pool.js';
import { ProgressTracker, type ProgressSink } from './progress.js';
import { AGENT_VERSION } from './version.js';

export interface BackupOptions {
  cluster: string;
  pgdata: string;
  pg: PgConnectionOptions;
  repo: Repository;
  codec: Codec;
  workers: number;
  archiveTimeoutMs: number;
  log: Logger;
  progress: ProgressSink;
  signal?: AbortSignal;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runBackup(opts: BackupOptions): Promise<BackupManifest> {
  const { repo, log } = opts;
  const tracker = new ProgressTracker(opts.progress, 'starting');
  const client = await connectPg(opts.pg);
  let label: string | undefined;
  let completed = false;
  try {
    const facts = await clusterFacts(client);
    if (facts.inRecovery) throw new PgfleetError('InvalidArgument', 'backups from a standby are not supported yet; run the agent against the primary');
    if (facts.archiveMode === 'off') {
      throw new PgfleetError('ArchiveModeOff', `archive_mode is off on cluster ${opts.cluster}: the WAL a backup needs would never reach the repository, so the backup could not be restored`);
    }
    if (facts.archiveCommand.trim() === '' || facts.archiveCommand === '(disabled)') {
      throw new PgfleetError('ArchiveModeOff', `archive_command is empty on cluster ${opts.cluster}: WAL is not being archived`);
    }
    await repo.ensureClusterInfo(opts.cluster, { systemIdentifier: facts.systemIdentifier, pgVersionNum: facts.versionNum, walSegmentSize: facts.walSegmentSize });

    const startTime = new Date();
    label = backupLabel(startTime, 'full');
    tracker.phase('pg_backup_start', 'checkpoint');
    const startFn = facts.major >= 15 ? 'pg_backup_start($1, true)' : 'pg_start_backup($1, true, false)';
    const startLsn = Lsn.parse((await client.query(`SELECT ${startFn}::text AS lsn`, [label])).rows[0].lsn);
    log.info({ label, startLsn: startLsn.toString() }, 'backup started');

    const listing = await listPgdata(opts.pgdata);
    tracker.state.bytesTotal = listing.files.reduce((s, f) => s + f.size, 0);
    tracker.state.filesTotal = listing.files.length;
    tracker.phase('copy');
    const files: ManifestFile[] = [];
    await runPool(
      listing.files,
      opts.workers,
      async (f) => {
        const key = repo.backupFileKey(opts.cluster, label!, f.path, opts.codec);
        let stored;
        try {
          stored = await repo.writeObject(key, createReadStream(join(opts.pgdata, f.path), { highWaterMark: 1 << 20 }), opts.codec);
        } catch (err) {
          // Relations dropped while we copy are legal; WAL replay removes them anyway.
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
            tracker.add(f.size, 1);
            return;
          }
          throw err;
        }
        files.push({ path: f.path, size: stored.size, mtimeMs: f.mtimeMs, mode: f.mode, sha256: stored.sha256, storedSize: stored.storedSize, storedSha256: stored.storedSha256, codec: opts.codec, backup: label! });
        tracker.add(f.size, 1);
      },
      opts.signal,
    );
    files.sort((a, b) => (a.path < b.path ? -1 : 1));

    tracker.phase('pg_backup_stop');
    // wait_for_archive=false: we wait ourselves, against the repository, with a timeout and a clear error.
    const stopSql = facts.major >= 15 ? 'SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_backup_stop(false)' : 'SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_stop_backup(false, false)';
    const stop = (await client.query(stopSql)).rows[0];
    const stopTime = new Date();
    const stopLsn = Lsn.parse(stop.lsn);
    const labelInfo = parseBackupLabel(stop.labelfile);
    const timeline = labelInfo.startTimeline;
    const segments = WalSegmentName.range(timeline, labelInfo.startLsn, stopLsn, facts.walSegmentSize);
    log.info({ label, stopLsn: stopLsn.toString(), walStart: String(segments[0]), walStop: String(segments.at(-1)) }, 'backup copy done, waiting for WAL');

    tracker.phase('wait-wal', `waiting for ${segments.length} WAL segment(s) in the repository`);
    const deadline = Date.now() + opts.archiveTimeoutMs;
    for (const seg of segments) {
      while ((await repo.findWal(opts.cluster, seg.toString())).length === 0) {
        opts.signal?.throwIfAborted();
        if (Date.now() > deadline) {
          throw new PgfleetError('WalArchiveTimeout', `WAL segment ${seg} needed by backup ${label} did not reach the repository within ${Math.round(opts.archiveTimeoutMs / 1000)} s`);
        }
        await sleep(200);
      }
    }

    const manifest: BackupManifest = {
      format: 1,
      label,
      cluster: opts.cluster,
      type: 'full',
      systemIdentifier: facts.systemIdentifier,
      pgVersionNum: facts.versionNum,
      walSegmentSize: facts.walSegmentSize,
      timeline,
      startLsn: labelInfo.startLsn.toString(),
      stopLsn: stopLsn.toString(),
      startTime: startTime.toISOString(),
      stopTime: stopTime.toISOString(),
      walStart: segments[0]!.toString(),
      walStop: segments.at(-1)!.toString(),
      backupLabel: stop.labelfile,
      ...(stop.spcmapfile ? { tablespaceMap: stop.spcmapfile } : {}),
      directories: listing.directories,
      links: listing.links,
      files,
      sizeBytes: files.reduce((s, f) => s + f.size, 0),
      storedBytes: files.reduce((s, f) => s + f.storedSize, 0),
      agentVersion: `${AGENT_VERSION} (${hostname()})`,
    };
    tracker.phase('manifest');
    await repo.writeManifest(manifest);
    completed = true;
    tracker.phase('done');
    log.info({ label, files: files.length, bytes: manifest.sizeBytes, stored: manifest.storedBytes }, 'backup complete');
    return manifest;
  } finally {
    await client.end().catch(() => {});
    if (!completed && label) {
      // Nothing without a manifest is ever listed, but do not leave the bytes lying around either.
      const keys: string[] = [];
      for await (const o of repo.driver.list(`${repo.backupPrefix(opts.cluster, label)}/`)) keys.push(o.key);
      await repo.driver.delete(keys).catch(() => {});
    }
  }
}
