/**
 * Envelope keys of encrypted clusters (docs/repository-format.md, "Encryption"). A cluster's
 * key-encryption key (KEK) never touches data: it wraps random data keys, one per backup, one
 * per WAL directory (timeline + log: 256 segments) and one for the cluster's own objects, each
 * stored in a small key object beside what it encrypts:
 *
 *   <cluster>/encryption.json                     {"cipher","kekId"}: the cluster is encrypted, by which KEK
 *   <cluster>/dek-<id>.key                        data key of cluster.json
 *   <cluster>/backup/<label>/dek-<id>.key         data key of one backup (files, chunks, manifest)
 *   <cluster>/wal/<tli+log | timelines>/dek-<id>.key   data key of one WAL directory
 *
 * Rotating the KEK rewrites these key objects only. A key object is named by its data key's
 * id and never overwritten with another key, so two writers that race to create the first data
 * key of a WAL directory each keep their own (objects name theirs in their header): no lost key,
 * no conditional put needed from the drivers.
 *
 * Light module: copy worker threads load it.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { PgfleetError } from '@pgfleet/core/errors';
import type { RepositoryDriver } from './driver.js';
import { DATA_KEY_ID_BYTES, type DataKey } from './object-cipher.js';

/** A cluster's key-encryption key (32 bytes), or undefined when this process holds none for it. */
export type KeyResolver = (cluster: string) => Promise<Buffer | undefined>;

export const CIPHER = 'aes-256-gcm';
export const KEK_BYTES = 32;
const ENCRYPTION_RECORD = 'encryption.json';
const DATA_KEY_RE = /(^|\/)dek-([0-9a-f]{16})\.key$/;

/** What `<cluster>/encryption.json` holds. `rotatingFrom`: a rotate-key started and has not finished. */
export interface EncryptionRecord {
  format: 1;
  cipher: typeof CIPHER;
  kekId: string;
  rotatingFrom?: string;
  /** Ids of keys rotated out (a clear error for the old key, never a key itself). */
  retired?: string[];
}

interface StoredDataKey {
  format: 1;
  cipher: typeof CIPHER;
  kekId: string;
  id: string;
  nonce: string;
  wrapped: string;
  tag: string;
}

/**
 * A failure of the key itself (missing, wrong, unreadable), not of one object: readers that
 * record damaged objects and go on (verify, catalog rebuild) stop on these instead.
 */
export function isKeyError(err: unknown): boolean {
  return (
    err instanceof PgfleetError &&
    (err.errorName === 'EncryptionKeyWrong' ||
      err.errorName === 'EncryptionModeMismatch' ||
      err.errorName === 'EncryptionKeyInvalid')
  );
}

/** A KEK's public fingerprint: names the key in records and errors without revealing it. */
export function kekId(kek: Buffer): string {
  return createHmac('sha256', kek).update('pgfleet key id v1').digest('hex').slice(0, 16);
}

export function encryptionRecordKey(cluster: string): string {
  return `${cluster}/${ENCRYPTION_RECORD}`;
}

/** The directory (with its trailing '/') whose data key encrypts `objectKey`. */
export function dataKeyScope(objectKey: string): string {
  const parts = objectKey.split('/');
  if ((parts[1] === 'backup' || parts[1] === 'wal') && parts.length > 3) return `${parts.slice(0, 3).join('/')}/`;
  return `${parts[0]}/`;
}

export function clusterOfKey(objectKey: string): string {
  return objectKey.slice(0, objectKey.indexOf('/'));
}

function wrongKey(cluster: string, given: string, wants: string, what: string): PgfleetError {
  return new PgfleetError(
    'EncryptionKeyWrong',
    `the encryption key given for cluster '${cluster}' (key id ${given}) is not the one ${what} (key id ${wants})`,
  );
}

function wrapAad(keyObject: string): Buffer {
  return Buffer.from(`pgfleet data key v1\0${keyObject}`, 'utf8');
}

function wrap(kek: Buffer, keyObject: string, dataKey: DataKey): StoredDataKey {
  const nonce = randomBytes(12);
  const cipher = createCipheriv(CIPHER, kek, nonce);
  cipher.setAAD(wrapAad(keyObject));
  const wrapped = Buffer.concat([cipher.update(dataKey.key), cipher.final()]);
  return {
    format: 1,
    cipher: CIPHER,
    kekId: kekId(kek),
    id: dataKey.id,
    nonce: nonce.toString('base64'),
    wrapped: wrapped.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
  };
}

function unwrap(kek: Buffer, keyObject: string, stored: StoredDataKey): Buffer {
  try {
    const decipher = createDecipheriv(CIPHER, kek, Buffer.from(stored.nonce, 'base64'));
    decipher.setAAD(wrapAad(keyObject));
    decipher.setAuthTag(Buffer.from(stored.tag, 'base64'));
    const key = Buffer.concat([decipher.update(Buffer.from(stored.wrapped, 'base64')), decipher.final()]);
    if (key.length !== 32) throw new RangeError(`a data key of ${key.length} bytes`);
    return key;
  } catch (err) {
    throw new PgfleetError(
      'RepoObjectTampered',
      `encryption key object ${keyObject} is damaged or was altered: its data key does not unwrap`,
      { cause: err },
    );
  }
}

async function readJson<T>(driver: RepositoryDriver, key: string): Promise<T> {
  const chunks: Buffer[] = [];
  for await (const c of await driver.get(key)) chunks.push(c as Buffer);
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as T;
  } catch (err) {
    throw new PgfleetError('RepoObjectTampered', `encryption key object ${key} is not valid JSON`, { cause: err });
  }
}

function putJson(driver: RepositoryDriver, key: string, doc: object): Promise<void> {
  return driver.put(key, Buffer.from(JSON.stringify(doc, null, 2)));
}

/** How one cluster's objects are stored, resolved once per process. */
type ClusterForm = { encrypted: false } | { encrypted: true; kek: Buffer; id: string; provisional?: true };

/**
 * The keys one ObjectIo works with: per cluster, whether it is encrypted and its KEK; per scope,
 * the data key new objects get; per id, the data keys objects name. Everything is cached: a
 * backup resolves its data key once, not per file.
 */
export class RepositoryKeys {
  private readonly forms = new Map<string, Promise<ClusterForm>>();
  private readonly writeKeys = new Map<string, Promise<DataKey>>();
  private readonly readKeys = new Map<string, Promise<Buffer>>();
  private readonly resolved = new Map<string, Buffer>();

  constructor(
    private readonly driver: RepositoryDriver,
    private readonly resolve: KeyResolver | undefined,
    /** Called before a cluster's first encryption record is written (the format marker's upgrade). */
    private readonly beforeFirstEncryption: () => Promise<void>,
  ) {}

  /** The data key new objects under `objectKey`'s scope get, or undefined for a plaintext cluster. */
  async forWrite(objectKey: string): Promise<DataKey | undefined> {
    const form = await this.form(clusterOfKey(objectKey), true);
    if (!form.encrypted) return undefined;
    const scope = dataKeyScope(objectKey);
    let key = this.writeKeys.get(scope);
    if (!key) {
      key = this.scopeKey(scope, form);
      this.writeKeys.set(scope, key);
      key.catch(() => this.writeKeys.delete(scope));
    }
    return key;
  }

  /** For reading `objectKey`: undefined for a plaintext cluster, else the lookup of the data key its header names. */
  async forRead(objectKey: string): Promise<((id: string) => Promise<Buffer>) | undefined> {
    const form = await this.form(clusterOfKey(objectKey), false);
    if (!form.encrypted) return undefined;
    const scope = dataKeyScope(objectKey);
    return (id) => {
      const keyObject = `${scope}dek-${id}.key`;
      let key = this.readKeys.get(keyObject);
      if (!key) {
        key = this.loadDataKey(keyObject, form);
        this.readKeys.set(keyObject, key);
        key.catch(() => this.readKeys.delete(keyObject));
      }
      return key;
    };
  }

  /** The KEKs of the encrypted clusters this process opened, by cluster: what a copy worker thread needs to open the same objects. */
  resolvedKeys(): Map<string, Buffer> {
    return new Map(this.resolved);
  }

  private form(cluster: string, forWrite: boolean): Promise<ClusterForm> {
    let form = this.forms.get(cluster);
    if (!form) {
      form = this.loadForm(cluster, forWrite);
      this.forms.set(cluster, form);
      // A read of a cluster with nothing yet decides nothing: the first write creates its record.
      form.then(
        (f) => {
          if (f.encrypted) this.resolved.set(cluster, f.kek);
          if (f.encrypted && f.provisional) this.forms.delete(cluster);
        },
        () => this.forms.delete(cluster),
      );
    }
    return form;
  }

  private async loadForm(cluster: string, forWrite: boolean): Promise<ClusterForm> {
    const recordKey = encryptionRecordKey(cluster);
    const [kek, exists] = await Promise.all([this.resolve?.(cluster), this.driver.stat(recordKey)]);
    if (!exists) {
      if (!kek) return { encrypted: false };
      if (await this.hasObjects(cluster)) {
        // Another process may have just made it encrypted (its record, then its first objects).
        if (await this.driver.stat(recordKey)) return this.loadForm(cluster, forWrite);
        throw notEncrypted(cluster, this.driver.location);
      }
      if (!forWrite) return { encrypted: true, kek, id: kekId(kek), provisional: true };
      await this.beforeFirstEncryption();
      const record: EncryptionRecord = { format: 1, cipher: CIPHER, kekId: kekId(kek) };
      await putJson(this.driver, recordKey, record);
      return { encrypted: true, kek, id: record.kekId };
    }
    if (!kek) {
      throw new PgfleetError(
        'EncryptionModeMismatch',
        `cluster '${cluster}' in repository ${this.driver.location} is encrypted, and no encryption key was given for it`,
      );
    }
    const record = await readJson<EncryptionRecord>(this.driver, recordKey);
    const id = kekId(kek);
    if (record.kekId !== id) {
      throw wrongKey(
        cluster,
        id,
        record.kekId,
        record.rotatingFrom === id || record.retired?.includes(id)
          ? 'the cluster uses since a rotate-key (the given one was rotated out)'
          : 'the cluster is encrypted with',
      );
    }
    return { encrypted: true, kek, id };
  }

  private async hasObjects(cluster: string): Promise<boolean> {
    for await (const o of this.driver.list(`${cluster}/`)) if (!o.key.includes('/.pgfleet-probe-')) return true;
    return false;
  }

  /** The data key of a scope: an existing one when the scope has any (the first by key order), else a new one. */
  private async scopeKey(scope: string, form: ClusterForm & { encrypted: true }): Promise<DataKey> {
    for await (const o of this.driver.list(`${scope}dek-`)) {
      const m = DATA_KEY_RE.exec(o.key);
      if (m && o.key.lastIndexOf('/') === scope.length - 1) {
        return { id: m[2]!, key: await this.loadDataKey(o.key, form) };
      }
    }
    await this.checkStillCurrent(clusterOfKey(scope), form);
    const dataKey: DataKey = { id: randomBytes(DATA_KEY_ID_BYTES).toString('hex'), key: randomBytes(32) };
    const keyObject = `${scope}dek-${dataKey.id}.key`;
    await putJson(this.driver, keyObject, wrap(form.kek, keyObject, dataKey));
    this.readKeys.set(keyObject, Promise.resolve(dataKey.key));
    return dataKey;
  }

  /**
   * A long-running agent caches its cluster's key: before it wraps a new data key with it, the
   * cluster's record must still name that key. After a rotate-key the old key is refused here
   * (the agent must be given the new one), instead of new backups and WAL being written under a
   * key the operator is about to destroy. Once per new data key (a backup, a WAL directory).
   */
  private async checkStillCurrent(cluster: string, form: ClusterForm & { encrypted: true }): Promise<void> {
    const record = await readJson<EncryptionRecord>(this.driver, encryptionRecordKey(cluster));
    if (record.kekId === form.id) return;
    this.forms.delete(cluster);
    throw wrongKey(
      cluster,
      form.id,
      record.kekId,
      'the cluster uses since a rotate-key (the given one was rotated out)',
    );
  }

  private async loadDataKey(keyObject: string, form: ClusterForm & { encrypted: true }): Promise<Buffer> {
    const stored = await readJson<StoredDataKey>(this.driver, keyObject);
    if (stored.kekId !== form.id) {
      throw wrongKey(
        clusterOfKey(keyObject),
        form.id,
        stored.kekId,
        `data key object ${keyObject} is wrapped with (a rotate-key did not finish: run it again with both keys)`,
      );
    }
    return unwrap(form.kek, keyObject, stored);
  }
}

function notEncrypted(cluster: string, location: string): PgfleetError {
  return new PgfleetError(
    'EncryptionModeMismatch',
    `cluster '${cluster}' in repository ${location} is not encrypted (it was created without a key), and an encryption key was given for it`,
  );
}

/** What a rotate-key did: key objects re-wrapped, and those already under the new key (an earlier, interrupted run). */
export interface RotationResult {
  rewrapped: number;
  alreadyNew: number;
}

/**
 * Re-wraps every data key of `cluster` from `oldKek` to `newKek`, rewriting only key objects
 * (each replaced atomically). Restartable: the record names the new key (and the old one as
 * `rotatingFrom`) before any key object changes, key objects already under the new key are
 * skipped, and the record drops `rotatingFrom` only after the last one. From the first step on,
 * the old key opens nothing of the cluster.
 */
export async function rotateClusterKey(
  driver: RepositoryDriver,
  cluster: string,
  oldKek: Buffer,
  newKek: Buffer,
): Promise<RotationResult> {
  const recordKey = encryptionRecordKey(cluster);
  if (!(await driver.stat(recordKey)))
    throw new PgfleetError(
      'EncryptionModeMismatch',
      `cluster '${cluster}' in repository ${driver.location} is not encrypted: there is no key to rotate`,
    );
  const record = await readJson<EncryptionRecord>(driver, recordKey);
  const oldId = kekId(oldKek);
  const newId = kekId(newKek);
  if (oldId === newId) throw new PgfleetError('InvalidArgument', 'the new encryption key is the old one');
  const resuming = record.kekId === newId && record.rotatingFrom === oldId;
  if (record.kekId !== oldId && !resuming) {
    throw wrongKey(cluster, record.kekId === newId ? newId : oldId, record.kekId, 'the cluster is encrypted with');
  }
  if (!resuming) await putJson(driver, recordKey, { ...record, kekId: newId, rotatingFrom: oldId });
  const result: RotationResult = { rewrapped: 0, alreadyNew: 0 };
  for await (const o of driver.list(`${cluster}/`)) {
    const m = DATA_KEY_RE.exec(o.key);
    if (!m) continue;
    const stored = await readJson<StoredDataKey>(driver, o.key);
    if (stored.kekId === newId) {
      result.alreadyNew++;
      continue;
    }
    if (stored.kekId !== oldId)
      throw wrongKey(cluster, oldId, stored.kekId, `data key object ${o.key} is wrapped with`);
    const key = unwrap(oldKek, o.key, stored);
    await putJson(driver, o.key, wrap(newKek, o.key, { id: stored.id, key }));
    result.rewrapped++;
  }
  const retired = [...(record.retired ?? []).filter((id) => id !== newId), oldId];
  await putJson(driver, recordKey, { format: 1, cipher: CIPHER, kekId: newId, retired } satisfies EncryptionRecord);
  return result;
}
