/**
 * Looks into a repository from the test process, through the storage package's reader (so the
 * same checks run on posix and S3), for assertions about what landed there.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { decompressor, type Repository } from '@pgfleet/storage';

const SEG = 16 * 1024 * 1024;

/** name -> stored WAL objects of the cluster (segments and .partial), from the repository's listing. */
export async function repoWal(repo: Repository, cluster: string): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  for await (const w of repo.listWal(cluster)) {
    if (/^[0-9A-F]{24}(\.partial)?$/.test(w.name)) out.set(w.name, [...(out.get(w.name) ?? []), w.key]);
  }
  return out;
}

/**
 * Every stored segment is stored once, is a complete segment and its content matches the
 * checksum in its name (read raw and decompressed here, not trusted to the reader under test).
 */
export async function assertRepoSegmentsSound(repo: Repository, cluster: string): Promise<number> {
  let n = 0;
  const stored = await repoWal(repo, cluster);
  for await (const w of repo.listWal(cluster)) {
    if (!/^[0-9A-F]{24}$/.test(w.name)) continue;
    assert.equal(stored.get(w.name)?.length, 1, `${w.name} stored once`);
    const hash = createHash('sha256');
    let size = 0;
    await pipeline(
      await repo.driver.get(w.key),
      decompressor(w.codec),
      new Writable({
        write(c: Buffer, _e, cb) {
          hash.update(c);
          size += c.length;
          cb();
        },
      }),
    );
    assert.equal(size, SEG, `${w.name} is a full segment`);
    assert.equal(hash.digest('hex'), w.sha256, `${w.name} matches its checksum`);
    n++;
  }
  return n;
}

/** Segment names from `first` to `last` (both included) on the timeline of `first`. */
export function segmentsBetween(first: string, last: string): string[] {
  const tli = first.slice(0, 8);
  const num = (s: string) => BigInt(`0x${s.slice(8, 16)}`) * 256n + BigInt(`0x${s.slice(16, 24)}`);
  const out: string[] = [];
  for (let n = num(first); n <= num(last); n++)
    out.push(
      `${tli}${(n / 256n).toString(16).toUpperCase().padStart(8, '0')}${(n % 256n).toString(16).toUpperCase().padStart(8, '0')}`,
    );
  return out;
}
