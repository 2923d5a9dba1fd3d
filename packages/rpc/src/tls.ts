/**
 * TLS and credentials for pgfleet's gRPC: the controller's server credentials, the agent's and the
 * CLI's channel credentials, bearer tokens in call metadata, and the agent identity that agent
 * certificates carry. Only node:tls and grpc-js here; creating keys and certificates is in pki.ts
 * (`@pgfleet/rpc/pki`), which only `ca init`, enrollment and the agent's first start load.
 *
 * One port, three kinds of callers: agents (mutual TLS), admins (server-side TLS + bearer token)
 * and enrolling agents (server-side TLS + one-time token; they have no certificate yet). TLS can
 * only ask for a client certificate per connection, not per service, so the server asks every
 * client for one without requiring it at the handshake; grpc-js reports the certificate to the
 * handler only when it verified against the CA (socket.authorized), and each service's
 * authorize hook (server.ts) decides whether it needs one. A client without a certificate, or with
 * one from another CA, so gets a clear PGF-8001 instead of a bare handshake failure.
 */
import { open, rename } from 'node:fs/promises';
import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { PgfleetError } from '@pgfleet/core';

export interface ServerTlsMaterial {
  /** The CA that signs agent certificates (PEM). */
  caPem: Buffer | string;
  /** The server's certificate chain and private key (PEM). */
  certPem: Buffer | string;
  keyPem: Buffer | string;
}

/**
 * Server credentials: TLS with the server certificate; a client certificate is requested and
 * verified against the CA but not required at the handshake (see the module comment).
 * ServerCredentials' constructor takes the http2.createSecureServer options, which is the one
 * place `rejectUnauthorized: false` can be said; grpc-js's createSsl only knows "required" or
 * "not requested".
 */
class OptionalClientCertServerCredentials extends grpc.ServerCredentials {
  constructor(m: ServerTlsMaterial, handshakeTimeoutMs: number) {
    super(
      // A peer that opens a socket and never finishes the handshake is anonymous: it gets seconds, not node's 120.
      { requestCert: true, rejectUnauthorized: false, handshakeTimeout: handshakeTimeoutMs },
      { ca: toBuffer(m.caPem), cert: toBuffer(m.certPem), key: toBuffer(m.keyPem) },
    );
  }

  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

/** The TLS handshake bound of the controller (server.ts ServerLimits.handshakeTimeoutMs). */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

export function serverTlsCredentials(
  m: ServerTlsMaterial,
  handshakeTimeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS,
): grpc.ServerCredentials {
  return new OptionalClientCertServerCredentials(m, handshakeTimeoutMs);
}

export interface ClientTlsMaterial {
  /** The CA the server certificate must chain to (PEM). */
  caPem: Buffer | string;
  /** The client certificate and key for mutual TLS (agents); omitted for admins and enrollment. */
  certPem?: Buffer | string;
  keyPem?: Buffer | string;
}

export function clientTlsCredentials(m: ClientTlsMaterial): grpc.ChannelCredentials {
  quietIpServerNameWarning();
  return grpc.credentials.createSsl(
    toBuffer(m.caPem),
    m.keyPem === undefined ? null : toBuffer(m.keyPem),
    m.certPem === undefined ? null : toBuffer(m.certPem),
  );
}

/**
 * The credentials of a client that was given no CA: clear text, which the user must ask for.
 * Without --insecure a client refuses to send tokens and jobs' answers where anyone on the path
 * reads and changes them, and says how to get TLS instead.
 */
export function insecureCredentials(insecure: boolean, program: string, address: string): grpc.ChannelCredentials {
  if (!insecure) {
    throw new PgfleetError(
      'InsecureNotChosen',
      `${program} has no --ca-cert to verify the controller at ${address}, and clear text was not asked for`,
      {
        hint: "Give the fleet CA certificate (the controller's ca.crt) with --ca-cert, or, for a controller run with --insecure on a trusted lab network, pass --insecure (PGFLEET_INSECURE=true).",
      },
    );
  }
  return grpc.credentials.createInsecure();
}

let quieted = false;

/**
 * grpc-js sends the dialled host as TLS server name even when it is an IP address, and Node then
 * prints DEP0123 on every CLI run against e.g. 127.0.0.1 (grpc/grpc-node#1919, open). The
 * certificate is still verified against the IP (as an IP SAN), so the warning tells a user
 * nothing they can act on; only that one warning is dropped, every other one passes through.
 */
function quietIpServerNameWarning(): void {
  if (quieted) return;
  quieted = true;
  const original = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as { code?: string }).code : rest[1];
    if (code === 'DEP0123') return;
    original(warning, ...rest);
  }) as typeof process.emitWarning;
}

function toBuffer(v: Buffer | string): Buffer {
  return typeof v === 'string' ? Buffer.from(v) : v;
}

/** The call header carrying an admin token. */
export const AUTHORIZATION_KEY = 'authorization';

export function bearerMetadata(token: string): Record<string, string> {
  return { [AUTHORIZATION_KEY]: `Bearer ${token}` };
}

/** The token of an `authorization: Bearer <token>` header, or undefined. */
export function bearerToken(metadata: grpc.Metadata): string | undefined {
  const raw = metadata.get(AUTHORIZATION_KEY)[0];
  if (raw === undefined) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(typeof raw === 'string' ? raw : raw.toString('utf8'));
  return m?.[1];
}

/** Who an agent certificate speaks for. */
export interface AgentIdentity {
  agentId: string;
  cluster: string;
}

/**
 * Agent certificates carry their identity as a URI subject alternative name
 * `pgfleet://agent/<cluster>/<agent id>` (both percent-encoded, so a name can hold any
 * character); the subject CN repeats the agent id for people reading the certificate. The
 * controller writes this name when it signs, whatever the request asked for.
 */
const AGENT_URI = /^pgfleet:\/\/agent\/([^/]+)\/([^/]+)$/;

export function agentIdentityUri(id: AgentIdentity): string {
  return `pgfleet://agent/${encodeURIComponent(id.cluster)}/${encodeURIComponent(id.agentId)}`;
}

/** The identity in a certificate's subjectAltName string ("URI:pgfleet://agent/main/db1, DNS:x"), if any. */
export function agentIdentityFromSubjectAltName(subjectAltName: string | undefined): AgentIdentity | undefined {
  for (const entry of (subjectAltName ?? '').split(/,\s*/)) {
    if (!entry.startsWith('URI:')) continue;
    const m = AGENT_URI.exec(entry.slice(4));
    if (!m) continue;
    try {
      return { cluster: decodeURIComponent(m[1]!), agentId: decodeURIComponent(m[2]!) };
    } catch {
      return undefined;
    }
  }
  return undefined;
}

export function agentIdentityFromCertificate(cert: PeerCertificate | undefined): AgentIdentity | undefined {
  return cert ? agentIdentityFromSubjectAltName(cert.subjectaltname) : undefined;
}

/**
 * Writes a PEM file atomically (temp file, fsync, rename) with its mode set at creation, so a
 * private key is never readable by others, not even for a moment, and a crash never leaves half
 * a certificate that would look valid to the next start.
 */
export async function writePemFile(path: string, pem: string, mode: 0o600 | 0o644): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w', mode);
  try {
    await fh.writeFile(pem);
    await fh.chmod(mode); // the umask may have narrowed (or a stale temp file widened) the mode
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}
