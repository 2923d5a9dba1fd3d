/**
 * Paged listings (ListClusters, ListBackups). A whole fleet's status outgrows a gRPC message
 * (4 MiB by default: 10,000 clusters are ~4.2 MB), so every listing whose rows grow with the fleet
 * or with a cluster's history answers a page at a time with a token for the next.
 *
 * A token names the last row returned (keyset paging, not an offset): a row added or removed
 * between two calls neither repeats nor hides another one. A fleet's status is a set of fleet-wide
 * queries plus seconds of CPU at 10,000 clusters, so it is computed once per listing: the rows are
 * kept a short while under a snapshot id the token carries, and the following pages are cut from
 * them. A controller that does not hold the snapshot (it expired, or the next call reached another
 * controller of the catalog) computes the status afresh and goes on after the named row.
 */
import { randomUUID } from 'node:crypto';
import { PgfleetError } from '@pgfleet/core';

/** Rows per page when the request does not say (AIP-158's convention: 0 means the server's default). */
export const DEFAULT_PAGE_SIZE = 1000;
/** A larger page_size is taken as this: 5,000 status rows are ~2 MB, half the message limit. */
export const MAX_PAGE_SIZE = 5000;

export function pageSizeOf(requested: number): number {
  return requested === 0 ? DEFAULT_PAGE_SIZE : Math.min(requested, MAX_PAGE_SIZE);
}

/** What a page token carries: the last row's key (and its time, for listings in time order) and the snapshot. */
export interface PageToken {
  after: string;
  /** ListBackups: the stop time of the backup named by `after` (to resume when it was deleted meanwhile). */
  time?: number;
  snapshot?: string;
}

export function encodePageToken(token: PageToken): string {
  return Buffer.from(JSON.stringify(token)).toString('base64url');
}

export function decodePageToken(token: string): PageToken | undefined {
  if (token === '') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
  } catch (e) {
    throw new PgfleetError('PageTokenInvalid', 'the page token is not valid', { cause: e });
  }
  const t = parsed as Partial<PageToken> | null;
  if (
    typeof t !== 'object' ||
    t === null ||
    typeof t.after !== 'string' ||
    (t.time !== undefined && typeof t.time !== 'number') ||
    (t.snapshot !== undefined && typeof t.snapshot !== 'string')
  ) {
    throw new PgfleetError('PageTokenInvalid', 'the page token is not valid');
  }
  return {
    after: t.after,
    ...(t.time !== undefined ? { time: t.time } : {}),
    ...(t.snapshot ? { snapshot: t.snapshot } : {}),
  };
}

/** Code-unit order (not the catalog's collation, which differs between SQLite and PostgreSQL). */
export function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Index of the first row whose key sorts after `after`, in rows sorted by compareKeys on key. */
export function firstAfter<T>(rows: readonly T[], key: (row: T) => string, after: string): number {
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareKeys(key(rows[mid]!), after) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Rows kept between the pages of one listing. */
export class PageSnapshots<T> {
  private readonly held = new Map<string, { rows: readonly T[]; at: number }>();

  constructor(
    /** How long a listing's rows are kept for its next page. */
    private readonly ttlMs = 60_000,
    /** At most this many listings are held at once (a console polls: each poll is a listing). */
    private readonly max = 8,
  ) {}

  get(id: string | undefined, now: number): readonly T[] | undefined {
    this.prune(now);
    return id === undefined ? undefined : this.held.get(id)?.rows;
  }

  /** Keeps rows for the following pages; the id goes into the page token. */
  put(rows: readonly T[], now: number): string {
    this.prune(now);
    while (this.held.size >= this.max) this.held.delete(this.held.keys().next().value!);
    const id = randomUUID();
    this.held.set(id, { rows, at: now });
    return id;
  }

  /** The last page was taken: nothing more will be asked of this listing. */
  drop(id: string): void {
    this.held.delete(id);
  }

  private prune(now: number): void {
    for (const [id, s] of this.held) if (now - s.at > this.ttlMs) this.held.delete(id);
  }
}
