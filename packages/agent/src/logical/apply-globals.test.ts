// What applyGlobals reads out of pg_dumpall --globals-only: its statements (meta-commands,
// comments and quoting as pg_dumpall 15 writes them) and what each is about. Applying them to a
// real cluster is the e2e test's (test/src/logical.test.ts, "--globals").
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { quoteStatement, splitStatements, subjectOf } from './apply-globals.js';

// As pg_dumpall 15.20 writes it (the \restrict key is random per run).
const GLOBALS = `--
-- PostgreSQL database cluster dump
--

\\restrict Xq1bY2kz9

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE app_owner;
ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:abc=$def=:ghi=';
CREATE ROLE "Mixed ""Case"" role";
ALTER ROLE "Mixed ""Case"" role" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
COMMENT ON ROLE app_owner IS 'owns the app; it''s; not a -- comment';

--
-- User Configurations
--

--
-- User Config "app_owner"
--

ALTER ROLE app_owner SET search_path TO 'app', 'public';

--
-- Role memberships
--

GRANT app_owner TO "Mixed ""Case"" role" GRANTED BY postgres;

--
-- Tablespaces
--

CREATE TABLESPACE fast OWNER app_owner LOCATION '/srv/fast';

\\unrestrict Xq1bY2kz9

--
-- PostgreSQL database cluster dump complete
--

`;

test('statements come out whole: meta-commands and comments gone, quotes kept', () => {
  const s = splitStatements(GLOBALS);
  assert.deepEqual(s, [
    'SET default_transaction_read_only = off',
    "SET client_encoding = 'UTF8'",
    'SET standard_conforming_strings = on',
    'CREATE ROLE app_owner',
    "ALTER ROLE app_owner WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:abc=$def=:ghi='",
    'CREATE ROLE "Mixed ""Case"" role"',
    'ALTER ROLE "Mixed ""Case"" role" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS',
    'CREATE ROLE postgres',
    'ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS',
    "COMMENT ON ROLE app_owner IS 'owns the app; it''s; not a -- comment'",
    "ALTER ROLE app_owner SET search_path TO 'app', 'public'",
    'GRANT app_owner TO "Mixed ""Case"" role" GRANTED BY postgres',
    "CREATE TABLESPACE fast OWNER app_owner LOCATION '/srv/fast'",
  ]);
});

test('dollar quotes, E strings and nested block comments hold their semicolons', () => {
  assert.deepEqual(
    splitStatements(
      "/* a /* nested; */ comment; */ SELECT $x$ a; b $x$; SELECT E'it\\'s; fine'; SELECT $$;$$;\n  \\connect other\nSELECT 1",
    ),
    ['SELECT $x$ a; b $x$', "SELECT E'it\\'s; fine'", 'SELECT $$;$$', 'SELECT 1'],
  );
});

test('each statement is about the role or tablespace it names, created or not', () => {
  const about = splitStatements(GLOBALS).map(subjectOf);
  assert.deepEqual(about.slice(3, 13), [
    { kind: 'role', name: 'app_owner', create: true },
    { kind: 'role', name: 'app_owner', create: false },
    { kind: 'role', name: 'Mixed "Case" role', create: true },
    { kind: 'role', name: 'Mixed "Case" role', create: false },
    { kind: 'role', name: 'postgres', create: true },
    { kind: 'role', name: 'postgres', create: false },
    { kind: 'role', name: 'app_owner', create: false },
    { kind: 'role', name: 'app_owner', create: false },
    // A membership is about two roles: it runs whichever exists.
    undefined,
    { kind: 'tablespace', name: 'fast', create: true },
  ]);
  assert.equal(subjectOf('SET client_encoding = 1'), undefined);
  assert.deepEqual(subjectOf("SECURITY LABEL FOR selinux ON ROLE app_owner IS 'x'"), {
    kind: 'role',
    name: 'app_owner',
    create: false,
  });
});

test('a quoted statement never shows a password', () => {
  assert.equal(
    quoteStatement("ALTER ROLE a WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:s3cr''et'"),
    "ALTER ROLE a WITH LOGIN PASSWORD '***'",
  );
});
