/**
 * The names that become repository keys, catalog rows, certificate identities and event subjects:
 * cluster names, agent ids and backup labels. One rule each, checked wherever a name enters
 * (option tables, the agent stream, enrollment, the admin API, the fleet file, the repository's
 * key building), so a name one entry point refuses can never arrive through another.
 *
 * Why these rules: a cluster name is the first segment of every key of its cluster
 * (`<cluster>/backup/...`, `<cluster>/wal/...`), so `shop/wal` would put a second cluster inside
 * `shop`'s WAL prefix and `shop`'s retention would delete it. Lower case only, because a
 * repository on a case-insensitive filesystem (or a bucket mirrored to one) would make `Shop` and
 * `shop` one directory. 63 characters is a DNS label, which keeps names usable in certificate
 * URIs, NATS subjects and file names. Agent ids and labels are single path segments too.
 *
 * Light on purpose (no zod, no yaml): the option parser of archive_command imports it.
 */
import { PgfleetError } from './errors.js';

export const CLUSTER_NAME_MAX = 63;
export const AGENT_ID_MAX = 128;
export const BACKUP_LABEL_MAX = 128;

const CLUSTER_NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
// Printable, one path segment: hostnames, host:port, user@host and `<host>-<cluster>` fit.
const AGENT_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,127}$/;
// Labels pgfleet makes (20261124-153012F) and the names tests and users give backups.
const BACKUP_LABEL_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/;

export const CLUSTER_NAME_RULE =
  '1 to 63 characters: lower-case letters, digits, and _ . - after the first (a letter or digit); no "/" and no ".."';
export const AGENT_ID_RULE =
  '1 to 128 characters: letters, digits, and _ . : @ + - after the first (a letter or digit); no "/" and no ".."';
export const BACKUP_LABEL_RULE =
  '1 to 128 characters: letters, digits, and _ . + - after the first (a letter or digit); no "/" and no ".."';

/** Shows a value received from outside in a message: cut to `max` characters, control characters escaped. */
export function quoteInput(value: string, max = 64): string {
  const cut = value.length > max ? `${value.slice(0, max)}...` : value;
  // JSON.stringify escapes quotes, backslashes and control characters (a log line stays one line).
  return `${JSON.stringify(cut)}${value.length > max ? ` (${value.length} characters)` : ''}`;
}

function fits(value: string, re: RegExp): boolean {
  return re.test(value) && !value.includes('..');
}

export function isClusterName(value: string): boolean {
  return fits(value, CLUSTER_NAME_RE);
}

export function isAgentId(value: string): boolean {
  return fits(value, AGENT_ID_RE);
}

export function isBackupLabel(value: string): boolean {
  return fits(value, BACKUP_LABEL_RE);
}

/** The cluster name, or InvalidClusterName naming `where` it came from (e.g. "Hello.cluster", "--cluster"). */
export function parseClusterName(value: string, where: string): string {
  if (isClusterName(value)) return value;
  throw new PgfleetError(
    'InvalidClusterName',
    `${where}: ${quoteInput(value)} is not a cluster name (${CLUSTER_NAME_RULE})`,
  );
}

export function parseAgentId(value: string, where: string): string {
  if (isAgentId(value)) return value;
  throw new PgfleetError('InvalidAgentId', `${where}: ${quoteInput(value)} is not an agent id (${AGENT_ID_RULE})`);
}

export function parseBackupLabel(value: string, where: string): string {
  if (isBackupLabel(value)) return value;
  throw new PgfleetError(
    'InvalidBackupLabel',
    `${where}: ${quoteInput(value)} is not a backup label (${BACKUP_LABEL_RULE})`,
  );
}

/** The named rules an option row can ask for (OptionSpec.format). */
export const NAME_FORMATS = {
  'cluster-name': { test: isClusterName, rule: CLUSTER_NAME_RULE, what: 'a cluster name', error: 'InvalidClusterName' },
  'agent-id': { test: isAgentId, rule: AGENT_ID_RULE, what: 'an agent id', error: 'InvalidAgentId' },
} as const;
export type NameFormat = keyof typeof NAME_FORMATS;

/** A table as `pgfleet wal search --table` and `recover-table --table` name it. */
export interface QualifiedTableName {
  schema: string;
  name: string;
}

const IDENT = String.raw`(?:"(?:[^"]|"")+"|[^."\s]+)`;
const QUALIFIED_RE = new RegExp(`^(${IDENT})(?:\\.(${IDENT}))?$`);

/** One identifier as PostgreSQL reads it: quoted kept as written ("" is a quote), unquoted folded to lower case. */
function identifier(text: string): string {
  return text.startsWith('"') ? text.slice(1, -1).replaceAll('""', '"') : text.toLowerCase();
}

/**
 * `schema.name` (or a bare `name`, in public) by PostgreSQL's identifier rules; undefined when
 * it is not one (three parts, empty parts, blanks outside quotes).
 */
export function parseQualifiedTableName(text: string): QualifiedTableName | undefined {
  const m = QUALIFIED_RE.exec(text.trim());
  if (!m) return undefined;
  return m[2] === undefined
    ? { schema: 'public', name: identifier(m[1]!) }
    : { schema: identifier(m[1]!), name: identifier(m[2]) };
}
