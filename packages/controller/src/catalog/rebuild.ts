/**
 * `pgfleet-controller catalog rebuild`: re-indexes the backups of a repository into the catalog.
 * The repository is self-describing (every complete backup has a manifest holding all the facts
 * the catalog keeps), so after losing the catalog, or pointing a new controller at an existing
 * repository, this recreates the backup part of it: clusters the catalog does not know are
 * created from their cluster.json (or a manifest), missing backups are added, rows whose facts
 * differ from the manifest are corrected, and rows whose manifest is gone are removed.
 *
 * Safety, because this can delete catalog rows:
 * - the repository must carry the pgfleet format marker: a mistyped path is an empty directory,
 *   not a repository whose clusters have no backups;
 * - only clusters the repository holds are reconciled: a fleet may spread its clusters over
 *   several repositories, and a cluster absent from this one is left alone;
 * - a cluster the catalog knows with another system identifier is skipped (a different database
 *   under the same name), and an unreadable manifest never removes its row (verify reports it).
 * Logical dumps alike: every dump.json of a cluster (the DumpResult the agent wrote last) becomes
 * a dumps row when the catalog lacks one, and a complete row whose dump.json is gone is marked
 * expired (an unreadable dump.json changes nothing and is reported).
 * Running it twice changes nothing the second time. Policies, pins and job history stay.
 */
import { asPgfleetError, CLUSTER_NAME_RULE, ErrorCodes, PgfleetError, isClusterName, type Logger } from '@pgfleet/core';
import type { BackupRecord, CatalogStore } from '@pgfleet/catalog';
import {
  isKeyError,
  REPOSITORY_FORMAT_KEY,
  type ArchivedWal,
  type CountedManifestHead,
  type ManifestHead,
  type Repository,
  type ScannedCluster,
} from '@pgfleet/storage';
import { fromJson, type JsonValue } from '@bufbuild/protobuf';
import { DumpResultSchema } from '@pgfleet/proto';
import { backupRecordFromManifest } from '../jobs/backup.js';
import { dumpRecord } from '../jobs/dump.js';
import { backupRecordDifferences } from '../wire.js';

export interface RebuildOptions {
  /** Only this cluster. */
  cluster?: string;
  /** Report what would change, change nothing. */
  dryRun?: boolean;
  now: number;
  log?: Logger;
}

export interface ClusterRebuild {
  cluster: string;
  /** The cluster was not in the catalog (and is created unless dry run). */
  created: boolean;
  added: string[];
  updated: string[];
  removed: string[];
  unchanged: number;
  /** Dumps added from their dump.json, and catalog dumps marked expired (no dump.json any more). */
  dumpsAdded: string[];
  dumpsRemoved: string[];
  /** Why the cluster or some of its backups were left alone. */
  skipped: string[];
}

export interface RebuildReport {
  repository: string;
  dryRun: boolean;
  clusters: ClusterRebuild[];
}

function differs(a: BackupRecord, b: BackupRecord): boolean {
  return backupRecordDifferences(a, b).length > 0;
}

export async function rebuildCatalog(
  store: CatalogStore,
  repo: Repository,
  options: RebuildOptions,
): Promise<RebuildReport> {
  if (!(await repo.hasFormatMarker())) {
    throw new PgfleetError(
      'InvalidConfig',
      `${repo.location} is not a pgfleet repository (it has no ${REPOSITORY_FORMAT_KEY}); nothing was changed`,
      {
        hint: 'Point --repo or --repo-path at the repository the agents write to.',
      },
    );
  }
  const dryRun = options.dryRun === true;
  const report: RebuildReport = { repository: repo.location, dryRun, clusters: [] };
  const scanned = await repo.scanClusters(options.cluster);
  for (const [cluster, seen] of [...scanned].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const r: ClusterRebuild = {
      cluster,
      created: false,
      added: [],
      updated: [],
      removed: [],
      unchanged: 0,
      dumpsAdded: [],
      dumpsRemoved: [],
      skipped: [],
    };
    report.clusters.push(r);
    await rebuildCluster(store, repo, options, seen, r);
  }
  return report;
}

/** Brings one cluster's catalog rows in line with its manifests in the repository, reporting into r. */
async function rebuildCluster(
  store: CatalogStore,
  repo: Repository,
  options: RebuildOptions,
  seen: ScannedCluster,
  r: ClusterRebuild,
): Promise<void> {
  const { cluster } = r;
  // A directory no agent could have written (e.g. `shop/wal`-style aliases, made by hand) never enters the catalog.
  if (!isClusterName(cluster)) {
    r.skipped.push(`not a cluster name (${CLUSTER_NAME_RULE}): left alone`);
    return;
  }
  const dryRun = options.dryRun === true;
  const { manifests, unreadable } = await readManifests(repo, cluster, seen.labels, r);
  const info = seen.hasInfo ? await repo.readClusterInfo(cluster) : undefined;
  const newest = manifests.at(-1);
  const systemIdentifier = info?.systemIdentifier ?? newest?.systemIdentifier;
  const pgVersion = newest?.pgVersionNum ?? info?.pgVersionNum ?? 0;
  if (!systemIdentifier) {
    r.skipped.push('no cluster.json and no readable manifest: nothing says which database it is');
    return;
  }
  const known = await store.getCluster(cluster);
  if (known && known.systemIdentifier !== systemIdentifier) {
    r.skipped.push(
      `the catalog's cluster '${cluster}' is system ${known.systemIdentifier}, the repository's is ${systemIdentifier}: another database under the same name, left alone`,
    );
    return;
  }
  if (!known) {
    r.created = true;
    if (!dryRun) await store.upsertCluster({ name: cluster, systemIdentifier, pgVersion }, options.now);
  }

  const catalog = new Map((known ? await store.listBackups(cluster) : []).map((b) => [b.label, b]));
  for (const m of manifests) {
    if (m.cluster !== cluster || m.systemIdentifier !== systemIdentifier) {
      r.skipped.push(
        `backup ${m.label}: its manifest names cluster '${m.cluster}' system ${m.systemIdentifier}, not this cluster`,
      );
      unreadable.add(m.label);
      continue;
    }
    const existing = catalog.get(m.label);
    const record = backupRecordFromManifest(m, existing?.jobId ?? '');
    if (!existing) {
      r.added.push(m.label);
      if (!dryRun) await store.insertBackup(record);
    } else if (differs(existing, record)) {
      r.updated.push(m.label);
      if (!dryRun) {
        // insertBackup keeps an existing row, so a corrected one replaces it; the pin survives.
        await store.deleteBackups(cluster, [m.label]);
        await store.insertBackup({ ...record, pinned: existing.pinned === true });
      }
    } else {
      r.unchanged++;
    }
  }
  const inRepository = new Set([...manifests.map((m) => m.label), ...unreadable]);
  r.removed = await goneFromRepository(repo, cluster, [...catalog.keys()], inRepository);
  if (!dryRun && r.removed.length) await store.deleteBackups(cluster, r.removed);
  await rebuildDumps(store, repo, options, r);
  options.log?.info(
    {
      cluster,
      created: r.created,
      added: r.added.length,
      updated: r.updated.length,
      removed: r.removed.length,
      dryRun,
    },
    'catalog rebuilt from the repository',
  );
}

/** The cluster's dumps rows in line with its dump.json files (see the module comment). */
async function rebuildDumps(
  store: CatalogStore,
  repo: Repository,
  options: RebuildOptions,
  r: ClusterRebuild,
): Promise<void> {
  const { cluster } = r;
  const dryRun = options.dryRun === true;
  const inRepository = await repo.listDumpLabels(cluster);
  const rows = new Map((await store.listDumps(cluster, { includeExpired: true })).map((d) => [d.label, d]));
  for (const label of inRepository) {
    if (rows.has(label)) continue;
    try {
      const text = (await repo.readDumpManifest(cluster, label)).toString('utf8');
      const dump = fromJson(DumpResultSchema, JSON.parse(text) as JsonValue, { ignoreUnknownFields: true });
      if (dump.label !== label) throw new PgfleetError('InvalidArgument', `its dump.json names dump ${dump.label}`);
      r.dumpsAdded.push(label);
      const at = { cluster, id: '', startedAt: null, createdAt: options.now };
      if (!dryRun) await store.insertDump(dumpRecord(at, dump, options.now));
    } catch (err) {
      if (isKeyError(err)) throw err;
      const e = asPgfleetError(err);
      r.skipped.push(`dump ${label}: ${e.code} ${e.message}`);
    }
  }
  const present = new Set(inRepository);
  r.dumpsRemoved = [...rows.values()].filter((d) => !d.expiredAt && !present.has(d.label)).map((d) => d.label);
  if (!dryRun && r.dumpsRemoved.length) await store.markDumpsExpired(cluster, r.dumpsRemoved, options.now);
}

/**
 * The cluster's manifests (heads and file counts: a catalog row needs no file entry, and a 100k-file
 * backup's are tens of MB; each manifest is still authenticated and checked whole, as a stream),
 * oldest stop first; the labels whose manifest could not be read are skipped (and reported).
 */
async function readManifests(
  repo: Repository,
  cluster: string,
  labels: readonly string[],
  r: ClusterRebuild,
): Promise<{ manifests: CountedManifestHead[]; unreadable: Set<string> }> {
  const manifests: CountedManifestHead[] = [];
  const unreadable = new Set<string>();
  for (const label of labels) {
    try {
      manifests.push(await repo.readManifestHead(cluster, label));
    } catch (err) {
      // A missing or wrong key is not a damaged backup: it fails the rebuild instead of skipping every backup.
      if (isKeyError(err)) throw err;
      // Kept in the catalog (not removed) and reported with its code: a manifest failing its
      // authentication check is a tampered repository, not a backup that went away.
      unreadable.add(label);
      const e = asPgfleetError(err);
      r.skipped.push(`backup ${label}: ${e.code} ${e.message}`);
    }
  }
  manifests.sort((a, b) => Date.parse(a.stopTime) - Date.parse(b.stopTime));
  return { manifests, unreadable };
}

/** The catalog's labels whose backup is not in the repository. */
async function goneFromRepository(
  repo: Repository,
  cluster: string,
  catalogLabels: readonly string[],
  inRepository: ReadonlySet<string>,
): Promise<string[]> {
  const removed: string[] = [];
  for (const label of catalogLabels) {
    if (inRepository.has(label)) continue;
    // A backup that completed while the repository was being read (a running controller) is
    // in the catalog but was not in the listing: look for its manifest once more before removing.
    const appeared = await repo.readManifestHead(cluster, label).then(
      () => true,
      () => false,
    );
    if (!appeared) removed.push(label);
  }
  return removed;
}

/** The report as the command prints it. */
export function describeRebuild(report: RebuildReport): string {
  const lines = [`${report.dryRun ? 'dry run: would rebuild' : 'rebuilt'} the catalog from ${report.repository}`];
  if (report.clusters.length === 0) lines.push('  the repository holds no cluster');
  for (const c of report.clusters) {
    const list = (what: string, labels: string[]) => (labels.length ? [`    ${what}: ${labels.join(', ')}`] : []);
    lines.push(
      `  ${c.cluster}${c.created ? ' (new to the catalog)' : ''}: ${c.added.length} added, ${c.updated.length} updated, ${c.removed.length} removed, ${c.unchanged} unchanged`,
      ...(c.dumpsAdded.length || c.dumpsRemoved.length
        ? [`    dumps: ${c.dumpsAdded.length} added, ${c.dumpsRemoved.length} marked expired (no dump.json)`]
        : []),
      ...list('dumps added', c.dumpsAdded),
      ...list('dumps marked expired', c.dumpsRemoved),
      ...list('added', c.added),
      ...list('updated', c.updated),
      ...list('removed (no manifest in the repository)', c.removed),
      ...c.skipped.map((s) => `    skipped ${s}`),
    );
  }
  return lines.join('\n');
}

/** What `catalog sign-manifests` did (or would do): manifest labels and WAL objects by cluster. */
export interface ManifestSigning {
  repository: string;
  dryRun: boolean;
  /** Unsigned manifests signed now (dry run: that would be). */
  signed: string[];
  /** Already signed under the cluster's key. */
  valid: number;
  /** cluster/label and why: bad paths, a MAC that does not match. Never signed. */
  refused: string[];
  /** Archived WAL files named without a MAC, signed now (dry run: that would be), as cluster/name. */
  walSigned: string[];
  /** Archived WAL objects already authenticated. */
  walValid: number;
  /** WAL objects and why: a MAC that does not match, content that fails its checksum, a conflict. Never signed. */
  walRefused: string[];
}

/**
 * Signs the manifests written before manifests were authenticated: the one explicit route for an
 * old repository. Each is still checked (paths, cluster and label); one with a MAC that does not
 * match is refused and reported, never re-signed. Run it once, after checking the repository.
 */
export async function signManifests(
  repo: Repository,
  options: { cluster?: string; dryRun?: boolean },
): Promise<ManifestSigning> {
  const out: ManifestSigning = {
    repository: repo.location,
    dryRun: options.dryRun === true,
    signed: [],
    valid: 0,
    refused: [],
    walSigned: [],
    walValid: 0,
    walRefused: [],
  };
  for (const [cluster, seen] of await repo.scanClusters(options.cluster)) {
    // The WAL as archived before the command ran: nothing archived (or planted) later is signed.
    const listed: ArchivedWal[] = [];
    for await (const w of repo.listWal(cluster)) listed.push(w);
    let oldest: ManifestHead | undefined;
    for (const label of seen.labels) {
      try {
        const result = await repo.adoptManifest(cluster, label, {
          dryRun: options.dryRun === true,
          checked: (m) => {
            if (!oldest || walPosition(m.walStart) < walPosition(oldest.walStart)) oldest = m;
          },
        });
        if (result === 'signed') out.signed.push(`${cluster}/${label}`);
        else out.valid++;
      } catch (err) {
        const e = asPgfleetError(err);
        out.refused.push(`${cluster}/${label}: ${e.code} ${e.message}`);
      }
    }
    await signWal(repo, cluster, listed, oldest, options.dryRun === true, out);
  }
  return out;
}

/** A WAL file name's place in the archive: its timeline and the segment it starts with (history files: their timeline only). */
function walPosition(name: string): bigint {
  const tli = BigInt(`0x${name.slice(0, 8)}`);
  const seg = /^[0-9A-F]{24}/.test(name) ? BigInt(`0x${name.slice(8, 24)}`) : 0n;
  return (seg << 32n) | tli;
}

/**
 * Whether a signed (or signable) manifest vouches for archived WAL `name`: it is not older than
 * the oldest backup's first segment (`walStart`) and on its timeline or a later one. What is
 * older no backup can replay from: it is history nobody checked, and is left unsigned.
 */
function vouchedFor(name: string, oldest: ManifestHead | undefined): boolean {
  if (!oldest || !/^[0-9A-F]{8}/.test(name)) return false;
  const tli = Number.parseInt(name.slice(0, 8), 16);
  if (tli < Number.parseInt(oldest.walStart.slice(0, 8), 16)) return false;
  if (!/^[0-9A-F]{24}/.test(name)) return name.endsWith('.history');
  return BigInt(`0x${name.slice(8, 24)}`) >= BigInt(`0x${oldest.walStart.slice(8, 24)}`);
}

/**
 * Signs the cluster's archived WAL named before WAL names carried a MAC (Repository.adoptWal):
 * each is read back against its checksum and stored again under its authenticated name. Only
 * WAL the manifests vouch for is signed: from the oldest backup's first segment on, as listed
 * before the command ran (taken first: adoption also writes new keys into the folders listed).
 * Objects with a MAC that does not match, and unsigned ones outside that range, are refused and
 * reported, never signed.
 */
async function signWal(
  repo: Repository,
  cluster: string,
  listed: readonly ArchivedWal[],
  oldest: ManifestHead | undefined,
  dryRun: boolean,
  out: ManifestSigning,
): Promise<void> {
  for (const w of listed) {
    if (!w.authentic && w.mac === undefined && !vouchedFor(w.name, oldest)) {
      out.walRefused.push(
        `${w.key}: ${ErrorCodes.WalUnauthenticated.code} not signed: ${
          oldest
            ? `older than the oldest backup's first WAL segment ${oldest.walStart} (or on an earlier timeline), so no manifest vouches for it`
            : 'the cluster has no backup whose manifest vouches for it'
        }`,
      );
      continue;
    }
    try {
      if ((await repo.adoptWal(cluster, w, dryRun)) === 'signed') out.walSigned.push(`${cluster}/${w.name}`);
      else out.walValid++;
    } catch (err) {
      const e = asPgfleetError(err);
      out.walRefused.push(`${w.key}: ${e.code} ${e.message}`);
    }
  }
}

export function describeSigning(s: ManifestSigning): string {
  const lines = [
    `${s.dryRun ? 'dry run: would sign' : 'signed'} ${s.signed.length} manifest(s) in ${s.repository}; ${s.valid} already signed, ${s.refused.length} refused`,
    ...s.signed.map((l) => `  signed ${l}`),
    ...s.refused.map((l) => `  refused ${l}`),
    `${s.dryRun ? 'dry run: would sign' : 'signed'} ${s.walSigned.length} archived WAL file(s); ${s.walValid} already signed, ${s.walRefused.length} refused`,
    ...s.walSigned.map((l) => `  signed WAL ${l}`),
    ...s.walRefused.map((l) => `  refused WAL ${l}`),
  ];
  return lines.join('\n');
}
