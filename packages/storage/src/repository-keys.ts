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
 * The rotation is also the cut-over for new objects: a key object records the KEK that was
 * current when its data key was made (`createdUnder`, authenticated by an HMAC under the current
 * KEK, so nobody without it can move a key forward), and a writer seals new objects only under a
 * data key made under the KEK it holds. After a rotation the current WAL directory and the
 * cluster's own scope get a fresh data key on their next write; one that existed before (and was
 * wrapped under the old KEK, which someone may have copied with the key object) never seals
 * anything written afterwards. A scope may hence hold several data keys; readers take the one
 * each object's header names.
 *
 * Light module: copy worker threads load it.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { PgfleetError } from '@pgfleet/core/errors';
import type { RepositoryDriver } from './driver.js';
import { DATA_KEY_ID_BYTES, type DataKey } from './object-cipher.js';

/** A cluster's key-encryption key (32 bytes), or undefined when this process holds none for it. */
export interface KeyResolver {
  (cluster: string): Promise<Buffer | undefined>;
  /**
   * The key rotated from (--previous-encryption-key-file/-command). Agents restarted with a new
   * key keep working under this one until `pgfleet repo rotate-key` re-wraps the data keys, and
   * read data keys a rotation has not re-wrapped yet with it.
   */
  previous?: (cluster: string) => Promise<Buffer | undefined>;
}

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
  /** The kekId current when the data key was made: new objects are sealed only under keys made under the current KEK. */
  createdUnder?: string;
  /** HMAC-SHA256 under the KEK of `kekId` over the key object, id and createdUnder (base64). */
  createdMac?: string;
}

/** A data key new objects are sealed under: always one made under the KEK this process holds. */
interface WriteKey extends DataKey {
  createdUnder: string;
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

/** Whether `objectKey` is a data key object (`dek-<id>.key`). */
export function isDataKeyObject(objectKey: string): boolean {
  return DATA_KEY_RE.test(objectKey);
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

/**
 * Binds a key object's `createdUnder` to the KEK that wraps it. Kept out of the wrap's AAD so
 * that key objects stay readable by pgfleet versions that know no cut-over (they ignore the field).
 */
function createdMac(kek: Buffer, keyObject: string, id: string, createdUnder: string): Buffer {
  return createHmac('sha256', kek).update(`pgfleet data key created v1\0${keyObject}\0${id}\0${createdUnder}`).digest();
}

/** `createdUnder` as the key object states it, when its HMAC under `kek` (the one wrapping it) holds; undefined otherwise. */
function provenCreatedUnder(kek: Buffer, keyObject: string, stored: StoredDataKey): string | undefined {
  if (stored.createdUnder === undefined || stored.createdMac === undefined) return undefined;
  const mac = Buffer.from(stored.createdMac, 'base64');
  const want = createdMac(kek, keyObject, stored.id, stored.createdUnder);
  return mac.length === want.length && timingSafeEqual(mac, want) ? stored.createdUnder : undefined;
}

/** `createdUnder`: the kekId current when the data key was made (undefined only for keys of unknown age). */
function wrap(kek: Buffer, keyObject: string, dataKey: DataKey, createdUnder: string | undefined): StoredDataKey {
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
    ...(createdUnder === undefined
      ? {}
      : {
          createdUnder,
          createdMac: createdMac(kek, keyObject, dataKey.id, createdUnder).toString('base64'),
        }),
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

/** A KEK with its public id. */
interface HeldKey {
  kek: Buffer;
  id: string;
}

/**
 * How one cluster's objects are stored, resolved once per process. `kek`/`id`: the KEK the
 * cluster's record names, which new data keys are wrapped with. `previous`: the key a rotation
 * in progress rotates from (data keys it has not re-wrapped yet). `next`: this process's current
 * key while the repository is still under its previous one (restarted before the rotation).
 */
type ClusterForm =
  | { encrypted: false }
  | { encrypted: true; kek: Buffer; id: string; provisional?: true; previous?: HeldKey; next?: HeldKey };

/**
 * The keys one ObjectIo works with: per cluster, whether it is encrypted and its KEK; per scope,
 * the data key new objects get; per id, the data keys objects name. Everything is cached: a
 * backup resolves its data key once, not per file.
 */
export class RepositoryKeys {
  private readonly forms = new Map<string, Promise<ClusterForm>>();
  private readonly writeKeys = new Map<string, Promise<WriteKey>>();
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

  /**
   * After an object sealed under its scope's data key was stored: that key's key object must
   * still be there (in every repository of a mirror), and is put back where it is not. An expire
   * removes a WAL directory's key objects with its last object (releaseScopeKeys) and may have
   * done so after this process took the key; between this check and the expire's own look after
   * its delete, one of the two always sees the other and the key stays.
   */
  async keepWriteKey(objectKey: string): Promise<void> {
    const scope = dataKeyScope(objectKey);
    const cached = this.writeKeys.get(scope);
    if (!cached) return;
    const dataKey = await cached;
    const keyObject = `${scope}dek-${dataKey.id}.key`;
    const cluster = clusterOfKey(objectKey);
    await Promise.all(
      (this.driver.members ?? [this.driver]).map(async (driver) => {
        if (await driver.stat(keyObject)) return;
        const form = await this.form(cluster, true);
        if (!form.encrypted) return;
        await this.checkStillCurrent(cluster, form);
        await putJson(driver, keyObject, wrap(form.kek, keyObject, dataKey, dataKey.createdUnder));
      }),
    );
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
    const previous = await this.previousKey(cluster);
    if (record.kekId === id) {
      return {
        encrypted: true,
        kek,
        id,
        ...(previous && record.rotatingFrom === previous.id ? { previous } : {}),
      };
    }
    // Restarted with the new key as current and the old one as previous, before the rotation:
    // the repository stays under the old key (new data keys too) until rotate-key moves it.
    if (previous && record.kekId === previous.id) {
      return { encrypted: true, kek: previous.kek, id: previous.id, next: { kek, id } };
    }
    throw wrongKey(
      cluster,
      id,
      record.kekId,
      record.rotatingFrom === id || record.retired?.includes(id)
        ? 'the cluster uses since a rotate-key (the given one was rotated out)'
        : 'the cluster is encrypted with',
    );
  }

  private async previousKey(cluster: string): Promise<HeldKey | undefined> {
    const kek = await this.resolve?.previous?.(cluster);
    return kek ? { kek, id: kekId(kek) } : undefined;
  }

  /**
   * After this process rotated the cluster's key (rotate-key job): the cluster's form and the data
   * keys new objects were sealed under are resolved again, so from now on new objects get data
   * keys made under the current KEK (those made before keep their objects readable only).
   */
  forgetCluster(cluster: string): void {
    this.forms.delete(cluster);
    this.resolved.delete(cluster);
    for (const scope of [...this.writeKeys.keys()]) if (clusterOfKey(scope) === cluster) this.writeKeys.delete(scope);
  }

  private async hasObjects(cluster: string): Promise<boolean> {
    for await (const o of this.driver.list(`${cluster}/`)) if (!o.key.includes('/.pgfleet-probe-')) return true;
    return false;
  }

  /**
   * The data key new objects of a scope are sealed under: the first (by key order) of the scope's
   * keys made under the KEK this process holds, else a new one. Keys made before the last rotation
   * (or by a pgfleet that recorded no `createdUnder`) still open their objects but seal nothing new.
   */
  private async scopeKey(scope: string, form: ClusterForm & { encrypted: true }): Promise<WriteKey> {
    for await (const o of this.driver.list(`${scope}dek-`)) {
      const m = DATA_KEY_RE.exec(o.key);
      if (!m || o.key.lastIndexOf('/') !== scope.length - 1) continue;
      // Gone since the listing: an expire released the keys of an emptied WAL directory.
      const stored = await readJson<StoredDataKey>(this.driver, o.key).catch((err: unknown) => {
        if (PgfleetError.is(err, 'RepoFileMissing')) return undefined;
        throw err;
      });
      if (!stored) continue;
      if (stored.kekId !== form.id || stored.createdUnder !== form.id) continue;
      if (provenCreatedUnder(form.kek, o.key, stored) !== form.id) {
        throw new PgfleetError(
          'RepoObjectTampered',
          `encryption key object ${o.key} is damaged or was altered: the KEK it was made under does not check`,
        );
      }
      const key = unwrap(form.kek, o.key, stored);
      this.readKeys.set(o.key, Promise.resolve(key));
      return { id: m[2]!, key, createdUnder: form.id };
    }
    await this.checkStillCurrent(clusterOfKey(scope), form);
    const dataKey: WriteKey = {
      id: randomBytes(DATA_KEY_ID_BYTES).toString('hex'),
      key: randomBytes(32),
      createdUnder: form.id,
    };
    const keyObject = `${scope}dek-${dataKey.id}.key`;
    await putJson(this.driver, keyObject, wrap(form.kek, keyObject, dataKey, dataKey.createdUnder));
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
    if (form.next && record.kekId === form.next.id) {
      // Another process rotated to the key this one holds as current: move on to it (in place:
      // callers go on with this form) and keep the old one for data keys not re-wrapped yet.
      form.previous = { kek: form.kek, id: form.id };
      form.kek = form.next.kek;
      form.id = form.next.id;
      delete form.next;
      this.resolved.set(cluster, form.kek);
      return;
    }
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
    // Mid-rotation, a key object is under the old KEK or the new one: either opens it.
    const holder = [form, form.previous, form.next].find((k) => k?.id === stored.kekId);
    if (holder) return unwrap(holder.kek, keyObject, stored);
    throw wrongKey(
      clusterOfKey(keyObject),
      form.id,
      stored.kekId,
      `data key object ${keyObject} is wrapped with (a rotate-key did not finish: run it again with both keys)`,
    );
  }
}

function notEncrypted(cluster: string, location: string): PgfleetError {
  return new PgfleetError(
    'EncryptionModeMismatch',
    `cluster '${cluster}' in repository ${location} is not encrypted (it was created without a key), and an encryption key was given for it`,
  );
}

/**
 * Removes the key objects of a scope (a WAL directory) that holds nothing else any more, as an
 * expire that deleted its last objects does; returns how many went. The rule: a key object goes
 * only with the last object it may have sealed, never before. So nothing happens while any other
 * object is in the scope, and a look after the delete puts the key objects back, byte for byte,
 * when an object arrived meanwhile (an archiver that took the data key before the delete; it
 * checks after its own put too: RepositoryKeys.keepWriteKey). Needs no key: an expire that cannot
 * decrypt does it too.
 */
export async function releaseScopeKeys(driver: RepositoryDriver, scope: string): Promise<number> {
  const keyObjects = await scopeKeyObjects(driver, scope);
  if (!keyObjects || keyObjects.length === 0) return 0;
  const saved = await Promise.all(
    keyObjects.map(async (key) => {
      const chunks: Buffer[] = [];
      for await (const c of await driver.get(key)) chunks.push(c as Buffer);
      return { key, bytes: Buffer.concat(chunks) };
    }),
  );
  await driver.delete(keyObjects);
  if ((await scopeKeyObjects(driver, scope)) !== undefined) return keyObjects.length;
  for (const { key, bytes } of saved) await driver.put(key, bytes);
  return 0;
}

/** The key objects directly in `scope`, or undefined when it holds any other object. */
async function scopeKeyObjects(driver: RepositoryDriver, scope: string): Promise<string[] | undefined> {
  const keys: string[] = [];
  for await (const o of driver.list(scope)) {
    if (o.key.lastIndexOf('/') !== scope.length - 1 || !DATA_KEY_RE.test(o.key)) return undefined;
    keys.push(o.key);
  }
  return keys;
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
  onKey?: (done: RotationResult) => void,
): Promise<RotationResult> {
  const recordKey = encryptionRecordKey(cluster);
  const record = await readEncryptionRecord(driver, cluster);
  const oldId = kekId(oldKek);
  const newId = kekId(newKek);
  if (oldId === newId) throw new PgfleetError('InvalidArgument', 'the new encryption key is the old one');
  // A run after a finished one goes over the key objects again and finds them all new.
  const resuming = rotationFrom(record, oldId, newId);
  if (record.kekId !== oldId && !resuming) {
    throw wrongKey(cluster, record.kekId === newId ? newId : oldId, record.kekId, 'the cluster is encrypted with');
  }
  // Data keys made under a KEK seal new objects again once it is current: a key rotated out
  // (maybe because it leaked) must not come back, or the keys of its time would too.
  if (!resuming && record.retired?.includes(newId)) {
    throw new PgfleetError(
      'InvalidArgument',
      `the new encryption key (key id ${newId}) was rotated out of cluster '${cluster}' before: make a new key (openssl rand -base64 32)`,
    );
  }
  if (!resuming) await putJson(driver, recordKey, { ...record, kekId: newId, rotatingFrom: oldId });
  const result: RotationResult = { rewrapped: 0, alreadyNew: 0 };
  for await (const o of driver.list(`${cluster}/`)) {
    const m = DATA_KEY_RE.exec(o.key);
    if (!m) continue;
    const stored = await readJson<StoredDataKey>(driver, o.key);
    if (stored.kekId === newId) {
      result.alreadyNew++;
      onKey?.(result);
      continue;
    }
    if (stored.kekId !== oldId)
      throw wrongKey(cluster, oldId, stored.kekId, `data key object ${o.key} is wrapped with`);
    const key = unwrap(oldKek, o.key, stored);
    // The key keeps the age it had: made under the old KEK, it seals nothing written from now on.
    const createdUnder = provenCreatedUnder(oldKek, o.key, stored);
    await putJson(driver, o.key, wrap(newKek, o.key, { id: stored.id, key }, createdUnder));
    result.rewrapped++;
    onKey?.(result);
  }
  const retired = [...(record.retired ?? []).filter((id) => id !== newId && id !== oldId), oldId];
  await putJson(driver, recordKey, { format: 1, cipher: CIPHER, kekId: newId, retired } satisfies EncryptionRecord);
  return result;
}

/** Whether `record` is already under `newId` from a rotation from `oldId` (under way or finished). */
export function rotationFrom(record: EncryptionRecord, oldId: string, newId: string): boolean {
  return (
    record.kekId === newId &&
    (record.rotatingFrom === oldId || (record.rotatingFrom === undefined && (record.retired ?? []).includes(oldId)))
  );
}

/** A cluster's encryption record; refused for a cluster that is not encrypted (nothing to rotate). */
export async function readEncryptionRecord(driver: RepositoryDriver, cluster: string): Promise<EncryptionRecord> {
  const recordKey = encryptionRecordKey(cluster);
  if (!(await driver.stat(recordKey)))
    throw new PgfleetError(
      'EncryptionModeMismatch',
      `cluster '${cluster}' in repository ${driver.location} is not encrypted: there is no key to rotate`,
    );
  return readJson<EncryptionRecord>(driver, recordKey);
}
