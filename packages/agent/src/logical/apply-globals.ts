/**
 * `pgfleet restore-dump --globals` (docs/logical.md, "Globals"): the dump's globals.sql, what
 * `pg_dumpall --globals-only` wrote (roles with their attributes, settings and memberships,
 * tablespaces, parameter privileges), applied to the target cluster before pg_restore, so that the
 * owners and grantees of the restored objects exist.
 *
 * Roles and tablespaces are cluster-wide and the target already has some (its bootstrap superuser
 * at least, often the application's roles): one that exists is left exactly as it is and reported
 * as skipped, and so are the dump's statements about it (ALTER ROLE ... WITH / SET, COMMENT), so a
 * restore never changes an existing role's attributes or password. Existence is read from
 * pg_roles and pg_tablespace before anything runs, not guessed from errors.
 *
 * The file is read whole (statements about roles and tablespaces: kilobytes; refused above
 * MAX_GLOBALS_BYTES), checked against the catalog's size and sha256 as every dump file is, and
 * split into statements here: psql is not needed, and pg_dumpall's own psql meta-commands
 * (`\restrict`/`\unrestrict` since the August 2025 minor releases, `\connect`) are skipped.
 * Statements run one by one outside a transaction: CREATE TABLESPACE cannot run inside one.
 * The first that fails stops the restore (RestoreDumpGlobalsFailed) before any database is
 * created; roles made before it stay (a new run skips them). Role passwords are whatever the dump
 * holds: `pg_dump --with-passwords` kept their hashes, otherwise pg_dumpall left them out and the
 * new roles have none. A statement quoted in an error has its password literal replaced.
 */
import { Writable } from 'node:stream';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { type Logger, PgfleetError } from '@pgfleet/core';
import type { connectPg } from '@pgfleet/pg';
import type { DumpFile, RestoredGlobalsSchema } from '@pgfleet/proto';
import type { Codec, Repository } from '@pgfleet/storage';

export type RestoredGlobalsInit = MessageInitShape<typeof RestoredGlobalsSchema>;

/** globals.sql larger than this is not a list of roles and tablespaces: refused rather than held in memory. */
const MAX_GLOBALS_BYTES = 64 * 2 ** 20;

/** The connection the statements run on: a superuser's (roles and tablespaces are created). */
export type GlobalsClient = Awaited<ReturnType<typeof connectPg>>;

export interface ApplyGlobalsOptions {
  repo: Repository;
  codec: Codec;
  /** The dump's prefix in the repository (globals.sql is under it). */
  prefix: string;
  /** The catalog's record of globals.sql. */
  file: DumpFile;
  withPasswords: boolean;
  client: GlobalsClient;
  log: Logger;
}

export async function applyGlobals(o: ApplyGlobalsOptions): Promise<RestoredGlobalsInit> {
  const sql = await readGlobals(o);
  const statements = splitStatements(sql);
  const roles = new Set(
    (await o.client.query<{ name: string }>('SELECT rolname AS name FROM pg_roles')).rows.map((r) => r.name),
  );
  const spaces = new Set(
    (await o.client.query<{ name: string }>('SELECT spcname AS name FROM pg_tablespace')).rows.map((r) => r.name),
  );
  const out = {
    rolesCreated: [] as string[],
    tablespacesCreated: [] as string[],
    rolesSkipped: [] as string[],
    tablespacesSkipped: [] as string[],
    withPasswords: o.withPasswords,
    statements: 0,
  };
  const skippedRoles = new Set<string>();
  const skippedSpaces = new Set<string>();
  for (const text of statements) {
    const about = subjectOf(text);
    if (about?.create) {
      const existing = about.kind === 'role' ? roles : spaces;
      if (existing.has(about.name)) {
        (about.kind === 'role' ? skippedRoles : skippedSpaces).add(about.name);
        (about.kind === 'role' ? out.rolesSkipped : out.tablespacesSkipped).push(about.name);
        continue;
      }
    } else if (about && (about.kind === 'role' ? skippedRoles : skippedSpaces).has(about.name)) {
      continue; // a statement about a role or tablespace left as it was
    }
    try {
      await o.client.query(text);
    } catch (err) {
      throw new PgfleetError(
        'RestoreDumpGlobalsFailed',
        `applying the dump's globals: ${(err as Error).message}, in: ${quoteStatement(text)}`,
        { cause: err },
      );
    }
    out.statements++;
    if (about?.create) {
      (about.kind === 'role' ? out.rolesCreated : out.tablespacesCreated).push(about.name);
      (about.kind === 'role' ? roles : spaces).add(about.name);
    }
  }
  o.log.info(
    {
      rolesCreated: out.rolesCreated,
      rolesSkipped: out.rolesSkipped,
      tablespacesCreated: out.tablespacesCreated,
      tablespacesSkipped: out.tablespacesSkipped,
    },
    "dump's globals applied",
  );
  return out;
}

async function readGlobals(o: ApplyGlobalsOptions): Promise<string> {
  const size = Number(o.file.size);
  if (size > MAX_GLOBALS_BYTES)
    throw new PgfleetError(
      'RestoreDumpGlobalsFailed',
      `the dump's globals.sql is ${size} bytes, more than the ${MAX_GLOBALS_BYTES} a list of roles and tablespaces can be`,
    );
  const chunks: Buffer[] = [];
  try {
    await o.repo.readObject(
      `${o.prefix}/globals.sql`,
      o.codec,
      { sha256: o.file.sha256, size },
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          chunks.push(chunk);
          cb();
        },
      }),
    );
  } catch (err) {
    throw new PgfleetError('RestoreDumpFailed', `dump file globals.sql: ${(err as Error).message}`, { cause: err });
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** What a statement creates or is about: a role or tablespace by name; undefined for anything else (memberships, SET). */
export function subjectOf(
  statement: string,
): { kind: 'role' | 'tablespace'; name: string; create: boolean } | undefined {
  const m =
    /^(CREATE|ALTER|COMMENT\s+ON|SECURITY\s+LABEL(?:\s+FOR\s+(?:"(?:[^"]|"")*"|\S+))?\s+ON)\s+(ROLE|TABLESPACE)\s+("(?:[^"]|"")*"|[^\s;]+)/i.exec(
      statement,
    );
  if (!m) return undefined;
  const raw = m[3]!;
  const name = raw.startsWith('"') ? raw.slice(1, -1).replaceAll('""', '"') : raw.toLowerCase();
  return {
    kind: m[2]!.toUpperCase() === 'ROLE' ? 'role' : 'tablespace',
    name,
    create: m[1]!.toUpperCase() === 'CREATE',
  };
}

/**
 * The SQL statements of a script, each without its terminating semicolon and surrounding blanks;
 * comments are dropped and psql meta-command lines (a backslash first on a line between
 * statements) skipped. Quotes are respected: '...' (with '' and, in E'...', backslash escapes),
 * "..." identifiers, $tag$...$tag$ bodies and nested /* comments *\/.
 */
export function splitStatements(sql: string): string[] {
  const out: string[] = [];
  let cur = '';
  let i = 0;
  const n = sql.length;
  const flush = () => {
    const s = cur.trim();
    if (s) out.push(s);
    cur = '';
  };
  while (i < n) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if (c === '\\' && cur.trim() === '' && /^\s*$/.test(lineBefore(sql, i))) {
      // A psql meta-command (\restrict KEY, \connect db): to the end of its line.
      const eol = sql.indexOf('\n', i);
      i = eol < 0 ? n : eol + 1;
      cur = '';
      continue;
    }
    if (c === '-' && next === '-') {
      const eol = sql.indexOf('\n', i);
      i = eol < 0 ? n : eol + 1;
      cur += '\n';
      continue;
    }
    if (c === '/' && next === '*') {
      let depth = 1;
      i += 2;
      while (i < n && depth > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') {
          depth++;
          i += 2;
        } else if (sql[i] === '*' && sql[i + 1] === '/') {
          depth--;
          i += 2;
        } else i++;
      }
      cur += ' ';
      continue;
    }
    if (c === "'" || c === '"') {
      // An E'...' string takes backslash escapes (E not ending a longer word).
      const escapes = c === "'" && /[eE]$/.test(cur) && !/[A-Za-z0-9_$][eE]$/.test(cur);
      const j = closingQuote(sql, i, escapes);
      cur += sql.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (c === '$') {
      const tag = /^\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i, i + 64));
      if (tag && !/[A-Za-z0-9_]$/.test(cur)) {
        const end = sql.indexOf(tag[0], i + tag[0].length);
        const stop = end < 0 ? n : end + tag[0].length;
        cur += sql.slice(i, stop);
        i = stop;
        continue;
      }
    }
    if (c === ';') {
      flush();
      i++;
      continue;
    }
    cur += c;
    i++;
  }
  flush();
  return out;
}

/** Where the literal or quoted identifier opened at `i` closes (its quote doubled inside, and with `escapes` backslashes, do not close it). */
function closingQuote(sql: string, i: number, escapes: boolean): number {
  const q = sql[i]!;
  let j = i + 1;
  while (j < sql.length) {
    if (escapes && sql[j] === '\\') j += 2;
    else if (sql[j] === q && sql[j + 1] === q) j += 2;
    else if (sql[j] === q) break;
    else j++;
  }
  return j;
}

/** The text of the line holding position i, up to i. */
function lineBefore(sql: string, i: number): string {
  return sql.slice(sql.lastIndexOf('\n', i - 1) + 1, i);
}

/** A statement as an error quotes it: its password literal replaced, at most 300 characters. */
export function quoteStatement(statement: string): string {
  const redacted = statement.replace(/(\bPASSWORD\s+)'(?:[^']|'')*'/gi, "$1'***'");
  return redacted.length > 300 ? `${redacted.slice(0, 300)}...` : redacted;
}
