/**
 * The controller's identity and access commands, run on the controller host against its catalog
 * (they need no running controller): `ca init`, `enroll-token`, `token create|list|revoke`.
 * A token is printed once, on stdout alone so scripts can capture it; the catalog keeps only its
 * hash. Everything else (what was made, until when) goes to stderr.
 */
import { ErrorCodes, missingOption, PgfleetError, resolveSettings, type OptionValues } from '@pgfleet/core';
import { openCatalog, type CatalogStore } from '@pgfleet/catalog';
import { parseDuration } from './access.js';
import { controllerProgram } from '../options.js';
import { initTlsDir, TLS_FILES } from './tls-dir.js';
import { createAdminToken, issueEnrollmentToken, revokeAdminToken } from './tokens.js';

export interface CommandIo {
  out(text: string): void;
  err(text: string): void;
  now(): number;
}

export const processIo: CommandIo = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  now: Date.now,
};

export async function caCommand(action: string, options: OptionValues, io: CommandIo = processIo): Promise<number> {
  if (action !== 'init')
    throw new PgfleetError('InvalidArgument', `ca: unknown action '${action}'; use: ca init --dir DIR`);
  const { dir, hostname } = resolveSettings(controllerProgram, 'ca', options, ['dir']);
  const hostnames = hostname
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean);
  if (hostnames.length === 0)
    throw new PgfleetError('InvalidArgument', '--hostname: give at least one host name or IP address');
  const r = await initTlsDir(dir, hostnames, new Date(io.now()));
  io.err(
    `${r.createdCa ? 'created the fleet CA' : 'kept the existing fleet CA'} and a server certificate for ${hostnames.join(', ')} (valid until ${r.serverNotAfter.toISOString()}) in ${dir}\n` +
      `  run the controller with --tls-dir ${dir}; give agents and admins ${dir}/${TLS_FILES.caCert} as --ca-cert (never ${TLS_FILES.caKey})\n`,
  );
  return 0;
}

/** Opens the --catalog for one command and closes it after, whatever happens. */
export async function withCatalog<T>(
  settings: { readonly catalog: string | undefined },
  fn: (store: CatalogStore) => Promise<T>,
): Promise<T> {
  if (!settings.catalog) throw missingOption(controllerProgram, 'catalog');
  const store = await openCatalog(settings.catalog);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

export async function enrollTokenCommand(
  cluster: string,
  options: OptionValues,
  io: CommandIo = processIo,
): Promise<number> {
  const settings = resolveSettings(controllerProgram, 'enroll-token', options);
  const ttlMs = parseDuration(settings.ttl, 'ttl');
  const { token, record } = await withCatalog(settings, (store) =>
    issueEnrollmentToken(store, cluster, ttlMs, io.now()),
  );
  io.out(`${token}\n`);
  io.err(
    `one-time enrollment token for an agent of cluster '${cluster}', usable until ${new Date(record.expiresAt).toISOString()}:\n  pgfleet-agent run --cluster ${cluster} --tls-dir DIR --ca-cert ca.crt --enroll-token <token> ...\n`,
  );
  return 0;
}

export async function tokenCommand(
  positionals: string[],
  options: OptionValues,
  io: CommandIo = processIo,
): Promise<number> {
  const [action, target] = positionals;
  const settings = resolveSettings(controllerProgram, 'token', options);
  switch (action) {
    case 'create': {
      const request = { name: settings.name, role: settings.role };
      const { token, record } = await withCatalog(settings, (store) => createAdminToken(store, request, io.now()));
      io.out(`${token}\n`);
      io.err(
        `admin token '${record.name}' (id ${record.id}, role ${record.role}); it is shown only now: pass it as --token, PGFLEET_TOKEN or --token-file\n`,
      );
      return 0;
    }
    case 'list': {
      const tokens = await withCatalog(settings, (store) => store.listAdminTokens());
      const rows = tokens.map((t) => ({
        id: t.id,
        name: t.name,
        role: t.role,
        created: new Date(t.createdAt).toISOString(),
        revoked: t.revokedAt === null ? null : new Date(t.revokedAt).toISOString(),
      }));
      if (settings.output === 'json') {
        io.out(`${JSON.stringify(rows, null, 2)}\n`);
        return 0;
      }
      const table = [
        ['ID', 'NAME', 'ROLE', 'CREATED', 'REVOKED'],
        ...rows.map((r) => [r.id, r.name, r.role, r.created, r.revoked ?? '-']),
      ];
      const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
      for (const row of table)
        io.out(`${row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')}\n`);
      return 0;
    }
    case 'revoke': {
      if (!target) throw new PgfleetError('InvalidArgument', 'token revoke needs the token id or name');
      const revoked = await withCatalog(settings, (store) =>
        revokeAdminToken(store, target, io.now(), 'pgfleet-controller token list'),
      );
      io.err(
        `revoked admin token '${revoked.name}' (id ${revoked.id}, role ${revoked.role}); calls with it now fail with ${ErrorCodes.Unauthenticated.code}\n`,
      );
      return 0;
    }
    default:
      throw new PgfleetError('InvalidArgument', `token: unknown action '${action ?? ''}'; use create, list or revoke`);
  }
}
