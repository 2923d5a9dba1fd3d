/**
 * Dependency rules between pgfleet packages (style.md "Dependency direction"). Runs on the
 * compiled-from sources under packages/ and test/ in CI via `npm run lint:deps`.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'cycles make packages impossible to reason about or build in order',
      from: { pathNot: '(^|/)dist/' },
      to: { circular: true },
    },
    {
      name: 'no-deep-imports',
      severity: 'error',
      comment: "import a package by its name ('@pgfleet/core'), never its files: only the exports map is public",
      from: { path: '^packages/([^/]+)/' },
      to: {
        path: '^packages/([^/]+)/',
        pathNot: ['^packages/$1/'],
        dependencyTypesNot: [
          'npm',
          'npm-dev',
          'npm-no-pkg',
          'npm-unknown',
          'aliased-workspace',
          'aliased-subpath-import',
          'aliased',
        ],
      },
    },
    {
      name: 'agent-not-controller-or-cli',
      severity: 'error',
      from: { path: '^packages/agent/' },
      to: { path: '^packages/(controller|cli)/' },
    },
    {
      name: 'controller-not-agent-or-cli',
      severity: 'error',
      from: { path: '^packages/controller/src/(?!.*\\.test\\.ts$)' },
      to: { path: '^packages/(agent|cli)/' },
    },
    {
      name: 'cli-only-proto-rpc-core',
      severity: 'error',
      comment: 'the CLI talks only to the controller API',
      from: { path: '^packages/cli/' },
      to: { path: '^packages/(?!cli/|core/|proto/|rpc/)[^/]+/' },
    },
    {
      name: 'proto-and-core-are-leaves',
      severity: 'error',
      from: { path: '^packages/(core|proto)/' },
      to: { path: '^packages/(?!core/|proto/)[^/]+/' },
    },
    {
      name: 'agent-stays-light',
      severity: 'error',
      comment: 'the agent runs on every database host: no SQLite, no NATS client in its module graph',
      from: { path: '^packages/agent/' },
      to: { path: 'node_modules/(better-sqlite3|nats|@nats-io)/', reachable: true },
    },
    {
      name: 'no-test-code-in-production',
      severity: 'error',
      from: {
        path: '^packages/[^/]+/src/(?!.*\\.test\\.ts$)',
        pathNot: '^packages/(testkit|storage/src/driver-suite)',
      },
      to: { path: '^packages/testkit/' },
    },
    {
      name: 'copy-worker-stays-light',
      severity: 'error',
      comment:
        "a copy worker thread loads its own module graph (RSS per thread): core's light entries only (@pgfleet/core/errors, /async, /fsync), never its index with pino, zod and yaml",
      from: { path: '^packages/agent/src/copy/worker\\.ts$' },
      to: { path: ['^packages/core/(src|dist)/index\\.', 'node_modules/(pino|zod|yaml)/'], reachable: true },
    },
    // Folders inside the agent and the controller (docs/architecture.md).
    {
      name: 'agent-engines-not-jobs-or-daemon',
      severity: 'error',
      comment:
        'a job module (jobs/<kind>.ts) calls an engine, never the reverse: engines know nothing of the Job message, the registry or the controller session',
      from: {
        path: '^packages/agent/src/(backup|copy|drill|pgdata|recover|restore|retention|verify|wal|wal-search)/',
        pathNot: '\\.test\\.ts$',
      },
      to: { path: '^packages/agent/src/(jobs/|daemon\\.ts$|main\\.ts$)' },
    },
    {
      name: 'agent-wal-copy-pgdata-stand-alone',
      severity: 'error',
      comment:
        'WAL archiving runs in archive_command and the daemon without any other engine; the copy and PGDATA layers serve backup and restore alike',
      from: { path: '^packages/agent/src/(wal|copy|pgdata)/', pathNot: '\\.test\\.ts$' },
      to: { path: '^packages/agent/src/(backup|drill|restore|retention|verify)/' },
    },
    {
      name: 'job-kinds-not-the-registry',
      severity: 'error',
      comment: 'the registry lists the kinds; a kind module importing it would be a cycle through every kind',
      from: { path: '^packages/(agent|controller)/src/jobs/(?!registry\\.ts$)', pathNot: '\\.test\\.ts$' },
      to: { path: '^packages/(agent|controller)/src/jobs/registry\\.ts$' },
    },
    {
      name: 'controller-decisions-stay-pure',
      severity: 'error',
      comment:
        'schedules, policies, retention plans and the PITR backup choice are pure functions over catalog records, table-tested without a server',
      from: {
        path: '^packages/controller/src/(schedule/(schedule|policy)|retention/plan|restore/pitr)\\.ts$',
      },
      to: {
        path: [
          '^packages/controller/src/(agents|jobs|admin|health|security|drill|catalog)/',
          '^packages/controller/src/(context|server|wire)\\.ts$',
          'node_modules/@grpc/',
        ],
      },
    },
    { name: 'no-unresolvable', severity: 'error', from: {}, to: { couldNotResolve: true } },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '(^|/)gen/|\\.d\\.ts$|\\.map$' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    combinedDependencies: true,
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'node', 'default'],
      extensions: ['.ts', '.js'],
    },
    preserveSymlinks: false,
  },
};
