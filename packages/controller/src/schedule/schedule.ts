/**
 * Backup schedules: when each cluster's full, diff and incr backups are due, spread over the fleet
 * and limited per repository and per agent host. Pure logic over plain values; the controller
 * loads schedules and last runs from the catalog, calls `Scheduler.tick` and records what it
 * started (none of pgBackRest, WAL-G or Barman schedules anything: pgbackrest#77).
 *
 * - Cron expressions have the 5 classic fields (minute hour day-of-month month day-of-week) and are
 *   read in UTC, so there are no DST gaps or doubled hours. When both day fields are restricted a
 *   day matching either fires (Vixie cron). Parsing is done by cron-parser.
 * - Spreading: each cluster gets a fixed offset in [0, spreadMinutes) from a hash of its name,
 *   added to every fire time, so a fleet scheduled at 01:00 starts over the window instead of at
 *   one instant. The offset depends on nothing but the name: it survives restarts and fleet growth.
 * - Catch-up: after downtime a schedule that missed any number of fire times runs once, for the
 *   latest one. `lastRun` is the scheduled time (or the start time) of the last run started.
 * - Precedence: a cluster runs one backup at a time; when several types are due, full beats diff
 *   beats incr, and the lesser due runs are recorded as covered by it rather than run after it.
 */
import { createHash } from 'node:crypto';
import { CronExpressionParser, type CronExpression } from 'cron-parser';
import { PgfleetError } from '@pgfleet/core';
import type { BackupKind, ScheduleKind } from '@pgfleet/catalog';

/** Highest precedence first. */
export const BACKUP_PRECEDENCE: readonly BackupKind[] = ['full', 'diff', 'incr'];

/** A validated 5-field cron expression evaluated in UTC. */
export class CronSchedule {
  /**
   * Parsed expressions by text. Status computes the next run of every cluster's schedules and the
   * scheduler evaluates every cluster each round: parsing each time (cron-parser builds luxon
   * dates on every parse) cost ~1-10 ms a cluster, seconds for a fleet (bench/fleet-scale.mjs).
   * A fleet has a few distinct expressions; the bound only guards against an unbounded input.
   */
  private static readonly parsed = new Map<string, CronSchedule>();

  private constructor(
    readonly expression: string,
    private readonly cron: CronExpression,
  ) {}

  /** Throws InvalidArgument with what is wrong (field count, a value out of range, ...). */
  static parse(expression: string): CronSchedule {
    const text = expression.trim();
    const known = CronSchedule.parsed.get(text);
    if (known) return known;
    const fields = text.split(/\s+/);
    if (fields.length !== 5 || text === '') {
      throw new PgfleetError(
        'InvalidArgument',
        `cron expression '${expression}' must have 5 fields (minute hour day-of-month month day-of-week), found ${text === '' ? 0 : fields.length}`,
      );
    }
    // cron-parser's H (hash) fields pick a random value unless seeded: fire times would change on
    // every parse and catch-up could not tell a run was done. Spreading is done by spreadMinutes.
    if (fields.some((f) => /(^|,)H/.test(f))) {
      throw new PgfleetError(
        'InvalidArgument',
        `cron expression '${expression}' uses H; use a fixed value, the fleet spreading (spreadMinutes) staggers clusters`,
      );
    }
    let cron: CronExpression;
    try {
      cron = CronExpressionParser.parse(text, { tz: 'UTC', currentDate: new Date(0) });
      cron.next();
    } catch (err) {
      throw new PgfleetError(
        'InvalidArgument',
        `cron expression '${expression}' is not valid: ${(err as Error).message}`,
        { cause: err },
      );
    }
    const schedule = new CronSchedule(text, cron);
    if (CronSchedule.parsed.size >= 1000) CronSchedule.parsed.clear();
    CronSchedule.parsed.set(text, schedule);
    return schedule;
  }

  /**
   * Runs of consecutive fire times (ms), newest run last. `pgfleet status` asks every cluster's
   * next and latest fire times and the scheduler does the same each round: through cron-parser
   * each answer costs a reset and a luxon walk (about a millisecond, 58 s of status for 5,000
   * clusters in bench/fleet-scale.mjs). The clusters of a fleet share a few expressions and ask
   * about instants close together (now minus their spread offset, their last run), so answers
   * come from a few runs of fire times computed once. A run holds consecutive fire times (each
   * the cron-parser `next` of the one before), so for any instant t in [first, last) the latest
   * fire time <= t and the first > t are both in the run: the answers are exactly cron-parser's.
   */
  private readonly runs: number[][] = [];

  // The parsed expression is an iterator: each call resets it to its own start (calls are synchronous).

  /** The first fire time strictly after `after`. */
  next(after: Date): Date {
    const t = after.getTime();
    const run = this.runAround(t);
    if (!run) return this.nextUncached(after);
    return new Date(run[firstAbove(run, t)]!);
  }

  /** The last fire time at or before `atOrBefore`. */
  latest(atOrBefore: Date): Date {
    const t = atOrBefore.getTime();
    const run = this.runAround(t);
    if (!run) return this.latestUncached(atOrBefore);
    return new Date(run[firstAbove(run, t) - 1]!);
  }

  /** cron-parser's own answer for `next` (what the cache must equal; tests compare). */
  nextUncached(after: Date): Date {
    this.cron.reset(after);
    return this.cron.next().toDate();
  }

  /** cron-parser's own answer for `latest`. */
  latestUncached(atOrBefore: Date): Date {
    // cron-parser's prev() is strictly before; fire times are whole minutes, so 1 ms later is enough.
    this.cron.reset(new Date(atOrBefore.getTime() + 1));
    return this.cron.prev().toDate();
  }

  /**
   * A run whose [first, last) holds t, computing one (from the latest fire time <= t, RUN_LENGTH
   * fire times) when none does. Undefined when cron-parser has no fire time before t (the caller
   * then asks cron-parser, which says so its own way).
   */
  private runAround(t: number): number[] | undefined {
    for (const run of this.runs) {
      if (run[0]! <= t && t < run[run.length - 1]!) return run;
    }
    let start: number;
    try {
      start = this.latestUncached(new Date(t)).getTime();
    } catch {
      return undefined;
    }
    const run = [start];
    this.cron.reset(new Date(start));
    const full = (): boolean => run.length >= RUN_LENGTH || run[run.length - 1]! - start >= RUN_SPAN_MS;
    while (!full() || run[run.length - 1]! <= t) {
      try {
        run.push(this.cron.next().toDate().getTime());
      } catch {
        return undefined; // no later fire time: leave the edge cases to cron-parser
      }
    }
    // A few runs per expression cover what a fleet asks (now, last runs, catch-up); the oldest go.
    if (this.runs.length >= MAX_RUNS) this.runs.shift();
    this.runs.push(run);
    return run;
  }
}

/**
 * A cached run ends at 256 fire times (a minute-wise schedule over a 4 h spreading window) or
 * once it spans 8 days (a daily or weekly one), whichever comes first: a rare expression (Feb 29,
 * once a year) costs cron-parser milliseconds per fire time, so its run stays two fire times long.
 */
const RUN_LENGTH = 256;
const RUN_SPAN_MS = 8 * 24 * 3_600_000;
/** Cached runs per expression. */
const MAX_RUNS = 8;

/** Index of the first element of the ascending `run` greater than t (run.length when none). */
function firstAbove(run: readonly number[], t: number): number {
  let lo = 0;
  let hi = run.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (run[mid]! <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The first fire time of a 5-field UTC cron expression strictly after `after`. */
export function nextRun(cron: string, after: Date): Date {
  return CronSchedule.parse(cron).next(after);
}

/**
 * The cluster's fixed offset in ms within [0, spreadMinutes) (whole seconds): the first 48 bits of
 * SHA-256 of the name, scaled. Deterministic and roughly uniform over names.
 */
export function spreadOffsetMs(cluster: string, spreadMinutes: number): number {
  checkSpread(spreadMinutes);
  const windowSeconds = Math.floor(spreadMinutes * 60);
  if (windowSeconds === 0) return 0;
  let u = unitOfName.get(cluster);
  if (u === undefined) {
    u = createHash('sha256').update(cluster, 'utf8').digest().readUIntBE(0, 6) / 2 ** 48;
    // Status and every scheduler round ask each cluster's offset several times: hash a name once.
    if (unitOfName.size >= 100_000) unitOfName.clear();
    unitOfName.set(cluster, u);
  }
  return Math.floor(u * windowSeconds) * 1000;
}

/** A cluster name's hash as a fraction in [0, 1) (spreadOffsetMs). */
const unitOfName = new Map<string, number>();

function checkSpread(spreadMinutes: number): void {
  if (!Number.isFinite(spreadMinutes) || spreadMinutes < 0) {
    throw new PgfleetError(
      'InvalidArgument',
      `spreadMinutes must be a number of minutes >= 0, got ${String(spreadMinutes)}`,
    );
  }
}

/** One backup type (or the restore drill) of one cluster on a schedule. */
export interface BackupSchedule<K extends ScheduleKind = BackupKind> {
  cluster: string;
  type: K;
  /** 5-field cron expression, UTC. */
  cron: string;
  /** Width of the fleet spreading window; 0 or absent = fire exactly at the cron times. */
  spreadMinutes?: number;
}

export interface DueRun<K extends ScheduleKind = BackupKind> {
  cluster: string;
  type: K;
  /** The fire time (cron time + the cluster's offset) this run stands for. */
  scheduledAt: Date;
  /**
   * The first fire time after lastRun: how long the run has been owed (earlier than scheduledAt
   * when fire times were missed and folded into this one run). Undefined when it never ran.
   */
  dueSince: Date | undefined;
}

/**
 * Where an instant stands among one schedule's fire times (its cluster's offset included): the
 * latest fire time at or before it and the first after it.
 */
export interface FireWindow {
  latest: number;
  next: number;
}

/**
 * The fire window of each cluster's schedule of each kind around the last instant asked. For any
 * t in [latest, next) the latest fire time at or before t is `latest` and the first after it is
 * `next`: the window answers every question until `next` passes (or the cron expression or the
 * spreading window of the schedule changes, which the entry is checked against). `pgfleet status`
 * and every scheduler round ask each cluster's schedules about `now`: from the window that is two
 * comparisons instead of a cron lookup, a spread offset hash lookup and two Dates, about once per
 * fire time per schedule. Only a cache: its answers are the cron-parser's (schedule.test.ts).
 */
export class FireWindows {
  private readonly byCluster = new Map<string, Map<ScheduleKind, FireWindow & { cron: string; spread: number }>>();
  /** Windows computed (not answered from an entry), for tests and benchmarks. */
  computed = 0;

  constructor(private readonly maxClusters = 200_000) {}

  /** The window around `now`. Throws what CronSchedule.parse throws, and when no fire time is at or before now. */
  around(schedule: BackupSchedule<ScheduleKind>, now: number): FireWindow {
    const spread = schedule.spreadMinutes ?? 0;
    let kinds = this.byCluster.get(schedule.cluster);
    const known = kinds?.get(schedule.type);
    if (known && known.cron === schedule.cron && known.spread === spread && known.latest <= now && now < known.next)
      return known;
    const cron = CronSchedule.parse(schedule.cron);
    const offset = spreadOffsetMs(schedule.cluster, spread);
    const latest = cron.latest(new Date(now - offset)).getTime() + offset;
    const next = cron.next(new Date(now - offset)).getTime() + offset;
    this.computed++;
    if (!kinds) {
      if (this.byCluster.size >= this.maxClusters) this.byCluster.clear();
      kinds = new Map();
      this.byCluster.set(schedule.cluster, kinds);
    }
    const entry = { latest, next, cron: schedule.cron, spread };
    kinds.set(schedule.type, entry);
    return entry;
  }

  /** The entry holding `at` for the schedule, without computing one. */
  peek(schedule: BackupSchedule<ScheduleKind>, at: number): FireWindow | undefined {
    const known = this.byCluster.get(schedule.cluster)?.get(schedule.type);
    return known &&
      known.cron === schedule.cron &&
      known.spread === (schedule.spreadMinutes ?? 0) &&
      known.latest <= at &&
      at < known.next
      ? known
      : undefined;
  }
}

/** The windows status and the scheduler share (both ask about now, the same windows). */
export const fireWindows = new FireWindows();

/** The next fire time of the schedule strictly after `after`, offset included. */
export function nextFireTime(schedule: BackupSchedule<ScheduleKind>, after: Date): Date {
  const known = fireWindows.peek(schedule, after.getTime());
  if (known) return new Date(known.next);
  const offset = spreadOffsetMs(schedule.cluster, schedule.spreadMinutes ?? 0);
  return new Date(
    CronSchedule.parse(schedule.cron)
      .next(new Date(after.getTime() - offset))
      .getTime() + offset,
  );
}

/**
 * The run due at `now`, if any: the latest fire time at or before now that is after lastRun.
 * At most one run, however many fire times passed (catch-up after downtime runs once). A schedule
 * that never ran (lastRun undefined) is due for its latest fire time: a cluster without a backup
 * of the type should not wait for the next one.
 */
export function dueRuns<K extends ScheduleKind>(
  schedule: BackupSchedule<K>,
  lastRun: Date | undefined,
  now: Date,
): [] | [DueRun<K>] {
  const { latest } = fireWindows.around(schedule, now.getTime());
  if (lastRun !== undefined && latest <= lastRun.getTime()) return [];
  const scheduledAt = new Date(latest);
  // Owed since the first fire time after lastRun: asked only of a due run, so not cached.
  const offset = spreadOffsetMs(schedule.cluster, schedule.spreadMinutes ?? 0);
  const dueSince =
    lastRun === undefined
      ? undefined
      : new Date(
          CronSchedule.parse(schedule.cron)
            .next(new Date(lastRun.getTime() - offset))
            .getTime() + offset,
        );
  return [{ cluster: schedule.cluster, type: schedule.type, scheduledAt, dueSince }];
}

// ---------------------------------------------------------------------------------------------
// Concurrency limits.
// ---------------------------------------------------------------------------------------------

/** Where a backup job runs, for the limits. */
export interface BackupSlot {
  cluster: string;
  /** Repository the backup writes to. */
  repository: string;
  /** Host of the agent that runs it. */
  host: string;
}

export interface ConcurrencyLimits {
  maxPerRepository: number;
  maxPerHost: number;
}

/** Why a due backup waits: its cluster already runs one, or a limit is reached. */
export type GateRefusal = 'cluster-busy' | 'repository-limit' | 'host-limit';

/**
 * Admits a backup only while fewer than maxPerRepository run on its repository and fewer than
 * maxPerHost on its agent host, and never a second one for the same cluster (a diff/incr is based
 * on the backup before it, and two backups of one cluster compete for the same disks). Pure: the
 * caller passes the running set.
 */
export class ConcurrencyGate {
  readonly limits: Readonly<ConcurrencyLimits>;

  constructor(limits: ConcurrencyLimits) {
    for (const key of ['maxPerRepository', 'maxPerHost'] as const) {
      const v = limits[key];
      if (!(v === Number.POSITIVE_INFINITY || (Number.isInteger(v) && v >= 1))) {
        throw new PgfleetError('InvalidArgument', `${key} must be a whole number >= 1, got ${String(v)}`);
      }
    }
    this.limits = { ...limits };
  }

  /** Undefined when the job may start now, else why it waits. */
  check(job: BackupSlot, running: readonly BackupSlot[]): GateRefusal | undefined {
    let repo = 0;
    let host = 0;
    for (const r of running) {
      if (r.cluster === job.cluster) return 'cluster-busy';
      if (r.repository === job.repository) repo++;
      if (r.host === job.host) host++;
    }
    if (repo >= this.limits.maxPerRepository) return 'repository-limit';
    if (host >= this.limits.maxPerHost) return 'host-limit';
    return undefined;
  }

  admits(job: BackupSlot, running: readonly BackupSlot[]): boolean {
    return this.check(job, running) === undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// The scheduler.
// ---------------------------------------------------------------------------------------------

/** A cluster's schedules; an absent type is not scheduled. */
export interface ClusterSchedules extends BackupSlot {
  full?: string;
  diff?: string;
  incr?: string;
  /** The cluster's spreading window (its policy); absent = the scheduler's. */
  spreadMinutes?: number;
}

export interface PlannedBackup extends BackupSlot {
  type: BackupKind;
  scheduledAt: Date;
  /** The earliest dueSince of the cluster's due runs; undefined when one of them never ran. */
  dueSince: Date | undefined;
  /**
   * lastRun values to record once the backup is started: its own, and those of lesser types that
   * were due too and that this backup covers (a full makes a due incr pointless).
   */
  record: Array<{ type: BackupKind; scheduledAt: Date }>;
}

export interface TickInput {
  schedules: readonly ClusterSchedules[];
  /** Scheduled (or start) time of the last started run per cluster and type. */
  lastRun: (cluster: string, type: BackupKind) => Date | undefined;
  /** Backups running now (dispatched or running jobs). */
  running: readonly BackupSlot[];
}

export interface TickResult {
  /** Backups to start now, longest owed first. */
  start: PlannedBackup[];
  /** Due backups held back by the gate; they stay due and are offered again on the next tick. */
  waiting: Array<{ backup: PlannedBackup; reason: GateRefusal }>;
  /** Schedules that could not be evaluated (bad cron); the other clusters are not held up. */
  errors: Array<{ cluster: string; type: BackupKind; error: PgfleetError }>;
}

export interface SchedulerOptions {
  /** Width of the fleet spreading window in minutes (0 = no spreading). */
  spreadMinutes: number;
  limits: ConcurrencyLimits;
}

export class Scheduler {
  readonly gate: ConcurrencyGate;
  readonly spreadMinutes: number;
  /**
   * Per cluster and type found not due: the next fire time, valid while the cron expression and
   * lastRun stay the same. Evaluating a cron expression costs ~0.1 ms, so without this a tick over
   * 1,000 clusters would hold the event loop for a third of a second; with it a schedule is
   * evaluated about once per fire time. Only a cache: results are the same without it.
   */
  private readonly quiet = new Map<
    string,
    { cron: string; spread: number; lastRun: number | undefined; until: number }
  >();

  constructor(options: SchedulerOptions) {
    checkSpread(options.spreadMinutes);
    this.spreadMinutes = options.spreadMinutes;
    this.gate = new ConcurrencyGate(options.limits);
  }

  /** Throws InvalidArgument naming the cluster and type of the first bad cron expression. */
  static validate(schedules: ClusterSchedules): void {
    for (const type of BACKUP_PRECEDENCE) {
      const cron = schedules[type];
      if (cron === undefined) continue;
      try {
        CronSchedule.parse(cron);
      } catch (err) {
        throw new PgfleetError(
          'InvalidArgument',
          `cluster '${schedules.cluster}' ${type} schedule: ${(err as Error).message}`,
          { cause: err },
        );
      }
    }
  }

  /** The backups to start at `now`. Pure apart from the clock passed in. */
  tick(now: Date, input: TickInput): TickResult {
    const candidates: PlannedBackup[] = [];
    const errors: TickResult['errors'] = [];
    const seen = new Set<string>();
    for (const s of input.schedules) {
      const due: DueRun[] = [];
      for (const type of BACKUP_PRECEDENCE) {
        const cron = s[type];
        if (cron === undefined) continue;
        const key = `${s.cluster}\u0000${type}`;
        seen.add(key);
        const lastRun = input.lastRun(s.cluster, type)?.getTime();
        const q = this.quiet.get(key);
        // No fire time in (lastRun, earlier tick] and none before `until`: none in (lastRun, now].
        const spread = s.spreadMinutes ?? this.spreadMinutes;
        if (q && q.cron === cron && q.spread === spread && q.lastRun === lastRun && now.getTime() < q.until) continue;
        try {
          const schedule: BackupSchedule = {
            cluster: s.cluster,
            type,
            cron,
            spreadMinutes: s.spreadMinutes ?? this.spreadMinutes,
          };
          const runs = dueRuns(schedule, lastRun === undefined ? undefined : new Date(lastRun), now);
          if (runs.length === 0)
            this.quiet.set(key, { cron, spread, lastRun, until: nextFireTime(schedule, now).getTime() });
          else this.quiet.delete(key);
          due.push(...runs);
        } catch (err) {
          errors.push({
            cluster: s.cluster,
            type,
            error: err instanceof PgfleetError ? err : new PgfleetError('Internal', String(err), { cause: err }),
          });
        }
      }
      const [first] = due;
      if (!first) continue;
      candidates.push({
        cluster: s.cluster,
        repository: s.repository,
        host: s.host,
        type: first.type,
        scheduledAt: first.scheduledAt,
        dueSince: due.some((d) => d.dueSince === undefined)
          ? undefined
          : new Date(Math.min(...due.map((d) => d.dueSince!.getTime()))),
        record: due.map((d) => ({ type: d.type, scheduledAt: d.scheduledAt })),
      });
    }
    for (const key of this.quiet.keys()) if (!seen.has(key)) this.quiet.delete(key);
    // Longest owed first, so that a cluster held back by the gate is not overtaken tick after tick:
    // never run, then by dueSince, then by scheduled time; names break ties.
    const owed = (p: PlannedBackup): number => p.dueSince?.getTime() ?? Number.NEGATIVE_INFINITY;
    candidates.sort(
      (a, b) =>
        owed(a) - owed(b) ||
        a.scheduledAt.getTime() - b.scheduledAt.getTime() ||
        (a.cluster < b.cluster ? -1 : a.cluster > b.cluster ? 1 : 0),
    );

    const running: BackupSlot[] = [...input.running];
    const start: PlannedBackup[] = [];
    const waiting: TickResult['waiting'] = [];
    for (const c of candidates) {
      const reason = this.gate.check(c, running);
      if (reason) {
        waiting.push({ backup: c, reason });
        continue;
      }
      start.push(c);
      running.push(c);
    }
    return { start, waiting, errors };
  }

  /** The next fire time after `now` over the cluster's types (full wins a tie), for status views. */
  nextScheduled(schedules: ClusterSchedules, now: Date): { type: BackupKind; at: Date } | undefined {
    let best: { type: BackupKind; at: Date } | undefined;
    for (const type of BACKUP_PRECEDENCE) {
      const cron = schedules[type];
      if (cron === undefined) continue;
      const at = nextFireTime(
        { cluster: schedules.cluster, type, cron, spreadMinutes: schedules.spreadMinutes ?? this.spreadMinutes },
        now,
      );
      if (!best || at.getTime() < best.at.getTime()) best = { type, at };
    }
    return best;
  }
}
