import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { allPages, prefetchPages, type Page } from './output.js';

/**
 * A paged listing of `pages` (rows per page), page i failing if it is `failAt`; it records the
 * tokens asked for and the most requests it had unanswered at once, counting a page the caller has
 * not finished as unanswered too (it is released when the caller asks for the next one).
 */
function fakeListing(pages: string[][], failAt = -1) {
  const asked: string[] = [];
  let open = 0;
  let mostOpen = 0;
  const page = (token: string): Promise<Page<string>> => {
    asked.push(token);
    open++;
    mostOpen = Math.max(mostOpen, open);
    const i = token === '' ? 0 : Number(token);
    return new Promise((resolve, reject) =>
      setImmediate(() => {
        if (i === failAt) {
          open--;
          reject(new PgfleetError('ControllerUnreachable', `page ${i} failed`));
        } else resolve({ rows: pages[i]!, nextPageToken: i + 1 < pages.length ? String(i + 1) : '' });
      }),
    );
  };
  return { page, asked, done: () => open--, mostOpen: () => mostOpen };
}

test('the prefetching pager yields the pages in order, asks one page ahead and stops at the last', async () => {
  const f = fakeListing([['a', 'b'], ['c'], ['d', 'e'], ['f']]);
  const got: string[][] = [];
  for await (const rows of prefetchPages(f.page)) {
    // While the caller works on a page, the next one is already asked for (except after the last).
    assert.equal(f.asked.length, Math.min(got.length + 2, 4));
    got.push(rows);
    await new Promise((r) => setImmediate(r));
    f.done();
  }
  assert.deepEqual(got, [['a', 'b'], ['c'], ['d', 'e'], ['f']]);
  assert.deepEqual(f.asked, ['', '1', '2', '3']);
  // The page being worked on and the one asked ahead: never more.
  assert.equal(f.mostOpen(), 2);
  assert.deepEqual(await allPages(fakeListing([['a'], ['b', 'c']]).page), ['a', 'b', 'c']);
  assert.deepEqual(await allPages(fakeListing([[]]).page), []);
});

test("a failing page's error comes after the pages before it, with its code, and nothing is asked after it", async () => {
  const f = fakeListing([['a'], ['b'], ['c'], ['d']], 2);
  const got: string[][] = [];
  await assert.rejects(
    (async () => {
      for await (const rows of prefetchPages(f.page)) {
        got.push(rows);
        // Page 2 fails while page 1 is worked on: its error waits for its turn.
        await new Promise((r) => setTimeout(r, 5));
        f.done();
      }
    })(),
    (e: unknown) =>
      e instanceof PgfleetError && e.code === ErrorCodes.ControllerUnreachable.code && /page 2 failed/.test(e.message),
  );
  assert.deepEqual(got, [['a'], ['b']]);
  assert.deepEqual(f.asked, ['', '1', '2']);
});
