/**
 * EnrollmentService: an agent without a certificate trades a one-time token for one. The token
 * (issued by `pgfleet-controller enroll-token <cluster>`) decides the cluster; the certificate
 * request only contributes the agent's public key. Order matters: the request is checked (and
 * signed) before the token is used, so a malformed request does not burn a token, and the token
 * is used in one atomic catalog update, so it works exactly once even when agents race.
 */
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { PgfleetError } from '@pgfleet/core';
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
      const { signAgentCsr, parseCertificate } = await import('@pgfleet/rpc/pki');
      const certPem = await signAgentCsr(
        tls.ca,
        req.csrPem,
        { agentId: req.agentId, cluster: req.cluster },
        { now: new Date(ctx.now()) },
      );

      const log = ctx.logger.child({ agentId: req.agentId, cluster: req.cluster, peer: call.peer });
      const use = await ctx.store.useEnrollmentToken(hashToken(req.token), req.agentId, ctx.now());
      if (!use.ok) {
        const why =
          use.reason === 'used'
            ? `was already used${use.token?.agentId ? ` by agent '${use.token.agentId}'` : ''} at ${new Date(use.token!.usedAt!).toISOString()}`
            : use.reason === 'expired'
              ? `expired at ${new Date(use.token!.expiresAt).toISOString()}`
              : 'is not known to this controller';
        log.warn({ reason: use.reason }, 'enrollment refused');
        throw new PgfleetError('EnrollmentFailed', `the enrollment token ${why}`);
      }
      if (use.token.cluster !== req.cluster) {
        // The token is spent anyway: whoever holds it tried to use it for another cluster.
        log.warn({ tokenCluster: use.token.cluster }, 'enrollment refused: token issued for another cluster');
        throw new PgfleetError(
          'EnrollmentFailed',
          `the enrollment token was issued for cluster '${use.token.cluster}', not '${req.cluster}'; it is now used up`,
        );
      }
      const notAfter = new Date(parseCertificate(certPem).validTo);
      log.info({ notAfter: notAfter.toISOString() }, 'agent enrolled');
      return { certPem, caCertPem: tls.ca.certPem, notAfter: timestampFromDate(notAfter) };
    },
  };
}
