/**
 * The controller's small PKI: the fleet CA, the controller's server certificate, agents'
 * certificate requests and the controller signing them at enrollment. ECDSA P-256 with SHA-256
 * throughout (small keys, fast handshakes, supported by every TLS stack).
 *
 * Node can verify certificates but not create them, so issuing uses @peculiar/x509 (pure
 * TypeScript over WebCrypto, no native code, maintained by PeculiarVentures; node-forge cannot
 * make ECDSA certificates). It needs a Reflect metadata polyfill, imported first. This module is
 * a separate entry point (`@pgfleet/rpc/pki`) so the CLI and the agent's steady state never load
 * it: only `ca init`, enrollment on the controller and the agent's first start do.
 */
import 'reflect-metadata';
import { randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import * as x509 from '@peculiar/x509';
import { PgfleetError } from '@pgfleet/core';
import { agentIdentityUri, type AgentIdentity } from './tls.js';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const EC: webcrypto.EcKeyGenParams & webcrypto.EcdsaParams = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const DAY_MS = 86_400_000;

export const CA_VALID_DAYS = 3650;
export const SERVER_CERT_VALID_DAYS = 825;
export const AGENT_CERT_VALID_DAYS = 365;

export interface CertificateAndKey {
  certPem: string;
  /** PKCS#8 PEM, the form node:tls reads. */
  keyPem: string;
}

async function newKeyPair(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']) as Promise<CryptoKeyPair>;
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
}

async function importSigningKey(keyPem: string): Promise<CryptoKey> {
  const der = Buffer.from(keyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  try {
    return await webcrypto.subtle.importKey('pkcs8', der, EC, false, ['sign']);
  } catch (err) {
    throw new PgfleetError('InvalidConfig', 'the CA key is not an ECDSA P-256 private key in PKCS#8 PEM', {
      cause: err,
    });
  }
}

/** A positive random 128-bit serial number (RFC 5280 allows up to 20 octets). */
function serialNumber(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f;
  return b.toString('hex');
}

/** Subject names are built from our own strings: escape what RFC 4514 treats as syntax. */
function dnValue(v: string): string {
  return v
    .replace(/([\\,+"<>;=])/g, '\\$1')
    .replace(/^([ #])/, '\\$1')
    .replace(/ $/, '\\ ');
}

function validity(now: Date, days: number): { notBefore: Date; notAfter: Date } {
  // A minute of slack for hosts whose clocks run a little behind the controller's.
  return { notBefore: new Date(now.getTime() - 60_000), notAfter: new Date(now.getTime() + days * DAY_MS) };
}

/** The fleet CA: self-signed, may sign end-entity certificates only (path length 0). */
export async function createCertificateAuthority(
  opts: { commonName?: string; validDays?: number; now?: Date } = {},
): Promise<CertificateAndKey> {
  const keys = await newKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=${dnValue(opts.commonName ?? 'pgfleet fleet CA')}, O=pgfleet`,
    ...validity(opts.now ?? new Date(), opts.validDays ?? CA_VALID_DAYS),
    keys,
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await privateKeyPem(keys.privateKey) };
}

interface IssueOptions {
  subject: string;
  publicKey: x509.PublicKey | CryptoKey;
  san: x509.JsonGeneralName[];
  usage: 'server' | 'client';
  validDays: number;
  now: Date;
}

async function issue(ca: CertificateAndKey, o: IssueOptions): Promise<string> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: o.subject,
    issuer: caCert.subject,
    ...validity(o.now, o.validDays),
    publicKey: o.publicKey,
    signingKey: await importSigningKey(ca.keyPem),
    signingAlgorithm: EC,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        o.usage === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth,
      ]),
      new x509.SubjectAlternativeNameExtension(o.san),
      await x509.SubjectKeyIdentifierExtension.create(o.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return cert.toString('pem');
}

/** The controller's TLS certificate; each host name becomes a DNS or IP subject alternative name. */
export async function issueServerCertificate(
  ca: CertificateAndKey,
  opts: { hostnames: readonly string[]; validDays?: number; now?: Date },
): Promise<CertificateAndKey> {
  if (opts.hostnames.length === 0)
    throw new PgfleetError('InvalidArgument', 'the server certificate needs at least one host name or IP address');
  const keys = await newKeyPair();
  const certPem = await issue(ca, {
    subject: `CN=${dnValue(opts.hostnames[0]!)}, O=pgfleet`,
    publicKey: keys.publicKey,
    san: opts.hostnames.map((h) => (isIP(h) ? { type: 'ip' as const, value: h } : { type: 'dns' as const, value: h })),
    usage: 'server',
    validDays: opts.validDays ?? SERVER_CERT_VALID_DAYS,
    now: opts.now ?? new Date(),
  });
  return { certPem, keyPem: await privateKeyPem(keys.privateKey) };
}

/** An agent's new key and its certificate request (PKCS#10, PEM). The key never leaves the agent. */
export async function createAgentCsr(id: AgentIdentity): Promise<{ csrPem: string; keyPem: string }> {
  const keys = await newKeyPair();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${dnValue(id.agentId)}, O=pgfleet`,
    keys,
    signingAlgorithm: EC,
  });
  return { csrPem: csr.toString('pem'), keyPem: await privateKeyPem(keys.privateKey) };
}

/**
 * Signs an agent's request. Only the request's public key is used (after checking the request is
 * signed with its key, i.e. the agent holds it); the identity comes from the caller, who took the
 * cluster from the enrollment token, so a request cannot choose what the certificate speaks for.
 */
export async function signAgentCsr(
  ca: CertificateAndKey,
  csrPem: string,
  id: AgentIdentity,
  opts: { validDays?: number; now?: Date } = {},
): Promise<string> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new PgfleetError('InvalidArgument', 'csr_pem is not a PEM certificate request (PKCS#10)', { cause: err });
  }
  // A request whose key or signature does not even parse is the sender's fault, not a bug.
  const signed = await csr.verify().catch(() => false);
  if (!signed) throw new PgfleetError('InvalidArgument', 'the certificate request is not signed by its own key');
  return issue(ca, {
    subject: `CN=${dnValue(id.agentId)}, O=pgfleet, OU=${dnValue(id.cluster)}`,
    publicKey: csr.publicKey,
    san: [{ type: 'url', value: agentIdentityUri(id) }],
    usage: 'client',
    validDays: opts.validDays ?? AGENT_CERT_VALID_DAYS,
    now: opts.now ?? new Date(),
  });
}

/** Node's view of a PEM certificate (for expiry and issuer checks, and tests). */
export function parseCertificate(pem: string | Buffer): X509Certificate {
  return new X509Certificate(pem);
}
