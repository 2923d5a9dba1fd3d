import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import type { BackupRecord } from '@pgfleet/catalog';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decodePageToken, encodePageToken, pageSizeOf } from './paging.js';
import { listBackupsPage } from './service.js';

const refused = (e: unknown) => e instanceof PgfleetError && e.code === ErrorCodes.PageTokenInvalid.code;

describe('page tokens', () => {
  it('round-trip what they carry; an empty token is the first page', () => {
    const t = { after: 'c00042', time: 1_700_000_000_000 };
    assert.deepEqual(decodePageToken(encodePageToken(t)), t);
    assert.deepEqual(decodePageToken(encodePageToken({ after: 'x' })), { after: 'x' });
    assert.equal(decodePageToken(''), undefined);
  });

  it('refuse what the controller did not hand out', () => {
    assert.throws(() => decodePageToken('not a token'), refused);
    assert.throws(() => decodePageToken(Buffer.from('{"after":7}').toString('base64url')), refused);
    assert.throws(() => decodePageToken(Buffer.from('null').toString('base64url')), refused);
    assert.throws(() => decodePageToken(Buffer.from('{"after":"a","time":"x"}').toString('base64url')), refused);
  });

  it('page sizes: 0 is the default, larger than the maximum is capped', () => {
    assert.equal(pageSizeOf(0), DEFAULT_PAGE_SIZE);
    assert.equal(pageSizeOf(7), 7);
    assert.equal(pageSizeOf(MAX_PAGE_SIZE + 1), MAX_PAGE_SIZE);
  });
});

describe('listBackupsPage', () => {
  const backup = (i: number): BackupRecord => ({
    cluster: 'main',
    label: `b${String(i).padStart(3, '0')}`,
    type: 'full',
    startLsn: '0/1000000',
    stopLsn: '0/1000100',
    startTime: i * 1000 - 10,
    stopTime: i * 1000,
    timeline: 1,
    systemIdentifier: '1',
    pgVersion: 150000,
    sizeBytes: 1,
    storedBytes: 1,
    fileCount: 1,
    walStart: '000000010000000000000001',
    walStop: '000000010000000000000001',
    jobId: `j${i}`,
    priorLabel: '',
  });
  const all = Array.from({ length: 25 }, (_, i) => backup(i + 1));

  it('pages the backups in their order and ends with an empty token', () => {
    const labels: string[] = [];
    let pageToken = '';
    let pages = 0;
    do {
      const page = listBackupsPage(all, { pageSize: 10, pageToken });
      labels.push(...page.backups!.map((b) => b.label!));
      pageToken = page.nextPageToken!;
      pages++;
    } while (pageToken !== '');
    assert.equal(pages, 3);
    assert.deepEqual(
      labels,
      all.map((b) => b.label),
    );
    assert.equal(listBackupsPage(all, { pageSize: 0, pageToken: '' }).nextPageToken, '', '25 fit the default page');
  });

  it('goes on after a backup deleted between two pages, and after a new one appears', () => {
    const first = listBackupsPage(all, { pageSize: 10, pageToken: '' });
    // b010 (the page's last) expires and b026 is taken before the next call.
    const now = [...all.filter((b) => b.label !== 'b010'), backup(26)];
    const next = listBackupsPage(now, { pageSize: 100, pageToken: first.nextPageToken! });
    assert.deepEqual(
      next.backups!.map((b) => b.label),
      Array.from({ length: 16 }, (_, i) => `b${String(i + 11).padStart(3, '0')}`),
    );
  });
});
