/**
 * `pgfleet info`: what a cluster's repository holds, read from the repository itself (the catalog
 * is an index that can lag or be rebuilt): every complete backup with the chain it depends on
 * and the backups that depend on it, its sizes, LSNs and times; the archive's oldest and newest
 * WAL segment per timeline; totals. A block-incremental file (docs/block-incremental.md) counts
 * the changed blocks it stored as its backup's own content, and the backups its block map reads
 * (`blocks.from`) among those its backup depends on. Archived WAL counts only authenticated copies
 * (storage wal-auth.ts), the ones a restore may use; the others are only counted apart.
 *
 * Bounded for large repositories: the backups are listed once and their manifests read one at a
 * time, each reduced to a summary at once (no two file lists held together); the archive is
 * listed once, streaming, and only per-timeline minimum, maximum and counts are kept, so a
 * million archived segments cost one listing and constant memory.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { walFileKind } from '@pgfleet/pg';
import { backupInfoFromManifest, type BackupInfoSchema, type RepositoryInfoSchema } from '@pgfleet/proto';
import { entryBackups, type BackupManifest, type ManifestFile, type Repository } from '@pgfleet/storage';

/** A manifest as info keeps it: the message to report, and what ordering and chains need. */
interface BackupSummary {
  label: string;
  priorLabel: string;
  stopMs: number;
  storedBytes: number;
  ownSizeBytes: number;
  /** Backups other than itself that its files name (their own backup, and the backups a block map reads). */
  readsFrom: Set<string>;
  message: {
    backup: MessageInitShape<typeof BackupInfoSchema>;
    codec: string;
    compressLevel: number;
    ownSizeBytes: bigint;
  };
}

interface TimelineWal {
  timeline: number;
  oldest: string;
  newest: string;
  segments: number;
  storedBytes: number;
  history: boolean;
}

/** Content bytes an entry of its own backup stored: the whole file, or only its changed blocks. */
const ownContentBytes = (f: ManifestFile): number => f.blocks?.changed?.size ?? f.size;

/** One manifest as info keeps it: no file list, only what its files add up to. */
function summarize(m: BackupManifest): BackupSummary {
  const own = m.files.filter((f) => f.backup === m.label);
  const ownSizeBytes = own.reduce((n, f) => n + ownContentBytes(f), 0);
  const readsFrom = new Set(m.files.flatMap(entryBackups));
  readsFrom.delete(m.label);
  return {
    label: m.label,
    priorLabel: m.priorLabel ?? '',
    stopMs: Date.parse(m.stopTime),
    // The manifest's figure: its own objects' stored bytes, block maps and changed blocks included.
    storedBytes: m.storedBytes,
    ownSizeBytes,
    readsFrom,
    message: {
      backup: backupInfoFromManifest(m, ''),
      codec: own[0]?.codec ?? '',
      compressLevel: m.compressLevel ?? 0,
      ownSizeBytes: BigInt(ownSizeBytes),
    },
  };
}

/**
 * Per timeline: the oldest and newest segment, counts and stored bytes of the authenticated
 * copies, from one streaming listing; the other WAL objects are only counted.
 */
async function walByTimeline(
  repo: Repository,
  cluster: string,
): Promise<{ timelines: TimelineWal[]; unauthenticated: number }> {
  const timelines = new Map<number, TimelineWal>();
  let unauthenticated = 0;
  for await (const w of repo.listWal(cluster)) {
    const kind = walFileKind(w.name);
    if (kind === undefined) continue;
    // Planted, renamed or archived before names carried a MAC: no restore reads it (verify names it).
    if (!w.authentic) {
      unauthenticated++;
      continue;
    }
    const timeline = Number.parseInt(w.name.slice(0, 8), 16);
    let t = timelines.get(timeline);
    if (!t) {
      t = { timeline, oldest: '', newest: '', segments: 0, storedBytes: 0, history: false };
      timelines.set(timeline, t);
    }
    t.storedBytes += w.storedSize;
    if (kind === 'history') t.history = true;
    if (kind !== 'segment') continue;
    t.segments++;
    if (t.oldest === '' || w.name < t.oldest) t.oldest = w.name;
    if (w.name > t.newest) t.newest = w.name;
  }
  return { timelines: [...timelines.values()].sort((a, b) => a.timeline - b.timeline), unauthenticated };
}

export async function readRepositoryInfo(
  repo: Repository,
  cluster: string,
): Promise<MessageInitShape<typeof RepositoryInfoSchema>> {
  const summaries: BackupSummary[] = [];
  for await (const m of repo.manifests(cluster)) summaries.push(summarize(m));
  summaries.sort((a, b) => a.stopMs - b.stopMs);
  const byLabel = new Map(summaries.map((s) => [s.label, s]));
  // The chain: the prior backup, its prior, ... down to the full, then any other backup a file names.
  const dependsOn = new Map<string, string[]>();
  const dependents = new Map<string, string[]>();
  for (const s of summaries) {
    const chain: string[] = [];
    for (let p = s.priorLabel; p && !chain.includes(p); p = byLabel.get(p)?.priorLabel ?? '') chain.push(p);
    for (const r of s.readsFrom) if (!chain.includes(r)) chain.push(r);
    dependsOn.set(s.label, chain);
    for (const c of chain) dependents.set(c, [...(dependents.get(c) ?? []), s.label]);
  }
  const { timelines: wal, unauthenticated } = await walByTimeline(repo, cluster);
  return {
    cluster,
    location: repo.location,
    backups: summaries.map((s) => ({
      ...s.message,
      dependsOn: dependsOn.get(s.label)!,
      dependents: dependents.get(s.label) ?? [],
    })),
    wal: wal.map((t) => ({
      timeline: t.timeline,
      oldestSegment: t.oldest,
      newestSegment: t.newest,
      segments: BigInt(t.segments),
      storedBytes: BigInt(t.storedBytes),
      history: t.history,
    })),
    backupStoredBytes: BigInt(summaries.reduce((n, s) => n + s.storedBytes, 0)),
    backupOwnSizeBytes: BigInt(summaries.reduce((n, s) => n + s.ownSizeBytes, 0)),
    walStoredBytes: BigInt(wal.reduce((n, t) => n + t.storedBytes, 0)),
    unauthenticatedWalFiles: BigInt(unauthenticated),
  };
}
