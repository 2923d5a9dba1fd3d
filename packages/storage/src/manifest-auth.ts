/**
 * Manifest authentication. A manifest says what a restore writes and where; anyone who can
 * write to the repository (an agent host of any cluster, a thief with the bucket's keys) could
 * otherwise hand every restoring host a manifest of their choosing. So the agent that writes a
 * manifest appends an HMAC-SHA256 under a key only its cluster's agents receive, and every
 * reader checks it before it trusts a single field.
 *
 * Keys: the controller holds one secret and derives a key per cluster,
 * HKDF-SHA256(secret, info = "pgfleet manifest key v1" + cluster); it sends a cluster's key only
 * with the jobs that write or read that cluster's backups. The cluster and the label the reader
 * asked for are bound into the MAC, so a genuine manifest copied over another backup's (or
 * another cluster's) fails just as an edited one does.
 *
 * Stored form (docs/repository-format.md, "Manifest authentication"): the JSON text of the
 * manifest with one last member, `"mac": "hmac-sha256:<hex>"`, appended. The MAC covers the exact
 * bytes before that member, and the reader parses exactly those bytes: what is authenticated is
 * what is read, with no canonical form to disagree about.
 */
import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { PgfleetError } from '@pgfleet/core/errors';

/** The manifest keys a process holds: the key of `cluster`, or undefined when it holds none. */
export interface ManifestKeys {
  keyFor(cluster: string): Buffer | undefined;
}

const KEY_INFO = 'pgfleet manifest key v1';
const MAC_DOMAIN = 'pgfleet manifest v1';
/** The appended member, exactly as written (the reader matches the same bytes). */
const MAC_SUFFIX_RE = /,\n "mac": "hmac-sha256:([0-9a-f]{64})"\n\}\n?$/;

/** The manifest key of `cluster` from the controller's secret (the same derivation on every controller). */
export function deriveManifestKey(secret: Buffer, cluster: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), Buffer.from(`${KEY_INFO}${cluster}`), 32));
}

/** The keys of every cluster, derived from the secret (the controller's, for catalog rebuild and signing). */
export function secretManifestKeys(secret: Buffer): ManifestKeys {
  return { keyFor: (cluster) => deriveManifestKey(secret, cluster) };
}

/** One cluster's key only (what an agent receives with a job). */
export function clusterManifestKeys(cluster: string, key: Buffer): ManifestKeys {
  return { keyFor: (c) => (c === cluster ? key : undefined) };
}

function mac(key: Buffer, cluster: string, label: string, head: string): Buffer {
  return createHmac('sha256', key).update(`${MAC_DOMAIN}\0${cluster}\0${label}\0`).update(head).digest();
}

/** The stored text of a manifest: its JSON with the MAC appended as the last member. */
export function sealManifest(json: string, key: Buffer, cluster: string, label: string): string {
  // JSON.stringify(m, null, 1) ends with "\n}": the head is everything before it.
  if (!json.endsWith('\n}'))
    throw new PgfleetError('Internal', 'a manifest to seal must be JSON.stringify(m, null, 1) output');
  const head = json.slice(0, -2);
  return `${head},\n "mac": "hmac-sha256:${mac(key, cluster, label, head).toString('hex')}"\n}\n`;
}

export type OpenedManifest =
  /** The authenticated JSON (the MAC member removed). */
  | { signed: true; json: string }
  /** No MAC member: a manifest of a pgfleet that did not sign them (or one stripped of it). */
  | { signed: false; json: string };

/**
 * Checks a stored manifest's MAC for the backup the reader asked for; ManifestUnauthenticated
 * when it does not match. Whether an unsigned manifest may be used is the caller's decision.
 */
export function openManifest(text: string, key: Buffer, cluster: string, label: string, where: string): OpenedManifest {
  const m = MAC_SUFFIX_RE.exec(text);
  if (!m) return { signed: false, json: text };
  const head = text.slice(0, m.index);
  const got = Buffer.from(m[1]!, 'hex');
  if (!timingSafeEqual(got, mac(key, cluster, label, head))) {
    throw new PgfleetError(
      'ManifestUnauthenticated',
      `manifest of backup ${label} of cluster ${cluster} (${where}) fails its authentication check: it was changed, or copied from another backup or cluster, after it was written`,
    );
  }
  return { signed: true, json: `${head}\n}` };
}
