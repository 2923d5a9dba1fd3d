/**
 * Who may call what. Three callers reach the controller's one port:
 *  - agents on AgentService: a client certificate from the fleet CA (mutual TLS), whose identity
 *    (cluster and agent id, see @pgfleet/rpc agentIdentityUri) must match what Hello claims;
 *  - admins on AdminService: `authorization: Bearer <token>`, the token's role checked against
 *    ADMIN_METHOD_ROLES, the single table of the minimum role per method;
 *  - enrolling agents on EnrollmentService: a one-time token in the request (enrollment.ts).
 * Tokens are 32 random bytes shown once; the catalog stores only their SHA-256 (the tokens carry
 * 256 bits of entropy, so a fast hash is enough: there is nothing to brute-force).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { DescMethod } from '@bufbuild/protobuf';
import { PgfleetError } from '@pgfleet/core';
import { ADMIN_ROLES, type AdminRole, type CatalogStore } from '@pgfleet/catalog';
import { agentIdentityFromCertificate, bearerToken, type AgentIdentity, type CallContext } from '@pgfleet/rpc';
import type { AdminService } from '@pgfleet/proto';

/** Prefixes make a leaked token recognisable (secret scanners, logs) and say which kind it is. */
export const ADMIN_TOKEN_PREFIX = 'pgfa_';
export const ENROLLMENT_TOKEN_PREFIX = 'pgfe_';

export function newToken(prefix: string): string {
  return prefix + randomBytes(32).toString('base64url');
}

/** A short public id for an admin token (listings, revoke); it grants nothing. */
export function newTokenId(): string {
  return `tok_${randomBytes(6).toString('hex')}`;
}

/** What the catalog stores for a token: hex SHA-256 of the whole token string. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * The minimum role of every AdminService method. `satisfies` makes a new method without an entry
 * a compile error, so nothing is reachable by accident; a method missing at run time (a newer
 * proto than this table) is denied.
 */
export const ADMIN_METHOD_ROLES = {
  listClusters: 'viewer',
  listControllers: 'viewer',
  listBackups: 'viewer',
  getJob: 'viewer',
  listJobs: 'viewer',
  watchJob: 'viewer',
  listEvents: 'viewer',
  watchEvents: 'viewer',
  listDrills: 'viewer',
  getClusterHistory: 'viewer',
  getPolicy: 'viewer',
  planRetention: 'viewer',
  startBackup: 'operator',
  startRestore: 'operator',
  applyRetention: 'operator',
  pinBackup: 'operator',
  startVerify: 'operator',
  cancelJob: 'operator',
  startDrill: 'operator',
  startCheck: 'operator',
  deleteBackup: 'operator',
  startInfo: 'viewer',
  startRestorePoints: 'operator',
  startWalSearch: 'operator',
  startDump: 'operator',
  listDumps: 'viewer',
  // Creates (with --clean: drops) a database on the target cluster.
  startRestoreDump: 'operator',
  // Moves the repository to another encryption key: a fleet admin's act, like the key itself.
  startRotateKey: 'admin',
  // Restores like a restore and writes new tables into the live cluster (never over existing ones).
  startRecoverTable: 'operator',
  setPolicy: 'admin',
  applyFleet: 'admin',
  createEnrollmentToken: 'admin',
  createToken: 'admin',
  listTokens: 'admin',
  revokeToken: 'admin',
} as const satisfies Record<keyof (typeof AdminService)['method'], AdminRole>;

/** viewer < operator < admin: each role may do what the ones before it may. */
export function roleAllows(role: AdminRole, required: AdminRole): boolean {
  return ADMIN_ROLES.indexOf(role) >= ADMIN_ROLES.indexOf(required);
}

export function requiredRole(methodLocalName: string): AdminRole | undefined {
  return (ADMIN_METHOD_ROLES as Record<string, AdminRole>)[methodLocalName];
}

const TOKEN_HINT =
  'Pass an admin token with --token, PGFLEET_TOKEN or --token-file; create one on the controller host with `pgfleet-controller token create --role viewer|operator|admin --name NAME`.';
const CERT_HINT =
  'Enroll the agent: `pgfleet-controller enroll-token <cluster>`, then `pgfleet-agent run --tls-dir DIR --enroll-token TOKEN --ca-cert ca.crt`.';

/** The authorize hook of AdminService when tokens are required. */
export function adminAuthorizer(store: CatalogStore): (method: DescMethod, call: CallContext) => Promise<void> {
  return async (method, call) => {
    const token = bearerToken(call.metadata);
    if (!token)
      throw new PgfleetError(
        'Unauthenticated',
        `${method.name} needs a bearer token (authorization: Bearer <token>); none was sent`,
        { hint: TOKEN_HINT },
      );
    const record = await store.findAdminToken(hashToken(token));
    if (!record)
      throw new PgfleetError('Unauthenticated', 'the bearer token is not known to this controller, or it was revoked', {
        hint: TOKEN_HINT,
      });
    const required = requiredRole(method.localName);
    if (!required)
      throw new PgfleetError('PermissionDenied', `${method.name} is not open to any role on this controller`);
    if (!roleAllows(record.role, required)) {
      throw new PgfleetError(
        'PermissionDenied',
        `token '${record.name}' has role ${record.role}; ${method.name} needs ${required} or higher`,
      );
    }
  };
}

/** The identity of the verified client certificate, or Unauthenticated. */
export function requireAgentIdentity(call: CallContext): AgentIdentity {
  if (!call.peerCertificate) {
    throw new PgfleetError(
      'Unauthenticated',
      "agents must present a client certificate signed by this controller's CA; the connection had none, or one from another CA, or an expired one",
      { hint: CERT_HINT },
    );
  }
  const id = agentIdentityFromCertificate(call.peerCertificate);
  if (!id)
    throw new PgfleetError(
      'Unauthenticated',
      'the client certificate carries no pgfleet agent identity (URI SAN pgfleet://agent/<cluster>/<agent id>)',
      { hint: CERT_HINT },
    );
  return id;
}

/** The authorize hook of AgentService with mutual TLS: a verified agent certificate, nothing else. */
export function agentAuthorizer(): (method: DescMethod, call: CallContext) => void {
  return (_method, call) => {
    requireAgentIdentity(call);
  };
}

/** An agent may only speak for the cluster (and as the agent) its certificate names. */
export function checkHelloIdentity(id: AgentIdentity, hello: { agentId: string; cluster: string }): void {
  if (hello.cluster !== id.cluster) {
    throw new PgfleetError(
      'PermissionDenied',
      `the certificate of agent '${id.agentId}' is for cluster '${id.cluster}'; it may not speak for cluster '${hello.cluster}'`,
    );
  }
  if (hello.agentId !== id.agentId) {
    throw new PgfleetError(
      'PermissionDenied',
      `the certificate is for agent '${id.agentId}'; it may not connect as agent '${hello.agentId}'`,
    );
  }
}

// Durations are parsed in core, where the admin CLI's --ttl shares the same syntax.
export { parseDuration } from '@pgfleet/core';
