/**
 * Paged listings (ListClusters, ListBackups). A whole fleet's status outgrows a gRPC message
 * (4 MiB by default: 10,000 clusters are ~4.2 MB), so every listing whose rows grow with the fleet
 * or with a cluster's history answers a page at a time with a token for the next.
 *
 * A token names the last row returned (keyset paging, not an offset): a row added or removed
 * between two calls neither repeats nor hides another one, and any controller of the catalog can
 * answer the next page. A page of the status reads and computes its own clusters only
 * (health/status.ts), so nothing is kept between calls.
 */
import { PgfleetError } from '@pgfleet/core';

/** Rows per page when the request does not say (AIP-158's convention: 0 means the server's default). */
export const DEFAULT_PAGE_SIZE = 1000;
/** A larger page_size is taken as this: 5,000 status rows are ~2 MB, half the message limit. */
export const MAX_PAGE_SIZE = 5000;

export function pageSizeOf(requested: number): number {
  return requested === 0 ? DEFAULT_PAGE_SIZE : Math.min(requested, MAX_PAGE_SIZE);
}

/** What a page token carries: the last row's key (and its time, for listings in time order). */
export interface PageToken {
  after: string;
  /** ListBackups: the stop time of the backup named by `after` (to resume when it was deleted meanwhile). */
  time?: number;
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
    (t.time !== undefined && typeof t.time !== 'number')
  ) {
    throw new PgfleetError('PageTokenInvalid', 'the page token is not valid');
  }
  return { after: t.after, ...(t.time !== undefined ? { time: t.time } : {}) };
}
