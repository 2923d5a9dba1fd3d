/**
 * EnrollmentService: an agent without a certificate trades a one-time token for one. The token
 * (issued by `pgfleet-controller enroll-token <cluster>`) decides the cluster; the certificate
 * request only contributes the agent's public key. Order matters: the token is looked up first,
 * so nothing is signed for an unknown, used, expired or other cluster's token; the request is
 * signed next, so a malformed one does not burn a valid token; then the token is used in one
 * atomic catalog update, so it works exactly once even when agents race.
 */
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { PgfleetError, type Logger } from '@pgfleet/core';
import type { EnrollmentTokenUse } from '@pgfleet/catalog';
import type { ServiceImpl } from '@pgfleet/rpc';
import type { EnrollmentService } from '@pgfleet/proto';
import { hashToken } from './access.js';
import type { ControllerContext } from '../context.js';
import type { ControllerTls } from './tls-dir.js';

const MAX_AGENT_ID = 200;

export function createEnrollmentService(
  ctx: ControllerContext,
  tls: ControllerTls | undefined,
): ServiceImpl<typeof EnrollmentService> {
  return {
    enroll: async (req, call) => {
      if (!tls) {
        throw new PgfleetError(
          'EnrollmentFailed',
          'this controller runs without --tls-dir, so it has no CA to sign agent certificates',
          {
            hint: 'Run `pgfleet-controller ca init --dir DIR` and start the controller with --tls-dir DIR.',
          },
        );
      }
      if (!req.token) throw new PgfleetError('InvalidArgument', 'token is required');
      if (!req.agentId || req.agentId.length > MAX_AGENT_ID)
        throw new PgfleetError('InvalidArgument', `agent_id must be 1 to ${MAX_AGENT_ID} characters`);
      if (!req.cluster) throw new PgfleetError('InvalidArgument', 'cluster is required');
      if (!req.csrPem) throw new PgfleetError('InvalidArgument', 'csr_pem is required');
      const log = ctx.logger.child({ agentId: req.agentId, cluster: req.cluster, peer: call.peer });
      const tokenHash = hashToken(req.token);
      // Nothing is signed for a token that cannot succeed; a valid one is only spent after signing.
      await checkEnrollmentToken(ctx, tokenHash, req, log);
      const { signAgentCsr, parseCertificate } = await import('@pgfleet/rpc/pki');
      const certPem = await signAgentCsr(
        tls.ca,
        req.csrPem,
        { agentId: req.agentId, cluster: req.cluster },
        { now: new Date(ctx.now()) },
      );

      // Used in one atomic update: two agents racing with one token, only one certificate leaves.
      const use = await ctx.store.useEnrollmentToken(tokenHash, req.agentId, ctx.now());
      if (!use.ok) throw refusal(use, log);
      if (use.token.cluster !== req.cluster) throw otherCluster(use.token.cluster, req.cluster, log);
      const notAfter = new Date(parseCertificate(certPem).validTo);
      log.info({ notAfter: notAfter.toISOString() }, 'agent enrolled');
      return { certPem, caCertPem: tls.ca.certPem, notAfter: timestampFromDate(notAfter) };
    },
  };
}

/**
 * The token's state before anything is signed: unknown, used or expired is refused as it will be
 * by the atomic use. A token for another cluster is spent here, as the atomic use would spend it.
 */
async function checkEnrollmentToken(
  ctx: ControllerContext,
  tokenHash: string,
  req: { cluster: string; agentId: string },
  log: Logger,
): Promise<void> {
  const token = (await ctx.store.listEnrollmentTokens()).find((t) => t.tokenHash === tokenHash);
  const now = ctx.now();
  if (!token) throw refusal({ ok: false, reason: 'unknown' }, log);
  if (token.usedAt !== null) throw refusal({ ok: false, reason: 'used', token }, log);
  if (token.expiresAt <= now) throw refusal({ ok: false, reason: 'expired', token }, log);
  if (token.cluster !== req.cluster) {
    await ctx.store.useEnrollmentToken(tokenHash, req.agentId, now);
    throw otherCluster(token.cluster, req.cluster, log);
  }
}

/** The token is spent anyway: whoever holds it tried to use it for another cluster. */
function otherCluster(tokenCluster: string, cluster: string, log: Logger): PgfleetError {
  log.warn({ tokenCluster }, 'enrollment refused: token issued for another cluster');
  return new PgfleetError(
    'EnrollmentFailed',
    `the enrollment token was issued for cluster '${tokenCluster}', not '${cluster}'; it is now used up`,
  );
}

function refusal(use: Extract<EnrollmentTokenUse, { ok: false }>, log: Logger): PgfleetError {
  const why =
    use.reason === 'used'
      ? `was already used${use.token?.agentId ? ` by agent '${use.token.agentId}'` : ''} at ${new Date(use.token!.usedAt!).toISOString()}`
      : use.reason === 'expired'
        ? `expired at ${new Date(use.token!.expiresAt).toISOString()}`
        : 'is not known to this controller';
  log.warn({ reason: use.reason }, 'enrollment refused');
  return new PgfleetError('EnrollmentFailed', `the enrollment token ${why}`);
}
