/**
 * Fuzzing what pgfleet reads from outside, against a real controller process (mutual TLS for
 * agents, bearer tokens for admins, as in production): the admin API (raw bytes and well-formed
 * but hostile messages), the agent stream, enrollment, backup manifests and config files.
 *
 * Every input comes from the seed corpus in test/fuzz-corpus (kept in the repository) through a
 * seeded PRNG, so a failure replays exactly: PGFLEET_FUZZ_SEED=<seed printed by the run>.
 * PGFLEET_FUZZ_ROUNDS scales the number of cases (default 1: about 1,500 inputs, a minute or two).
 *
 * What must hold: every call ends within its deadline (no hang); every error carries a stable
 * PGF code of core's registry and is not INTERNAL (bad input is the client's fault, never a
 * controller bug); no refusal echoes a large value whole; the fleet view (ListClusters,
 * ListBackups) keeps answering after hostile agent results; and after the run the controller
 * process is alive and its health service answers SERVING.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import {
  create,
  fromJson,
  toBinary,
  ScalarType,
  type DescField,
  type DescMessage,
  type DescMethod,
} from '@bufbuild/protobuf';
import { ErrorCodes, GrpcStatus, PgfleetError, loadConfigFile, type ErrorName } from '@pgfleet/core';
import { makeTempDir, freePort } from '@pgfleet/testkit';
import { bearerMetadata, clientTlsCredentials, createClient } from '@pgfleet/rpc';
import { createAgentCsr } from '@pgfleet/rpc/pki';
import {
  AdminService,
  AgentService,
  ConnectRequestSchema,
  EnrollmentService,
  backupInfoFromManifest,
  BackupInfoSchema,
  JobState,
} from '@pgfleet/proto';
import { AGENT_PROGRAM } from '@pgfleet/agent';
import { controllerProgram } from '@pgfleet/controller';
import { parseManifest } from '@pgfleet/storage';
import { CONTROLLER_BIN, REPO_ROOT, runNode, startDaemon, waitFor, type Daemon } from './harness.js';

const CORPUS = join(REPO_ROOT, 'test/fuzz-corpus');
const SEED = Number(process.env.PGFLEET_FUZZ_SEED ?? 0x13f0221);
const ROUNDS = Math.max(1, Number(process.env.PGFLEET_FUZZ_ROUNDS ?? 1));
const CLUSTER = 'fuzz';
const AGENT_ID = 'fuzz-1';
/** A unary call that takes longer than this is a hang. */
const CALL_DEADLINE_MS = 20_000;
/** Messages must never quote a hostile value whole; the largest hostile string is 1 MB. */
const MAX_MESSAGE = 4096;

// ---- seeded PRNG (mulberry32): small, fast, and the same sequence on every machine ------------
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Fuzzer {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = prng(seed);
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }

  /** One to three byte-level mutations: flips, cuts, inserts, duplicated ranges, bad wire types. */
  mutateBytes(input: Buffer): Buffer {
    let b = Buffer.from(input);
    for (let n = 1 + this.int(3); n > 0; n--) {
      const at = b.length ? this.int(b.length) : 0;
      switch (this.int(8)) {
        case 0:
          if (b.length) b[at] = b[at]! ^ (1 << this.int(8));
          break;
        case 1:
          b = b.subarray(0, at);
          break;
        case 2:
          b = Buffer.concat([b.subarray(0, at), this.bytes(1 + this.int(16)), b.subarray(at)]);
          break;
        case 3:
          b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + this.int(8))]);
          break;
        case 4:
          b = Buffer.concat([b, b.subarray(at, at + 1 + this.int(32))]);
          break;
        case 5: // a field tag with wire type 6 or 7 (never valid)
          b = Buffer.concat([b.subarray(0, at), Buffer.from([0x0e | this.int(2), 0xff]), b.subarray(at)]);
          break;
        case 6: // a length prefix far beyond the message
          b = Buffer.concat([b.subarray(0, at), Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f]), b.subarray(at)]);
          break;
        default: // a varint that never ends
          b = Buffer.concat([b.subarray(0, at), Buffer.alloc(12, 0xff)]);
      }
    }
    return b;
  }

  /** Text mutations for JSON and YAML: cuts, hostile tokens, swapped characters. */
  mutateText(input: string): string {
    let s = input;
    for (let n = 1 + this.int(3); n > 0; n--) {
      const at = this.int(s.length + 1);
      switch (this.int(6)) {
        case 0:
          s = s.slice(0, at);
          break;
        case 1:
          s = s.slice(0, at) + this.pick(HOSTILE_TOKENS) + s.slice(at);
          break;
        case 2:
          s = s.slice(0, at) + s.slice(at + 1 + this.int(20));
          break;
        case 3:
          s = s.slice(0, at) + String.fromCharCode(this.int(0x80)) + s.slice(at + 1);
          break;
        case 4: {
          const from = this.int(s.length + 1);
          s = s.slice(0, at) + s.slice(from, from + this.int(80)) + s.slice(at);
          break;
        }
        default:
          s = s.replace(/"[^"\n]*"|: [^\n]*/, (m) =>
            m.startsWith(':') ? `: ${this.pick(HOSTILE_SCALARS)}` : JSON.stringify(this.hostileString()),
          );
      }
    }
    return s;
  }

  /**
   * Characters of large strings left for the message being built: gRPC refuses messages over
   * 4 MiB before pgfleet sees them (that cap is the transport's), so each stays below it.
   */
  budget = LARGE_BUDGET;

  hostileString(): string {
    const s = this.pick(HOSTILE_STRINGS)();
    if (s.length < 1000) return s;
    if (s.length > this.budget) return s.slice(0, 100);
    this.budget -= s.length;
    return s;
  }
}

const LARGE_BUDGET = 1_500_000;
const HOSTILE_TOKENS = [
  '../',
  '\u0000',
  '{',
  '}',
  '[',
  '"',
  '\\',
  '\n',
  ': ',
  '- ',
  '&a ',
  '*a',
  '!!binary ',
  '<<: *a',
  '%',
  '\ud800',
  '9'.repeat(40),
  'NaN',
  '-',
  '#',
];
const HOSTILE_SCALARS = [
  '-1',
  '1e309',
  '9007199254740993',
  'null',
  '[]',
  '{}',
  '~',
  'true',
  '"../../etc"',
  '0x7fffffff',
  '.inf',
  "'shop/wal'",
  '!!str 1',
];
const HOSTILE_STRINGS: (() => string)[] = [
  () => '',
  () => '../../etc/fake-F',
  () => 'shop/wal',
  () => 'Shop',
  () => '..',
  () => 'a'.repeat(64),
  () => 'x'.repeat(5000),
  () => 'y'.repeat(70_000),
  () => 'z'.repeat(1_000_000),
  () => '\u0000\u0001\u0002',
  () => '\ud800\udfff\ufffe',
  () => "'; DROP TABLE clusters; --",
  () => '${jndi:ldap://127.0.0.1/x}',
  () => 'line\r\nforged: entry',
  () => 'FF/FFFFFFFF',
  () => '0/1',
  () => 'fuzz',
  () => AGENT_ID,
  () => ErrorCodes.Internal.code,
  () => '%s%n%x',
  () => '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n',
];

// ---- well-formed but hostile messages, from the descriptors ----------------------------------
const INT32 = [0, -1, 1, 2 ** 31 - 1, -(2 ** 31)];
const UINT32 = [0, 1, 2 ** 32 - 1, 2 ** 31];
const INT64 = [0n, -1n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 53n + 1n];
const UINT64 = [0n, 1n, 2n ** 64n - 1n, 2n ** 53n + 1n, 2n ** 63n];
const DOUBLES = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, 1e308, -1, 5e-324];
const TIMESTAMP_SECONDS = [-62_135_596_800n, -1n, 0n, 253_402_300_800n, 2n ** 62n, 1_772_326_800n];

function hostileScalar(f: Fuzzer, scalar: ScalarType): unknown {
  switch (scalar) {
    case ScalarType.STRING:
      return f.hostileString();
    case ScalarType.BYTES:
      return f.bytes(f.int(64));
    case ScalarType.BOOL:
      return f.chance(0.5);
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return f.pick(DOUBLES);
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return f.pick(INT64);
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return f.pick(UINT64);
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return f.pick(UINT32);
    default:
      return f.pick(INT32);
  }
}

function hostileValue(f: Fuzzer, field: DescField, depth: number): unknown {
  switch (field.fieldKind) {
    case 'scalar':
      return hostileScalar(f, field.scalar);
    case 'enum':
      return f.chance(0.7) ? f.pick(field.enum.values).number : f.pick([-1, 999, 2 ** 31 - 1]);
    case 'message':
      return hostileMessage(f, field.message, depth + 1);
    case 'list': {
      // Now and then far more entries than any bound allows (small ones: the message stays < 4 MiB).
      const count = f.chance(0.05) ? 20_001 + f.int(1000) : f.int(4);
      const item = (): unknown =>
        field.listKind === 'message'
          ? count > 100
            ? create(field.message)
            : hostileMessage(f, field.message, depth + 1)
          : field.listKind === 'enum'
            ? f.pick(field.enum.values).number
            : count > 100
              ? 'a'
              : hostileScalar(f, field.scalar);
      return Array.from({ length: count }, item);
    }
    case 'map': {
      const out: Record<string, unknown> = {};
      for (let i = f.int(3); i > 0; i--)
        out[f.hostileString().slice(0, 5000)] =
          field.mapKind === 'message'
            ? hostileMessage(f, field.message, depth + 1)
            : field.mapKind === 'enum'
              ? 0
              : hostileScalar(f, field.scalar);
      return out;
    }
  }
}

function hostileMessage(f: Fuzzer, desc: DescMessage, depth = 0, base?: object): object {
  if (depth === 0) f.budget = LARGE_BUDGET;
  const msg = (base ?? create(desc)) as Record<string, unknown>;
  if (desc.typeName === 'google.protobuf.Timestamp') {
    msg.seconds = f.pick(TIMESTAMP_SECONDS);
    msg.nanos = f.pick([0, -1, 999_999_999, 1_000_000_000]);
    return msg;
  }
  if (depth > 3) return msg;
  for (const field of desc.fields) {
    if (!f.chance(base ? 0.3 : 0.6)) continue;
    const value = hostileValue(f, field, depth);
    if (field.oneof) msg[field.oneof.localName] = { case: field.localName, value };
    else msg[field.localName] = value;
  }
  return msg;
}

// ---- checking answers ---------------------------------------------------------------------------
const KNOWN_CODES = new Set(Object.values(ErrorCodes).map((s) => s.code));
const tally = { cases: 0, ok: 0, refused: new Map<string, number>() };

function count(code: string): void {
  tally.refused.set(code, (tally.refused.get(code) ?? 0) + 1);
}

/** A typed client's call: answered, or refused with a registry code that is not internal, never a hang. */
async function expectAnswer(what: string, call: Promise<unknown>): Promise<void> {
  tally.cases++;
  try {
    await call;
    tally.ok++;
  } catch (err) {
    assert.ok(err instanceof PgfleetError, `${what}: not a PgfleetError: ${String(err)}`);
    const forbidden: ErrorName[] = ['Internal', 'Timeout', 'ControllerUnreachable'];
    assert.ok(!forbidden.includes(err.errorName), `${what}: ${err.code} ${err.message.slice(0, 300)}`);
    assert.notEqual(ErrorCodes[err.errorName].grpc, GrpcStatus.INTERNAL, `${what}: ${err.code} maps to INTERNAL`);
    assert.ok(err.message.length <= MAX_MESSAGE, `${what}: a ${err.message.length}-character message echoes its input`);
    count(err.code);
  }
}

/** A raw call's status: OK, or an error status carrying a registry code, not INTERNAL/UNKNOWN. */
function expectStatus(what: string, status: grpc.StatusObject | grpc.ServiceError | undefined): void {
  tally.cases++;
  if (!status || status.code === grpc.status.OK) {
    tally.ok++;
    return;
  }
  const code = status.metadata?.get('pgfleet-error-code')[0];
  assert.ok(
    typeof code === 'string' && KNOWN_CODES.has(code),
    `${what}: status ${grpc.status[status.code]} without a PGF code: ${status.details.slice(0, 200)}`,
  );
  assert.ok(
    ![grpc.status.INTERNAL, grpc.status.UNKNOWN, grpc.status.DEADLINE_EXCEEDED].includes(status.code),
    `${what}: ${grpc.status[status.code]} ${code} ${status.details.slice(0, 200)}`,
  );
  assert.ok(status.details.length <= MAX_MESSAGE, `${what}: a ${status.details.length}-character message`);
  count(code);
}

const identity = (b: Buffer): Buffer => b;

function rawUnary(
  client: grpc.Client,
  path: string,
  bytes: Buffer,
  metadata: grpc.Metadata,
): Promise<grpc.ServiceError | undefined> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      path,
      identity,
      identity,
      bytes,
      metadata,
      { deadline: Date.now() + CALL_DEADLINE_MS },
      (err) => resolve(err ?? undefined),
    );
  });
}

/** How long a watch that was accepted may stay silent (it waits for events or job changes by design). */
const WATCH_IDLE_MS = 1500;

/**
 * A server-streaming call read until its end, or cancelled after its first message. Watch calls
 * run until cancelled: one that was accepted and stays silent is cancelled after WATCH_IDLE_MS,
 * which is the client's choice, not a hang.
 */
function rawServerStream(
  client: grpc.Client,
  path: string,
  bytes: Buffer,
  metadata: grpc.Metadata,
): Promise<grpc.ServiceError | undefined> {
  return new Promise((resolve) => {
    const call = client.makeServerStreamRequest(path, identity, identity, bytes, metadata, {
      deadline: Date.now() + CALL_DEADLINE_MS,
    });
    const idle = setTimeout(() => call.cancel(), WATCH_IDLE_MS);
    call.on('status', () => clearTimeout(idle));
    call.on('data', () => call.cancel());
    call.on('error', (err: grpc.ServiceError) => resolve(err.code === grpc.status.CANCELLED ? undefined : err));
    call.on('end', () => resolve(undefined));
  });
}

/** Fails the test when `p` does not settle within the call deadline: a hang. */
async function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>(
        (_, reject) => (timer = setTimeout(() => reject(new Error(`hang: ${what}`)), CALL_DEADLINE_MS)),
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function metadataOf(headers: Record<string, string>): grpc.Metadata {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  return md;
}

function corpus<T>(name: string): T {
  return JSON.parse(readFileSync(join(CORPUS, name), 'utf8')) as T;
}

describe('fuzz: hostile and malformed input everywhere pgfleet reads it', { timeout: 900_000 }, () => {
  let dir: string;
  let controller: Daemon;
  let address: string;
  let caPem: string;
  let adminToken: string;
  let adminCreds: grpc.ChannelCredentials;
  let agentCreds: grpc.ChannelCredentials;
  let admin: ReturnType<typeof createClient<typeof AdminService>>;
  const f = new Fuzzer(SEED);

  before(async () => {
    console.log(`fuzz seed ${SEED} (replay: PGFLEET_FUZZ_SEED=${SEED}), rounds ${ROUNDS}`);
    dir = await makeTempDir('fuzz');
    const catalog = join(dir, 'catalog.db');
    const ctl = async (...args: string[]): Promise<string> => {
      const r = await runNode(CONTROLLER_BIN, args, { timeoutMs: 120_000 });
      assert.equal(r.code, 0, `pgfleet-controller ${args.join(' ')}: ${r.stderr}`);
      return r.stdout.trim();
    };
    await ctl('ca', 'init', '--dir', join(dir, 'tls'));
    caPem = await readFile(join(dir, 'tls', 'ca.crt'), 'utf8');
    adminToken = await ctl('token', 'create', '--catalog', catalog, '--role', 'admin', '--name', 'fuzz-admin');
    await mkdir(join(dir, 'repo'));
    address = `127.0.0.1:${await freePort()}`;
    controller = startDaemon(
      CONTROLLER_BIN,
      [
        'run',
        '--listen',
        address,
        '--catalog',
        catalog,
        '--repo-path',
        join(dir, 'repo'),
        '--tls-dir',
        join(dir, 'tls'),
        '--job-reclaim-grace',
        '2',
        // Its own free port: the default metrics address is taken by any other controller.
        '--metrics-listen',
        '127.0.0.1:0',
      ],
      join(dir, 'controller.log'),
    );
    adminCreds = clientTlsCredentials({ caPem });
    admin = createClient(AdminService, address, {
      credentials: adminCreds,
      metadata: bearerMetadata(adminToken),
      defaultDeadlineMs: CALL_DEADLINE_MS,
    });
    await waitFor('the controller to answer', async () => (await admin.listClusters({})) && true);
    // The fuzzing agent enrolls like a real one: a one-time token for its cluster, a CSR for its key.
    const { token } = await admin.createEnrollmentToken({ cluster: CLUSTER, ttlSeconds: 600 });
    const { csrPem, keyPem } = await createAgentCsr({ cluster: CLUSTER, agentId: AGENT_ID });
    const enroll = createClient(EnrollmentService, address, {
      credentials: adminCreds,
      defaultDeadlineMs: CALL_DEADLINE_MS,
    });
    const { certPem } = await enroll.enroll({ token, agentId: AGENT_ID, cluster: CLUSTER, csrPem });
    enroll.close();
    agentCreds = clientTlsCredentials({ caPem, certPem, keyPem });
  });

  after(async () => {
    admin?.close();
    await controller?.stop();
    const refused = [...tally.refused]
      .sort()
      .map(([c, n]) => `${c}:${n}`)
      .join(' ');
    console.log(`fuzz: ${tally.cases} cases, ${tally.ok} answered, refused by code: ${refused}`);
  });

  const adminSeeds = corpus<{ method: string; request: unknown }[]>('admin-requests.json');
  const methodNamed = (name: string): DescMethod => {
    const m = AdminService.methods.find((x) => x.name === name);
    assert.ok(m, `corpus names an unknown method ${name}`);
    return m;
  };

  it('admin API, raw bytes: mutated encodings of the seed requests', async () => {
    const raw = new grpc.Client(address, adminCreds);
    const md = metadataOf(bearerMetadata(adminToken));
    try {
      for (let i = 0; i < 500 * ROUNDS; i++) {
        const seed = f.pick(adminSeeds);
        const method = methodNamed(seed.method);
        const valid = Buffer.from(toBinary(method.input, fromJson(method.input, seed.request as never)));
        const bytes = f.chance(0.1) ? f.bytes(f.int(200)) : f.mutateBytes(valid);
        const path = `/${AdminService.typeName}/${method.name}`;
        const status =
          method.methodKind === 'server_streaming'
            ? await rawServerStream(raw, path, bytes, md)
            : await rawUnary(raw, path, bytes, md);
        expectStatus(`${method.name} raw #${i}`, status);
      }
      // Both watch calls with garbage too (they are not in the corpus: they stream until cancelled).
      for (const name of ['WatchJob', 'WatchEvents'])
        for (let i = 0; i < 20; i++)
          expectStatus(
            `${name} raw`,
            await rawServerStream(raw, `/${AdminService.typeName}/${name}`, f.mutateBytes(f.bytes(8)), md),
          );
    } finally {
      raw.close();
    }
  });

  it('admin API, well-formed hostile messages: names, sizes, numbers and times at their worst', async () => {
    const unary = AdminService.methods.filter((m) => m.methodKind === 'unary');
    const table = admin as unknown as Record<string, (req: unknown) => Promise<unknown>>;
    for (let i = 0; i < 400 * ROUNDS; i++) {
      const method = f.pick(unary);
      const seed = adminSeeds.find((s) => s.method === method.name);
      const base = seed && f.chance(0.5) ? fromJson(method.input, seed.request as never) : undefined;
      const req = hostileMessage(f, method.input, 0, base);
      await expectAnswer(`${method.name} hostile #${i}`, table[method.localName]!(req));
    }
  });

  /** One agent session: Hello, then hostile messages, then the end; returns the job it was given, if any. */
  async function agentSession(round: number): Promise<void> {
    const client = createClient(AgentService, address, { credentials: agentCreds });
    try {
      const stream = client.connect();
      const seeds = corpus<unknown[]>('agent-messages.json').map((m) => fromJson(ConnectRequestSchema, m as never));
      const hello = seeds[0]!;
      stream.send(f.chance(0.25) ? hostileMessage(f, ConnectRequestSchema, 0, structuredClone(hello)) : hello);
      const iterator = stream[Symbol.asyncIterator]();
      const first = iterator.next();
      let jobId = 'no-such-job';
      const welcome = await Promise.race([
        first.catch((err: unknown) => ({ refused: err })),
        new Promise((r) => setTimeout(r, CALL_DEADLINE_MS, 'hang')),
      ]);
      assert.notEqual(welcome, 'hang', `agent session ${round}: no answer to Hello`);
      if (typeof welcome === 'object' && welcome !== null && 'refused' in welcome) {
        // A hostile Hello is refused with a code, and that ends the session.
        await expectAnswer(`agent session ${round} Hello`, Promise.reject(welcome.refused as Error));
        return;
      }
      const w = welcome as IteratorResult<{ msg: { case?: string } }>;
      if (!w.done && w.value.msg.case === 'welcome') {
        // A real job to report on, so hostile results reach the catalog code, not just the lookup.
        const job = await admin.startVerify({ cluster: CLUSTER }).catch(() => undefined);
        if (job?.job) {
          const sent = await bounded(iterator.next(), `agent session ${round}: the verify job`);
          if (!sent.done && sent.value.msg.case === 'job') jobId = job.job.id;
        }
        for (let i = 0; i < 12; i++) {
          const seed = structuredClone(f.pick(seeds.slice(1))) as {
            msg: { case?: string; value?: { jobId?: string } };
          };
          if (seed.msg.value && 'jobId' in seed.msg.value) seed.msg.value.jobId = jobId;
          stream.send(f.chance(0.8) ? hostileMessage(f, ConnectRequestSchema, 0, seed) : seed);
          tally.cases++;
        }
        // Whatever the hostile results did, the job ends and the fleet view still answers.
        stream.send({
          msg: {
            case: 'result',
            value: { jobId, state: JobState.FAILED, error: { code: ErrorCodes.JobFailed.code, message: 'fuzz' } },
          },
        });
      }
      stream.end();
      // The controller ends the stream once it has read everything: bounded, not a hang.
      const end = (async () => {
        for (;;) if ((await iterator.next()).done) return undefined;
      })().catch((err: unknown) => err);
      const ended = await Promise.race([end, new Promise((r) => setTimeout(r, CALL_DEADLINE_MS, 'hang'))]);
      assert.notEqual(ended, 'hang', `agent session ${round}: the controller did not end the stream`);
      tally.cases++;
      if (ended !== undefined) await expectAnswer(`agent session ${round}`, Promise.reject(ended as Error));
      else tally.ok++;
      await expectAnswer('ListClusters after agent input', admin.listClusters({}));
      await expectAnswer('ListBackups after agent input', admin.listBackups({ cluster: CLUSTER }));
    } finally {
      client.close();
    }
  }

  it('agent stream over mutual TLS: hostile Hello, heartbeats, progress, results and WAL switches', async () => {
    for (let round = 0; round < 30 * ROUNDS; round++) await agentSession(round);
    // The fleet view must not just answer: the cluster is there with its agent's last word.
    const clusters = (await admin.listClusters({})).clusters.map((c) => c.name);
    assert.ok(clusters.includes(CLUSTER), clusters.join(','));
  });

  it('agent stream, raw bytes: garbage after or instead of Hello ends the stream with MalformedMessage', async () => {
    const raw = new grpc.Client(address, agentCreds);
    const hello = Buffer.from(
      toBinary(
        ConnectRequestSchema,
        fromJson(ConnectRequestSchema, corpus<unknown[]>('agent-messages.json')[0] as never),
      ),
    );
    try {
      for (let i = 0; i < 60 * ROUNDS; i++) {
        const status = await new Promise<grpc.StatusObject | undefined>((resolve) => {
          const call = raw.makeBidiStreamRequest(`/${AgentService.typeName}/Connect`, identity, identity, {
            deadline: Date.now() + CALL_DEADLINE_MS,
          });
          call.on('data', () => undefined);
          call.on('status', (s: grpc.StatusObject) => resolve(s));
          call.on('error', () => undefined);
          if (f.chance(0.5)) call.write(hello);
          call.write(f.mutateBytes(hello));
          call.end();
        });
        expectStatus(`Connect raw #${i}`, status);
      }
    } finally {
      raw.close();
    }
  });

  it('enrollment: forged tokens, hostile identities and broken certificate requests', async () => {
    const enroll = createClient(EnrollmentService, address, {
      credentials: adminCreds,
      defaultDeadlineMs: CALL_DEADLINE_MS,
    });
    const raw = new grpc.Client(address, adminCreds);
    const seeds = corpus<{ token: string; agentId: string; cluster: string; csrPem: string }[]>('enroll-requests.json');
    const { csrPem } = await createAgentCsr({ cluster: CLUSTER, agentId: 'fuzz-enroll' });
    try {
      for (let i = 0; i < 150 * ROUNDS; i++) {
        const seed = { ...f.pick(seeds) };
        if (seed.csrPem === 'CSR') seed.csrPem = f.chance(0.5) ? csrPem : f.mutateText(csrPem);
        // Spent or invented tokens only: a valid one would make this a success test.
        if (seed.token === 'TOKEN') seed.token = `pgfe_${f.bytes(16).toString('hex')}`;
        const req = hostileMessage(
          f,
          EnrollmentService.method.enroll.input,
          0,
          create(EnrollmentService.method.enroll.input, seed),
        );
        await expectAnswer(`Enroll hostile #${i}`, enroll.enroll(req as never));
      }
      for (let i = 0; i < 50 * ROUNDS; i++) {
        const bytes = f.mutateBytes(
          Buffer.from(
            toBinary(EnrollmentService.method.enroll.input, create(EnrollmentService.method.enroll.input, seeds[1]!)),
          ),
        );
        expectStatus(
          `Enroll raw #${i}`,
          await rawUnary(raw, `/${EnrollmentService.typeName}/Enroll`, bytes, new grpc.Metadata()),
        );
      }
    } finally {
      enroll.close();
      raw.close();
    }
  });

  it('manifests: a mutated manifest is read whole or refused with a repository code, never half-used', () => {
    const text = readFileSync(join(CORPUS, 'manifest.json'), 'utf8');
    // A damaged manifest, or one whose entries point outside the backup (part 2's path rules).
    const allowed: ErrorName[] = ['RepoManifestInvalid', 'ManifestPathRejected'];
    let parsed = 0;
    for (let i = 0; i < 300 * ROUNDS; i++) {
      const mutated = f.mutateText(text);
      tally.cases++;
      try {
        const m = parseManifest(mutated, `fuzz #${i}`);
        // What catalog rebuild and a backup result make of it must encode: a real BackupInfo.
        toBinary(BackupInfoSchema, create(BackupInfoSchema, backupInfoFromManifest(m, 'job')));
        parsed++;
        tally.ok++;
      } catch (err) {
        assert.ok(
          PgfleetError.is(err) && allowed.includes(err.errorName),
          `manifest #${i}: ${String(err)}\n${mutated.slice(0, 2000)}`,
        );
        assert.ok(err.message.length <= MAX_MESSAGE, `manifest #${i}: message of ${err.message.length} characters`);
        count(err.code);
      }
    }
    assert.ok(parsed > 0, 'some mutations leave a valid manifest (otherwise the corpus is broken)');
  });

  it('config files: mutated agent and controller YAML is loaded or refused naming the problem', async () => {
    const programs = [
      { seed: await readFile(join(CORPUS, 'agent-config.yaml'), 'utf8'), options: AGENT_PROGRAM.options },
      { seed: await readFile(join(CORPUS, 'controller-config.yaml'), 'utf8'), options: controllerProgram.options },
    ];
    const allowed: ErrorName[] = ['InvalidConfig'];
    for (let i = 0; i < 300 * ROUNDS; i++) {
      const p = programs[i % programs.length]!;
      const file = join(dir, `config-${i}.yaml`);
      await writeFile(file, f.mutateText(p.seed));
      tally.cases++;
      try {
        loadConfigFile(file, p.options);
        tally.ok++;
      } catch (err) {
        assert.ok(PgfleetError.is(err) && allowed.includes(err.errorName), `config #${i}: ${String(err)}`);
        assert.ok(
          err.message.length <= MAX_MESSAGE + file.length,
          `config #${i}: message of ${err.message.length} characters`,
        );
        count(err.code);
      }
    }
  });

  it('after all of it the controller process is alive and serving', async () => {
    assert.equal(controller.child.exitCode, null, `the controller exited: ${(await controller.log()).slice(-4000)}`);
    const health = new grpc.Client(address, adminCreds);
    try {
      // grpc.health.v1.HealthCheckRequest{service: ""} is the empty message; SERVING is field 1 = 1.
      const reply = await new Promise<Buffer>((resolve, reject) =>
        health.makeUnaryRequest(
          '/grpc.health.v1.Health/Check',
          identity,
          identity,
          Buffer.alloc(0),
          { deadline: Date.now() + CALL_DEADLINE_MS },
          (err, res) => (err ? reject(err) : resolve(res!)),
        ),
      );
      assert.deepEqual([...reply], [0x08, 0x01]);
    } finally {
      health.close();
    }
    await expectAnswer('ListClusters at the end', admin.listClusters({}));
    const log = await controller.log();
    assert.doesNotMatch(log, /z{5000}/, 'a hostile megabyte string reached the controller log whole');
    assert.ok(tally.cases >= 1000, `only ${tally.cases} cases`);
  });
});
