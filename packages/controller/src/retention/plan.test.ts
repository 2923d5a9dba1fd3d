// Table-driven tests of the retention keep set over six months of synthetic history, plus focused
// cases. Expected sets are written from the calendar (checked against Python's isocalendar), not
// computed with the code under test.
import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import {
  periodKey,
  planRetention,
  walFileNeeded,
  type RetentionBackup,
  type RetentionPlan,
  type RetentionPolicy,
} from './plan.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const SEGMENT_BYTES = 16n * 1024n * 1024n;
const SEGMENTS_PER_LOG = 0x100; // 16 MiB segments

// ---------------------------------------------------------------------------------------------
// Six months of history: 2024-10-01 .. 2025-03-29 (day 0 .. 179). Every day a full at 01:00
// (ends 01:30) and an incr every hour 02:00 .. 23:00 (each ends 10 minutes later), each incr based
// on the previous succeeded backup. WAL advances 4 segments per hour. Irregularities:
// - fulls of day 91 (2024-12-31), 166 (Sun 2025-03-16) and 176 (Wed 2025-03-26) failed; the next
//   incr then chains to the previous day's last incr;
// - the 13:00 incr failed on every day d with d % 10 == 3;
// - timeline switch at day 100: timeline 9 before, 10 (0000000A) after, so decimal and hex text
//   orders of timelines disagree;
// - incr of day 40 at 15:00 is pinned;
// - one full taken on a host whose clock runs a day ahead: its stop time is after now;
// - labels count DOWN while time goes up, so label order is the reverse of time order.
// now = day 180 00:30 = 2025-03-30T00:30Z.
// ---------------------------------------------------------------------------------------------
const T0 = Date.UTC(2024, 9, 1);
const DAYS = 180;
const NOW = T0 + 180 * DAY + 30 * MIN;
const FAILED_FULL_DAYS = new Set([91, 166, 176]);
const PINNED = { day: 40, hour: 15 };
const SWITCH_DAY = 100;

function segNo(time: number): number {
  return 1 + Math.floor((time - T0) / (15 * MIN));
}
function hex8(n: number): string {
  return n.toString(16).toUpperCase().padStart(8, '0');
}
function segName(timeline: number, time: number): string {
  const n = segNo(time);
  return hex8(timeline) + hex8(Math.floor(n / SEGMENTS_PER_LOG)) + hex8(n % SEGMENTS_PER_LOG);
}
function lsnAt(time: number, offset: bigint): string {
  const v = BigInt(segNo(time)) * SEGMENT_BYTES + offset;
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;
}

interface Meta {
  day: number;
  hour: number; // 1 for the daily full
  b: RetentionBackup;
}

function generateHistory(): {
  backups: RetentionBackup[];
  meta: Meta[];
  full: (d: number) => string;
  incr: (d: number, h: number) => string;
  skew: string;
} {
  const meta: Meta[] = [];
  let serial = 999_999;
  let lastSucceeded = '';
  const fulls = new Map<number, string>();
  const incrs = new Map<string, string>();
  const make = (type: 'full' | 'incr', start: number, stop: number, failed: boolean): RetentionBackup => {
    const timeline = start >= T0 + SWITCH_DAY * DAY ? 10 : 9;
    const label = `pg-${String(serial--).padStart(6, '0')}${type === 'full' ? 'F' : 'I'}`;
    const b: RetentionBackup = {
      label,
      type,
      priorLabel: type === 'full' ? '' : lastSucceeded,
      startTime: start,
      stopTime: failed ? 0 : stop,
      startLsn: lsnAt(start, 0x28n),
      stopLsn: failed ? '' : lsnAt(stop, 0x1000n),
      timeline,
      walStart: segName(timeline, start),
      walStop: failed ? '' : segName(timeline, stop),
      state: failed ? 'failed' : 'succeeded',
      pinned: false,
    };
    if (!failed) lastSucceeded = label;
    return b;
  };
  for (let d = 0; d < DAYS; d++) {
    const fs = T0 + d * DAY + HOUR;
    const f = make('full', fs, fs + 30 * MIN, FAILED_FULL_DAYS.has(d));
    fulls.set(d, f.label);
    meta.push({ day: d, hour: 1, b: f });
    for (let h = 2; h <= 23; h++) {
      const is = T0 + d * DAY + h * HOUR;
      const i = make('incr', is, is + 10 * MIN, h === 13 && d % 10 === 3);
      if (d === PINNED.day && h === PINNED.hour) i.pinned = true;
      incrs.set(`${d}/${h}`, i.label);
      meta.push({ day: d, hour: h, b: i });
    }
  }
  // The skewed host: started "one day from now", really just after the last incr.
  const skewStart = NOW + DAY;
  const skew: RetentionBackup = {
    label: 'pg-000000F-skewed',
    type: 'full',
    priorLabel: '',
    startTime: skewStart,
    stopTime: skewStart + 30 * MIN,
    startLsn: lsnAt(T0 + 180 * DAY, 0x28n),
    stopLsn: lsnAt(T0 + 180 * DAY + 30 * MIN, 0x28n),
    timeline: 10,
    walStart: segName(10, T0 + 180 * DAY),
    walStop: segName(10, T0 + 180 * DAY + 30 * MIN),
    state: 'succeeded',
    pinned: false,
  };
  meta.push({ day: 181, hour: 1, b: skew });
  // Shuffle deterministically so that nothing relies on input order.
  const backups = meta.map((m) => m.b);
  let seed = 42;
  for (let i = backups.length - 1; i > 0; i--) {
    seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff;
    const j = seed % (i + 1);
    [backups[i], backups[j]] = [backups[j]!, backups[i]!];
  }
  return {
    backups,
    meta,
    full: (d) => fulls.get(d)!,
    incr: (d, h) => incrs.get(`${d}/${h}`)!,
    skew: skew.label,
  };
}

const H = generateHistory();
const ok = (m: Meta): boolean => m.b.state === 'succeeded';
const FAILED = new Set(H.meta.filter((m) => !ok(m)).map((m) => m.b.label));
/** Every succeeded backup from the full of day `from` on (the PITR window's share). */
const fromDay = (from: number): string[] =>
  H.meta.filter((m) => ok(m) && m.day >= from && m.day < DAYS).map((m) => m.b.label);
const fullsOf = (...days: number[]): string[] => days.map((d) => H.full(d));
const PINNED_LABEL = H.incr(PINNED.day, PINNED.hour);
/** The pinned incr and what it restores from: the day's full and the incrs 02:00 .. 14:00. */
const PINNED_CHAIN = [H.full(PINNED.day), ...Array.from({ length: 13 }, (_, k) => H.incr(PINNED.day, k + 2))];

interface HistoryCase {
  name: string;
  policy: RetentionPolicy;
  keep: string[];
  /** Exact reasons for selected labels. */
  reasons: Array<[string, string[]]>;
  anchor: string;
  /** Labels that must have a WAL keep range (long-term backups outside the window). */
  walRanges: string[];
}

const cases: HistoryCase[] = [
  {
    name: 'typical: 7-day window, 7 daily, 4 weekly, 3 monthly, 2 yearly, min 2 fulls',
    policy: { pitrWindowDays: 7, daily: 7, weekly: 4, monthly: 3, yearly: 2, minFull: 2 },
    // Window start day 173 00:30 -> anchor = full of day 172 (Sat 2025-03-22).
    // weekly: W13 -> 179, W12 -> 173, W11 -> 165 (Sunday 166 failed), W10 -> 159.
    // monthly: Mar -> 179, Feb -> 150 (Feb 28), Jan -> 122 (Jan 31).
    // yearly: 2025 -> 179, 2024 -> 90 (Dec 30; the Dec 31 full failed).
    keep: [...fromDay(172), ...fullsOf(165, 159, 150, 122, 90), ...PINNED_CHAIN, PINNED_LABEL, H.skew],
    reasons: [
      [H.full(179), ['pitr-window', 'daily', 'weekly', 'monthly', 'yearly', 'min-full']],
      [H.full(178), ['pitr-window', 'daily', 'min-full']],
      [H.full(173), ['pitr-window', 'daily', 'weekly']],
      [H.full(172), ['pitr-window', 'daily']],
      [H.incr(172, 2), ['pitr-window']],
      [H.full(165), ['weekly']],
      [H.full(150), ['monthly']],
      [H.full(90), ['yearly']],
      [PINNED_LABEL, ['pinned']],
      [H.full(PINNED.day), [`chain-of:${PINNED_LABEL}`]],
      [H.incr(PINNED.day, 14), [`chain-of:${PINNED_LABEL}`]],
      [H.skew, ['clock-skew']],
    ],
    anchor: H.full(172),
    walRanges: [H.full(90), PINNED_LABEL, H.full(122), H.full(150), H.full(159), H.full(165)],
  },
  {
    name: 'window only: 3.5 days, tiers off',
    policy: { pitrWindowDays: 3.5, daily: 0, weekly: 0, monthly: 0, yearly: 0, minFull: 0 },
    // Window start day 176 12:30; day 176's full failed -> anchor = full of day 175.
    keep: [...fromDay(175), ...PINNED_CHAIN, PINNED_LABEL, H.skew],
    reasons: [
      [H.full(175), ['pitr-window']],
      // Day 176 has no full: its first incr restores from day 175's last incr; both in the window.
      [H.incr(175, 23), ['pitr-window']],
      [H.skew, ['clock-skew']],
    ],
    anchor: H.full(175),
    walRanges: [PINNED_LABEL],
  },
  {
    name: 'window longer than the history keeps every usable backup',
    policy: { pitrWindowDays: 400, daily: 0, weekly: 0, monthly: 0, yearly: 0, minFull: 0 },
    keep: [...fromDay(0), H.skew],
    reasons: [
      [H.full(0), ['pitr-window']],
      [PINNED_LABEL, ['pitr-window', 'pinned']],
      [H.full(PINNED.day), ['pitr-window']],
    ],
    anchor: H.full(0),
    walRanges: [],
  },
  {
    name: 'window 0 with 3 daily and 2 monthly: the newest full and all after it stay',
    policy: { pitrWindowDays: 0, daily: 3, weekly: 0, monthly: 2, yearly: 0, minFull: 0 },
    // The skewed full (stop "2025-03-31") must not take a daily slot or become the anchor.
    keep: [...fromDay(179), ...fullsOf(178, 177, 150), ...PINNED_CHAIN, PINNED_LABEL, H.skew],
    reasons: [
      [H.full(179), ['pitr-window', 'daily', 'monthly']],
      [H.incr(179, 23), ['pitr-window']],
      [H.full(177), ['daily']],
      [H.full(150), ['monthly']],
    ],
    anchor: H.full(179),
    walRanges: [PINNED_LABEL, H.full(150), H.full(177), H.full(178)],
  },
  {
    name: 'minFull beats tiers: daily 1 but at least 5 fulls',
    policy: { pitrWindowDays: 0, daily: 1, weekly: 0, monthly: 0, yearly: 0, minFull: 5 },
    keep: [...fromDay(179), ...fullsOf(178, 177, 175, 174), ...PINNED_CHAIN, PINNED_LABEL, H.skew],
    reasons: [
      [H.full(179), ['pitr-window', 'daily', 'min-full']],
      [H.full(174), ['min-full']],
    ],
    anchor: H.full(179),
    walRanges: [PINNED_LABEL, H.full(174), H.full(175), H.full(177), H.full(178)],
  },
];

function sorted(labels: Iterable<string>): string[] {
  return [...labels].sort();
}

describe('retention over six months of history', () => {
  assert.equal(H.meta.length, DAYS * 23 + 1);
  for (const c of cases) {
    test(c.name, () => {
      const plan = planRetention(H.backups, c.policy, NOW);
      assert.deepEqual(sorted(plan.keep.keys()), sorted(new Set(c.keep)), 'keep set');
      const all = new Set(H.meta.map((m) => m.b.label));
      const expectedExpire = sorted([...all].filter((l) => !c.keep.includes(l)));
      assert.deepEqual(sorted(plan.expire.map((e) => e.label)), expectedExpire, 'expire set');
      for (const e of plan.expire)
        assert.equal(e.reason, FAILED.has(e.label) ? 'failed' : 'outside-retention', e.label);
      for (const [label, want] of c.reasons) assert.deepEqual(plan.keep.get(label), want, `reasons of ${label}`);
      assert.equal(plan.anchor?.label, c.anchor);
      const anchor = H.meta.find((m) => m.b.label === c.anchor)!.b;
      assert.deepEqual(
        [...plan.walExpireBefore],
        [
          [9, `00000009${anchor.walStart.slice(8)}`],
          [10, `0000000A${anchor.walStart.slice(8)}`],
        ],
      );
      assert.deepEqual(sorted(plan.walKeepRanges.map((r) => r.label)), sorted(c.walRanges));
      for (const r of plan.walKeepRanges) {
        const b = H.meta.find((m) => m.b.label === r.label)!.b;
        assert.deepEqual(r, { label: b.label, timeline: b.timeline, walStart: b.walStart, walStop: b.walStop });
      }
      // Keep map and expire list come in real-time order.
      const times = [...plan.keep.keys()].map((l) => H.meta.find((m) => m.b.label === l)!.b.stopTime);
      assert.deepEqual(
        times,
        [...times].sort((a, b) => a - b),
      );
    });
  }

  test('the typical policy keeps WAL from the anchor on, and only the ranges before it', () => {
    const plan = planRetention(H.backups, cases[0]!.policy, NOW);
    // Anchor: full of day 172 started 01:00 -> segment 1 + (172*24+1)*4 = 16517 = log 0x40, seg 0x85.
    assert.deepEqual(plan.anchor, {
      label: H.full(172),
      timeline: 10,
      stopTime: T0 + 172 * DAY + 90 * MIN,
      walStart: '0000000A0000004000000085',
    });
    assert.deepEqual(plan.walExpireBefore.get(10), '0000000A0000004000000085');
    assert.deepEqual(plan.walExpireBefore.get(9), '000000090000004000000085');
    const need = (name: string): boolean => walFileNeeded(plan, name);
    assert.equal(need('0000000A0000004000000085'), true, 'anchor start');
    assert.equal(need('0000000A0000004000000084'), false, 'just before the anchor');
    assert.equal(need('0000000A0000004000000084.partial'), false);
    assert.equal(need('0000000A0000004000000085.00000028.backup'), true);
    assert.equal(
      need('000000090000004000000090'),
      true,
      'lower timeline after the anchor position is kept (conservative)',
    );
    assert.equal(need('0000000B0000004100000000'), true, 'a later timeline with no backup yet');
    assert.equal(need('00000009.history'), true);
    assert.equal(need('not-a-wal-file'), true);
    // Pinned incr of day 40 15:00 -> 15:10: segments 1 + (40*24+15)*4 = 3901 (0xF3D) .. 3901.
    const pinned = H.meta.find((m) => m.b.label === PINNED_LABEL)!.b;
    assert.equal(pinned.walStart, '000000090000000F0000003D');
    assert.equal(need('000000090000000F0000003D'), true, 'pinned backup consistency WAL');
    assert.equal(need('000000090000000F0000003C'), false, 'before the pinned backup');
    assert.equal(need('000000090000000F0000003E'), false, 'after the pinned backup');
    assert.equal(need('0000000A0000000F0000003D'), false, 'same position on another timeline');
    // Monthly full of Jan 31 (day 122): 01:00 -> 01:30, segments 11717 .. 11719 on timeline 10.
    assert.equal(need(segName(10, T0 + 122 * DAY + HOUR)), true);
    assert.equal(need(segName(10, T0 + 122 * DAY + 90 * MIN)), true);
    assert.equal(need(segName(10, T0 + 122 * DAY + 105 * MIN)), false);
    // The bulk of WAL between long-term backups goes.
    assert.equal(need(segName(9, T0 + 50 * DAY)), false);
  });

  test('the result does not depend on input order or labels', () => {
    const policy = cases[0]!.policy;
    const a = planRetention(H.backups, policy, NOW);
    const b = planRetention([...H.backups].reverse(), policy, NOW);
    assert.deepEqual([...a.keep], [...b.keep]);
    assert.deepEqual(a.expire, b.expire);
  });
});

// ---------------------------------------------------------------------------------------------
// Focused cases on small hand-made histories.
// ---------------------------------------------------------------------------------------------
const T = Date.UTC(2026, 0, 10, 12); // Saturday
let counter = 0;
function bk(
  label: string,
  type: 'full' | 'diff' | 'incr',
  stop: number,
  extra: Partial<RetentionBackup> = {},
): RetentionBackup {
  const n = ++counter;
  const timeline = extra.timeline ?? 1;
  return {
    label,
    type,
    priorLabel: '',
    startTime: stop - 10 * MIN,
    stopTime: stop,
    startLsn: `0/${(n * 0x1000000).toString(16).toUpperCase()}`,
    stopLsn: `0/${(n * 0x1000000 + 0x100).toString(16).toUpperCase()}`,
    timeline,
    walStart: hex8(timeline) + hex8(0) + hex8(n * 2),
    walStop: hex8(timeline) + hex8(0) + hex8(n * 2 + 1),
    state: 'succeeded',
    pinned: false,
    ...extra,
  };
}
const OFF: RetentionPolicy = { pitrWindowDays: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0, minFull: 0 };
const keepObj = (plan: RetentionPlan): Record<string, string[]> => Object.fromEntries(plan.keep);
const expireObj = (plan: RetentionPlan): Record<string, string> =>
  Object.fromEntries(plan.expire.map((e) => [e.label, e.reason]));

describe('retention focused cases', () => {
  test('after a roll-back to an old backup, the new timeline keeps its WAL from its own lower positions', () => {
    // Timeline 1 runs to segment 0x50; the cluster is then restored from an old full and continues
    // on timeline 2 from segment 0x20, where two more backups are taken inside the PITR window.
    const old = bk('old', 'full', T - 10 * DAY, {
      walStart: '000000010000000000000010',
      walStop: '000000010000000000000011',
    });
    const anchorFull = bk('anchor', 'full', T - 3 * DAY, {
      walStart: '000000010000000000000050',
      walStop: '000000010000000000000051',
    });
    const after1 = bk('after1', 'full', T - 1 * DAY, {
      timeline: 2,
      walStart: '000000020000000000000022',
      walStop: '000000020000000000000023',
    });
    const after2 = bk('after2', 'incr', T - HOUR, {
      timeline: 2,
      priorLabel: 'after1',
      walStart: '000000020000000000000030',
      walStop: '000000020000000000000031',
    });
    const plan = planRetention([old, anchorFull, after1, after2], { ...OFF, pitrWindowDays: 2 }, T);
    assert.equal(plan.anchor?.label, 'anchor');
    assert.equal(plan.anchor?.walStart, '000000020000000000000022');
    for (const seg of [
      '000000020000000000000022',
      '000000020000000000000028',
      '000000020000000000000030',
      '000000020000000000000040',
    ]) {
      assert.equal(walFileNeeded(plan, seg), true, `${seg}: replayed from after1 to after2 and on`);
    }
    assert.equal(walFileNeeded(plan, '000000020000000000000021'), false, 'before every kept backup');
    assert.equal(walFileNeeded(plan, '000000010000000000000012'), false, 'old timeline 1 WAL before the kept backups');
  });

  test('empty history: nothing to keep or expire, all WAL stays', () => {
    const plan = planRetention([], { ...OFF, pitrWindowDays: 7, daily: 7 }, T);
    assert.equal(plan.keep.size, 0);
    assert.deepEqual(plan.expire, []);
    assert.equal(plan.anchor, undefined);
    assert.equal(plan.walExpireBefore.size, 0);
    assert.equal(walFileNeeded(plan, '000000010000000000000001'), true);
  });

  test('only failed backups: all expirable, never counted, WAL kept', () => {
    const backups = [
      bk('f1', 'full', T - 3 * DAY, { state: 'failed', stopTime: 0, stopLsn: '', walStop: '' }),
      bk('f2', 'full', T - 2 * DAY, { state: 'failed', pinned: true }),
      bk('i1', 'incr', T - DAY, { state: 'failed', priorLabel: 'f2', timeline: 2 }),
    ];
    const plan = planRetention(backups, { ...OFF, pitrWindowDays: 7, daily: 7, minFull: 3 }, T);
    assert.equal(plan.keep.size, 0);
    assert.deepEqual(expireObj(plan), { f1: 'failed', f2: 'failed', i1: 'failed' });
    assert.deepEqual(
      [...plan.walExpireBefore],
      [
        [1, undefined],
        [2, undefined],
      ],
    );
    assert.equal(walFileNeeded(plan, '000000010000000000000001'), true);
  });

  test('window longer than the history: the oldest full anchors, nothing usable expires', () => {
    const backups = [
      bk('x-new', 'full', T - DAY),
      bk('y-old', 'full', T - 3 * DAY),
      bk('z-incr', 'incr', T - 2 * DAY, { priorLabel: 'y-old' }),
      bk('bad', 'incr', T - 2 * DAY + HOUR, { priorLabel: 'z-incr', state: 'failed' }),
    ];
    const plan = planRetention(backups, { ...OFF, pitrWindowDays: 30 }, T);
    assert.equal(plan.anchor?.label, 'y-old');
    assert.deepEqual(keepObj(plan), { 'y-old': ['pitr-window'], 'z-incr': ['pitr-window'], 'x-new': ['pitr-window'] });
    assert.deepEqual(expireObj(plan), { bad: 'failed' });
  });

  test('incr chain protection: a kept incr keeps its chain up to its full', () => {
    const backups = [
      bk('F1', 'full', T - 10 * DAY),
      bk('I1', 'incr', T - 10 * DAY + HOUR, { priorLabel: 'F1' }),
      bk('I2', 'incr', T - 10 * DAY + 2 * HOUR, { priorLabel: 'I1', state: 'failed' }),
      // I3 follows the last succeeded backup, not the failed one.
      bk('I3', 'incr', T - 10 * DAY + 3 * HOUR, { priorLabel: 'I1', pinned: true }),
      bk('I4', 'incr', T - 10 * DAY + 4 * HOUR, { priorLabel: 'I3' }),
      bk('F2', 'full', T - 5 * DAY),
      // A diff inside the window whose base is an older full (F3 was taken on a standby, say).
      bk('F3', 'full', T - 3 * DAY),
      bk('D1', 'diff', T - 2 * DAY, { priorLabel: 'F2' }),
      bk('I5', 'incr', T - DAY, { priorLabel: 'D1' }),
    ];
    const plan = planRetention(backups, { ...OFF, pitrWindowDays: 2.5 }, T);
    assert.equal(plan.anchor?.label, 'F3');
    assert.deepEqual(keepObj(plan), {
      F1: ['chain-of:I3'],
      I1: ['chain-of:I3'],
      I3: ['pinned'],
      F2: ['chain-of:D1'],
      F3: ['pitr-window'],
      D1: ['pitr-window'],
      I5: ['pitr-window'],
    });
    assert.deepEqual(expireObj(plan), { I2: 'failed', I4: 'outside-retention' });
    // Only the pinned backup needs its WAL; its chain members are restored from, not to.
    assert.deepEqual(
      plan.walKeepRanges.map((r) => r.label),
      ['I3'],
    );
  });

  test('broken chains: missing or failed prior makes a backup unusable unless pinned', () => {
    const backups = [
      bk('F1', 'full', T - 4 * DAY, { state: 'failed' }),
      bk('I1', 'incr', T - 4 * DAY + HOUR, { priorLabel: 'F1' }),
      bk('I2', 'incr', T - 4 * DAY + 2 * HOUR, { priorLabel: 'I1' }),
      bk('I3', 'incr', T - 4 * DAY + 3 * HOUR, { priorLabel: 'gone', pinned: true }),
      bk('F2', 'full', T - 3 * DAY),
      bk('I6', 'incr', T - DAY, { priorLabel: 'lost' }),
    ];
    const plan = planRetention(backups, { ...OFF, pitrWindowDays: 7, minFull: 5, daily: 5 }, T);
    // The broken incrs count for nothing: F2 (the only usable full) anchors the window.
    assert.equal(plan.anchor?.label, 'F2');
    assert.deepEqual(keepObj(plan), { I3: ['pinned'], F2: ['pitr-window', 'daily', 'min-full'] });
    assert.deepEqual(expireObj(plan), {
      F1: 'failed',
      I1: 'broken-chain:F1',
      I2: 'broken-chain:F1',
      I6: 'broken-chain:lost',
    });
  });

  test('minFull overrides the tiers: fulls beyond the tier counts stay', () => {
    const backups = [0, 1, 2, 3, 4, 5].map((d) => bk(`full-${5 - d}`, 'full', T - d * DAY));
    const plan = planRetention(backups, { ...OFF, daily: 2, minFull: 4 }, T);
    assert.deepEqual(keepObj(plan), {
      'full-2': ['min-full'],
      'full-3': ['min-full'],
      'full-4': ['daily', 'min-full'],
      'full-5': ['pitr-window', 'daily', 'min-full'],
    });
    assert.deepEqual(expireObj(plan), { 'full-0': 'outside-retention', 'full-1': 'outside-retention' });
  });

  test('clock skew: a future backup is kept but never anchors nor fills a tier', () => {
    const backups = [
      bk('a-future', 'full', T + 2 * HOUR),
      bk('b-past', 'full', T - 2 * DAY),
      bk('c-older', 'full', T - 3 * DAY),
    ];
    const plan = planRetention(backups, { ...OFF, minFull: 1, daily: 1 }, T);
    assert.equal(plan.anchor?.label, 'b-past');
    assert.deepEqual(keepObj(plan), { 'b-past': ['pitr-window', 'daily', 'min-full'], 'a-future': ['clock-skew'] });
    assert.deepEqual(expireObj(plan), { 'c-older': 'outside-retention' });

    const onlyFuture = planRetention(
      [bk('a-future', 'full', T + HOUR), bk('i', 'incr', T - HOUR, { priorLabel: 'a-future' })],
      OFF,
      T,
    );
    assert.equal(onlyFuture.anchor, undefined, 'no full ended by now: no anchor, keep all WAL');
    assert.deepEqual(keepObj(onlyFuture), { i: ['pitr-window'], 'a-future': ['clock-skew', 'chain-of:i'] });
    assert.equal(walFileNeeded(onlyFuture, '000000010000000000000001'), true);
  });

  test('timeline switch: order follows time, not timeline numbers or labels', () => {
    // Labels sort against time, and timeline 10 (0000000A) sorts before 2 as decimal text: only
    // the stop times give the right anchor.
    const backups = [
      bk('zz-first', 'full', T - 4 * DAY, { timeline: 2 }),
      bk('aa-second', 'full', T - 2 * DAY, { timeline: 10 }),
      bk('mm-third', 'incr', T - DAY, { timeline: 10, priorLabel: 'aa-second' }),
    ];
    const plan = planRetention(backups, { ...OFF, pitrWindowDays: 1.5 }, T);
    assert.equal(plan.anchor?.label, 'aa-second');
    assert.deepEqual(keepObj(plan), { 'aa-second': ['pitr-window'], 'mm-third': ['pitr-window'] });
    assert.deepEqual(expireObj(plan), { 'zz-first': 'outside-retention' });
    const anchorPos = backups[1]!.walStart.slice(8);
    assert.deepEqual(
      [...plan.walExpireBefore],
      [
        [2, `00000002${anchorPos}`],
        [10, `0000000A${anchorPos}`],
      ],
    );
  });

  test('same stop time: the stop LSN decides', () => {
    const backups = [
      bk('b', 'full', T - 2 * DAY, { stopLsn: '0/A0000000' }),
      bk('a', 'full', T - 2 * DAY, { stopLsn: '0/10000000' }),
    ];
    const plan = planRetention(backups, { ...OFF, minFull: 1 }, T);
    // 0/A0000000 > 0/10000000 numerically (not as text with different lengths).
    assert.deepEqual(keepObj(plan), { b: ['pitr-window', 'min-full'] });
  });

  test('policy and input validation', () => {
    const bad: Array<Partial<RetentionPolicy>> = [
      { pitrWindowDays: -1 },
      { pitrWindowDays: Number.NaN },
      { daily: 1.5 },
      { weekly: -2 },
      { minFull: Number.POSITIVE_INFINITY },
    ];
    for (const p of bad) {
      assert.throws(
        () => planRetention([], { ...OFF, ...p }, T),
        (e: unknown) => e instanceof PgfleetError && e.errorName === 'InvalidArgument',
        JSON.stringify(p),
      );
    }
    assert.throws(() => planRetention([bk('x', 'full', T), bk('x', 'full', T - DAY)], OFF, T), /appears twice/);
    assert.throws(() => planRetention([bk('x', 'full', T, { walStart: '1/2' })], OFF, T), /WAL segment name/);
  });

  test('calendar periods are UTC, weeks are ISO 8601', () => {
    assert.equal(periodKey('daily', Date.UTC(2025, 2, 29, 23, 59)), '2025-03-29');
    assert.equal(periodKey('weekly', Date.UTC(2024, 11, 30)), '2025-W01'); // Monday of ISO week 1 of 2025
    assert.equal(periodKey('weekly', Date.UTC(2021, 0, 3)), '2020-W53');
    assert.equal(periodKey('weekly', Date.UTC(2025, 2, 23, 23)), '2025-W12'); // Sunday ends the week
    assert.equal(periodKey('weekly', Date.UTC(2025, 2, 24)), '2025-W13');
    assert.equal(periodKey('monthly', Date.UTC(2025, 0, 31, 23, 59)), '2025-01');
    assert.equal(periodKey('yearly', Date.UTC(2024, 11, 31, 23, 59)), '2024');
  });
});
