/**
 * ESLint for pgfleet's TypeScript (packages/<pkg>/src and test/src). Layout is Prettier's job
 * (`npm run format:check`), so no style rule lives here. What this file adds over the compiler:
 *
 * - no-floating-promises / no-misused-promises, type-aware through typescript-eslint's project
 *   service (it reads each package's tsconfig.json): a promise nobody awaits loses its rejection
 *   (an unhandled rejection ends a Node 24 process) and its ordering. Fire-and-forget is allowed
 *   only spelled out as `void promise` with a comment saying why.
 * - the project's error rules (style.md "One error registry"), as no-restricted-syntax:
 *   `'PGF-…'` codes are written only in packages/core/src/errors.ts, everything else names them
 *   through `ErrorCodes.<Name>.code` or `PgfleetError`; and no `throw new Error(...)`: a
 *   user-facing failure is a `PgfleetError` with a registry code, a broken invariant is
 *   `PgfleetError('Internal', ...)` (PGF-9001, "a bug in pgfleet").
 *
 * Type-aware linting reads the packages' declarations from their dist/ (imports go through the
 * package exports maps), so run it after `npm run build`, as scripts/test.sh does.
 */
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

// Production code: a code anywhere in a string, template or regex (help texts and messages too).
const pgfCodeLiteral = {
  selector: 'Literal[raw=/PGF-[0-9]{4}/], TemplateElement[value.raw=/PGF-[0-9]{4}/]',
  message:
    "PGF codes are written only in packages/core/src/errors.ts: use ErrorCodes.<Name>.code (or PgfleetError) instead of a 'PGF-…' literal.",
};
// Tests: no value that is a code ('PGF-2009' compared against err.code); a test's title, or a
// regex matching a log line, may name the code it is about.
const pgfCodeValue = {
  selector: 'Literal[value=/^PGF-/], TemplateLiteral[quasis.0.value.raw=/^PGF-/]',
  message: pgfCodeLiteral.message,
};
const throwPlainError = {
  selector: "ThrowStatement > NewExpression[callee.name='Error'], ThrowStatement > CallExpression[callee.name='Error']",
  message:
    "Throw a PgfleetError with a registry code (ErrorCodes in @pgfleet/core; a broken invariant is 'Internal'), not a plain Error.",
};

export default defineConfig(
  {
    ignores: ['**/dist/**', 'packages/proto/src/gen/**', '.tools/**', '**/node_modules/**', '.turbo/**'],
  },
  {
    files: ['packages/*/src/**/*.ts', 'test/src/**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommended],
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        // node:test's test()/describe()/it() return promises the runner itself awaits.
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite'] },
          ],
        },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      'no-restricted-syntax': ['error', pgfCodeLiteral, throwPlainError],
      // `_` names a value that is deliberately unused: an interface parameter an implementation
      // ignores, `for await (const _ of stream)` draining a stream, a field dropped by a rest spread.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // `let x;` read (by a closure, or an early return of `undefined`) before its one assignment
      // cannot be a const: leave it alone.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  {
    // Low-level internals whose errors their callers wrap into a PgfleetError naming the
    // repository file, with the plain Error as its cause and message detail: the codecs (a
    // malformed frame becomes RepoChecksumMismatch in Repository.readObject and in verify) and the
    // S3 client binding (S3Driver turns every error of it, like the AWS SDK's own, into
    // RepoIoFailed "cannot write/list s3://bucket/key").
    files: ['packages/storage/src/codec*.ts', 'packages/storage/src/s3-client.ts'],
    rules: { 'no-restricted-syntax': ['error', pgfCodeLiteral] },
  },
  {
    // Tests and test-only code (shared suites, fakes, the testkit launchers, the e2e harness): an
    // Error thrown there fails a test or its setup and is read by a developer, never by a user,
    // so it needs no registry code. 'PGF-…' literals stay forbidden: tests name codes through
    // ErrorCodes too, and packages/core/src/errors.test.ts pins every code's number.
    files: [
      '**/*.test.ts',
      '**/*-suite.ts',
      'packages/*/src/testing/**/*.ts',
      'packages/events/src/test-fakes.ts',
      'packages/testkit/src/**/*.ts',
      'test/src/**/*.ts',
    ],
    rules: { 'no-restricted-syntax': ['error', pgfCodeValue] },
  },
  {
    // The registry is where the codes are written, and its test pins each one (codes never change).
    // Last, so that it wins over the test files' setting above.
    files: ['packages/core/src/errors.ts'],
    rules: { 'no-restricted-syntax': ['error', throwPlainError] },
  },
  {
    files: ['packages/core/src/errors.test.ts'],
    rules: { 'no-restricted-syntax': 'off' },
  },
);
