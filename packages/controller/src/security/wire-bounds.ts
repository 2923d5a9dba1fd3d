/**
 * Bounds on everything the controller reads from the wire, admin calls and agent messages alike,
 * applied once to a decoded message before any handler sees it. protobuf gives a field a type,
 * not a sane value: a uint64 counter of 2^64-1 cannot survive the catalog's numbers (it came back
 * as a value no uint64 holds and ListClusters failed for the whole fleet), a 3 MiB "cluster name"
 * would be echoed into logs and errors, a NaN lag makes every comparison false.
 *
 * What happens to each kind of value:
 * - names (cluster, agent id, backup label): the rules of core's names.ts, refused when broken;
 * - strings: at most STRING_MAX characters (TEXT_MAX for free text), refused beyond, and the
 *   refusal names the field and the length, never the value;
 * - repeated fields and maps: at most LIST_MAX entries (BIG_LIST_MAX for result listings);
 * - 64-bit integers: clamped into JavaScript's safe integer range, since they end up as numbers;
 * - floating point: NaN becomes 0, infinities and huge values are clamped;
 * - timestamps: between 1970 and 9999 with valid nanos, refused otherwise (as TargetInvalid
 *   inside a recovery target, the error a user gets for any impossible target).
 * Messages nest at most MAX_DEPTH deep (pgfleet's messages are not recursive; this bounds work).
 */
import { ScalarType, type DescField, type DescMessage } from '@bufbuild/protobuf';
import { PgfleetError, parseAgentId, parseBackupLabel, parseClusterName, type ErrorName } from '@pgfleet/core';

export const STRING_MAX = 4096;
export const TEXT_MAX = 64 * 1024;
export const LIST_MAX = 10_000;
export const BIG_LIST_MAX = 200_000;
const MAX_DEPTH = 16;
// 9999-12-31T23:59:59Z: the last second a PostgreSQL timestamp or an ISO date can name.
const MAX_TIMESTAMP_SECONDS = 253_402_300_799n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MAX_DOUBLE = 2 ** 53;

/** Free-text fields (messages, log lines, commands, certificate requests) get TEXT_MAX. */
const TEXT_FIELDS = new Set([
  'message',
  'hint',
  'reasons',
  'problem',
  'archive_command',
  'postgres_log_problems',
  'postgres_log_tail',
  'csr_pem',
]);
/** Listings a healthy agent can make long: table counts, verify findings, WAL segments. */
const BIG_LISTS = new Set([
  'tables',
  'count_diffs',
  'problems',
  'segments',
  'backups',
  'timelines',
  'wal_newest',
  'amcheck_findings',
  'deleted_labels',
  'skipped_labels',
  'items',
]);
const CLUSTER_FIELDS = new Set(['cluster']);
const AGENT_ID_FIELDS = new Set(['agent_id']);
const LABEL_FIELDS = new Set(['label', 'backup_label', 'prior_label', 'deleted_labels', 'skipped_labels']);
/** Maps whose keys are cluster names (ApplyFleetRequest.clusters). */
const CLUSTER_KEYED_MAPS = new Set(['clusters']);

const RECOVERY_TARGET = 'pgfleet.v1.RecoveryTarget';
const TIMESTAMP = 'google.protobuf.Timestamp';

interface Walk {
  /** Field path for messages, e.g. "heartbeat.archiver.archived_count". */
  path: string;
  depth: number;
  /** Inside a RecoveryTarget: bad values are the user's impossible target. */
  inTarget: boolean;
}

function refuse(walk: Walk, name: ErrorName, what: string): never {
  throw new PgfleetError(walk.inTarget ? 'TargetInvalid' : name, `${walk.path}: ${what}`);
}

function checkString(field: DescField, value: string, walk: Walk): void {
  const max = TEXT_FIELDS.has(field.name) ? TEXT_MAX : STRING_MAX;
  if (value.length > max) refuse(walk, 'InputTooLarge', `${value.length} characters; at most ${max} are accepted`);
  if (value === '') return; // absent: each handler says whether the field is required
  if (CLUSTER_FIELDS.has(field.name)) parseClusterName(value, walk.path);
  else if (AGENT_ID_FIELDS.has(field.name)) parseAgentId(value, walk.path);
  else if (LABEL_FIELDS.has(field.name)) parseBackupLabel(value, walk.path);
}

/** A scalar with its bound applied: the value to keep (numbers may be clamped). */
function boundScalar(field: DescField, scalar: ScalarType, value: unknown, walk: Walk): unknown {
  switch (scalar) {
    case ScalarType.STRING:
      checkString(field, value as string, walk);
      return value;
    case ScalarType.BYTES:
      if ((value as Uint8Array).length > TEXT_MAX)
        refuse(walk, 'InputTooLarge', `${(value as Uint8Array).length} bytes; at most ${TEXT_MAX} are accepted`);
      return value;
    case ScalarType.INT64:
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
    case ScalarType.SINT64:
      return clampBigint(value);
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return clampDouble(value as number);
    default:
      return value; // 32-bit integers, bools and enums cannot leave their range
  }
}

/** 64-bit counters end up as JS numbers in the catalog: anything beyond 2^53-1 is clamped. */
function clampBigint(value: unknown): unknown {
  // With jstype = JS_STRING the value is a decimal string; pgfleet's protos use bigint.
  if (typeof value !== 'bigint') return value;
  if (value > MAX_SAFE) return MAX_SAFE;
  if (value < -MAX_SAFE) return -MAX_SAFE;
  return value;
}

function clampDouble(value: number): number {
  if (Number.isNaN(value)) return 0;
  return Math.max(-MAX_DOUBLE, Math.min(MAX_DOUBLE, value));
}

function checkTimestamp(msg: Record<string, unknown>, walk: Walk): void {
  const seconds = msg.seconds as bigint;
  const nanos = msg.nanos as number;
  if (seconds < 0n || seconds > MAX_TIMESTAMP_SECONDS || nanos < 0 || nanos > 999_999_999)
    refuse(walk, 'InputTooLarge', 'a time outside 1970-01-01 .. 9999-12-31 (or with invalid nanoseconds)');
}

function checkCount(field: DescField, count: number, walk: Walk): void {
  const max = BIG_LISTS.has(field.name) ? BIG_LIST_MAX : LIST_MAX;
  if (count > max) refuse(walk, 'InputTooLarge', `${count} entries; at most ${max} are accepted`);
}

function walkMessage(desc: DescMessage, msg: Record<string, unknown>, walk: Walk): void {
  if (walk.depth > MAX_DEPTH) refuse(walk, 'InputTooLarge', `messages nested deeper than ${MAX_DEPTH}`);
  if (desc.typeName === TIMESTAMP) return checkTimestamp(msg, walk);
  const inTarget = walk.inTarget || desc.typeName === RECOVERY_TARGET;
  for (const field of desc.fields) {
    const at: Walk = { path: walk.path ? `${walk.path}.${field.name}` : field.name, depth: walk.depth + 1, inTarget };
    // A oneof member lives in { case, value } under the oneof's name.
    const holder = field.oneof ? (msg[field.oneof.localName] as { case?: string; value?: unknown }) : undefined;
    if (holder && holder.case !== field.localName) continue;
    const value = holder ? holder.value : msg[field.localName];
    const bounded = walkField(field, value, at);
    if (bounded !== value) {
      if (holder) holder.value = bounded;
      else msg[field.localName] = bounded;
    }
  }
}

function walkField(field: DescField, value: unknown, walk: Walk): unknown {
  // proto3 `optional` scalars and unset messages are undefined: nothing to bound.
  if (value === undefined) return value;
  switch (field.fieldKind) {
    case 'scalar':
      return boundScalar(field, field.scalar, value, walk);
    case 'enum':
      return value;
    case 'message':
      walkMessage(field.message, value as Record<string, unknown>, walk);
      return value;
    case 'list': {
      const list = value as unknown[];
      checkCount(field, list.length, walk);
      for (let i = 0; i < list.length; i++) {
        const item: Walk = { ...walk, path: `${walk.path}[${i}]` };
        if (field.listKind === 'message') walkMessage(field.message, list[i] as Record<string, unknown>, item);
        else if (field.listKind === 'scalar') list[i] = boundScalar(field, field.scalar, list[i], item);
      }
      return value;
    }
    case 'map': {
      const map = value as Record<string, unknown>;
      const keys = Object.keys(map);
      checkCount(field, keys.length, walk);
      for (const key of keys) {
        const entry: Walk = { ...walk, path: `${walk.path}[${key.length > 64 ? `${key.slice(0, 64)}...` : key}]` };
        if (key.length > STRING_MAX) refuse(entry, 'InputTooLarge', `a key of ${key.length} characters`);
        if (CLUSTER_KEYED_MAPS.has(field.name)) parseClusterName(key, `${walk.path} key`);
        if (field.mapKind === 'message') walkMessage(field.message, map[key] as Record<string, unknown>, entry);
        else if (field.mapKind === 'scalar') map[key] = boundScalar(field, field.scalar, map[key], entry);
      }
      return value;
    }
  }
}

/**
 * Checks a decoded message against the bounds above, clamping numbers in place; throws the first
 * violation (InputTooLarge, a name error, or TargetInvalid inside a recovery target). `where`
 * prefixes field paths in messages (e.g. the method name).
 */
export function checkWireMessage(desc: DescMessage, msg: object, where = ''): void {
  walkMessage(desc, msg as Record<string, unknown>, { path: where, depth: 0, inTarget: false });
}
