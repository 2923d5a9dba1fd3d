/**
 * Issuing and revoking credentials, shared by the controller-host commands
 * (`pgfleet-controller enroll-token`, `token create|list|revoke`, which open the catalog
 * directly) and the admin API (CreateEnrollmentToken, CreateToken, ListTokens, RevokeToken, admin
 * role), so both check and store them the same way. A token is returned once; the catalog keeps
 * only its hash (access.ts).
 */
import { PgfleetError, parseClusterName } from '@pgfleet/core';
import {
  ADMIN_ROLES,
  type AdminRole,
  type AdminTokenRecord,
  type CatalogStore,
  type EnrollmentTokenRecord,
} from '@pgfleet/catalog';
import { ADMIN_TOKEN_PREFIX, ENROLLMENT_TOKEN_PREFIX, hashToken, newToken, newTokenId } from './access.js';

/** Enrollment tokens live one hour unless asked otherwise, at most 30 days. */
export const DEFAULT_ENROLLMENT_TTL_MS = 3_600_000;
const MAX_ENROLLMENT_TTL_MS = 30 * 86_400_000;

export async function issueEnrollmentToken(
  store: CatalogStore,
  cluster: string,
  ttlMs: number,
  now: number,
): Promise<{ token: string; record: EnrollmentTokenRecord }> {
  const name = cluster.trim();
  // A cluster need not be known yet: enrollment comes before its agent's first connection.
  if (!name) throw new PgfleetError('InvalidArgument', 'an enrollment token needs the cluster its agent may speak for');
  parseClusterName(name, 'enrollment token cluster');
  if (!Number.isFinite(ttlMs) || ttlMs <= 0 || ttlMs > MAX_ENROLLMENT_TTL_MS) {
    throw new PgfleetError(
      'InvalidArgument',
      `an enrollment token lives from 1 s to 30 days, not ${Math.round(ttlMs / 1000)} s`,
    );
  }
  const token = newToken(ENROLLMENT_TOKEN_PREFIX);
  const record = await store.createEnrollmentToken(
    { tokenHash: hashToken(token), cluster: name, expiresAt: now + ttlMs },
    now,
  );
  return { token, record };
}

export async function createAdminToken(
  store: CatalogStore,
  request: { name: string | undefined; role: string | undefined },
  now: number,
): Promise<{ token: string; record: AdminTokenRecord }> {
  const role = request.role as AdminRole | undefined;
  if (!role || !ADMIN_ROLES.includes(role)) {
    throw new PgfleetError(
      'InvalidArgument',
      `a token needs a role: ${ADMIN_ROLES.join(', ')}${request.role ? ` (got '${request.role}')` : ''}`,
    );
  }
  const name = (request.name ?? '').trim();
  if (!name)
    throw new PgfleetError('InvalidArgument', 'a token needs a name saying who or what uses it (e.g. ci, alice)');
  const token = newToken(ADMIN_TOKEN_PREFIX);
  const record = await store.createAdminToken({ id: newTokenId(), name, role, tokenHash: hashToken(token) }, now);
  return { token, record };
}

/** Revokes the active token with this id or name; InvalidArgument when there is none. */
export async function revokeAdminToken(
  store: CatalogStore,
  idOrName: string,
  now: number,
  listHint: string,
): Promise<AdminTokenRecord> {
  if (!idOrName) throw new PgfleetError('InvalidArgument', 'revoking a token needs its id or name');
  const revoked = await store.revokeAdminToken(idOrName, now);
  if (!revoked)
    throw new PgfleetError('InvalidArgument', `no active admin token has the id or name '${idOrName}'`, {
      hint: `List tokens with \`${listHint}\`.`,
    });
  return revoked;
}
