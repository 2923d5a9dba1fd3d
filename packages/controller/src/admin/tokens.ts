/**
 * The credential part of AdminService (admin role, see access.ts): enrollment tokens for new
 * agents and bearer tokens for admins, issued through the same functions as the controller-host
 * commands (tokens.ts). Tokens are logged by id and name, never by value.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import type { AdminTokenRecord } from '@pgfleet/catalog';
import type {
  CreateEnrollmentTokenRequest,
  CreateTokenRequest,
  RevokeTokenRequest,
  TokenInfoSchema,
} from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import {
  createAdminToken,
  DEFAULT_ENROLLMENT_TTL_MS,
  issueEnrollmentToken,
  revokeAdminToken,
} from '../security/tokens.js';

function tokenInfo(t: AdminTokenRecord): MessageInitShape<typeof TokenInfoSchema> {
  return {
    id: t.id,
    name: t.name,
    role: t.role,
    createdAt: timestampFromMs(t.createdAt),
    ...(t.revokedAt !== null ? { revokedAt: timestampFromMs(t.revokedAt) } : {}),
  };
}

export async function createEnrollmentTokenRpc(ctx: ControllerContext, req: CreateEnrollmentTokenRequest) {
  const ttlMs = req.ttlSeconds > 0 ? req.ttlSeconds * 1000 : DEFAULT_ENROLLMENT_TTL_MS;
  const { token, record } = await issueEnrollmentToken(ctx.store, req.cluster, ttlMs, ctx.now());
  ctx.logger.info(
    { cluster: record.cluster, expiresAt: new Date(record.expiresAt).toISOString() },
    'enrollment token issued',
  );
  return { token, cluster: record.cluster, expiresAt: timestampFromMs(record.expiresAt) };
}

export async function createTokenRpc(ctx: ControllerContext, req: CreateTokenRequest) {
  const { token, record } = await createAdminToken(ctx.store, { name: req.name, role: req.role }, ctx.now());
  ctx.logger.info({ tokenId: record.id, name: record.name, role: record.role }, 'admin token created');
  return { info: tokenInfo(record), token };
}

export async function listTokensRpc(ctx: ControllerContext) {
  return { tokens: (await ctx.store.listAdminTokens()).map(tokenInfo) };
}

export async function revokeTokenRpc(ctx: ControllerContext, req: RevokeTokenRequest) {
  const revoked = await revokeAdminToken(ctx.store, req.token.trim(), ctx.now(), 'pgfleet token list');
  ctx.logger.info({ tokenId: revoked.id, name: revoked.name, role: revoked.role }, 'admin token revoked');
  return { info: tokenInfo(revoked) };
}
