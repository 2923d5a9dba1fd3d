/**
 * Table names as a DBA types them (`public.orders`, `"Sales"."Order Lines"`), read the way
 * PostgreSQL reads an identifier: unquoted parts are folded to lower case, quoted ones kept as
 * written with "" standing for one quote, each at most NAMEDATALEN - 1 (63) bytes. recover-table
 * parses them once on the controller (a typo fails before a restore starts) and again on the agent.
 */
import { PgfleetError } from '@pgfleet/core';

export interface QualifiedName {
  schema: string;
  name: string;
}

/** The schema recover-table lands tables in. */
export const RECOVERED_SCHEMA = 'pgfleet_recovered';

const MAX_IDENTIFIER_BYTES = 63;

/** Splits dotted identifiers; undefined when the text is not a list of identifiers. */
export function parseIdentifiers(text: string): string[] | undefined {
  const parts: string[] = [];
  let i = 0;
  const s = text.trim();
  for (;;) {
    let part = '';
    if (s[i] === '"') {
      i++;
      for (;;) {
        if (i >= s.length) return undefined;
        if (s[i] === '"') {
          if (s[i + 1] === '"') {
            part += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        part += s[i++];
      }
      if (part === '') return undefined;
    } else {
      const m = /^[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*/.exec(s.slice(i));
      if (!m) return undefined;
      // PostgreSQL folds unquoted identifiers to lower case.
      part = m[0].toLowerCase();
      i += m[0].length;
    }
    if (Buffer.byteLength(part) > MAX_IDENTIFIER_BYTES) return undefined;
    parts.push(part);
    if (i === s.length) return parts;
    if (s[i] !== '.') return undefined;
    i++;
  }
}

/** `schema.name` of a table; RecoverTableNameInvalid otherwise. */
export function parseTableName(text: string, option = 'table'): QualifiedName {
  const parts = parseIdentifiers(text);
  if (!parts || parts.length !== 2)
    throw new PgfleetError(
      'RecoverTableNameInvalid',
      `--${option} '${text}' is not a table name of the form schema.name (e.g. public.orders; quote mixed case: '"Sales"."Orders"')`,
    );
  return { schema: parts[0]!, name: parts[1]! };
}

/** A new name in pgfleet_recovered: `name` or `pgfleet_recovered.name`; RecoverTableNameInvalid otherwise. */
export function parseRecoveredName(text: string): string {
  const parts = parseIdentifiers(text);
  if (!parts || parts.length > 2 || (parts.length === 2 && parts[0] !== RECOVERED_SCHEMA))
    throw new PgfleetError(
      'RecoverTableNameInvalid',
      `--into '${text}' is not a table name in schema ${RECOVERED_SCHEMA} (give a name, or ${RECOVERED_SCHEMA}.name; at most 63 bytes)`,
    );
  return parts.at(-1)!;
}

export const quoteIdentifier = (s: string): string => `"${s.replace(/"/g, '""')}"`;

export const quoteQualified = (q: QualifiedName): string => `${quoteIdentifier(q.schema)}.${quoteIdentifier(q.name)}`;

/**
 * The tables of a recover-table request and the name each lands under in pgfleet_recovered:
 * `into` is empty (own names) or one per table; two tables may not land under one name.
 */
export function recoverTablePlan(
  tables: readonly string[],
  into: readonly string[],
): { table: QualifiedName; into: string }[] {
  if (tables.length === 0)
    throw new PgfleetError('RecoverTableNameInvalid', 'recover-table needs at least one --table schema.name');
  if (into.length !== 0 && into.length !== tables.length)
    throw new PgfleetError(
      'RecoverTableNameInvalid',
      `${into.length} --into for ${tables.length} --table: give one --into per --table, in the same order, or none`,
    );
  const plan = tables.map((t, i) => {
    const table = parseTableName(t);
    return { table, into: into.length ? parseRecoveredName(into[i]!) : table.name };
  });
  const seen = new Set<string>();
  for (const p of plan) {
    if (seen.has(p.into))
      throw new PgfleetError(
        'RecoverTableNameInvalid',
        `two tables would land as ${RECOVERED_SCHEMA}.${quoteIdentifier(p.into)}: give them different names with --into`,
      );
    seen.add(p.into);
  }
  return plan;
}
