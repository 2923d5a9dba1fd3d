// What an anonymous peer may hold of a real server on real sockets: a TLS handshake it never
// finishes, a connection it never calls on, more connections than allowed, more streams than the
// per-connection cap. Short limits here; the controller's defaults are DEFAULT_SERVER_LIMITS.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect as http2Connect, type ClientHttp2Session } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type * as grpc from '@grpc/grpc-js';
import { AdminService } from '@pgfleet/proto';
import {
  addService,
  createServer,
  DEFAULT_SERVER_LIMITS,
  listen,
  serverTlsCredentials,
  type ServerLimits,
} from './index.js';
import { createCertificateAuthority, issueServerCertificate, type CertificateAndKey } from './pki.js';
import { unimplementedService } from './unimplemented.js';

const sockets = new Set<Socket>();

/** Resolves with the ms until the socket closed, or rejects after `boundMs` with it still open. */
function closedWithin(socket: Socket, boundMs: number): Promise<number> {
  sockets.add(socket);
  const start = Date.now();
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return resolve(0);
    const timer = setTimeout(() => reject(new Error(`still open after ${boundMs} ms`)), boundMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - start);
    });
    socket.on('error', () => {});
    // Read (and drop) what the server sends: a paused socket never sees the end the server sent.
    socket.resume();
  });
}

function connected(socket: Socket): Promise<void> {
  sockets.add(socket);
  return new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
}

/** A server whose WatchEvents streams stay open until the client goes, counting how many run at once. */
async function watchServer(
  limits: Partial<ServerLimits>,
  tls?: CertificateAndKey & { caPem: string },
): Promise<{ server: grpc.Server; port: number; active: () => number; peak: () => number }> {
  const full = { ...DEFAULT_SERVER_LIMITS, ...limits };
  const server = createServer(full);
  let active = 0;
  let peak = 0;
  addService(server, AdminService, {
    ...unimplementedService(AdminService),
    async *watchEvents(_req, ctx) {
      active++;
      peak = Math.max(peak, active);
      try {
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }));
      } finally {
        active--;
      }
      yield* [];
    },
  });
  const creds = tls
    ? serverTlsCredentials({ caPem: tls.caPem, certPem: tls.certPem, keyPem: tls.keyPem }, full.handshakeTimeoutMs)
    : undefined;
  const port = await listen(server, '127.0.0.1:0', creds);
  return { server, port, active: () => active, peak: () => peak };
}

describe('server limits on real sockets', () => {
  let material: CertificateAndKey & { caPem: string };
  const servers: grpc.Server[] = [];
  before(async () => {
    const ca = await createCertificateAuthority();
    const cert = await issueServerCertificate(ca, { hostnames: ['127.0.0.1'] });
    material = { ...cert, caPem: ca.certPem };
  });
  after(() => {
    for (const socket of sockets) socket.destroy();
    for (const s of servers) s.forceShutdown();
  });

  it('a TLS handshake never started is dropped after the handshake timeout, not node’s 120 s', async () => {
    const s = await watchServer({ handshakeTimeoutMs: 300 }, material);
    servers.push(s.server);
    const socket = netConnect(s.port, '127.0.0.1');
    await connected(socket);
    // Far below node's 120 s default: the bound proves the configured timeout cut it.
    const ms = await closedWithin(socket, 20_000);
    assert.ok(ms >= 200, `closed after ${ms} ms, before the handshake timeout`);
  });

  it('a connection that finished the TLS handshake but never calls is closed after the handshake timeout', async () => {
    const s = await watchServer({ handshakeTimeoutMs: 300 }, material);
    servers.push(s.server);
    const socket = tlsConnect({ host: '127.0.0.1', port: s.port, ca: material.caPem, ALPNProtocols: ['h2'] });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    assert.equal(socket.authorized, true);
    await closedWithin(socket, 20_000);
  });

  it('a clear-text connection that never calls is closed after the handshake timeout too', async () => {
    const s = await watchServer({ handshakeTimeoutMs: 300 });
    servers.push(s.server);
    const socket = netConnect(s.port, '127.0.0.1');
    await connected(socket);
    await closedWithin(socket, 20_000);
  });

  it('a peer calling right after the handshake timer of a busy server ran late is not reset', async () => {
    const s = await watchServer({ handshakeTimeoutMs: 300 });
    servers.push(s.server);
    const client = http2Connect(`http://127.0.0.1:${s.port}`);
    client.on('error', () => {});
    try {
      // The server's session (and its handshake timer) exists once its SETTINGS arrived.
      await new Promise((resolve) => client.once('remoteSettings', resolve));
      // This process (the server's) is busy for twice the timeout: a connect storm or a starved
      // host. The timer runs late; the peer, as late as the server, calls right after it ran.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 600);
      await new Promise((resolve) => setTimeout(resolve, 0));
      const call = client.request({
        ':method': 'POST',
        ':path': '/pgfleet.v1.AdminService/ListClusters',
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      call.on('error', () => {});
      call.end(Buffer.from([0, 0, 0, 0, 0]));
      const status = await new Promise<unknown>((resolve, reject) => {
        call.once('response', (headers) => resolve(headers[':status']));
        call.once('close', () => reject(new Error(`the call was reset (${call.rstCode})`)));
      });
      assert.equal(status, 200);
    } finally {
      client.destroy();
    }
  });

  it('connections beyond maxConnections are refused while the others stay open', async () => {
    const s = await watchServer({ maxConnections: 2, handshakeTimeoutMs: 60_000 }, material);
    servers.push(s.server);
    const held = [netConnect(s.port, '127.0.0.1'), netConnect(s.port, '127.0.0.1')];
    await Promise.all(held.map(connected));
    const third = netConnect(s.port, '127.0.0.1');
    third.on('error', () => {});
    await closedWithin(third, 20_000);
    assert.ok(
      held.every((h) => !h.destroyed),
      'the first two connections are still open',
    );
    for (const h of held) h.destroy();
  });

  it('one connection never runs more streams than maxConcurrentStreams', async () => {
    const s = await watchServer({ maxConcurrentStreams: 2 });
    servers.push(s.server);
    const session: ClientHttp2Session = http2Connect(`http://127.0.0.1:${s.port}`);
    session.on('error', () => {});
    try {
      await new Promise<void>((resolve) => session.once('remoteSettings', () => resolve()));
      assert.equal(session.remoteSettings.maxConcurrentStreams, 2);
      const streams = [0, 1, 2, 3].map(() => {
        const req = session.request({
          ':method': 'POST',
          ':path': '/pgfleet.v1.AdminService/WatchEvents',
          'content-type': 'application/grpc',
          te: 'trailers',
        });
        req.on('error', () => {});
        // One gRPC frame holding the empty request message.
        req.end(Buffer.from([0, 0, 0, 0, 0]));
        return req;
      });
      const deadline = Date.now() + 20_000;
      while (s.active() < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      // Give a third handler every chance to start: it must not.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(s.active(), 2);
      assert.equal(s.peak(), 2);
      for (const r of streams) r.close();
    } finally {
      session.destroy();
    }
  });
});
