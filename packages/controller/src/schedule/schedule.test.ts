// Tests of backup schedules: cron evaluation in UTC, fleet spreading, catch-up after downtime,
// concurrency limits and type precedence. Pure: no catalog, no timers.
import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import type { BackupKind } from '@pgfleet/catalog';
import {
  ConcurrencyGate,
  CronSchedule,
  dueRuns,
  FireWindows,
  nextFireTime,
  nextRun,
  Scheduler,
  spreadOffsetMs,
  type BackupSlot,
  type ClusterSchedules,
} from './schedule.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const at = (iso: string): Date => new Date(iso);
const iso = (d: Date): string => d.toISOString();

describe('cron evaluation (UTC, 5 fields)', () => {
  const cases: Array<[string, string, string, string]> = [
    ['daily at 01:00, just before', '0 1 * * *', '2025-01-01T00:59:59.999Z', '2025-01-01T01:00:00.000Z'],
    [
      'strictly after: at the fire time -> the next day',
      '0 1 * * *',
      '2025-01-01T01:00:00.000Z',
      '2025-01-02T01:00:00.000Z',
    ],
    ['every 15 minutes', '*/15 * * * *', '2025-01-01T10:07:30.000Z', '2025-01-01T10:15:00.000Z'],
    ['weekdays: Friday evening -> Monday', '30 2 * * 1-5', '2025-01-03T03:00:00.000Z', '2025-01-06T02:30:00.000Z'],
    ['day names', '0 3 * * sat', '2025-01-01T00:00:00.000Z', '2025-01-04T03:00:00.000Z'],
    ['Sunday as 7', '0 0 * * 7', '2025-01-01T00:00:00.000Z', '2025-01-05T00:00:00.000Z'],
    ['first of the month from the 31st', '0 0 1 * *', '2025-01-31T12:00:00.000Z', '2025-02-01T00:00:00.000Z'],
    ['Feb 29 waits for a leap year', '0 0 29 2 *', '2025-03-01T00:00:00.000Z', '2028-02-29T00:00:00.000Z'],
    [
      'both day fields: the 13th OR a Friday (Vixie cron)',
      '0 0 13 * 5',
      '2025-01-01T00:00:00.000Z',
      '2025-01-03T00:00:00.000Z',
    ],
    ['year rollover', '59 23 31 12 *', '2025-06-01T00:00:00.000Z', '2025-12-31T23:59:00.000Z'],
    // 2025-03-30 is the EU spring-forward day and 2025-11-02 the US fall-back day: UTC ignores both.
    ['no DST gap (EU spring forward)', '30 1 * * *', '2025-03-29T01:30:00.000Z', '2025-03-30T01:30:00.000Z'],
    ['no DST repeat (US fall back)', '30 6 * * *', '2025-11-01T06:30:00.000Z', '2025-11-02T06:30:00.000Z'],
    ['seconds and ms in "after" are ignored', '* * * * *', '2025-01-01T00:00:59.999Z', '2025-01-01T00:01:00.000Z'],
    ['extra spaces', '  0   1 * *   * ', '2025-01-01T00:00:00.000Z', '2025-01-01T01:00:00.000Z'],
  ];
  for (const [name, cron, after, want] of cases) {
    test(name, () => assert.equal(iso(nextRun(cron, at(after))), want));
  }

  test('consecutive fire times of an hourly schedule are exactly one hour apart for a year', () => {
    const s = CronSchedule.parse('17 * * * *');
    let t = at('2025-01-01T00:00:00Z');
    for (let i = 0; i < 24 * 365; i++) {
      const n = s.next(t);
      if (i > 0) assert.equal(n.getTime() - t.getTime(), HOUR);
      assert.equal(n.getUTCMinutes(), 17);
      t = n;
    }
  });

  test('latest fire at or before', () => {
    const s = CronSchedule.parse('0 1 * * *');
    assert.equal(iso(s.latest(at('2025-01-02T01:00:00.000Z'))), '2025-01-02T01:00:00.000Z');
    assert.equal(iso(s.latest(at('2025-01-02T00:59:59.999Z'))), '2025-01-01T01:00:00.000Z');
  });

  // The fire-time cache (runs of consecutive fire times) must answer exactly what cron-parser
  // answers uncached, whatever the expression and whatever the order of the questions.
  test('cached next and latest equal cron-parser over many expressions and instants', () => {
    const expressions = [
      '* * * * *',
      '*/7 * * * *',
      '17 * * * *',
      '0 1 * * *',
      '30 23 * * *',
      '0 1 * * 0',
      '0 1 * * 1-5',
      '15 2 1 * *',
      '0 0 31 * *',
      '0 0 29 2 *',
      '0 3 1,15 * 1',
      '5 4 * * sun',
      '0 */6 * * *',
      '59 23 31 12 *',
      '0 0 1 1 *',
      '10,40 8-18 * * mon-fri',
    ];
    // A fixed pseudo-random sequence (no clock, no calendar): instants over 2024-2027, exact fire
    // times, 1 ms either side of them, and runs of close instants like a fleet's spread offsets.
    let seed = 0x2390;
    const rand = (): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const from = Date.parse('2024-01-01T00:00:00Z');
    const span = 4 * 365 * DAY;
    for (const expression of expressions) {
      const cached = CronSchedule.parse(expression);
      const instants: number[] = [];
      for (let i = 0; i < 15; i++) {
        const t = from + Math.floor(rand() * span);
        instants.push(t);
        const fire = cached.latestUncached(new Date(t)).getTime();
        instants.push(fire, fire - 1, fire + 1);
        for (let k = 0; k < 3; k++) instants.push(t - Math.floor(rand() * HOUR));
      }
      for (const t of instants) {
        const d = new Date(t);
        assert.equal(iso(cached.next(d)), iso(cached.nextUncached(d)), `${expression} next(${iso(d)})`);
        assert.equal(iso(cached.latest(d)), iso(cached.latestUncached(d)), `${expression} latest(${iso(d)})`);
      }
    }
  });

  test('the fleet-wide answers (spread, due runs) are the same with the cache', () => {
    // What status asks per cluster: the next fire time and the due run, each cluster at its own
    // offset; compared with the same arithmetic done on cron-parser's uncached answers.
    const now = at('2026-03-14T09:26:53.589Z');
    const lastRun = at('2026-03-13T01:07:00.000Z');
    for (let i = 0; i < 300; i++) {
      const schedule = {
        cluster: `c${String(i).padStart(5, '0')}`,
        type: 'full' as const,
        cron: '0 1 * * *',
        spreadMinutes: 240,
      };
      const offset = spreadOffsetMs(schedule.cluster, 240);
      const s = CronSchedule.parse(schedule.cron);
      const next = s.nextUncached(new Date(now.getTime() - offset)).getTime() + offset;
      assert.equal(nextFireTime(schedule, now).getTime(), next);
      const latest = s.latestUncached(new Date(now.getTime() - offset)).getTime() + offset;
      const [due] = dueRuns(schedule, lastRun, now);
      if (latest <= lastRun.getTime()) assert.equal(due, undefined);
      else assert.equal(due?.scheduledAt.getTime(), latest);
    }
  });

  test('fire windows: one computation per fire time, exact across fire times, policy and spread changes', () => {
    // The clock is the argument: the instants walk a day minute by minute, over a change of the
    // cluster's cron expression and of its spreading window, and every answer is compared with
    // cron-parser's uncached one.
    const windows = new FireWindows();
    const uncached = (cron: string, spread: number, t: number) => {
      const offset = spreadOffsetMs('db-7', spread);
      const s = CronSchedule.parse(cron);
      return {
        latest: s.latestUncached(new Date(t - offset)).getTime() + offset,
        next: s.nextUncached(new Date(t - offset)).getTime() + offset,
      };
    };
    const start = at('2026-03-14T00:00:00Z').getTime();
    const phases = [
      { cron: '0 */6 * * *', spread: 60, until: start + 8 * HOUR },
      { cron: '30 1 * * *', spread: 60, until: start + 16 * HOUR }, // the policy's schedule changed
      { cron: '30 1 * * *', spread: 0, until: start + DAY }, // its spreading window changed
    ];
    let t = start;
    let fireTimesPassed = 0;
    let previous: number | undefined;
    for (const { cron, spread, until } of phases) {
      const schedule = { cluster: 'db-7', type: 'full' as const, cron, spreadMinutes: spread };
      fireTimesPassed++; // a change of schedule is a new window
      previous = undefined;
      for (; t < until; t += MIN) {
        const w = windows.around(schedule, t);
        assert.deepEqual({ latest: w.latest, next: w.next }, uncached(cron, spread, t), `${cron} ${spread} at ${t}`);
        assert.equal(nextFireTime(schedule, new Date(t)).getTime(), w.next);
        if (previous !== undefined && w.latest !== previous) fireTimesPassed++;
        previous = w.latest;
      }
    }
    // Computed once per window (a fire time passed or the schedule changed), not once per ask.
    assert.equal(windows.computed, fireTimesPassed);
    // An instant before the window (a clock set back) is answered for that instant.
    const schedule = { cluster: 'db-7', type: 'full' as const, cron: '30 1 * * *', spreadMinutes: 0 };
    const back = windows.around(schedule, start);
    assert.deepEqual({ latest: back.latest, next: back.next }, uncached('30 1 * * *', 0, start));
  });

  test('a due run and the next fire time after a recorded run follow the window', () => {
    const schedule = { cluster: 'db-9', type: 'incr' as const, cron: '0 * * * *', spreadMinutes: 0 };
    const now = at('2026-03-14T09:26:00Z');
    assert.equal(iso(dueRuns(schedule, undefined, now)[0]!.scheduledAt), '2026-03-14T09:00:00.000Z');
    // Recorded: not due until 10:00, then due for 10:00, owed since 10:00.
    const ran = at('2026-03-14T09:00:00Z');
    assert.deepEqual(dueRuns(schedule, ran, at('2026-03-14T09:59:59.999Z')), []);
    const [due] = dueRuns(schedule, ran, at('2026-03-14T10:00:00Z'));
    assert.equal(iso(due!.scheduledAt), '2026-03-14T10:00:00.000Z');
    assert.equal(iso(due!.dueSince!), '2026-03-14T10:00:00.000Z');
  });

  const invalid: Array<[string, RegExp]> = [
    ['', /5 fields/],
    ['* * * *', /5 fields.*found 4/],
    ['0 * * * * *', /5 fields.*found 6/],
    ['60 * * * *', /not valid/],
    ['0 24 * * *', /not valid/],
    ['0 0 31 2 *', /not valid/],
    ['0 0 * 13 *', /not valid/],
    ['H 1 * * *', /uses H/],
    ['0 1 * * funday', /not valid/],
  ];
  for (const [cron, message] of invalid) {
    test(`invalid: '${cron}'`, () => {
      assert.throws(
        () => CronSchedule.parse(cron),
        (e: unknown) => e instanceof PgfleetError && e.errorName === 'InvalidArgument' && message.test(e.message),
      );
    });
  }
});

describe('fleet spreading', () => {
  const names = Array.from({ length: 1000 }, (_, i) => `db-${String(i).padStart(4, '0')}.prod`);

  test('deterministic, within the window, whole seconds', () => {
    for (const n of names) {
      const o = spreadOffsetMs(n, 60);
      assert.equal(o, spreadOffsetMs(n, 60));
      assert.ok(o >= 0 && o < 60 * MIN, `${n}: ${o}`);
      assert.equal(o % 1000, 0);
    }
    assert.equal(spreadOffsetMs('any', 0), 0);
    // Fixed values: changing the hash would move every cluster's backups to another time.
    assert.equal(spreadOffsetMs('db-0000.prod', 60), 2_128_000); // 35 min 28 s
    assert.equal(spreadOffsetMs('pg-main', 30), 1_789_000);
    assert.throws(() => spreadOffsetMs('x', -1), PgfleetError);
  });

  test('roughly uniform over 1,000 names', () => {
    const buckets = new Array<number>(10).fill(0);
    for (const n of names) buckets[Math.floor(spreadOffsetMs(n, 60) / (6 * MIN))]!++;
    // Expected 100 per bucket; a fair hash stays well inside 100 +- 40 (4 standard deviations).
    for (const [i, c] of buckets.entries()) assert.ok(c > 60 && c < 140, `bucket ${i}: ${c} (${buckets.join(',')})`);
    const chi2 = buckets.reduce((s, c) => s + (c - 100) ** 2 / 100, 0);
    assert.ok(chi2 < 27.9, `chi-square ${chi2.toFixed(1)} (9 d.f., p = 0.001)`);
  });

  test('1,000 clusters scheduled at 01:00 start over the window, not at once', () => {
    const perMinute = new Map<number, number>();
    for (const n of names) {
      const t = nextFireTime(
        { cluster: n, type: 'full', cron: '0 1 * * *', spreadMinutes: 60 },
        at('2025-01-01T00:30:00Z'),
      );
      assert.ok(t >= at('2025-01-01T01:00:00Z') && t < at('2025-01-01T02:00:00Z'), iso(t));
      const minute = Math.floor(t.getTime() / MIN);
      perMinute.set(minute, (perMinute.get(minute) ?? 0) + 1);
    }
    assert.equal(perMinute.size, 60, 'every minute of the window is used');
    assert.ok(Math.max(...perMinute.values()) <= 35, `busiest minute: ${Math.max(...perMinute.values())}`);
  });
});

describe('due runs and catch-up', () => {
  const hourly = { cluster: 'c1', type: 'incr' as const, cron: '0 * * * *' };

  test('a schedule that never ran is due for its latest fire time', () => {
    assert.deepEqual(dueRuns(hourly, undefined, at('2025-01-01T10:20:00Z')), [
      { cluster: 'c1', type: 'incr', scheduledAt: at('2025-01-01T10:00:00Z'), dueSince: undefined },
    ]);
  });

  test('not due again once the run is recorded, due at the next fire time', () => {
    const last = at('2025-01-01T10:00:00Z');
    assert.deepEqual(dueRuns(hourly, last, at('2025-01-01T10:59:59.999Z')), []);
    assert.deepEqual(dueRuns(hourly, last, at('2025-01-01T11:00:00Z')), [
      { cluster: 'c1', type: 'incr', scheduledAt: at('2025-01-01T11:00:00Z'), dueSince: at('2025-01-01T11:00:00Z') },
    ]);
  });

  test('lastRun may be the actual start time (later than scheduled): still no second run', () => {
    assert.deepEqual(dueRuns(hourly, at('2025-01-01T10:07:12Z'), at('2025-01-01T10:30:00Z')), []);
  });

  test('after 3 days of controller downtime a missed schedule runs once, not 72 times', () => {
    const last = at('2025-01-01T10:00:00Z');
    const now = new Date(last.getTime() + 3 * DAY + 25 * MIN);
    const due = dueRuns(hourly, last, now);
    assert.deepEqual(due, [
      { cluster: 'c1', type: 'incr', scheduledAt: at('2025-01-04T10:00:00Z'), dueSince: at('2025-01-01T11:00:00Z') },
    ]);
    // Ticking every 30 s for the next two hours, recording each start: one catch-up + 2 regular runs.
    let lastRun: Date = last;
    const started: string[] = [];
    for (let t = now.getTime(); t <= now.getTime() + 2 * HOUR; t += 30_000) {
      const [run] = dueRuns(hourly, lastRun, new Date(t));
      if (run) {
        started.push(iso(run.scheduledAt));
        lastRun = run.scheduledAt;
      }
    }
    assert.deepEqual(started, ['2025-01-04T10:00:00.000Z', '2025-01-04T11:00:00.000Z', '2025-01-04T12:00:00.000Z']);
  });

  test('the spread offset moves the fire time', () => {
    const s = { cluster: 'db-0042.prod', type: 'full' as const, cron: '0 1 * * *', spreadMinutes: 60 };
    const offset = spreadOffsetMs(s.cluster, 60);
    assert.ok(offset > 0);
    const fire = Date.parse('2025-01-01T01:00:00Z') + offset;
    const last = at('2024-12-31T12:00:00Z');
    assert.deepEqual(dueRuns(s, last, new Date(fire - 1)), []);
    assert.deepEqual(dueRuns(s, last, new Date(fire)), [
      { cluster: s.cluster, type: 'full', scheduledAt: new Date(fire), dueSince: new Date(fire) },
    ]);
    assert.equal(nextFireTime(s, new Date(fire - 1)).getTime(), fire);
    assert.equal(nextFireTime(s, new Date(fire)).getTime(), fire + DAY);
  });
});

describe('concurrency gate', () => {
  const run = (cluster: string, repository: string, host: string): BackupSlot => ({ cluster, repository, host });

  test('per repository, per host and per cluster', () => {
    const gate = new ConcurrencyGate({ maxPerRepository: 2, maxPerHost: 1 });
    const running = [run('a', 'r1', 'h1'), run('b', 'r1', 'h2')];
    assert.equal(gate.check(run('c', 'r1', 'h3'), running), 'repository-limit');
    assert.equal(gate.check(run('c', 'r2', 'h1'), running), 'host-limit');
    assert.equal(gate.check(run('a', 'r9', 'h9'), running), 'cluster-busy');
    assert.equal(gate.check(run('c', 'r2', 'h3'), running), undefined);
    assert.equal(gate.admits(run('c', 'r2', 'h3'), []), true);
  });

  test('unlimited and invalid limits', () => {
    const gate = new ConcurrencyGate({
      maxPerRepository: Number.POSITIVE_INFINITY,
      maxPerHost: Number.POSITIVE_INFINITY,
    });
    const many = Array.from({ length: 500 }, (_, i) => run(`c${i}`, 'r', 'h'));
    assert.equal(gate.admits(run('new', 'r', 'h'), many), true);
    for (const bad of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => new ConcurrencyGate({ maxPerRepository: bad, maxPerHost: 1 }), /maxPerRepository/);
      assert.throws(() => new ConcurrencyGate({ maxPerRepository: 1, maxPerHost: bad }), /maxPerHost/);
    }
  });
});

describe('scheduler', () => {
  type Runs = Map<string, Date>;
  const lookup =
    (runs: Runs) =>
    (cluster: string, type: BackupKind): Date | undefined =>
      runs.get(`${cluster}/${type}`);
  const record = (runs: Runs, started: ReturnType<Scheduler['tick']>['start']): void => {
    for (const b of started) for (const r of b.record) runs.set(`${b.cluster}/${r.type}`, r.scheduledAt);
  };
  const cluster = (name: string, extra: Partial<ClusterSchedules> = {}): ClusterSchedules => ({
    cluster: name,
    repository: 'repo-a',
    host: `host-${name}`,
    full: '0 1 * * 0',
    diff: '0 1 * * 1-6',
    incr: '0 * * * *',
    ...extra,
  });

  test('full beats incr due at the same moment; the incr is recorded as covered', () => {
    const s = new Scheduler({ spreadMinutes: 0, limits: { maxPerRepository: 10, maxPerHost: 10 } });
    const runs: Runs = new Map([
      ['c1/full', at('2025-01-05T01:00:00Z')],
      ['c1/diff', at('2025-01-11T01:00:00Z')],
      ['c1/incr', at('2025-01-12T00:00:00Z')],
    ]);
    // Sunday 2025-01-12 01:00: the weekly full and the hourly incr are both due.
    const now = at('2025-01-12T01:00:05Z');
    const r = s.tick(now, { schedules: [cluster('c1')], lastRun: lookup(runs), running: [] });
    assert.deepEqual(
      r.start.map((b) => [b.cluster, b.type, iso(b.scheduledAt)]),
      [['c1', 'full', '2025-01-12T01:00:00.000Z']],
    );
    assert.deepEqual(
      r.start[0]!.record.map((x) => [x.type, iso(x.scheduledAt)]),
      [
        ['full', '2025-01-12T01:00:00.000Z'],
        ['incr', '2025-01-12T01:00:00.000Z'],
      ],
    );
    record(runs, r.start);
    // Next tick, the full running: nothing (the incr is covered, the cluster is busy anyway).
    const r2 = s.tick(at('2025-01-12T01:00:35Z'), {
      schedules: [cluster('c1')],
      lastRun: lookup(runs),
      running: r.start,
    });
    assert.deepEqual(r2, { start: [], waiting: [], errors: [] });
    // 02:00: the incr runs.
    const r3 = s.tick(at('2025-01-12T02:00:00Z'), { schedules: [cluster('c1')], lastRun: lookup(runs), running: [] });
    assert.deepEqual(
      r3.start.map((b) => b.type),
      ['incr'],
    );
  });

  test('diff beats incr on weekdays', () => {
    const s = new Scheduler({ spreadMinutes: 0, limits: { maxPerRepository: 10, maxPerHost: 10 } });
    const runs: Runs = new Map([
      ['c1/full', at('2025-01-12T01:00:00Z')],
      ['c1/diff', at('2025-01-11T01:00:00Z')],
      ['c1/incr', at('2025-01-13T00:00:00Z')],
    ]);
    const r = s.tick(at('2025-01-13T01:00:00Z'), { schedules: [cluster('c1')], lastRun: lookup(runs), running: [] });
    assert.deepEqual(
      r.start.map((b) => [b.type, b.record.map((x) => x.type)]),
      [['diff', ['diff', 'incr']]],
    );
  });

  test('a new cluster takes a full first, whatever else is due', () => {
    const s = new Scheduler({ spreadMinutes: 0, limits: { maxPerRepository: 10, maxPerHost: 10 } });
    const r = s.tick(at('2025-01-14T15:20:00Z'), {
      schedules: [cluster('fresh')],
      lastRun: lookup(new Map()),
      running: [],
    });
    assert.deepEqual(
      r.start.map((b) => [b.type, iso(b.scheduledAt), b.record.map((x) => x.type)]),
      [['full', '2025-01-12T01:00:00.000Z', ['full', 'diff', 'incr']]],
    );
  });

  test('gate limits: held-back backups stay due, longest owed first, and run once when slots free up', () => {
    const s = new Scheduler({ spreadMinutes: 0, limits: { maxPerRepository: 2, maxPerHost: 5 } });
    // Five clusters on one repository with an hourly incr; e and d have been owed a run longest.
    const schedules = ['a', 'b', 'c', 'd', 'e'].map((n) => cluster(n, { full: undefined, diff: undefined }));
    const runs: Runs = new Map([
      ['a/incr', at('2025-01-13T11:00:00Z')],
      ['b/incr', at('2025-01-13T11:00:00Z')],
      ['c/incr', at('2025-01-13T11:00:00Z')],
      ['d/incr', at('2025-01-13T10:00:00Z')],
      ['e/incr', at('2025-01-13T09:00:00Z')],
    ]);
    const r1 = s.tick(at('2025-01-13T12:00:10Z'), { schedules, lastRun: lookup(runs), running: [] });
    assert.deepEqual(
      r1.start.map((b) => [b.cluster, iso(b.scheduledAt), b.dueSince && iso(b.dueSince)]),
      [
        ['e', '2025-01-13T12:00:00.000Z', '2025-01-13T10:00:00.000Z'],
        ['d', '2025-01-13T12:00:00.000Z', '2025-01-13T11:00:00.000Z'],
      ],
    );
    assert.deepEqual(
      r1.waiting.map((w) => [w.backup.cluster, w.reason]),
      [
        ['a', 'repository-limit'],
        ['b', 'repository-limit'],
        ['c', 'repository-limit'],
      ],
    );
    record(runs, r1.start);

    // Next tick, e and d still running: nothing starts, the rest still waits.
    const r2 = s.tick(at('2025-01-13T12:00:40Z'), { schedules, lastRun: lookup(runs), running: r1.start });
    assert.deepEqual(r2.start, []);
    assert.deepEqual(
      r2.waiting.map((w) => w.backup.cluster),
      ['a', 'b', 'c'],
    );

    // e finished, d still runs: one slot.
    const r3 = s.tick(at('2025-01-13T12:05:00Z'), { schedules, lastRun: lookup(runs), running: [r1.start[1]!] });
    assert.deepEqual(
      r3.start.map((b) => [b.cluster, iso(b.scheduledAt)]),
      [['a', '2025-01-13T12:00:00.000Z']],
    );
    record(runs, r3.start);

    // Held back past the next fire time: b and c (owed since 12:00) go first and run once, for 13:00.
    const r4 = s.tick(at('2025-01-13T13:00:30Z'), { schedules, lastRun: lookup(runs), running: [] });
    assert.deepEqual(
      r4.start.map((b) => [b.cluster, iso(b.scheduledAt)]),
      [
        ['b', '2025-01-13T13:00:00.000Z'],
        ['c', '2025-01-13T13:00:00.000Z'],
      ],
    );
    assert.deepEqual(
      r4.waiting.map((w) => w.backup.cluster),
      ['a', 'd', 'e'],
    );
  });

  test('per-host limit across clusters sharing an agent host', () => {
    const s = new Scheduler({ spreadMinutes: 0, limits: { maxPerRepository: 100, maxPerHost: 1 } });
    const schedules = ['a', 'b', 'c'].map((n) => cluster(n, { host: 'shared', repository: `repo-${n}` }));
    const r = s.tick(at('2025-01-14T15:20:00Z'), { schedules, lastRun: lookup(new Map()), running: [] });
    assert.deepEqual(
      r.start.map((b) => b.cluster),
      ['a'],
    );
    assert.deepEqual(
      r.waiting.map((w) => w.reason),
      ['host-limit', 'host-limit'],
    );
  });

  test('a bad cron expression in one cluster does not hold up the others', () => {
    const s = new Scheduler({ spreadMinutes: 0, limits: { maxPerRepository: 10, maxPerHost: 10 } });
    const schedules = [cluster('bad', { incr: '0 * * *' }), cluster('good')];
    const r = s.tick(at('2025-01-14T15:20:00Z'), { schedules, lastRun: lookup(new Map()), running: [] });
    assert.deepEqual(
      r.start.map((b) => b.cluster),
      ['bad', 'good'],
    ); // 'bad' still runs its valid full
    assert.deepEqual(
      r.errors.map((e) => [e.cluster, e.type, e.error.errorName]),
      [['bad', 'incr', 'InvalidArgument']],
    );
    assert.throws(() => Scheduler.validate(schedules[0]!), /cluster 'bad' incr schedule: .*5 fields/);
    Scheduler.validate(schedules[1]!);
  });

  test('1,000 clusters, daily full at 01:00 over a 60-minute spread: each starts once, never in a burst', () => {
    const s = new Scheduler({ spreadMinutes: 60, limits: { maxPerRepository: 1000, maxPerHost: 1 } });
    const schedules = Array.from({ length: 1000 }, (_, i) => ({
      cluster: `db-${i}`,
      repository: `repo-${i % 4}`,
      host: `host-${i}`,
      full: '0 1 * * *',
    }));
    // Yesterday's runs (spread over 01:00 .. 02:00) are done.
    const runs: Runs = new Map(
      schedules.map((c) => [`${c.cluster}/full`, at('2025-01-13T12:00:00Z')] as [string, Date]),
    );
    const starts = new Map<string, number>();
    let burst = 0;
    for (let t = Date.parse('2025-01-14T00:50:00Z'); t <= Date.parse('2025-01-14T02:10:00Z'); t += 30_000) {
      const r = s.tick(new Date(t), { schedules, lastRun: lookup(runs), running: [] });
      burst = Math.max(burst, r.start.length);
      for (const b of r.start) {
        starts.set(b.cluster, (starts.get(b.cluster) ?? 0) + 1);
        assert.ok(
          b.scheduledAt.getTime() <= t && b.scheduledAt.getTime() > t - 30_000,
          'started on the first tick after its fire time',
        );
      }
      record(runs, r.start);
    }
    assert.equal(starts.size, 1000);
    assert.ok([...starts.values()].every((n) => n === 1));
    assert.ok(burst <= 20, `largest start burst in one 30 s tick: ${burst} (expected ~8)`);
  });

  test('a changed schedule or a recorded run is seen on the next tick', () => {
    const s = new Scheduler({ spreadMinutes: 30, limits: { maxPerRepository: 10, maxPerHost: 10 } });
    const runs: Runs = new Map([['c1/full', at('2025-01-13T12:00:00Z')]]);
    const daily = (cron: string): ClusterSchedules[] => [{ cluster: 'c1', repository: 'r', host: 'h', full: cron }];
    assert.deepEqual(
      s.tick(at('2025-01-14T00:30:00Z'), { schedules: daily('0 1 * * *'), lastRun: lookup(runs), running: [] }).start,
      [],
    );
    // Moved to midnight: due at once although the earlier tick found nothing due until 01:00+.
    const r = s.tick(at('2025-01-14T00:31:00Z'), { schedules: daily('0 0 * * *'), lastRun: lookup(runs), running: [] });
    assert.deepEqual(
      r.start.map((b) => b.type),
      ['full'],
    );
    // Another controller recorded a run: not due any more.
    runs.set('c1/full', at('2025-01-14T00:31:00Z'));
    assert.deepEqual(
      s.tick(at('2025-01-14T00:32:00Z'), { schedules: daily('0 0 * * *'), lastRun: lookup(runs), running: [] }).start,
      [],
    );
    // lastRun lost (catalog restored from an old copy): due again, once.
    runs.set('c1/full', at('2025-01-12T00:00:00Z'));
    assert.equal(
      s.tick(at('2025-01-14T00:33:00Z'), { schedules: daily('0 0 * * *'), lastRun: lookup(runs), running: [] }).start
        .length,
      1,
    );
  });

  test('next scheduled run for status views', () => {
    const s = new Scheduler({ spreadMinutes: 0, limits: { maxPerRepository: 1, maxPerHost: 1 } });
    assert.deepEqual(s.nextScheduled(cluster('c1'), at('2025-01-12T00:30:00Z')), {
      type: 'full',
      at: at('2025-01-12T01:00:00Z'),
    });
    assert.deepEqual(s.nextScheduled(cluster('c1'), at('2025-01-12T01:30:00Z')), {
      type: 'incr',
      at: at('2025-01-12T02:00:00Z'),
    });
    assert.equal(
      s.nextScheduled({ cluster: 'none', repository: 'r', host: 'h' }, at('2025-01-12T00:00:00Z')),
      undefined,
    );
  });
});
