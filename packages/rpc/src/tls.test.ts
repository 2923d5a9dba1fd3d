// The PKI (CA, server and agent certificates) and TLS over a real grpc-js server on 127.0.0.1:
// which client certificates reach a handler as verified, bearer metadata, the authorize hook.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { EnrollmentService } from '@pgfleet/proto';
import {
  addService,
  agentIdentityFromCertificate,
  agentIdentityFromSubjectAltName,
  agentIdentityUri,
  bearerMetadata,
  bearerToken,
  clientTlsCredentials,
  createClient,
  listen,
  serverTlsCredentials,
  writePemFile,
} from './index.js';
import {
  createAgentCsr,
  createCertificateAuthority,
  issueServerCertificate,
  signAgentCsr,
  type CertificateAndKey,
} from './pki.js';

const DAY = 86_400_000;

describe('pki', () => {
  let ca: CertificateAndKey;
  before(async () => {
    ca = await createCertificateAuthority();
  });

  it('makes a 10-year ECDSA P-256 CA that may sign end-entity certificates only', () => {
    const c = new X509Certificate(ca.certPem);
    assert.equal(c.ca, true);
    assert.equal(c.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const years = (Date.parse(c.validTo) - Date.now()) / (365 * DAY);
    assert.ok(years > 9.9 && years < 10.1, `CA valid for ${years} years`);
    assert.ok(c.verify(c.publicKey), 'self-signed');
    assert.match(ca.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  });

  it('issues the server certificate with DNS and IP names', async () => {
    const s = await issueServerCertificate(ca, { hostnames: ['localhost', '127.0.0.1', 'ctl.example', '::1'] });
    const c = new X509Certificate(s.certPem);
    assert.equal(c.ca, false);
    assert.ok(c.verify(new X509Certificate(ca.certPem).publicKey));
    assert.equal(c.checkHost('ctl.example'), 'ctl.example');
    assert.equal(c.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(c.checkHost('other.example'), undefined);
    await assert.rejects(issueServerCertificate(ca, { hostnames: [] }), (e: unknown) =>
      PgfleetError.is(e, 'InvalidArgument'),
    );
  });

  it('signs an agent request for one year with the identity it is given, not the one asked for', async () => {
    // The request names another agent; only its key counts.
    const { csrPem, keyPem } = await createAgentCsr({ agentId: 'intruder', cluster: 'payments' });
    const now = new Date('2030-01-01T00:00:00Z');
    const certPem = await signAgentCsr(ca, csrPem, { agentId: 'db1/a,b', cluster: 'main' }, { now });
    const c = new X509Certificate(certPem);
    assert.ok(c.verify(new X509Certificate(ca.certPem).publicKey), 'signed by the CA');
    assert.deepEqual(agentIdentityFromSubjectAltName(c.subjectAltName), { agentId: 'db1/a,b', cluster: 'main' });
    assert.equal(Date.parse(c.validTo) - now.getTime(), 365 * DAY);
    assert.ok(c.checkPrivateKey((await import('node:crypto')).createPrivateKey(keyPem)), "for the requester's key");
    assert.match(c.subject, /CN=db1\/a\\,b/);
  });

  it('refuses requests that are not PKCS#10 or not signed by their own key', async () => {
    await assert.rejects(signAgentCsr(ca, 'not a csr', { agentId: 'a', cluster: 'c' }), (e: unknown) =>
      PgfleetError.is(e, 'InvalidArgument'),
    );
    const { csrPem } = await createAgentCsr({ agentId: 'a', cluster: 'c' });
    // Flip a byte inside the signature (the end of the DER): the request no longer verifies.
    const der = Buffer.from(csrPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
    der[der.length - 3] = der[der.length - 3]! ^ 0xff;
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await assert.rejects(signAgentCsr(ca, tampered, { agentId: 'a', cluster: 'c' }), (e: unknown) =>
      PgfleetError.is(e, 'InvalidArgument'),
    );
  });

  it('identity URIs round-trip and foreign SANs are ignored', () => {
    const uri = agentIdentityUri({ cluster: 'a b', agentId: 'x/y' });
    assert.deepEqual(agentIdentityFromSubjectAltName(`DNS:foo, URI:${uri}`), { cluster: 'a b', agentId: 'x/y' });
    assert.equal(agentIdentityFromSubjectAltName('URI:https://example.com/x, DNS:a'), undefined);
    assert.equal(agentIdentityFromSubjectAltName(undefined), undefined);
  });

  it('writes PEM files with their mode', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pgfleet-pem-'));
    try {
      await writePemFile(join(dir, 'k.pem'), 'secret', 0o600);
      assert.equal((await stat(join(dir, 'k.pem'))).mode & 0o777, 0o600);
      assert.equal(await readFile(join(dir, 'k.pem'), 'utf8'), 'secret');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('TLS transport', () => {
  const server = new grpc.Server();
  let address = '';
  let ca: CertificateAndKey;
  let agent: CertificateAndKey;
  let foreignAgent: CertificateAndKey;

  before(async () => {
    ca = await createCertificateAuthority();
    const serverCert = await issueServerCertificate(ca, { hostnames: ['localhost', '127.0.0.1'] });
    const req = await createAgentCsr({ agentId: 'db1', cluster: 'main' });
    agent = { certPem: await signAgentCsr(ca, req.csrPem, { agentId: 'db1', cluster: 'main' }), keyPem: req.keyPem };
    const otherCa = await createCertificateAuthority({ commonName: 'another fleet' });
    const req2 = await createAgentCsr({ agentId: 'db1', cluster: 'main' });
    foreignAgent = {
      certPem: await signAgentCsr(otherCa, req2.csrPem, { agentId: 'db1', cluster: 'main' }),
      keyPem: req2.keyPem,
    };

    // Echoes what the server knows about the caller; the authorize hook refuses token 'deny'.
    addService(
      server,
      EnrollmentService,
      {
        async enroll(_req, ctx) {
          const id = agentIdentityFromCertificate(ctx.peerCertificate);
          return { certPem: id ? `${id.cluster}/${id.agentId}` : 'none', caCertPem: bearerToken(ctx.metadata) ?? '' };
        },
      },
      {
        authorize: (method, ctx) => {
          if (bearerToken(ctx.metadata) === 'deny') throw new PgfleetError('PermissionDenied', `${method.name} denied`);
        },
      },
    );
    const port = await listen(
      server,
      '127.0.0.1:0',
      serverTlsCredentials({ caPem: ca.certPem, certPem: serverCert.certPem, keyPem: serverCert.keyPem }),
    );
    address = `localhost:${port}`;
  });
  after(() => server.forceShutdown());

  const call = async (creds: grpc.ChannelCredentials, metadata?: Record<string, string>) => {
    const client = createClient(EnrollmentService, address, {
      credentials: creds,
      defaultDeadlineMs: 5000,
      ...(metadata ? { metadata } : {}),
    });
    try {
      return await client.enroll({});
    } finally {
      client.close();
    }
  };

  it('reports a certificate from the CA as the verified peer identity', async () => {
    const res = await call(clientTlsCredentials({ caPem: ca.certPem, certPem: agent.certPem, keyPem: agent.keyPem }));
    assert.equal(res.certPem, 'main/db1');
  });

  it('accepts the connection without a client certificate but reports none', async () => {
    assert.equal((await call(clientTlsCredentials({ caPem: ca.certPem }))).certPem, 'none');
  });

  it('does not trust a certificate from another CA', async () => {
    assert.equal(
      (
        await call(
          clientTlsCredentials({ caPem: ca.certPem, certPem: foreignAgent.certPem, keyPem: foreignAgent.keyPem }),
        )
      ).certPem,
      'none',
    );
  });

  it('a client that does not trust the server CA cannot connect', async () => {
    const other = await createCertificateAuthority();
    await assert.rejects(call(clientTlsCredentials({ caPem: other.certPem })), (e: unknown) =>
      PgfleetError.is(e, 'ControllerUnreachable'),
    );
  });

  it('sends default metadata with every call, and the authorize hook runs before the handler', async () => {
    const creds = clientTlsCredentials({ caPem: ca.certPem });
    assert.equal((await call(creds, bearerMetadata('tok-1'))).caCertPem, 'tok-1');
    await assert.rejects(
      call(creds, bearerMetadata('deny')),
      (e: unknown) => PgfleetError.is(e, 'PermissionDenied') && e.code === ErrorCodes.PermissionDenied.code,
    );
  });

  it('parses bearer headers strictly', () => {
    const md = new grpc.Metadata();
    assert.equal(bearerToken(md), undefined);
    md.set('authorization', 'Basic abc');
    assert.equal(bearerToken(md), undefined);
    md.set('authorization', 'bearer  abc ');
    assert.equal(bearerToken(md), 'abc');
  });
});
