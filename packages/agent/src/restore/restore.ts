/**
 * Restore (and PITR set-up) into a new directory: every file (every chunk of a large file) is
 * fetched, decompressed, checked against its sha256 and written by a pool of worker threads; then backup_label, the recovery settings and
 * recovery.signal are written, so that starting PostgreSQL on the directory replays archived WAL
 * (via `pgfleet-agent wal-fetch`) up to the target and then acts as asked (promote by default).
 * Files of a diff/incr backup are read from the backup each manifest entry names.
 *
 * Delta mode restores over an existing data directory of the cluster (PostgreSQL stopped): files
 * whose size and sha256 already match the manifest are kept, the others fetched, and everything
 * the manifest does not list is removed (pg_wal's contents included: stale WAL of another history
 * must never be replayed). Symlinks are never followed, so nothing outside the directory is touched,
 * except a tablespace link the directory already had with the backup's target: that is the
 * cluster's own tablespace, restored through it.
 *
 * Tablespaces (the backup holds their files under pg_tblspc/<oid>/...) are restored beside the
 * target directory, into <target>.tablespaces/<oid> (or <tablespaceDir>/<oid>), which must be new
 * or empty; pg_tblspc/<oid> links there. Never to the source's tablespace location: on the same
 * host that is the live tablespace, and recovery would write into it. No tablespace_map is written
 * either (PostgreSQL would recreate the source's links from it). Not in-place directories inside
 * pg_tblspc: PostgreSQL refuses those at the end of recovery unless a developer option is set.
 */
import { chmod, lstat, mkdir, readdir, readFile, readlink, realpath, rm, unlink } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  asPgfleetError,
  forEachLimit,
  fsyncPath,
  mapLimit,
  PgfleetError,
  processAlive,
  settleAll,
  type Logger,
} from '@pgfleet/core';
import {
  chunkedContentDigest,
  layerRuns,
  type ManifestHead,
  type ManifestReader,
  type ManifestFile,
  type Repository,
} from '@pgfleet/storage';
import { CopyPool } from '../copy/pool.js';
import type { RateLimiter } from '../copy/rate-limit.js';
import { ProgressTracker, type ProgressSink } from '../progress.js';
import { readPgdataFacts } from '../pgdata/pgdata.js';
import { TABLESPACE_LINK_RE } from '../pgdata/walk.js';
import { RestoreTree } from './confined-path.js';
import { planRestore, type RestorePlan, type TargetSpec } from './plan.js';

export type { TargetSpec } from './plan.js';

export interface RestoreOptions {
  cluster: string;
  repo: Repository;
  /** Options wal-fetch needs to find the repositories (e.g. ['--repo', url, '--config', file]); never credentials. */
  walFetchArgs: readonly string[];
  backupLabel?: string;
  /** The label is the controller's pick from the catalog, not the user's: the agent may take another backup of the target's timeline lineage. */
  labelIsHint?: boolean;
  /** Follow this timeline (recovery_target_timeline) instead of the one plan.ts chooses. */
  targetTimeline?: number;
  /** The timeline the cluster's primary writes now (from the controller): restores follow its lineage. */
  currentTimeline?: number;
  /**
   * 'off': the restored server does not archive (archive_mode = off), so a copy started anywhere
   * never pushes its WAL or its new timeline's history into the source's repository.
   * 'preserve': keep the source's archiving, for an in-place recovery of the cluster itself.
   * Default: 'preserve' when restoring over the agent's own PGDATA (ownPgdata) of a primary
   * (no standby.signal there), else 'off'.
   */
  archive?: 'off' | 'preserve';
  targetDir: string;
  /** Update an existing data directory in place: keep matching files, fetch the rest, remove extras. */
  delta?: boolean;
  /** Parent of the restored tablespaces (one <oid> directory each); default <targetDir>.tablespaces. */
  tablespaceDir?: string;
  /** The agent's own PGDATA: a delta restore into it keeps tablespace links to their own locations (anywhere else they are re-pointed). */
  ownPgdata?: string;
  target: TargetSpec;
  inclusive?: boolean;
  action: 'promote' | 'pause' | 'shutdown';
  workers: number;
  /** The agent's --max-rate bucket: every byte written into the restored files goes through it. */
  rateLimit?: RateLimiter;
  pgBinDir?: string;
  log: Logger;
  progress: ProgressSink;
  signal?: AbortSignal;
}

export interface RestoreOutcome {
  /** The restored backup's manifest without its file list. */
  manifest: ManifestHead;
  /** Files the backup holds. */
  fileCount: number;
  /** The timeline recovery follows (recovery_target_timeline). */
  timeline: number;
  /** Whether the restored server keeps archiving into the cluster's repository. */
  archivePreserved: boolean;
  /** Bytes fetched from the repository (in delta mode, only the files that differed). */
  bytes: number;
  /** Delta mode: files kept as they were, and files/directories/links removed. */
  kept?: number;
  removed?: number;
  /** Content bytes written through the agent's --max-rate bucket (absent without one). */
  pacedBytes?: number;
}

/** The command PostgreSQL runs to fetch WAL: this very agent, with the repositories spelled out so the restored cluster needs no agent config. */
export function restoreCommand(cluster: string, walFetchArgs: readonly string[]): string {
  const bin = join(dirname(fileURLToPath(import.meta.url)), '..', 'bin.js');
  // Shell-quoted: restore_command runs through /bin/sh, and an S3 URL holds '&' and '?'.
  const quote = (a: string) => (/^[\w/.:=,@+-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  // PostgreSQL expands %f/%p/%r and %% in restore_command: a literal '%' (a percent-encoded S3
  // prefix, a path) must be doubled, or newer versions reject the command.
  const literal = (a: string) => a.replace(/%/g, '%%');
  return `"${literal(process.execPath)}" "${literal(bin)}" wal-fetch "%f" "%p" --cluster ${literal(quote(cluster))} ${walFetchArgs.map((a) => literal(quote(a))).join(' ')}`;
}

function confString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function recoverySettings(o: RestoreOptions, timeline: string, archivePreserved: boolean): string[] {
  const lines = [
    '',
    `# Added by pgfleet restore of cluster ${o.cluster} (remove after recovery if you change the archive layout)`,
    `restore_command = ${confString(restoreCommand(o.cluster, o.walFetchArgs))}`,
    // Chosen from the archived histories (plan.ts), never 'latest': a timeline another
    // copy pushed into the archive must not decide where this one goes.
    `recovery_target_timeline = '${timeline}'`,
  ];
  if (!archivePreserved) {
    // A restored copy must not archive into the source's repository: its WAL and the history of
    // the timeline it starts at promotion would become part of the source's archive.
    lines.push(
      `# pgfleet restore without --archive preserve: this copy does not archive (set archive_mode back if it becomes the cluster)`,
      `archive_mode = off`,
    );
  }
  const t = o.target;
  if (t.kind === 'time')
    lines.push(
      `recovery_target_time = ${confString(t.pgTime ?? t.time.toISOString().replace('T', ' ').replace('Z', '+00'))}`,
    );
  if (t.kind === 'lsn') lines.push(`recovery_target_lsn = ${confString(t.lsn)}`);
  if (t.kind === 'name') lines.push(`recovery_target_name = ${confString(t.name)}`);
  if (t.kind === 'xid') lines.push(`recovery_target_xid = ${confString(t.xid)}`);
  if (t.kind === 'immediate') lines.push(`recovery_target = 'immediate'`);
  if (t.kind !== 'latest') {
    lines.push(`recovery_target_action = '${o.action}'`);
    if (o.inclusive !== undefined && t.kind !== 'immediate')
      lines.push(`recovery_target_inclusive = ${o.inclusive ? 'on' : 'off'}`);
  }
  return lines;
}

export async function runRestore(options: RestoreOptions): Promise<RestoreOutcome> {
  const o = normaliseTargets(options);
  const delta = await checkTarget(o);
  const tracker = new ProgressTracker(o.progress, 'choose-backup');
  const plan = await planRestore({
    cluster: o.cluster,
    repo: o.repo,
    target: o.target,
    ...(o.backupLabel ? { backupLabel: o.backupLabel } : {}),
    ...(o.labelIsHint ? { labelIsHint: true } : {}),
    ...(o.targetTimeline !== undefined ? { targetTimeline: o.targetTimeline } : {}),
    ...(o.currentTimeline ? { currentTimeline: o.currentTimeline } : {}),
    ...(o.pgBinDir ? { pgBinDir: o.pgBinDir } : {}),
    log: o.log,
  });
  try {
    return await restorePlanned(o, plan, delta, tracker);
  } finally {
    await plan.reader.close();
  }
}

async function restorePlanned(
  o: RestoreOptions,
  plan: RestorePlan,
  delta: boolean,
  tracker: ProgressTracker,
): Promise<RestoreOutcome> {
  const { reader } = plan;
  const manifest = withPlainPgWal(reader.head);
  const fileCount = reader.fileCount;
  const { ownTarget, archivePreserved } = await decideArchiving(o);
  requireTablespaceFiles(manifest);
  if (delta) await checkDeltaSystem(o.targetDir, manifest);
  o.log.info(
    {
      label: manifest.label,
      timeline: plan.timeline,
      targetDir: o.targetDir,
      delta,
      archive: archivePreserved ? 'preserve' : 'off',
    },
    'restoring backup',
  );
  tracker.state.bytesTotal = manifest.sizeBytes;
  tracker.state.filesTotal = fileCount;
  const tablespaceLocation = (linkPath: string) =>
    join(o.tablespaceDir ?? `${o.targetDir}.tablespaces`, basename(linkPath));
  const { removed, tree } = await layOutTarget(o, manifest, reader, delta, ownTarget, tablespaceLocation, tracker);
  const { fetched, kept, paced } = await restoreFiles(o, tree, manifest, reader, delta, tracker);
  o.signal?.throwIfAborted();
  const pacedEntry = o.rateLimit ? { pacedBytes: paced } : {};
  if (o.rateLimit) {
    // --max-rate accounting: every byte written went through the agent's bucket.
    o.log.info(
      { label: manifest.label, pacedBytes: paced, fetchedBytes: fetched, maxRate: o.rateLimit.bytesPerSecond },
      'restore copy rate-limited',
    );
  }
  await writeRecoverySettings(
    o,
    tree,
    manifest,
    plan.recoveryTargetTimeline,
    archivePreserved,
    tablespaceLocation,
    tracker,
  );
  if (delta) {
    const message = `delta: ${kept} file(s) kept, ${fileCount - kept} fetched (${fetched} bytes), ${removed} removed`;
    o.log.info(
      { label: manifest.label, kept, fetched: fileCount - kept, bytes: fetched, removed },
      'delta restore done',
    );
    tracker.phase('done', message);
    return {
      manifest,
      fileCount,
      timeline: plan.timeline,
      archivePreserved,
      bytes: fetched,
      kept,
      removed,
      ...pacedEntry,
    };
  }
  tracker.phase('done');
  return { manifest, fileCount, timeline: plan.timeline, archivePreserved, bytes: manifest.sizeBytes, ...pacedEntry };
}

/** The options with the target and tablespace directories absolute and normalised ('/srv/r/' + '.tablespaces' must not land inside the data directory). */
function normaliseTargets(options: RestoreOptions): RestoreOptions {
  if (!isAbsolute(options.targetDir))
    throw new PgfleetError('InvalidArgument', `restore target ${options.targetDir} must be an absolute path`);
  const o: RestoreOptions = {
    ...options,
    targetDir: resolve(options.targetDir),
    ...(options.tablespaceDir ? { tablespaceDir: resolve(options.tablespaceDir) } : {}),
  };
  if (o.tablespaceDir !== undefined) {
    if (!isAbsolute(options.tablespaceDir!))
      throw new PgfleetError(
        'InvalidArgument',
        `tablespace directory ${options.tablespaceDir} must be an absolute path`,
      );
    if (o.tablespaceDir === o.targetDir || o.tablespaceDir.startsWith(`${o.targetDir}/`)) {
      throw new PgfleetError(
        'InvalidArgument',
        `tablespace directory ${o.tablespaceDir} is inside the restore target ${o.targetDir}; PostgreSQL expects tablespaces outside the data directory`,
      );
    }
  }
  return o;
}

/** Whether this is a delta restore: the target must be empty, unless delta mode updates a stopped data directory there. */
async function checkTarget(o: RestoreOptions): Promise<boolean> {
  const existing = await readdir(o.targetDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw asPgfleetError(
      err,
      `restore target ${o.targetDir} cannot be read by the agent's user (uid ${process.getuid?.()})`,
    );
  });
  const delta = o.delta === true && existing.length > 0;
  if (existing.length > 0 && !delta)
    throw new PgfleetError(
      'RestoreTargetNotEmpty',
      `restore target ${o.targetDir} is not empty (${existing.length} entries)`,
    );
  if (delta) await checkDeltaTarget(o.targetDir, existing);
  return delta;
}

/**
 * Whether the target is the agent's own PGDATA, and whether the restored server keeps archiving.
 * In place over the agent's own PGDATA the restored server is the cluster, unless that PGDATA is
 * a standby's (standby.signal): promoted at the target it would archive a fork while the real
 * primary carries on.
 */
async function decideArchiving(o: RestoreOptions): Promise<{ ownTarget: boolean; archivePreserved: boolean }> {
  const ownTarget =
    o.ownPgdata !== undefined &&
    (await realpath(o.ownPgdata).catch(() => o.ownPgdata)) === (await realpath(o.targetDir).catch(() => o.targetDir));
  const standbyHere =
    ownTarget &&
    (await lstat(join(o.targetDir, 'standby.signal')).then(
      () => true,
      () => false,
    ));
  const archivePreserved = o.archive === 'preserve' || (o.archive === undefined && ownTarget && !standbyHere);
  return { ownTarget, archivePreserved };
}

/**
 * The target's directories, links and tablespace locations as the backup has them; in delta mode
 * first removes what the backup does not hold (see removeExtras).
 */
async function layOutTarget(
  o: RestoreOptions,
  manifest: ManifestHead,
  reader: ManifestReader,
  delta: boolean,
  ownTarget: boolean,
  tablespaceLocation: (linkPath: string) => string,
  tracker: ProgressTracker,
): Promise<{ removed: number; tree: RestoreTree }> {
  let removed = 0;
  const keptLinks = new Set<string>();
  if (delta) {
    tracker.phase('delta-clean', 'removing what the backup does not hold');
    // Where a tablespace link may keep pointing: the restore location, and the backup's own
    // location only when restoring the agent's own data directory (a copy of the cluster on the
    // same host would otherwise write into the live source's tablespace).
    const own = ownTarget;
    const links = new Map(manifest.links.map((l) => [l.path, l.target]));
    // Only tablespace links are ever kept: any other link in the directory is removed as a link.
    const keepLink = (path: string, target: string): boolean =>
      isTablespace(path) &&
      links.has(path) &&
      (target === tablespaceLocation(path) || (own && target === links.get(path)));
    // A tablespace link pointing anywhere else (or missing) is pointed at the restore location first;
    // what that location already holds is then compared and cleaned like the rest. pg_tblspc
    // itself must be a real directory before anything below it is looked at.
    await unlinkIfSymlink(join(o.targetDir, 'pg_tblspc'));
    for (const l of manifest.links)
      if (isTablespace(l.path))
        await pointTablespace(o.targetDir, l.path, l.target, tablespaceLocation(l.path), keepLink);
    ({ removed } = await removeExtras(o.targetDir, manifest, reader, keptLinks, keepLink));
  }
  await mkdir(o.targetDir, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
    throw asPgfleetError(
      err,
      `restore target ${o.targetDir} cannot be created by the agent's user (uid ${process.getuid?.()})`,
    );
  });
  await chmod(o.targetDir, 0o700);
  const base = delta ? new RestoreTree(o.targetDir) : RestoreTree.fresh(o.targetDir);
  // Tablespaces first: their directories and files are created inside them, written straight
  // into the directory chosen for each (never through a link found on disk).
  const locations = new Map<string, string>();
  for (const l of manifest.links) {
    if (!isTablespace(l.path)) continue;
    if (keptLinks.has(l.path)) {
      locations.set(l.path, await keptTablespaceLocation(o.targetDir, l.path, [tablespaceLocation(l.path), l.target]));
      continue;
    }
    const location = tablespaceLocation(l.path);
    await prepareTablespaceLocation(location, l.target);
    await base.createTablespaceLink(l.path, location);
    locations.set(l.path, location);
  }
  const tree = base.withTablespaces(locations);
  for (const d of manifest.directories) {
    const abs = await tree.ensureDirectory(d.path, d.mode);
    if (delta) await chmod(abs, d.mode);
  }
  // Other links (pg_wal in old manifests) were turned into directories: a restore creates no other link.
  return { removed, tree };
}

/** Where a tablespace link the delta restore kept points: one of the places it may (see keepLink), read again. */
async function keptTablespaceLocation(root: string, linkPath: string, allowed: readonly string[]): Promise<string> {
  const target = await readlink(join(root, linkPath));
  if (!allowed.includes(target))
    throw new PgfleetError(
      'RestoreEscapeRefused',
      `restore refused to write through ${linkPath}: it now points to ${target}, not to ${allowed.join(' or ')}`,
    );
  return target;
}

/** Removes a symbolic link at `path` (as a link, never followed); anything else stays. */
async function unlinkIfSymlink(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (st?.isSymbolicLink()) await unlink(path);
}

/**
 * Fetches, decompresses, verifies and writes every file (every chunk of a large one) through the
 * copy pool; in delta mode a file whose size and sha256 already match is kept.
 */
async function restoreFiles(
  o: RestoreOptions,
  tree: RestoreTree,
  manifest: ManifestHead,
  reader: ManifestReader,
  delta: boolean,
  tracker: ProgressTracker,
): Promise<{ fetched: number; kept: number; paced: number }> {
  tracker.phase('copy');
  let fetched = 0;
  let kept = 0;
  const pool = new CopyPool(o.repo, {
    threads: o.workers,
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.rateLimit ? { rateLimit: o.rateLimit } : {}),
  });
  const restoreFile = async (f: ManifestFile): Promise<void> => {
    if (delta && (await matchesManifest(pool, tree, f))) {
      const fh = await tree.openExisting(f.path);
      try {
        await fh.chmod(f.mode);
        await fh.utimes(new Date(f.mtimeMs), new Date(f.mtimeMs));
      } finally {
        await fh.close();
      }
      kept++;
      tracker.add(f.size, 1);
      return;
    }
    if (!f.chunks && !f.blocks?.changed) {
      const dest = await tree.newFile(f.path);
      const key = o.repo.backupFileKey(manifest.cluster, f.backup, f.path, f.codec);
      await pool.run({
        kind: 'restore',
        key,
        codec: f.codec,
        sha256: f.sha256,
        size: f.size,
        storedSha256: f.storedSha256,
        dest,
        mode: f.mode,
        chmod: delta,
        mtimeMs: f.mtimeMs,
        exclusive: true,
      });
      fetched += f.size;
      tracker.add(f.size, 1);
      return;
    }
    if (!created.has(f.path)) await createSized(tree, f);
    const dest = tree.pathOf(f.path);
    if (f.blocks?.changed) {
      // Block-incremental: the map names, for every block, the newest object of the chain that
      // holds it; each object is decoded once and only its blocks are written.
      const map = await o.repo.readBlockMap(manifest.cluster, f);
      if (o.repo.objects.canAssemble(map.parts.map((p) => p.codec))) {
        // One pass in block order (storage ObjectIo.assembleBlocks): the parts are decoded side
        // by side, the file goes out in large aligned writes and is hashed as it is assembled.
        // With blocks changed at random, each run is a block or two: one write per run and a
        // second pass to hash the file cost ~4x a full's restore (docs/block-incremental.md).
        await pool.run({
          kind: 'assemble-blocks',
          dest,
          size: f.size,
          sha256: f.sha256,
          parts: map.parts.map((part) => ({
            key: o.repo.blockPartKey(manifest.cluster, f.path, part),
            codec: part.codec,
            sha256: part.sha256,
            size: part.size,
          })),
          part: map.part,
          index: map.index,
          ...(map.deltas.length > 0 ? { deltas: [...map.deltas] } : {}),
        });
        await finishChunked(tree, f);
        fetched += f.size;
        tracker.add(f.size, 1);
        return;
      }
      // Elsewhere (objects in S3, gzip): each part in parallel writes its runs, then the file is
      // hashed. A map with XOR delta layers goes layer by layer (each layer's runs XORed onto what
      // the layers below wrote), a part decoded once per layer it has blocks in.
      for (const [layer, runs] of layerRuns(map).entries())
        await settleAll(
          map.parts.map((part, i) =>
            runs[i]!.length === 0
              ? Promise.resolve(undefined)
              : pool.run({
                  kind: 'restore-runs',
                  key: o.repo.blockPartKey(manifest.cluster, f.path, part),
                  codec: part.codec,
                  sha256: part.sha256,
                  size: part.size,
                  dest,
                  runs: runs[i]!,
                  fileSize: f.size,
                  ...(layer > 0 ? { xor: true as const } : {}),
                }),
          ),
        );
      // Each part object was checked against its own checksum; the file they were assembled
      // into is checked whole against what the backup read, so a wrong map or a misplaced run
      // fails the restore instead of leaving a plausible but wrong relation file. The file was
      // just written through the page cache: this is a read from memory mostly.
      const check = await pool.run({ kind: 'hash', path: dest });
      if (check.missing || check.size !== f.size || check.sha256s[0] !== f.sha256)
        throw new PgfleetError(
          'RepoChecksumMismatch',
          `${f.path} rebuilt from its block map does not match the file the backup read (expected sha256 ${f.sha256}, ${f.size} bytes; got ${check.sha256s[0] ?? '-'}, ${check.size} bytes)`,
        );
      await finishChunked(tree, f);
      fetched += f.size;
      tracker.add(f.size, 1);
      return;
    }
    // Chunked: the file at its final size (created up front, see below), then every chunk writes its range, in parallel.
    await settleAll(
      f.chunks!.map((c) =>
        (c.size === 0
          ? Promise.resolve(undefined)
          : pool.run({
              kind: 'restore',
              key: c.key,
              codec: f.codec,
              sha256: c.sha256,
              size: c.size,
              storedSha256: c.storedSha256,
              dest,
              mode: f.mode,
              offset: c.offset,
            })
        ).then(() => tracker.add(c.size)),
      ),
    );
    await finishChunked(tree, f);
    fetched += f.size;
    tracker.add(0, 1);
  };
  const created = new Set<string>();
  // Large files first, so the threads finish together: the chunked and block-incremental ones
  // (at least a chunk each, so few: one per 64 MiB), largest first, then the rest in the
  // manifest's order, read as they are restored. Memory stays flat in the number of files.
  const large: ManifestFile[] = [];
  for await (const f of reader.files()) if (f.chunks || f.blocks?.changed) large.push(f);
  large.sort((a, b) => b.size - a.size);
  async function* ordered(): AsyncGenerator<ManifestFile> {
    yield* large;
    for await (const f of reader.files()) if (!f.chunks && !f.blocks?.changed) yield f;
  }
  try {
    // Chunked files are created before any task is queued, so that their chunks are queued first.
    if (!delta) {
      for (const f of large) {
        await createSized(tree, f);
        created.add(f.path);
      }
    }
    // Fed lazily, a few files per copy slot ahead (not a promise per file up front).
    await forEachLimit(ordered(), Math.max(1, o.workers) * 4, (f) =>
      restoreFile(f).catch((err: unknown) => {
        pool.cancel(err);
        throw err;
      }),
    );
  } finally {
    await pool.close();
  }
  return { fetched, kept, paced: pool.pacedBytes };
}

/**
 * backup_label, the recovery settings and recovery.signal, so that starting PostgreSQL on the
 * directory replays archived WAL to the target; then everything restored is made durable.
 */
async function writeRecoverySettings(
  o: RestoreOptions,
  tree: RestoreTree,
  manifest: ManifestHead,
  recoveryTargetTimeline: string,
  archivePreserved: boolean,
  tablespaceLocation: (linkPath: string) => string,
  tracker: ProgressTracker,
): Promise<void> {
  tracker.phase('recovery-settings');
  await tree.createFile('backup_label', manifest.backupLabel);
  // No tablespace_map: pg_tblspc is laid out above (see the header comment).
  // postgresql.auto.conf is read last, so these settings win over anything in postgresql.conf.
  await tree.appendFile(
    'postgresql.auto.conf',
    `${recoverySettings(o, recoveryTargetTimeline, archivePreserved).join('\n')}\n`,
  );
  await tree.createFile('recovery.signal', '');
  await syncRestored(o.targetDir, manifest, [
    ...new Set(manifest.links.filter((l) => isTablespace(l.path)).map((l) => dirname(tablespaceLocation(l.path)))),
  ]);
}

/** A chunked file once all its chunks are written: durable (one fsync for the whole file), with its mtime. */
async function finishChunked(tree: RestoreTree, f: ManifestFile): Promise<void> {
  const fh = await tree.openExisting(f.path);
  try {
    await fh.sync();
    await fh.utimes(new Date(f.mtimeMs), new Date(f.mtimeMs));
  } finally {
    await fh.close();
  }
}

/**
 * Makes the restore durable before it is reported done: every file was fsynced as it was written
 * (copy/tasks.ts, finishChunked); what is left is the files written here and the directory
 * entries of everything, one fsync per directory, a few at a time.
 */
async function syncRestored(root: string, manifest: ManifestHead, tablespaceParents: readonly string[]): Promise<void> {
  const extra = ['backup_label', 'postgresql.auto.conf', 'recovery.signal'];
  await Promise.all(extra.map((name) => fsyncPath(join(root, name))));
  // The tablespace locations' own entries (<target>.tablespaces and its parent).
  await Promise.all(tablespaceParents.flatMap((p) => [fsyncPath(p), fsyncPath(dirname(p))]));
  const dirs = [
    ...manifest.links.filter((l) => isTablespace(l.path)).map((l) => l.path),
    ...manifest.directories.map((d) => d.path),
  ];
  await mapLimit(dirs, 8, (dir) => fsyncPath(join(root, dir)));
  await fsyncPath(root);
}

/** Creates a chunked file new at its final size, with its mode; the chunks then write their ranges. */
async function createSized(tree: RestoreTree, f: ManifestFile): Promise<void> {
  const fh = await tree.createNew(f.path, f.mode);
  try {
    await fh.truncate(f.size);
    await fh.chmod(f.mode); // the umask may have narrowed it at creation
  } finally {
    await fh.close();
  }
}

/**
 * A delta restore deletes whatever the backup does not hold, so it insists on a data directory
 * (PG_VERSION present) and on PostgreSQL being stopped: a live postmaster.pid means a running
 * server whose files would change under us. A stale postmaster.pid (crash) is just removed.
 */
async function checkDeltaTarget(targetDir: string, entries: string[]): Promise<void> {
  if (!entries.includes('PG_VERSION')) {
    throw new PgfleetError(
      'RestoreTargetNotEmpty',
      `restore target ${targetDir} is not empty and is not a PostgreSQL data directory (no PG_VERSION): a delta restore would delete its contents, so it is refused`,
    );
  }
  const pidText = await readFile(join(targetDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  const pid = pidText === undefined ? NaN : Number(pidText.split('\n')[0]);
  if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) {
    throw new PgfleetError(
      'RestoreTargetInUse',
      `restore target ${targetDir} is in use: its postmaster.pid names the running process ${pid}`,
    );
  }
}

/**
 * A delta restore replaces a data directory's contents, so it must be a data directory of the
 * backup's own database system: a mistyped --target-dir naming another stopped cluster would
 * otherwise be overwritten.
 */
async function checkDeltaSystem(targetDir: string, manifest: ManifestHead): Promise<void> {
  const facts = await readPgdataFacts(targetDir).catch(() => undefined);
  if (facts && facts.systemIdentifier !== manifest.systemIdentifier) {
    throw new PgfleetError(
      'SystemIdMismatch',
      `restore target ${targetDir} belongs to database system ${facts.systemIdentifier}, backup ${manifest.label} to ${manifest.systemIdentifier}: a delta restore only updates a data directory of the same cluster`,
      {
        hint: "Check --to: it names another cluster's data directory. Restore into an empty or new directory instead.",
      },
    );
  }
}

const isTablespace = (path: string): boolean => TABLESPACE_LINK_RE.test(path);

/** Delta mode: a tablespace link `keepLink` does not accept (or a missing one) is pointed at `location`, which must hold nothing but tablespace version directories. */
async function pointTablespace(
  root: string,
  linkPath: string,
  sourceTarget: string,
  location: string,
  keepLink: (path: string, target: string) => boolean,
): Promise<void> {
  const path = join(root, linkPath);
  const current = await readlink(path).catch(() => undefined);
  if (current !== undefined && keepLink(linkPath, current)) return;
  await prepareTablespaceLocation(location, sourceTarget, true);
  await rm(path, { recursive: true, force: true }); // a link is removed as a link, never followed
  await new RestoreTree(root).createTablespaceLink(linkPath, location);
}

/**
 * Backups taken before pgfleet treated a linked pg_wal as a directory list it among the links:
 * restored as a link it would point into the source's WAL directory.
 */
function withPlainPgWal(manifest: ManifestHead): ManifestHead {
  if (!manifest.links.some((l) => l.path === 'pg_wal')) return manifest;
  const dirs = manifest.directories.filter((d) => d.path !== 'pg_wal' && d.path !== 'pg_wal/archive_status');
  return {
    ...manifest,
    links: manifest.links.filter((l) => l.path !== 'pg_wal'),
    directories: [...dirs, { path: 'pg_wal', mode: 0o700 }, { path: 'pg_wal/archive_status', mode: 0o700 }],
  };
}

/**
 * A restored tablespace's directory: created, or empty already (a leftover would mix with the
 * restored files). A delta restore also takes one that holds only tablespace version directories
 * (an earlier restore's), whose contents it then compares and cleans.
 */
async function prepareTablespaceLocation(location: string, sourceTarget: string, delta = false): Promise<void> {
  if (!isAbsolute(location))
    throw new PgfleetError('InvalidArgument', `tablespace directory ${location} must be an absolute path`);
  await mkdir(location, { recursive: true, mode: 0o700 });
  const entries = await readdir(location);
  if (entries.length > 0 && !(delta && entries.every((e) => /^PG_\d+_\d+$/.test(e)))) {
    throw new PgfleetError(
      'RestoreTargetNotEmpty',
      `the directory for the tablespace the source had at ${sourceTarget}, ${location}, is not empty (${entries.length} entries); remove it or restore elsewhere`,
    );
  }
}

/** Every tablespace holds at least its version directory (PG_<major>_<catversion>); a backup without one lacks the tablespace's data. */
function requireTablespaceFiles(manifest: ManifestHead): void {
  for (const l of manifest.links) {
    if (isTablespace(l.path) && !manifest.directories.some((d) => d.path.startsWith(`${l.path}/`))) {
      throw new PgfleetError(
        'RepoManifestInvalid',
        `backup ${manifest.label} lists tablespace ${l.path} (${l.target}) but holds none of its files (taken before pgfleet copied tablespaces): it cannot be restored completely`,
        {
          hint: 'Restore another backup (pgfleet backups <cluster>) and take a new full backup now: this one lacks the tablespace data.',
        },
      );
    }
  }
}

/**
 * Removes every file, directory and symlink under `root` that the manifest does not list with the
 * same type (and, for links, the same target). lstat only: a symlink is removed as a link, never
 * followed, so a linked directory outside the data directory is never touched; the exception is a
 * tablespace link with the backup's own target or an earlier restore's (restored through it).
 */
async function removeExtras(
  root: string,
  manifest: ManifestHead,
  reader: ManifestReader,
  keptLinks: Set<string>,
  keepLink: (path: string, target: string) => boolean,
): Promise<{ removed: number }> {
  // The paths only (a delta restore's one cost per file), read from the streamed manifest.
  const files = new Set<string>();
  for await (const f of reader.files()) files.add(f.path);
  const dirs = new Set(manifest.directories.map((d) => d.path));
  let removed = 0;
  const walk = async (rel: string): Promise<void> => {
    for (const name of await readdir(rel ? join(root, rel) : root)) {
      const path = rel ? `${rel}/${name}` : name;
      const abs = join(root, path);
      const st = await lstat(abs);
      if (st.isSymbolicLink()) {
        // A kept tablespace link (see keepLink in layOutTarget): its contents are updated like the rest.
        if (keepLink(path, await readlink(abs))) {
          keptLinks.add(path);
          if (isTablespace(path)) await walk(path);
          continue;
        }
      } else if (st.isDirectory()) {
        if (dirs.has(path)) {
          await walk(path);
          continue;
        }
      } else if (st.isFile() && files.has(path)) {
        continue;
      }
      // Another cluster's version directory in a shared tablespace location is not ours to remove.
      if (isTablespace(rel) && /^PG_\d+_\d+$/.test(name)) continue;
      await rm(abs, { recursive: true, force: true });
      removed++;
    }
  };
  await walk('');
  return { removed };
}

/** Delta mode: the file on disk is kept only when its size and sha256 match the manifest (mtimes prove nothing about a damaged copy). */
async function matchesManifest(pool: CopyPool, tree: RestoreTree, f: ManifestFile): Promise<boolean> {
  // Only a regular file reached through real directories is a candidate: a link is replaced, never read through.
  const existing = await tree.existingFile(f.path);
  if (existing?.size !== f.size) return false;
  const r = await pool.run({
    kind: 'hash',
    path: existing.abs,
    ...(f.chunks ? { ranges: f.chunks.map((c) => ({ offset: c.offset, size: c.size })) } : {}),
  });
  if (r.missing || r.size !== f.size) return false;
  return (f.chunks ? chunkedContentDigest(r.sha256s) : r.sha256s[0]) === f.sha256;
}
