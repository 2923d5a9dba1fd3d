/**
 * `pgfleet token create|list|revoke` and `pgfleet enroll-token <cluster>`: credentials through
 * the admin API (admin role), so they can be managed without a shell on the controller host. As
 * with `pgfleet-controller token create`, a new token is printed once, alone on stdout (scripts
 * capture it); what it is and how to use it goes to stderr. The controller keeps only its hash.
 */
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { ErrorCodes, PgfleetError, parseDuration, type OptionValues } from '@pgfleet/core';
import {
  CreateEnrollmentTokenResponseSchema,
  CreateTokenResponseSchema,
  TokenInfoSchema,
  type TokenInfo,
} from '@pgfleet/proto';
import { formatTable, formatTime } from './format.js';
import { err, ms, out, printJson, type Admin } from './output.js';
import { cliSettings } from './program.js';

export async function tokenCommand(
  admin: Admin,
  positionals: string[],
  options: OptionValues,
  json: boolean,
): Promise<number> {
  const [action, target] = positionals;
  switch (action) {
    case 'create': {
      const settings = cliSettings('token', options);
      const name = (settings.name ?? '').trim();
      const { role } = settings;
      if (role === undefined)
        throw new PgfleetError('InvalidArgument', 'pgfleet token create needs --role viewer|operator|admin');
      if (!name)
        throw new PgfleetError(
          'InvalidArgument',
          'pgfleet token create needs --name: who or what uses the token (e.g. ci, alice)',
        );
      if (target !== undefined)
        throw new PgfleetError(
          'InvalidArgument',
          `pgfleet token create takes no argument (got '${target}'); name the token with --name`,
        );
      const r = await admin.createToken({ name, role });
      if (json) printJson(CreateTokenResponseSchema, r);
      else {
        out(r.token);
        err(
          `admin token '${r.info!.name}' (id ${r.info!.id}, role ${r.info!.role}); it is shown only now: pass it as --token, PGFLEET_TOKEN or --token-file`,
        );
      }
      return 0;
    }
    case 'list': {
      const { tokens } = await admin.listTokens({});
      if (json) printJson(TokenInfoSchema, tokens);
      else out(describeTokens(tokens));
      return 0;
    }
    case 'revoke': {
      if (!target) throw new PgfleetError('InvalidArgument', 'pgfleet token revoke needs the token id or name');
      const { info } = await admin.revokeToken({ token: target });
      if (json) printJson(TokenInfoSchema, info!);
      else
        out(
          `revoked admin token '${info!.name}' (id ${info!.id}, role ${info!.role}); calls with it now fail with ${ErrorCodes.Unauthenticated.code}`,
        );
      return 0;
    }
    default:
      throw new PgfleetError(
        'InvalidArgument',
        `pgfleet token: expected 'create', 'list' or 'revoke', got ${action === undefined ? 'nothing' : `'${action}'`}`,
      );
  }
}

export function describeTokens(tokens: readonly TokenInfo[]): string {
  return formatTable(
    ['ID', 'NAME', 'ROLE', 'CREATED', 'REVOKED'],
    tokens.map((t) => [
      t.id,
      t.name,
      t.role,
      formatTime(ms(t.createdAt)),
      t.revokedAt ? formatTime(ms(t.revokedAt)) : '-',
    ]),
  );
}

/** Validated before any connection: the lifetime in seconds. */
export function enrollTtlSeconds(options: OptionValues): number {
  return Math.round(parseDuration(cliSettings('enroll-token', options).ttl, 'ttl') / 1000);
}

export async function enrollTokenCommand(
  admin: Admin,
  cluster: string,
  ttlSeconds: number,
  json: boolean,
): Promise<number> {
  const r = await admin.createEnrollmentToken({ cluster, ttlSeconds });
  if (json) {
    printJson(CreateEnrollmentTokenResponseSchema, r);
    return 0;
  }
  out(r.token);
  err(
    `one-time enrollment token for an agent of cluster '${r.cluster}', usable until ${formatTime(r.expiresAt ? timestampMs(r.expiresAt) : undefined)}:\n` +
      `  pgfleet-agent run --cluster ${r.cluster} --tls-dir DIR --ca-cert ca.crt --enroll-token <token> ...`,
  );
  return 0;
}
