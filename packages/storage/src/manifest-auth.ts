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

/** Longest stored MAC member with its closing brace (MAC_SUFFIX_RE), with room to spare. */
const MAC_SUFFIX_HOLD = 128;

/**
 * openManifest for a manifest read as a stream: `push` returns the bytes certainly before the MAC
 * member (authenticated as they pass; the last MAC_SUFFIX_HOLD bytes are held back, since the
 * member is found only at the end), `end` the rest of the head and whether the MAC matched.
 * Nothing of the head may be trusted before `end` says so: callers keep it aside (a local spool)
 * until then.
 */
export class ManifestMacStream {
  private readonly hmac;
  private held = Buffer.alloc(0);

  constructor(
    key: Buffer,
    private readonly cluster: string,
    private readonly label: string,
    private readonly where: string,
  ) {
    this.hmac = createHmac('sha256', key).update(`${MAC_DOMAIN}\0${cluster}\0${label}\0`);
  }

  push(chunk: Buffer): Buffer {
    const all = this.held.length === 0 ? chunk : Buffer.concat([this.held, chunk]);
    const cut = Math.max(0, all.length - MAC_SUFFIX_HOLD);
    // A copy: `held` must not keep the whole chunk alive.
    this.held = Buffer.from(all.subarray(cut));
    const out = all.subarray(0, cut);
    this.hmac.update(out);
    return out;
  }

  /** The rest of the head (the MAC member removed); throws ManifestUnauthenticated when the MAC does not match. */
  end(): { signed: boolean; rest: Buffer } {
    const tail = this.held.toString('latin1');
    const m = MAC_SUFFIX_RE.exec(tail);
    if (!m) return { signed: false, rest: this.held };
    const rest = this.held.subarray(0, m.index);
    const expected = this.hmac.update(rest).digest();
    if (!timingSafeEqual(Buffer.from(m[1]!, 'hex'), expected)) {
      throw new PgfleetError(
        'ManifestUnauthenticated',
        `manifest of backup ${this.label} of cluster ${this.cluster} (${this.where}) fails its authentication check: it was changed, or copied from another backup or cluster, after it was written`,
      );
    }
    return { signed: true, rest };
  }
}

/**
 * The stored text of a manifest from its JSON pieces (manifest-stream.ts manifestHeadPieces:
 * `JSON.stringify(m, null, 1)` without its final `\n}`), with the MAC member appended: what
 * sealManifest makes of the whole text, without ever holding it.
 */
export async function* sealManifestPieces(
  head: AsyncIterable<string>,
  key: Buffer,
  cluster: string,
  label: string,
): AsyncGenerator<Buffer> {
  const hmac = createHmac('sha256', key).update(`${MAC_DOMAIN}\0${cluster}\0${label}\0`);
  for await (const piece of head) {
    const b = Buffer.from(piece);
    hmac.update(b);
    yield b;
  }
  yield Buffer.from(`,\n "mac": "hmac-sha256:${hmac.digest('hex')}"\n}\n`);
}
