/**
 * WAL authentication. An archived WAL file's key names its content checksum, and every read
 * checks the content against it; but whoever can write to the repository (a thief with the
 * bucket's keys, the agent host of another cluster) chooses that checksum too, so a replaced
 * segment or a planted timeline history would be replayed by the next PITR. The key therefore
 * also carries a MAC under the cluster's key (the manifest key, manifest-auth.ts, with its own
 * domain string) over (cluster, WAL file name, content sha256):
 *
 *   <cluster>/wal/<tli+log>/<name>-<sha256>-<mac>[.zst]      mac = 32 hex digits (128 bits)
 *
 * Authenticating the checksum authenticates the content, since the content is verified against
 * the checksum on every read: no extra I/O, no sidecar object, and a listing alone tells which
 * copies are genuine. Binding cluster and name means a genuine object renamed to another segment,
 * or copied from another cluster, fails like a forged one. Encrypted clusters follow the same rule
 * (their AES-GCM binds each object's key as well).
 */
import { createHash, type Hash, timingSafeEqual } from 'node:crypto';

const MAC_DOMAIN = 'pgfleet wal v1';
/** Hex digits of the MAC in a WAL object's name (HMAC-SHA256 truncated to 128 bits). */
export const WAL_MAC_HEX_DIGITS = 32;

/**
 * HMAC-SHA256 (RFC 2104) with the key's padded inner and outer blocks hashed once per key and
 * copied per message: a listing authenticates every WAL name it sees (a million in a large
 * archive), and createHmac's per-call key set-up cost about three times the hashing itself.
 */
interface KeyedHash {
  inner: Hash;
  outer: Hash;
}
const keyedHashes = new WeakMap<Buffer, KeyedHash>();

function keyedHash(key: Buffer): KeyedHash {
  let k = keyedHashes.get(key);
  if (!k) {
    const block = Buffer.alloc(64);
    (key.length > 64 ? createHash('sha256').update(key).digest() : key).copy(block);
    k = {
      inner: createHash('sha256').update(block.map((b) => b ^ 0x36)),
      outer: createHash('sha256').update(block.map((b) => b ^ 0x5c)),
    };
    keyedHashes.set(key, k);
  }
  return k;
}

function macBytes(key: Buffer, cluster: string, name: string, sha256: string): Buffer {
  const k = keyedHash(key);
  const inner = k.inner.copy().update(`${MAC_DOMAIN}\0${cluster}\0${name}\0${sha256}`).digest();
  return k.outer
    .copy()
    .update(inner)
    .digest()
    .subarray(0, WAL_MAC_HEX_DIGITS / 2);
}

/** The MAC a WAL object of `cluster` named `name` with content `sha256` carries in its key (hex). */
export function walMac(key: Buffer, cluster: string, name: string, sha256: string): string {
  return macBytes(key, cluster, name, sha256).toString('hex');
}

/** Whether `mac` (hex, from an object's key) authenticates `name` with `sha256` as `cluster`'s. */
export function walMacMatches(key: Buffer, cluster: string, name: string, sha256: string, mac: string): boolean {
  if (mac.length !== WAL_MAC_HEX_DIGITS || !/^[0-9a-f]+$/.test(mac)) return false;
  return timingSafeEqual(Buffer.from(mac, 'hex'), macBytes(key, cluster, name, sha256));
}
