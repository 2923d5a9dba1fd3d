/**
 * The one place where PgfleetError meets gRPC status. A server turns whatever a handler throws
 * into a status whose trailers carry the stable PGF code and the hint, so the client rebuilds the
 * same PgfleetError (code, message, hint) on its side and the CLI prints what the controller
 * meant. Failures that never reached a handler (connection refused, deadline, cancel) become
 * errors a user can act on instead of raw gRPC codes.
 *
 * Client-side mapping, in order:
 *   trailer `pgfleet-error-code` present  -> PgfleetError.fromCode(code, details, hint)
 *   UNAVAILABLE                           -> opts.unavailableError (default ControllerUnreachable)
 *   DEADLINE_EXCEEDED                     -> Timeout
 *   CANCELLED                             -> Cancelled (local cancel/abort, or the server went away mid-call)
 *   another service answered (HTTP status, no gRPC status, a gRPC server without the method)
 *                                         -> NotAController
 *   anything else                         -> Internal, with the gRPC code name in the message
 */
import * as grpc from '@grpc/grpc-js';
import { PgfleetError, asPgfleetError, redactCredentials, type ErrorName, type Logger } from '@pgfleet/core';

/** Trailer carrying the stable PGF-xxxx code of a failed call. */
export const ERROR_CODE_KEY = 'pgfleet-error-code';
/** Trailer carrying the hint; ASCII hints go as text so `buf curl` users can read them. */
export const ERROR_HINT_KEY = 'pgfleet-error-hint';
// Header values must be printable ASCII; anything else travels as UTF-8 in a -bin trailer.
const ERROR_HINT_BIN_KEY = 'pgfleet-error-hint-bin';
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/**
 * Status for a handler failure. Errors that are not PgfleetError are bugs: they become Internal
 * (PGF-9001) and are logged with their stack, since the client only sees the message.
 */
export function toServerStatus(err: unknown, logger?: Logger, method?: string): grpc.StatusObject {
  const pe = asPgfleetError(err);
  if (pe.errorName === 'Internal') {
    logger?.error({ err: pe.cause ?? pe, method, code: pe.code }, 'rpc handler failed with an internal error');
  }
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_CODE_KEY, pe.code);
  if (pe.hint) {
    if (PRINTABLE_ASCII.test(pe.hint)) metadata.set(ERROR_HINT_KEY, pe.hint);
    else metadata.set(ERROR_HINT_BIN_KEY, Buffer.from(pe.hint, 'utf8'));
  }
  // What a caller sees never carries a password from a URL the server knows (catalog, NATS).
  return { code: pe.grpcStatus as grpc.status, details: redactCredentials(pe.message), metadata };
}

export interface ClientErrorContext {
  /** host:port the client dials; named in the message so the user knows what was unreachable. */
  address: string;
  /** Full method path, e.g. /pgfleet.v1.AdminService/ListBackups. */
  method: string;
  unavailableError: ErrorName;
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === 'number' && 'metadata' in err;
}

function firstString(md: grpc.Metadata | undefined, key: string): string | undefined {
  const v = md?.get(key)[0];
  if (v === undefined) return undefined;
  return typeof v === 'string' ? v : v.toString('utf8');
}

/** Rebuilds a PgfleetError from what a client call failed with. */
export function fromServiceError(err: unknown, ctx: ClientErrorContext): PgfleetError {
  if (err instanceof PgfleetError) return err;
  if (!isServiceError(err)) return asPgfleetError(err);
  const code = firstString(err.metadata, ERROR_CODE_KEY);
  if (code) {
    const hint = firstString(err.metadata, ERROR_HINT_KEY) ?? firstString(err.metadata, ERROR_HINT_BIN_KEY);
    return PgfleetError.fromCode(code, err.details, hint);
  }
  const where = `${ctx.method} on ${ctx.address}`;
  switch (err.code) {
    case grpc.status.UNAVAILABLE:
      return new PgfleetError(ctx.unavailableError, `cannot reach ${ctx.address}: ${transportDetails(err.details)}`, {
        cause: err,
      });
    case grpc.status.DEADLINE_EXCEEDED:
      return new PgfleetError('Timeout', `${where} did not finish before its deadline (${err.details})`, {
        cause: err,
      });
    case grpc.status.CANCELLED:
      return new PgfleetError('Cancelled', `${where} was cancelled (${err.details})`, { cause: err });
    default:
      if (notOurService(err)) {
        return new PgfleetError(
          'NotAController',
          `${ctx.address} is not a pgfleet controller: ${ctx.method} failed with ${grpc.status[err.code] ?? err.code} (${transportDetails(err.details)})`,
          { cause: err },
        );
      }
      return new PgfleetError('Internal', `${where} failed with ${grpc.status[err.code] ?? err.code}: ${err.details}`, {
        cause: err,
      });
  }
}

/** grpc-js appends an empty "Resolution note:" to transport failures; users need only the cause. */
export function transportDetails(details: string): string {
  return details.replace(/\s*Resolution note:\s*$/, '').trim();
}

/**
 * Whether a failure without a pgfleet trailer came from something other than a pgfleet
 * controller: a gRPC server that lacks the method (UNIMPLEMENTED), or an HTTP/2 server that is no
 * gRPC server at all (grpc-js reports its HTTP status or the missing grpc-status). A controller
 * always answers its own methods, and every failure of a handler carries the trailer.
 */
function notOurService(err: grpc.ServiceError): boolean {
  if (err.code === grpc.status.UNIMPLEMENTED) return true;
  return /Received HTTP status code|without gRPC status|No status received|Protocol error|unexpected content-type/i.test(
    err.details,
  );
}
