import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseReplicationMessage, standbyStatusUpdate } from '@pgfleet/pg';
import { resumePoint } from './stream.js';
import { sleep } from '@pgfleet/core';

const SEG = 16 * 1024 * 1024;

test('streaming resumes at the partial segment, else after the newest complete or uploaded one', () => {
  assert.equal(resumePoint([], 1, SEG), undefined);
  assert.equal(
    resumePoint(
      ['000000010000000000000003.done', '000000010000000000000004', '000000010000000000000005.partial'],
      1,
      SEG,
    )?.toString(),
    '0/5000000',
  );
  assert.equal(
    resumePoint(['000000010000000000000003.done', '000000010000000000000004'], 1, SEG)?.toString(),
    '0/5000000',
  );
  assert.equal(resumePoint(['0000000100000000000000FF.done'], 1, SEG)?.toString(), '1/0');
  // Other timelines do not count.
  assert.equal(resumePoint(['000000010000000000000009.partial'], 2, SEG), undefined);
});

test('replication messages: XLogData and keepalive parsed, status update encoded', () => {
  const w = Buffer.alloc(25 + 3);
  w[0] = 0x77;
  w.writeBigUInt64BE(0x5000000n, 1);
  w.writeBigUInt64BE(0x5000003n, 9);
  w.set([1, 2, 3], 25);
  const m = parseReplicationMessage(w);
  assert.equal(m.kind, 'xlogdata');
  assert.equal(m.kind === 'xlogdata' && m.dataStart, 0x5000000n);
  assert.deepEqual(m.kind === 'xlogdata' && [...m.data], [1, 2, 3]);
  const k = Buffer.alloc(18);
  k[0] = 0x6b;
  k.writeBigUInt64BE(42n, 1);
  k[17] = 1;
  assert.deepEqual(parseReplicationMessage(k), { kind: 'keepalive', walEnd: 42n, sendTime: 0n, replyRequested: true });
  const r = standbyStatusUpdate(10n, 8n, false, Date.UTC(2000, 0, 1, 0, 0, 1));
  assert.equal(r.length, 34);
  assert.equal(String.fromCharCode(r[0]!), 'r');
  assert.equal(r.readBigUInt64BE(1), 10n);
  assert.equal(r.readBigUInt64BE(9), 8n);
  assert.equal(r.readBigInt64BE(25), 1_000_000n);
});

test('pushes of one WAL name run one at a time; other names are not held up', async () => {
  const { WalNameLock } = await import('./name-lock.js');
  const lock = new WalNameLock();
  const events: string[] = [];
  const job = (tag: string, ms: number) => async () => {
    events.push(`${tag}+`);
    await sleep(ms);
    events.push(`${tag}-`);
    if (tag === 'a1') throw new Error('first failed');
    return tag;
  };
  const a1 = lock.run('A', job('a1', 30));
  const a2 = lock.run('A', job('a2', 1));
  const b = lock.run('B', job('b', 1));
  await assert.rejects(a1, /first failed/);
  assert.equal(await a2, 'a2');
  assert.equal(await b, 'b');
  assert.ok(events.indexOf('a2+') > events.indexOf('a1-'), 'second push of A waits for the first, even when it failed');
  assert.ok(events.indexOf('b-') < events.indexOf('a1-'), 'B runs alongside');
});
