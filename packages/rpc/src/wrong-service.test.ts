// A --controller address that answers, but not as a pgfleet controller: a plain HTTP/2 server,
// an HTTP/1 web server, a gRPC server of another service. Each is a real server on a free port;
// the user sees PGF-1103 naming the address, never "PGF-9001 a bug in pgfleet".
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttp1Server } from 'node:http';
import { createServer as createHttp2Server } from 'node:http2';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { PgfleetError } from '@pgfleet/core';
import { AdminService } from '@pgfleet/proto';
import { createClient } from './index.js';

async function listening(server: { listen(port: number, host: string, cb: () => void): unknown; address(): unknown }) {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function listJobsOn(address: string): Promise<PgfleetError> {
  const client = createClient(AdminService, address);
  try {
    await client.listJobs({}, { deadlineMs: 10_000 });
  } catch (err) {
    return err as PgfleetError;
  } finally {
    client.close();
  }
  throw new Error(`listJobs on ${address} succeeded`);
}

describe('a controller address that is another service', () => {
  const closers: (() => void)[] = [];
  after(() => closers.forEach((c) => c()));

  it('a plain HTTP/2 server (404, no grpc-status) is PGF-1103', async () => {
    const server = createHttp2Server((_req, res) => {
      res.writeHead(404, { 'content-type': 'text/html' });
      res.end('<h1>not found</h1>');
    });
    closers.push(() => server.close());
    const address = await listening(server);
    const err = await listJobsOn(address);
    assert.ok(PgfleetError.is(err, 'NotAController'), String(err));
    assert.match(err.message, new RegExp(`${address} is not a pgfleet controller`));
  });

  it('an HTTP/2 server answering 200 without gRPC framing is PGF-1103', async () => {
    const server = createHttp2Server((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    });
    closers.push(() => server.close());
    const err = await listJobsOn(await listening(server));
    assert.ok(PgfleetError.is(err, 'NotAController'), String(err));
  });

  it('a gRPC server of another service (UNIMPLEMENTED) is PGF-1103', async () => {
    const server = new grpc.Server();
    closers.push(() => server.forceShutdown());
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    const err = await listJobsOn(`127.0.0.1:${port}`);
    assert.ok(PgfleetError.is(err, 'NotAController'), String(err));
  });

  it('an HTTP/1 web server is not a bug either (PGF-1103 or unreachable, never PGF-9001)', async () => {
    const server = createHttp1Server((_req, res) => res.end('hello'));
    closers.push(() => server.close());
    const err = await listJobsOn(await listening(server));
    assert.ok(PgfleetError.is(err, 'NotAController') || PgfleetError.is(err, 'ControllerUnreachable'), String(err));
    assert.notEqual(err.errorName, 'Internal');
  });
});
