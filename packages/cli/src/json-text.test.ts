import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  create,
  ScalarType,
  toJson,
  type DescEnum,
  type DescField,
  type DescMessage,
  type MessageShape,
} from '@bufbuild/protobuf';
import {
  AdminService,
  ApplyFleetRequestSchema,
  BackupInfoSchema,
  BackupType,
  ClusterInfoSchema,
  JobInfoSchema,
  JobSchema,
  JobState,
} from '@pgfleet/proto';
import { JsonText, jsonList, jsonText, writeJson } from './json-text.js';

/**
 * The CLI's JSON as it was made before json-text.ts, kept as the reference the one-pass writer
 * must match byte for byte: protobuf-es's toJson with every field, then a walk rewriting enums
 * (prefix off, lower case) and 64-bit integers (numbers while exact), then JSON.stringify.
 */
function referenceText<D extends DescMessage>(schema: D, msg: MessageShape<D> | readonly MessageShape<D>[]): string {
  const one = (m: MessageShape<D>) => readable(schema, toJson(schema, m, { alwaysEmitImplicit: true }));
  return JSON.stringify(Array.isArray(msg) ? msg.map(one) : one(msg as MessageShape<D>), null, 2);
}
const INT64 = new Set([
  ScalarType.INT64,
  ScalarType.UINT64,
  ScalarType.SINT64,
  ScalarType.FIXED64,
  ScalarType.SFIXED64,
]);
function enumText(e: DescEnum, json: unknown): unknown {
  if (typeof json !== 'string') return json;
  const name = json.toLowerCase();
  const p = e.sharedPrefix?.toLowerCase();
  return p && name.startsWith(p) && name.length > p.length ? name.slice(p.length) : name;
}
function int64Number(json: unknown): unknown {
  if (typeof json !== 'string' || !/^-?\d+$/.test(json)) return json;
  const n = Number(json);
  return Number.isSafeInteger(n) ? n : json;
}
const scalar = (t: ScalarType, json: unknown): unknown => (INT64.has(t) ? int64Number(json) : json);
function readable(desc: DescMessage, json: unknown): unknown {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) return json;
  const obj = json as Record<string, unknown>;
  for (const f of desc.fields) if (f.jsonName in obj) obj[f.jsonName] = readableField(f, obj[f.jsonName]);
  return obj;
}
function readableField(f: DescField, v: unknown): unknown {
  const item = (kind: 'scalar' | 'enum' | 'message', x: unknown): unknown =>
    kind === 'scalar' ? scalar(f.scalar!, x) : kind === 'enum' ? enumText(f.enum!, x) : readable(f.message!, x);
  switch (f.fieldKind) {
    case 'scalar':
    case 'enum':
    case 'message':
      return item(f.fieldKind, v);
    case 'list':
      return (v as unknown[]).map((x) => item(f.listKind, x));
    case 'map': {
      const m = v as Record<string, unknown>;
      for (const k of Object.keys(m)) m[k] = item(f.mapKind, m[k]);
      return m;
    }
  }
}

/**
 * Every field of a message type set, recursively (two items per list and map, the first case of
 * each oneof), with values that vary by field number, as an init object for create().
 */
function full(desc: DescMessage, depth = 0, seed = 1): Record<string, unknown> {
  const init: Record<string, unknown> = {};
  if (desc.typeName === 'google.protobuf.Timestamp')
    return { seconds: 1_780_000_000n + BigInt(seed), nanos: [0, 120_000_000, 120_500_000, 7][seed % 4] };
  for (const f of desc.fields) {
    const n = f.number + seed;
    const value = (kind: 'scalar' | 'enum' | 'message', k = 0): unknown =>
      kind === 'scalar'
        ? scalarValue(f.scalar!, n + k)
        : kind === 'enum'
          ? f.enum!.values[(n + k) % f.enum!.values.length]!.number
          : depth < 4
            ? create(f.message!, full(f.message!, depth + 1, n + k) as never)
            : undefined;
    let v: unknown;
    if (f.fieldKind === 'list') v = [value(f.listKind), value(f.listKind, 1)].filter((x) => x !== undefined);
    else if (f.fieldKind === 'map') v = { [`k${n}`]: value(f.mapKind), '7': value(f.mapKind, 1) };
    else v = value(f.fieldKind);
    if (v === undefined) continue;
    if (f.oneof) {
      if (f.oneof.fields[0] === f) init[f.oneof.localName] = { case: f.localName, value: v };
    } else init[f.localName] = v;
  }
  return init;
}
function scalarValue(t: ScalarType, n: number): unknown {
  switch (t) {
    case ScalarType.STRING:
      return `v${n} "quoted" \\ \n tab\t é ☃`;
    case ScalarType.BOOL:
      return n % 2 === 0;
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return n % 3 === 0 ? n + 0.25 : n % 3 === 1 ? 1e21 * n : -n / 7;
    case ScalarType.BYTES:
      return new Uint8Array([n, 255, 0, n & 7]);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return n % 2 === 0 ? -BigInt(n) * 1000n : 2n ** 62n + BigInt(n);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return n % 2 === 0 ? BigInt(n) * 1024n ** 3n : 2n ** 53n + BigInt(n);
    default:
      return n;
  }
}

/** Every message type the admin API answers with, and those inside them. */
function reachable(): DescMessage[] {
  const seen = new Map<string, DescMessage>();
  const visit = (d: DescMessage): void => {
    if (seen.has(d.typeName)) return;
    seen.set(d.typeName, d);
    for (const f of d.fields) if (f.message) visit(f.message);
  };
  for (const m of AdminService.methods) visit(m.output);
  visit(JobSchema);
  visit(ApplyFleetRequestSchema);
  return [...seen.values()];
}

test('--output json: one-pass text is the old toJson-then-rewrite output, byte for byte, for every admin message', () => {
  let compared = 0;
  for (const desc of reachable()) {
    for (const seed of [1, 2]) {
      const msg = create(desc, full(desc, 0, seed) as never);
      assert.equal(jsonText(desc, msg), referenceText(desc, msg), `${desc.typeName} (seed ${seed})`);
      compared++;
    }
    // Nothing set: zero values of implicit fields, no absent message or optional field.
    const empty = create(desc);
    assert.equal(jsonText(desc, empty), referenceText(desc, empty), `${desc.typeName} (empty)`);
    assert.equal(jsonText(desc, [empty, empty]), referenceText(desc, [empty, empty]), `${desc.typeName} (list)`);
  }
  assert.ok(compared > 100, `${compared} messages compared`);
  assert.equal(jsonText(BackupInfoSchema, []), referenceText(BackupInfoSchema, []));
});

test('--output json: edge values match the old output (unknown enums, int64 beyond 2^53, NaN, timestamp fractions, optional fields)', () => {
  const cluster = create(ClusterInfoSchema, {
    name: 'c1',
    rpoSeconds: Number.NaN,
    lastSeen: { seconds: 1_780_000_000n, nanos: 5_000_000 },
    pitrFrom: { seconds: 1_780_000_001n, nanos: 123_456_789 },
    nextJob: { kind: 'full', time: { seconds: 1_780_000_002n, nanos: 1_000 } },
    lastBackup: create(BackupInfoSchema, {
      type: 99 as BackupType, // a value a newer controller may send
      sizeBytes: 2n ** 64n - 1n,
      storedBytes: BigInt(Number.MAX_SAFE_INTEGER),
      fileCount: 0,
    }),
    alerts: ['rpo-breached', ''],
  });
  assert.equal(jsonText(ClusterInfoSchema, cluster), referenceText(ClusterInfoSchema, cluster));
  for (const [seconds, nanos] of [
    [0n, 0],
    [-1n, 999_999_999],
    [-62_135_596_800n, 1],
    [253_402_300_799n, 10_000],
    [-86_401n, 0],
    [951_782_400n + 86_399n, 0], // 2000-02-29T23:59:59Z
    [1_780_000_000n + 3_600n * 13n + 61n, 500],
  ] as const) {
    const c = create(ClusterInfoSchema, { lastSeen: { seconds, nanos } });
    assert.equal(jsonText(ClusterInfoSchema, c), referenceText(ClusterInfoSchema, c), `${seconds}s ${nanos}ns`);
  }
  for (const rpo of [Infinity, -Infinity, -0, 5e-324, 1e21]) {
    const c = create(ClusterInfoSchema, { rpoSeconds: rpo });
    assert.equal(jsonText(ClusterInfoSchema, c), referenceText(ClusterInfoSchema, c), String(rpo));
  }
  // Optional fields: set ones (zero values too) are written, absent ones are not.
  const fleet = create(ApplyFleetRequestSchema, {
    fleet: { full: '0 1 * * 0', daily: 0, autoExpire: false },
    clusters: { b: { pitrWindowDays: 7 }, a: {}, '10': { incr: '' }, '2': { catchUp: true } },
  });
  const text = jsonText(ApplyFleetRequestSchema, fleet);
  assert.equal(text, referenceText(ApplyFleetRequestSchema, fleet));
  const parsed = JSON.parse(text) as { fleet: Record<string, unknown>; clusters: Record<string, unknown> };
  assert.deepEqual(parsed.fleet, { full: '0 1 * * 0', daily: 0, autoExpire: false });
  assert.deepEqual(Object.keys(parsed.clusters), ['2', '10', 'b', 'a']);
});

test('--output json: enum values as the tables print them, 64-bit numbers as numbers, LSNs as strings', () => {
  const job = create(JobInfoSchema, {
    id: 'j1',
    kind: 'backup',
    state: JobState.SUCCEEDED,
    backup: create(BackupInfoSchema, {
      label: '20260301-120000I',
      type: BackupType.INCR,
      startLsn: '0/16B3748',
      sizeBytes: 3n * 1024n ** 3n,
      storedBytes: 2n ** 60n, // beyond 2^53: kept exact as a decimal string
      fileCount: 7,
    }),
  });
  const j = JSON.parse(jsonText(JobInfoSchema, job)) as {
    state: unknown;
    backup: { type: unknown; startLsn: unknown; sizeBytes: unknown; storedBytes: unknown; fileCount: unknown };
  };
  assert.equal(j.state, 'succeeded');
  assert.equal(j.backup.type, 'incr');
  assert.equal(j.backup.startLsn, '0/16B3748');
  assert.equal(j.backup.sizeBytes, 3 * 1024 ** 3);
  assert.equal(j.backup.storedBytes, String(2n ** 60n));
  assert.equal(j.backup.fileCount, 7);
  // Lists go through the same mapping; unset enums read "unspecified", never the proto name.
  const list = JSON.parse(jsonText(BackupInfoSchema, [create(BackupInfoSchema, { label: 'x' })])) as {
    type: unknown;
  }[];
  assert.deepEqual(
    list.map((b) => b.type),
    ['unspecified'],
  );
});

test('a list written a page at a time is the same text as the whole list', () => {
  const cs = ['a', 'b', 'c'].map((name) => create(ClusterInfoSchema, { name, agentConnected: true, alerts: ['x'] }));
  for (const parts of [[cs], [cs.slice(0, 1), [], cs.slice(1)], [[]], []]) {
    const text = new JsonText();
    const list = jsonList(text, ClusterInfoSchema, '  ');
    for (const p of parts) list.add(p);
    list.end();
    const whole = new JsonText();
    writeJson(whole, ClusterInfoSchema, parts.flat(), '  ');
    assert.equal(text.end(), whole.end());
  }
});
