/**
 * The web console (docs/console.md): the bundled single-page app (console-ui/, built by
 * scripts/build-console.mjs) and the JSON API it calls, on --console-listen. The API is a thin
 * gateway onto AdminService: POST /api/<method> takes the request message as protobuf JSON, runs
 * the same authorize hook as the gRPC service (bearer token, ADMIN_METHOD_ROLES), the same request
 * bounds and the same handler, and answers with the response message as protobuf JSON. There is
 * no second implementation of anything the CLI can do, and no method the console does not use.
 *
 * The page itself (HTML, script, style) holds no fleet data and is served to anyone who can
 * reach the port, so that it can ask for a token; every figure and action goes through /api,
 * which refuses a call without a valid token whenever the admin API does (TLS or --require-auth).
 * HTTPS uses the controller's own certificate from --tls-dir.
 */
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { create, fromJson, toJson, type DescMethod, type JsonValue } from '@bufbuild/protobuf';
import * as grpc from '@grpc/grpc-js';
import { asPgfleetError, GrpcStatus, PgfleetError, type Logger } from '@pgfleet/core';
import type { AdminRole, CatalogStore } from '@pgfleet/catalog';
import { bearerToken, type CallContext, type ServerTlsMaterial, type ServiceImpl } from '@pgfleet/rpc';
import { AdminService } from '@pgfleet/proto';
import { adminAuthorizer, hashToken, requiredRole, roleAllows } from '../security/access.js';
import { checkWireMessage } from '../security/wire-bounds.js';

/** The AdminService methods the console calls (all unary); anything else is 404. */
export const CONSOLE_METHODS = [
  'listClusters',
  'listBackups',
  'listJobs',
  'getJob',
  'listEvents',
  'listDrills',
  'getClusterHistory',
  'getPolicy',
  'startBackup',
  'startVerify',
  'startDrill',
  'startRestore',
  'cancelJob',
] as const satisfies readonly (keyof (typeof AdminService)['method'])[];

/** The bundle scripts/build-console.mjs writes beside dist/console (dist/console-ui). */
const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/index.html': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};
const ASSET_DIR = new URL('../console-ui/', import.meta.url);

/** A request body larger than this is refused (the console's requests are a few hundred bytes). */
const MAX_BODY_BYTES = 64 * 1024;

/** Everything the console serves is same-origin; nothing may frame it or load from elsewhere. */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

export interface ConsoleOptions {
  store: CatalogStore;
  /** The AdminService implementation the gRPC server runs (admin/service.ts). */
  admin: ServiceImpl<typeof AdminService>;
  /** Serve HTTPS with this certificate (the controller's --tls-dir); absent: HTTP (--insecure). */
  tls?: ServerTlsMaterial;
  /** Tokens are required (TLS, or --require-auth): the same rule as the admin API. */
  requireTokens: boolean;
  logger: Logger;
}

export interface ConsoleServer {
  readonly port: number;
  /** The console's URL (http or https, the bound port). */
  readonly url: string;
  close(): Promise<void>;
}

type Handler = (req: unknown, call: CallContext) => Promise<object>;

export async function startConsoleServer(listen: string, opts: ConsoleOptions): Promise<ConsoleServer> {
  const assets = await loadAssets();
  const authorize = opts.requireTokens ? adminAuthorizer(opts.store) : undefined;
  const methods = new Map<string, DescMethod>(
    CONSOLE_METHODS.map((name) => [name, AdminService.method[name] as DescMethod]),
  );
  const log = opts.logger;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = new URL(req.url ?? '/', 'http://console').pathname;
    if (req.method === 'GET' && ASSETS[path]) {
      const asset = ASSETS[path]!;
      res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': asset.type, 'cache-control': 'no-cache' });
      res.end(assets.get(asset.file));
      return;
    }
    if (!path.startsWith('/api/')) {
      res.writeHead(404, { ...SECURITY_HEADERS, 'content-type': 'text/plain' });
      res.end('not found\n');
      return;
    }
    const call = callContext(req);
    try {
      if (req.method !== 'POST')
        throw new PgfleetError('ConsoleUnknownCall', `${req.method} ${path}: the console API takes POST only`);
      const name = path.slice('/api/'.length);
      const body = await readBody(req);
      if (name === 'session') {
        sendJson(res, 200, await session(opts, call));
        return;
      }
      const method = methods.get(name);
      if (!method) throw new PgfleetError('ConsoleUnknownCall', `${path} is not a console API call`);
      await authorize?.(method, call);
      let input;
      try {
        input = fromJson(method.input, (body.length ? JSON.parse(body.toString('utf8')) : {}) as JsonValue);
      } catch (err) {
        throw new PgfleetError(
          'InvalidArgument',
          `${method.name}: the request is not a ${method.input.typeName} in JSON: ${(err as Error).message}`,
        );
      }
      checkWireMessage(method.input, input, method.name);
      const impl = (opts.admin as unknown as Record<string, Handler>)[method.localName]!;
      const out = create(method.output, (await impl.call(opts.admin, input, call)) as never);
      sendJson(res, 200, toJson(method.output, out));
    } catch (err) {
      const pe = asPgfleetError(err);
      if (pe.errorName === 'Internal') log.error({ err: pe.cause ?? pe, path, code: pe.code }, 'console call failed');
      sendJson(res, httpStatus(pe.grpcStatus), {
        code: pe.code,
        message: pe.message,
        ...(pe.hint ? { hint: pe.hint } : {}),
      });
    } finally {
      call.dispose();
    }
  };

  const listener = (req: IncomingMessage, res: ServerResponse) => void handle(req, res).catch(() => res.destroy());
  const server: Server = opts.tls
    ? createHttpsServer({ cert: opts.tls.certPem, key: opts.tls.keyPem }, listener)
    : createHttpServer(listener);
  // A peer that sends its headers slowly must not hold a socket for long.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  const host = listen.slice(0, listen.lastIndexOf(':'));
  const port = Number(listen.slice(listen.lastIndexOf(':') + 1));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) =>
      reject(
        new PgfleetError('ConsoleListenFailed', `web console: cannot listen on ${listen}: ${err.message}`, {
          cause: err,
        }),
      ),
    );
    server.listen(port, host.replace(/^\[|\]$/g, ''), () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  const shown = host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host;
  const url = `${opts.tls ? 'https' : 'http'}://${shown}:${bound}/`;
  log.info({ listen, port: bound, tls: opts.tls !== undefined, tokens: opts.requireTokens }, `web console at ${url}`);
  return {
    port: bound,
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Who the caller is: its role, and which console calls that role may make (the page shows only those actions). */
async function session(
  opts: ConsoleOptions,
  call: CallContext,
): Promise<{ role: AdminRole; name: string; tokens: boolean; allowed: string[] }> {
  let role: AdminRole = 'admin';
  let name = '';
  if (opts.requireTokens) {
    const token = bearerToken(call.metadata);
    const record = token ? await opts.store.findAdminToken(hashToken(token)) : undefined;
    if (!record)
      throw new PgfleetError(
        'Unauthenticated',
        token ? 'the token is not known to this controller, or it was revoked' : 'the console needs an admin token',
      );
    role = record.role;
    name = record.name;
  }
  const allowed = CONSOLE_METHODS.filter((m) => roleAllows(role, requiredRole(m)!));
  return { role, name, tokens: opts.requireTokens, allowed };
}

/** The gRPC call context the admin handlers and the authorize hook read, from an HTTP request. */
function callContext(req: IncomingMessage): CallContext & { dispose(): void } {
  const metadata = new grpc.Metadata();
  const auth = req.headers.authorization;
  if (auth) metadata.set('authorization', auth);
  const abort = new AbortController();
  const onClose = () => abort.abort(new PgfleetError('Cancelled', 'the console request was closed'));
  req.socket.once('close', onClose);
  return {
    metadata,
    peer: `${req.socket.remoteAddress ?? ''}:${req.socket.remotePort ?? ''}`,
    signal: abort.signal,
    dispose: () => req.socket.off('close', onClose),
  };
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES)
      throw new PgfleetError('InvalidArgument', `the request body is larger than ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

/** The HTTP status of an error's gRPC status (the page shows the code and message either way). */
function httpStatus(grpcStatus: number): number {
  switch (grpcStatus) {
    case GrpcStatus.INVALID_ARGUMENT:
    case GrpcStatus.OUT_OF_RANGE:
      return 400;
    case GrpcStatus.UNAUTHENTICATED:
      return 401;
    case GrpcStatus.PERMISSION_DENIED:
      return 403;
    case GrpcStatus.NOT_FOUND:
      return 404;
    case GrpcStatus.ALREADY_EXISTS:
    case GrpcStatus.FAILED_PRECONDITION:
    case GrpcStatus.ABORTED:
      return 409;
    case GrpcStatus.RESOURCE_EXHAUSTED:
      return 429;
    case GrpcStatus.UNAVAILABLE:
      return 503;
    case GrpcStatus.DEADLINE_EXCEEDED:
      return 504;
    default:
      return 500;
  }
}

async function loadAssets(): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const { file } of Object.values(ASSETS)) {
    if (out.has(file)) continue;
    try {
      out.set(file, await readFile(new URL(file, ASSET_DIR)));
    } catch (err) {
      throw new PgfleetError('ConsoleNotBuilt', `web console: cannot read ${new URL(file, ASSET_DIR).pathname}`, {
        cause: err,
      });
    }
  }
  return out;
}
