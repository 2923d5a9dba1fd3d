/**
 * The agent's pg_stat_archiver figures as the catalog keeps them (ArchiverStats in protobuf's
 * canonical JSON, written by archiverJson on each heartbeat) back as the message, without
 * protobuf's reflective JSON parser: `pgfleet status` reads every cluster's figures on every call,
 * and fromJson was a fifth of a status row's CPU (bench/status-parts.mjs, 10,000 clusters).
 *
 * Only the form toJson writes is read here: the six JSON field names, 64-bit counts as decimal
 * strings, times as RFC 3339 in UTC ('Z'). Anything else (proto field names, numbers for counts,
 * offsets, nulls, unknown keys) returns undefined and the caller asks fromJson, so the answer is
 * always fromJson's (archiver-json.test.ts compares the two).
 */
import { protoInt64 } from '@bufbuild/protobuf';
import type { Timestamp } from '@bufbuild/protobuf/wkt';
import type { ArchiverStats } from '@pgfleet/proto';

const KNOWN_KEYS = new Set([
  'archivedCount',
  'lastArchivedWal',
  'lastArchivedTime',
  'failedCount',
  'lastFailedWal',
  'lastFailedTime',
]);

/** protobuf-es's Timestamp JSON pattern, in UTC only (what toJson writes). */
const RFC3339_UTC = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?Z$/;
/** 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z, the range fromJson accepts. */
const MIN_MS = -62135596800000;
const MAX_MS = 253402300799000;
const UINT64 = /^[0-9]{1,20}$/;
const UINT64_MAX = 2n ** 64n - 1n;

/** The message fromJson(ArchiverStatsSchema, json) would return, or undefined when json is not in canonical form. */
export function archiverStatsFromCanonicalJson(json: object): ArchiverStats | undefined {
  for (const key in json) if (!KNOWN_KEYS.has(key)) return undefined;
  const j = json as Record<string, unknown>;
  const archivedCount = count(j.archivedCount);
  const failedCount = count(j.failedCount);
  const lastArchivedTime = time(j.lastArchivedTime);
  const lastFailedTime = time(j.lastFailedTime);
  const lastArchivedWal = j.lastArchivedWal === undefined ? '' : j.lastArchivedWal;
  const lastFailedWal = j.lastFailedWal === undefined ? '' : j.lastFailedWal;
  if (
    archivedCount === null ||
    failedCount === null ||
    lastArchivedTime === null ||
    lastFailedTime === null ||
    typeof lastArchivedWal !== 'string' ||
    typeof lastFailedWal !== 'string'
  )
    return undefined;
  // Literals, as fromJson's messages are plain objects: create() would copy them field by field.
  return {
    $typeName: 'pgfleet.v1.ArchiverStats',
    archivedCount,
    lastArchivedWal,
    ...(lastArchivedTime ? { lastArchivedTime } : {}),
    failedCount,
    lastFailedWal,
    ...(lastFailedTime ? { lastFailedTime } : {}),
  };
}

/** A uint64 field: absent is 0; null: not canonical. */
function count(v: unknown): bigint | null {
  if (v === undefined) return protoInt64.zero;
  if (typeof v !== 'string' || !UINT64.test(v)) return null;
  const n = BigInt(v);
  return n <= UINT64_MAX ? n : null;
}

/** A Timestamp field: absent is undefined; null: not canonical (or out of range: fromJson says why). */
function time(v: unknown): Timestamp | undefined | null {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') return null;
  const m = RFC3339_UTC.exec(v);
  if (!m) return null;
  // What fromJson does: the string without its fraction through Date.parse, the fraction as nanos.
  const ms = Date.parse(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z`);
  if (Number.isNaN(ms) || ms < MIN_MS || ms > MAX_MS) return null;
  const frac = m[7];
  return {
    $typeName: 'google.protobuf.Timestamp',
    seconds: protoInt64.parse(ms / 1000),
    nanos: frac ? Number(frac.padEnd(9, '0')) : 0,
  };
}
