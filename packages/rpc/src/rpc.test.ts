// Every test talks to a real grpc-js server on 127.0.0.1 with a random port; no mocks.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { ErrorCodes, PgfleetError, sleep, type Logger } from '@pgfleet/core';
import {
  AdminService,
  AgentService,
  BackupType,
  JobState,
  type ConnectRequest,
  type WatchJobResponse,
} from '@pgfleet/proto';
import { addService, createClient, listen, waitForReady, type CallContext, type ServiceImpl } from './index.js';
import { unimplementedService } from './unimplemented.js';

/** Resolves with the reason once the signal aborts. */
function aborted(signal: AbortSignal): Promise<unknown> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(signal.reason);
    else signal.addEventListener('abort', () => resolve(signal.reason), { once: true });
  });
}

function deferred<T>(): { promise: Promise<T>; resolve(v: T): void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** The count once it has stopped growing (unchanged over 10 polls 50 ms apart); the deadline bounds a hang. */
async function producerStalled(count: () => number): Promise<number> {
  const deadline = Date.now() + 120_000;
  let last = count();
  let unchanged = 0;
  while (unchanged < 10 && Date.now() < deadline) {
    await sleep(50);
    const now = count();
    unchanged = now === last ? unchanged + 1 : 0;
    last = now;
  }
  return last;
}

describe('rpc adapter', () => {
  const server = new grpc.Server();
  let address = '';
  const logged: unknown[] = [];
  const logger = { error: (obj: unknown) => logged.push(obj) } as unknown as Logger;
  // Handlers report what they saw through these, so tests assert on the server's side too.
  const serverSaw = {
    watchCancelled: deferred<unknown>(),
    connectStarted: deferred<void>(),
    connectAborted: deferred<unknown>(),
    deadlineAborted: deferred<unknown>(),
    connectResults: [] as ConnectRequest[],
    floodProduced: 0,
  };

  const admin: ServiceImpl<typeof AdminService> = {
    ...unimplementedService(AdminService),
    async listBackups(req, ctx: CallContext) {
      if (req.cluster === 'nope') throw new PgfleetError('UnknownCluster', `cluster "nope" is not known`);
      if (req.cluster === 'bug') throw new TypeError('cannot read properties of undefined');
      return {
        backups: [
          {
            label: '20250101-000000F',
            cluster: req.cluster,
            type: BackupType.FULL,
            startLsn: ctx.metadata.get('x-lsn')[0] as string,
          },
        ],
      };
    },
    async listJobs(_req, ctx) {
      // Outlives the client's deadline; the handler must learn about it through ctx.signal.
      serverSaw.deadlineAborted.resolve(await aborted(ctx.signal));
      return {};
    },
    async *watchJob(req, ctx) {
      if (req.id === 'forever') {
        try {
          for (let i = 0; ; i++) {
            yield { job: { id: req.id, state: JobState.RUNNING, progress: { jobId: req.id, bytesDone: BigInt(i) } } };
            await sleep(5);
          }
        } finally {
          // The abort may reach the signal a moment after the generator was closed; the fallback
          // only bounds a hang (a loaded machine may take seconds), it is no speed requirement.
          const fallback = new Promise((r) => setTimeout(r, 60_000, 'not aborted').unref());
          serverSaw.watchCancelled.resolve(await Promise.race([aborted(ctx.signal), fallback]));
        }
      }
      if (req.id === 'flood') {
        // 32 KiB per message, far more than any transport buffer holds, so a stall must reach us.
        const filler = 'x'.repeat(32 * 1024);
        for (let i = 0; i < 2000; i++) {
          serverSaw.floodProduced = i + 1;
          yield { job: { id: req.id, progress: { jobId: req.id, message: filler } } };
        }
        return;
      }
      for (const state of [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]) yield { job: { id: req.id, state } };
    },
  };

  const agent: ServiceImpl<typeof AgentService> = {
    async connect(stream, ctx) {
      const first = ctx.metadata.get('x-mode')[0];
      if (first === 'hang') {
        serverSaw.connectStarted.resolve();
        serverSaw.connectAborted.resolve(await aborted(ctx.signal));
        return;
      }
      for await (const req of stream) {
        switch (req.msg.case) {
          case 'hello':
            if (req.msg.value.cluster === 'nope') throw new PgfleetError('UnknownCluster', 'agent for unknown cluster');
            stream.send({
              msg: { case: 'welcome', value: { controllerVersion: '0.1.0', heartbeatIntervalSeconds: 10 } },
            });
            stream.send({
              msg: { case: 'job', value: { jobId: 'j1', kind: { case: 'backup', value: { type: BackupType.FULL } } } },
            });
            break;
          case 'result':
            serverSaw.connectResults.push(req);
            stream.end();
            return;
          default:
            break;
        }
      }
    },
  };

  before(async () => {
    addService(server, AdminService, admin, { logger });
    addService(server, AgentService, agent, { logger });
    const port = await listen(server, '127.0.0.1:0');
    address = `127.0.0.1:${port}`;
  });
  after(() => server.forceShutdown());

  it('round-trips a unary call with request metadata', async () => {
    const client = createClient(AdminService, address);
    try {
      const res = await client.listBackups({ cluster: 'main' }, { metadata: { 'x-lsn': '0/3000028' } });
      assert.equal(res.$typeName, 'pgfleet.v1.ListBackupsResponse');
      assert.equal(res.backups.length, 1);
      assert.equal(res.backups[0]?.cluster, 'main');
      assert.equal(res.backups[0]?.type, BackupType.FULL);
      assert.equal(res.backups[0]?.startLsn, '0/3000028');
    } finally {
      client.close();
    }
  });

  it('streams server responses in order', async () => {
    const client = createClient(AdminService, address);
    try {
      const seen: WatchJobResponse[] = [];
      for await (const msg of client.watchJob({ id: 'j7' })) seen.push(msg);
      assert.deepEqual(
        seen.map((m) => [m.job?.id, m.job?.state]),
        [
          ['j7', JobState.QUEUED],
          ['j7', JobState.RUNNING],
          ['j7', JobState.SUCCEEDED],
        ],
      );
    } finally {
      client.close();
    }
  });

  it('runs a bidi conversation: Hello -> Welcome + Job -> JobResult -> end', async () => {
    const client = createClient(AgentService, address);
    try {
      const stream = client.connect();
      stream.send({ msg: { case: 'hello', value: { agentId: 'a1', cluster: 'main', pgVersion: 170002 } } });
      const received: string[] = [];
      for await (const res of stream) {
        received.push(res.msg.case ?? 'none');
        if (res.msg.case === 'job') {
          stream.send({ msg: { case: 'result', value: { jobId: res.msg.value.jobId, state: JobState.SUCCEEDED } } });
          stream.end();
        }
      }
      assert.deepEqual(received, ['welcome', 'job']);
      assert.equal(serverSaw.connectResults.length, 1);
      const result = serverSaw.connectResults[0]?.msg;
      assert.equal(result?.case, 'result');
      assert.equal(result?.case === 'result' && result.value.jobId, 'j1');
    } finally {
      client.close();
    }
  });

  it('turns a missed deadline into Timeout and aborts the handler', async () => {
    // Long enough for the call to reach the handler on a loaded machine (the handler outlives any deadline).
    const client = createClient(AdminService, address, { defaultDeadlineMs: 5000 });
    try {
      await assert.rejects(client.listJobs({ cluster: 'main' }), (err) => {
        assert.ok(PgfleetError.is(err, 'Timeout'), String(err));
        assert.equal(err.code, ErrorCodes.Timeout.code);
        assert.match(err.message, /ListJobs/);
        return true;
      });
      const reason = await serverSaw.deadlineAborted.promise;
      assert.ok(PgfleetError.is(reason, 'Timeout') || PgfleetError.is(reason, 'Cancelled'), String(reason));
    } finally {
      client.close();
    }
  });

  it('carries a PgfleetError from handler to client with code, message and hint', async () => {
    const client = createClient(AdminService, address);
    try {
      await assert.rejects(client.listBackups({ cluster: 'nope' }), (err) => {
        assert.ok(PgfleetError.is(err, 'UnknownCluster'), String(err));
        assert.equal(err.code, ErrorCodes.UnknownCluster.code);
        assert.equal(err.message, 'cluster "nope" is not known');
        assert.match(err.hint, /pgfleet clusters/);
        return true;
      });
    } finally {
      client.close();
    }
  });

  it('reports a handler bug as Internal PGF-9001 and logs it', async () => {
    const client = createClient(AdminService, address);
    try {
      const before = logged.length;
      await assert.rejects(client.listBackups({ cluster: 'bug' }), (err) => {
        assert.ok(PgfleetError.is(err, 'Internal'), String(err));
        assert.equal(err.code, ErrorCodes.Internal.code);
        assert.match(err.message, /cannot read properties/);
        return true;
      });
      assert.equal(logged.length, before + 1);
    } finally {
      client.close();
    }
  });

  it('ends a bidi stream with the handler error, thrown from the client iterator', async () => {
    const client = createClient(AgentService, address);
    try {
      const stream = client.connect();
      stream.send({ msg: { case: 'hello', value: { agentId: 'a2', cluster: 'nope' } } });
      await assert.rejects(
        (async () => {
          for await (const _ of stream) assert.fail('no message expected');
        })(),
        (err) => PgfleetError.is(err, 'UnknownCluster') && err.message === 'agent for unknown cluster',
      );
      assert.throws(
        () => stream.send({}),
        (err) => PgfleetError.is(err, 'UnknownCluster'),
      );
    } finally {
      client.close();
    }
  });

  /** A raw grpc-js call that sends `bytes` as the request, bypassing the protobuf encoder. */
  function rawStatus(path: string, bytes: Buffer, stream: boolean): Promise<grpc.ServiceError | undefined> {
    const raw = new grpc.Client(address, grpc.credentials.createInsecure());
    const identity = (b: Buffer): Buffer => b;
    return new Promise<grpc.ServiceError | undefined>((resolve) => {
      if (!stream) {
        raw.makeUnaryRequest(path, identity, identity, bytes, (err) => resolve(err ?? undefined));
        return;
      }
      const call = raw.makeBidiStreamRequest(path, identity, identity);
      call.on('data', () => undefined);
      call.on('error', (err: grpc.ServiceError) => resolve(err));
      call.on('end', () => resolve(undefined));
      call.write(bytes);
    }).finally(() => raw.close());
  }

  it('answers undecodable request bytes with MalformedMessage (INVALID_ARGUMENT), not INTERNAL', async () => {
    // Field 1 as a length-delimited string that claims 100 bytes and brings 2; then wire type 7.
    for (const bytes of [Buffer.from([0x0a, 0x64, 0x41, 0x42]), Buffer.from([0x0f, 0xff, 0xff])]) {
      for (const [path, stream] of [
        ['/pgfleet.v1.AdminService/ListBackups', false],
        ['/pgfleet.v1.AgentService/Connect', true],
      ] as const) {
        const err = await rawStatus(path, bytes, stream);
        assert.equal(err?.code, grpc.status.INVALID_ARGUMENT, `${path}: ${err?.details}`);
        assert.equal(err?.metadata.get('pgfleet-error-code')[0], ErrorCodes.MalformedMessage.code);
        assert.match(err?.details ?? '', /is not a valid pgfleet\.v1\.(ListBackupsRequest|ConnectRequest) message/);
      }
    }
    // The server is unharmed: a well-formed call right after is answered.
    const client = createClient(AdminService, address);
    try {
      assert.equal((await client.listBackups({ cluster: 'main' })).backups.length, 1);
    } finally {
      client.close();
    }
  });

  it('cancelling a client bidi stream aborts the server handler signal', async () => {
    const client = createClient(AgentService, address);
    try {
      const stream = client.connect({ metadata: { 'x-mode': 'hang' } });
      stream.send({ msg: { case: 'hello', value: { agentId: 'a3' } } });
      const reading = (async () => {
        const got: unknown[] = [];
        for await (const m of stream) got.push(m);
        return got;
      })();
      // Cancel once the handler runs: a call cancelled before it reaches the server has no handler to abort.
      await serverSaw.connectStarted.promise;
      stream.cancel();
      const reason = await serverSaw.connectAborted.promise;
      assert.ok(PgfleetError.is(reason, 'Cancelled'), String(reason));
      assert.deepEqual(await reading, [], 'own cancel() ends iteration quietly');
    } finally {
      client.close();
    }
  });

  it('breaking out of a server stream cancels it on the server', async () => {
    const client = createClient(AdminService, address);
    try {
      let n = 0;
      for await (const _ of client.watchJob({ id: 'forever' })) if (++n === 3) break;
      const reason = await serverSaw.watchCancelled.promise;
      assert.ok(PgfleetError.is(reason, 'Cancelled'), String(reason));
    } finally {
      client.close();
    }
  });

  it('holds a server stream producer back while the client does not read', async () => {
    const client = createClient(AdminService, address);
    try {
      const it = client.watchJob({ id: 'flood' })[Symbol.asyncIterator]();
      assert.equal((await it.next()).done, false);
      // Wait until the producer stands still (the same count over several polls, each with a turn of
      // I/O in between) rather than for a fixed time a loaded machine may not give it.
      const produced = await producerStalled(() => serverSaw.floodProduced);
      // Windows and stream buffers allow some tens of messages; without backpressure all 2000 go.
      assert.ok(produced > 1 && produced < 300, `producer ran ahead to ${produced} messages`);
      await it.return?.();
    } finally {
      client.close();
    }
  });

  it('an aborted signal fails the call with Cancelled', async () => {
    const client = createClient(AdminService, address);
    try {
      const ac = new AbortController();
      // The deadline only bounds a hang: the abort must win over it however slow the machine is.
      const pending = client.listJobs({}, { signal: ac.signal, deadlineMs: 120_000 });
      setTimeout(() => ac.abort(), 20);
      await assert.rejects(pending, (err) => PgfleetError.is(err, 'Cancelled'));
    } finally {
      client.close();
    }
  });
});

describe('unreachable server', () => {
  let address = '';
  before(async () => {
    // A port that was free a moment ago and has nothing listening now.
    const s = new grpc.Server();
    const port = await listen(s, '127.0.0.1:0');
    s.forceShutdown();
    address = `127.0.0.1:${port}`;
  });

  it('fails calls with ControllerUnreachable naming the address', async () => {
    const client = createClient(AdminService, address);
    try {
      await assert.rejects(client.listBackups({ cluster: 'main' }), (err) => {
        assert.ok(PgfleetError.is(err, 'ControllerUnreachable'), String(err));
        assert.equal(err.code, ErrorCodes.ControllerUnreachable.code);
        assert.ok(err.message.includes(address), err.message);
        return true;
      });
    } finally {
      client.close();
    }
  });

  it('uses the configured error for UNAVAILABLE and in waitForReady', async () => {
    const client = createClient(AgentService, address, { unavailableError: 'AgentDisconnected' });
    try {
      await assert.rejects(waitForReady(client, 200), (err) => {
        assert.ok(PgfleetError.is(err, 'AgentDisconnected'), String(err));
        assert.ok(err.message.includes(address), err.message);
        return true;
      });
      const stream = client.connect();
      await assert.rejects(
        (async () => {
          for await (const _ of stream) assert.fail('no message expected');
        })(),
        (err) => PgfleetError.is(err, 'AgentDisconnected'),
      );
    } finally {
      client.close();
    }
  });

  it('reports a port already in use when listening', async () => {
    const s = new grpc.Server();
    const port = await listen(s, '127.0.0.1:0');
    try {
      await assert.rejects(listen(new grpc.Server(), `127.0.0.1:${port}`), (err) =>
        PgfleetError.is(err, 'InvalidConfig'),
      );
    } finally {
      s.forceShutdown();
    }
  });
});
