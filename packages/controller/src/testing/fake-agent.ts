/**
 * Test support: a fake agent that speaks AgentService.Connect through the real rpc client, so
 * controller and CLI tests exercise the same stream an agent uses. Not exported from the package.
 */
import { strict as assert } from 'node:assert';
import { createClient, type ClientBidiStream, type ClientOptions } from '@pgfleet/rpc';
import type { MessageInitShape } from '@bufbuild/protobuf';
import {
  AgentService,
  JobState,
  type BackupInfoSchema,
  type ConnectRequestSchema,
  type ConnectResponse,
  type Job,
  type JobResultSchema,
} from '@pgfleet/proto';
import { sleep } from '@pgfleet/core';

export const SYSID = '7300000000000000001';

type BackupInfoInit = MessageInitShape<typeof BackupInfoSchema>;

/**
 * A backup as an agent reports it: what the test sets, over figures none of them looks at
 * (timeline 1, SYSID, PostgreSQL 17.2, 1000 bytes in 10 files).
 */
export function reportedBackup(b: BackupInfoInit): BackupInfoInit {
  return { timeline: 1, systemIdentifier: SYSID, pgVersion: 170002, sizeBytes: 1000n, fileCount: 10, ...b };
}

const clients: { close(): void }[] = [];

/** Closes every fake agent's channel (call in after()). */
export function closeFakeAgents(): void {
  for (const c of clients.splice(0)) c.close();
}

/** A fake agent: the Connect stream plus a reader of what the controller sends. */
export class FakeAgent {
  readonly stream: ClientBidiStream<ConnectResponse, typeof ConnectRequestSchema>;
  private readonly incoming: AsyncIterator<ConnectResponse>;

  /** `options` carries TLS credentials (a client certificate) for controllers with --tls-dir. */
  constructor(address: string, options: ClientOptions = {}) {
    const client = createClient(AgentService, address, { unavailableError: 'ControllerUnreachable', ...options });
    clients.push(client);
    this.stream = client.connect();
    this.incoming = this.stream[Symbol.asyncIterator]();
  }

  hello(
    fields: { agentId?: string; cluster?: string; systemIdentifier?: string; runningJobIds?: string[] } = {},
  ): void {
    this.stream.send({
      msg: {
        case: 'hello',
        value: {
          agentId: fields.agentId ?? 'agent-1',
          cluster: fields.cluster ?? 'main',
          hostname: 'db1.example',
          agentVersion: '0.1.0',
          pgVersion: 170002,
          systemIdentifier: fields.systemIdentifier ?? SYSID,
          pgdata: '/var/lib/postgresql/17/main',
          runningJobIds: fields.runningJobIds ?? [],
          repositories: [{ kind: { case: 'posix', value: { path: '/srv/agent-repo' } } }],
        },
      },
    });
  }

  async receive(): Promise<ConnectResponse> {
    const next = await withTimeout(this.incoming.next(), 30_000, 'no message from the controller'); // generous: a CLI child may start slowly on a loaded machine
    if (next.done) throw new Error('the controller ended the stream');
    return next.value;
  }

  async receiveJob(): Promise<Job> {
    const msg = await this.receive();
    assert.equal(msg.msg.case, 'job');
    return msg.msg.value as Job;
  }

  /** Reports the job succeeded with `result` (the JobResult's result case), as an agent does when a job ends well. */
  succeed(jobId: string, result: MessageInitShape<typeof JobResultSchema>['result']): void {
    this.stream.send({ msg: { case: 'result', value: { jobId, state: JobState.SUCCEEDED, result } } });
  }

  /** Resolves with the error the stream ends with (or undefined for a clean end). */
  async ended(): Promise<unknown> {
    try {
      for (;;) {
        const next = await withTimeout(this.incoming.next(), 5000, 'stream did not end');
        if (next.done) return undefined;
      }
    } catch (err) {
      return err;
    }
  }
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), ms))),
  ]).finally(() => clearTimeout(timer));
}

/** Polls until `fn` yields a value; the default deadline only bounds a hang, generous for a loaded machine. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, ms = 120_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timeout waiting for ${what}`);
    await sleep(20);
  }
}
