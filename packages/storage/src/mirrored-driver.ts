/**
 * Two (or more) repositories of one cluster as one driver, e.g. a local directory and an
 * offsite bucket. Writes go to every member and succeed only when every member stored the
 * object; reads go to the members in order (the restore preference) and fall through to the
 * next when the object is missing, so a restore works as long as some member holds each file.
 *
 *   put      streamed once, teed to every member with backpressure (the slowest member sets the
 *            pace); a member's failure aborts the others' uploads of this object and fails the
 *            put. A member that already completed keeps its (whole) object: nothing overwrites
 *            it wrongly, and a retry stores the object where it is missing.
 *   get      the first member holding the object; RepoFileMissing only when none does (getRange too).
 *   stat     the first member holding the object (what a reader would get).
 *   list     the union, in key order (a key in several members is listed once).
 *   delete   every member (deletePrefix too).
 *
 * Existence answers are "some member has it", which is what readers need. Operations that write
 * only what is missing (WAL push, the format marker, cluster identity) must decide per member so
 * a member lacking an object gets it: Repository does those per member through `members`.
 * Every member must be reachable: an I/O failure of one fails the operation rather than
 * silently answering for the others (a lost member is removed from the configuration instead).
 */
import { PassThrough, type Readable, type Writable } from 'node:stream';
// The light entries of core: copy worker threads open repositories on their own.
import { settleAll } from '@pgfleet/core/async';
import { PgfleetError } from '@pgfleet/core/errors';
import type { KeyLevel, ObjectInfo, PutOptions, RepositoryDriver } from './driver.js';

/** Resolves when `s` can take more data, or is gone (its consumer failed). */
function drained(s: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      s.off('drain', done);
      s.off('close', done);
      resolve();
    };
    s.on('drain', done);
    s.on('close', done);
  });
}

export class MirroredDriver implements RepositoryDriver {
  readonly kind = 'mirrored' as const;

  constructor(readonly members: readonly RepositoryDriver[]) {
    if (members.length < 2) throw new PgfleetError('Internal', 'a mirrored repository needs at least two members');
  }

  get location(): string {
    return this.members.map((m) => m.location).join(' + ');
  }

  async put(key: string, body: Readable | Buffer, options?: PutOptions): Promise<void> {
    if (Buffer.isBuffer(body)) {
      await settleAll(this.members.map((m) => m.put(key, body, options)));
      return;
    }
    const outs = this.members.map(() => {
      const o = new PassThrough({ highWaterMark: 1 << 20 });
      // A member may start reading only after some set-up (mkdir, CreateMultipartUpload): the
      // error it was destroyed with reaches it then (and the put's rejection reports it).
      o.on('error', () => {});
      return o;
    });
    let failure: unknown;
    const fail = (err: unknown) => {
      if (failure !== undefined) return;
      failure = err;
      // Stop every member's upload and the producer with the reason (a pipeline feeding `body`
      // must fail, not wait forever or take an early end for success).
      for (const o of outs) if (!o.destroyed) o.destroy(err as Error);
      if (!body.destroyed) body.destroy(err as Error);
    };
    const puts = this.members.map((m, i) =>
      m.put(key, outs[i]!, options).catch((err: unknown) => {
        fail(err);
        throw err;
      }),
    );
    const feed = (async () => {
      body.on('error', fail);
      try {
        for await (const chunk of body) {
          if (failure !== undefined) break;
          const waits: Promise<void>[] = [];
          for (const o of outs) if (!o.write(chunk)) waits.push(drained(o));
          await Promise.all(waits);
        }
      } catch (err) {
        fail(err);
      }
      if (failure === undefined) for (const o of outs) o.end();
    })();
    const results = await Promise.allSettled([feed, ...puts]);
    if (failure !== undefined) throw failure;
    const rejected = results.find((r) => r.status === 'rejected');
    if (rejected) throw (rejected as PromiseRejectedResult).reason;
  }

  get(key: string): Promise<Readable> {
    return this.fromFirstHolding(key, (m) => m.get(key));
  }

  /** The range from the first member holding the object (members hold the same bytes under a key). */
  getRange(key: string, start: number, end: number): Promise<Readable> {
    return this.fromFirstHolding(key, (m) => m.getRange(key, start, end));
  }

  /** `read` of the first member that does not answer RepoFileMissing; RepoFileMissing when none holds `key`. */
  private async fromFirstHolding(key: string, read: (m: RepositoryDriver) => Promise<Readable>): Promise<Readable> {
    for (const m of this.members) {
      try {
        return await read(m);
      } catch (err) {
        if (!PgfleetError.is(err, 'RepoFileMissing')) throw err;
      }
    }
    throw new PgfleetError(
      'RepoFileMissing',
      `repository file ${key} is missing from every repository (${this.location})`,
    );
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    for (const m of this.members) {
      const info = await m.stat(key);
      if (info) return info;
    }
    return undefined;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const iterators = this.members.map((m) => m.list(prefix)[Symbol.asyncIterator]());
    try {
      const heads = await Promise.all(iterators.map((it) => it.next()));
      for (;;) {
        let min: string | undefined;
        for (const h of heads) if (!h.done && (min === undefined || h.value.key < min)) min = h.value.key;
        if (min === undefined) return;
        // The first member's entry stands for the key (members hold the same bytes under a key).
        const first = heads.find((h) => !h.done && h.value.key === min)!.value as ObjectInfo;
        await Promise.all(
          heads.map(async (h, i) => {
            if (!h.done && h.value.key === min) heads[i] = await iterators[i]!.next();
          }),
        );
        yield first;
      }
    } finally {
      await Promise.all(iterators.map((it) => it.return?.()));
    }
  }

  /** The union of the members' levels (an object in several members: the first member's entry). */
  async listLevel(prefix: string): Promise<KeyLevel> {
    const each = await settleAll(this.members.map((m) => m.listLevel(prefix)));
    const objects = new Map<string, ObjectInfo>();
    const levels = new Set<string>();
    for (const l of each) {
      for (const o of l.objects) if (!objects.has(o.key)) objects.set(o.key, o);
      for (const n of l.levels) levels.add(n);
    }
    const byKey = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
    return {
      objects: [...objects.values()].sort((a, b) => byKey(a.key, b.key)),
      levels: [...levels].sort(byKey),
    };
  }

  async delete(keys: readonly string[]): Promise<void> {
    await settleAll(this.members.map((m) => m.delete(keys)));
  }

  async deletePrefix(prefix: string): Promise<void> {
    await settleAll(this.members.map((m) => m.deletePrefix(prefix)));
  }

  async syncKeys(keys: readonly string[]): Promise<void> {
    await settleAll(this.members.map(async (m) => m.syncKeys?.(keys)));
  }

  async syncObjects(keys: readonly string[]): Promise<void> {
    await settleAll(this.members.map(async (m) => m.syncObjects?.(keys)));
  }

  close(): void {
    for (const m of this.members) m.close?.();
  }
}
