/**
 * Logical backups from the CLI (docs/logical.md): `pgfleet dump <cluster>`, `pgfleet dumps
 * <cluster>` and `pgfleet restore-dump <cluster> --database D [--to-cluster C] [--to-database N]`.
 * Flags are checked here before any call (DumpInvalid), so a typo fails fast.
 */
import { parseDuration, PgfleetError, type OptionValues } from '@pgfleet/core';
import {
  DumpInfoSchema,
  type DumpResult,
  type JobInfo,
  type RestoreDumpResult,
  type RestoredGlobals,
  type StartRestoreDumpRequest,
} from '@pgfleet/proto';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { StartRestoreDumpRequestSchema } from '@pgfleet/proto';
import { secs } from './drill-format.js';
import { formatBytes, formatTable, formatTime } from './format.js';
import { err, followAndPrint, ms, out, printJson, stateName, type Admin } from './output.js';
import { cliSettings } from './program.js';
import { splitNameList } from './recover-table-command.js';

function invalid(message: string, cause?: unknown): PgfleetError {
  return new PgfleetError('DumpInvalid', message, cause ? { cause } : {});
}

/** The DumpJob the flags ask for (its label is the controller's). */
export function dumpFromOptions(options: OptionValues) {
  const s = cliSettings('dump', options);
  let lockWaitTimeoutMs: number;
  try {
    lockWaitTimeoutMs = parseDuration(s.lockWaitTimeout, 'lock-wait-timeout');
  } catch (e) {
    throw invalid(`--lock-wait-timeout '${s.lockWaitTimeout}' is not a duration (30s, 5m)`, e);
  }
  return {
    label: '',
    databases: splitNameList(s.database),
    jobs: s.jobs,
    lockWaitTimeoutMs,
    withPasswords: s.withPasswords ?? false,
  };
}

/** The StartRestoreDump request of the flags. */
export function restoreDumpFromOptions(
  cluster: string,
  options: OptionValues,
): MessageInitShape<typeof StartRestoreDumpRequestSchema> {
  const s = cliSettings('restore-dump', options);
  if (!s.database) throw invalid('restore-dump needs --database: the dumped database to restore');
  return {
    cluster,
    label: s.dump ?? '',
    database: s.database,
    toCluster: s.toCluster ?? '',
    toDatabase: s.toDatabase ?? '',
    tables: splitNameList(s.table),
    schemas: splitNameList(s.schema),
    jobs: s.jobs,
    clean: s.clean ?? false,
    globals: s.globals ?? false,
  };
}

async function started(
  admin: Admin,
  job: JobInfo,
  json: boolean,
  wait: boolean,
  describe: (j: JobInfo) => string | undefined,
) {
  if (!wait) {
    if (json) out(JSON.stringify({ id: job.id, kind: job.kind, state: stateName(job.state), agentId: job.agentId }));
    else
      out(
        `${job.kind} job ${job.id} ${stateName(job.state)} to agent ${job.agentId}\nfollow it with: pgfleet job ${job.id}`,
      );
    return 0;
  }
  err(`${job.kind} job ${job.id} ${stateName(job.state)} to agent ${job.agentId}`);
  await followAndPrint(admin, job, json, describe);
  return 0;
}

export async function dumpCommand(
  admin: Admin,
  cluster: string,
  dump: ReturnType<typeof dumpFromOptions>,
  options: OptionValues,
  json: boolean,
): Promise<number> {
  const { job } = await admin.startDump({ cluster, dump });
  return started(admin, job!, json, cliSettings('dump', options).wait, (j) =>
    j.dump ? describeDump(j.dump) : undefined,
  );
}

export async function restoreDumpCommand(
  admin: Admin,
  req: MessageInitShape<typeof StartRestoreDumpRequestSchema>,
  options: OptionValues,
  json: boolean,
): Promise<number> {
  const { job } = await admin.startRestoreDump(req);
  return started(admin, job!, json, cliSettings('restore-dump', options).wait, (j) =>
    j.restoreDump ? describeRestoreDump(j.restoreDump, req as StartRestoreDumpRequest) : undefined,
  );
}

export async function dumpsCommand(admin: Admin, cluster: string, json: boolean): Promise<number> {
  const { dumps } = await admin.listDumps({ cluster });
  if (json) {
    printJson(DumpInfoSchema, dumps);
    return 0;
  }
  out(
    formatTable(
      ['LABEL', 'START', 'DURATION', 'DATABASES', 'TABLES', 'SIZE', 'STORED', 'PG_DUMP'],
      dumps.map((d) => {
        const x = d.dump!;
        return [
          x.label,
          formatTime(ms(x.started)),
          secs(x.seconds),
          x.databases.map((db) => db.name).join(','),
          String(x.databases.reduce((a, db) => a + db.tables.length, 0)),
          formatBytes(x.databases.reduce((a, db) => a + db.size, 0n)),
          formatBytes(x.databases.reduce((a, db) => a + db.storedSize, 0n)),
          x.pgDumpVersion.replace(/^pg_dump \(PostgreSQL\) /, ''),
        ];
      }),
    ),
  );
  return 0;
}

export function describeDump(d: DumpResult): string {
  const lines = [`dump ${d.label}: ${d.databases.length} database(s) in ${secs(d.seconds)} with ${d.pgDumpVersion}`];
  for (const db of d.databases)
    lines.push(
      `  ${db.name}: ${db.tables.length} table(s), ${formatBytes(db.size)} (${formatBytes(db.storedSize)} stored), ${secs(db.seconds)}`,
    );
  lines.push(
    `  globals: ${formatBytes(d.globals?.size ?? 0n)}${d.withPasswords ? ' (with role passwords)' : ' (role passwords left out)'}`,
  );
  return lines.join('\n');
}

export function describeRestoreDump(
  r: RestoreDumpResult,
  req: Pick<StartRestoreDumpRequest, 'toCluster' | 'cluster'>,
): string {
  const where = req.toCluster || req.cluster;
  const only = [
    ...(r.tables.length ? [`tables ${r.tables.join(', ')}`] : []),
    ...(r.schemas.length ? [`schemas ${r.schemas.join(', ')}`] : []),
  ];
  const lines = [];
  if (r.droppedExisting)
    lines.push(`--clean: the existing database '${r.toDatabase}' on cluster '${where}' was DROPPED and replaced`);
  if (r.globals) lines.push(...describeGlobals(r.globals, where));
  lines.push(
    `restored database '${r.database}' of dump ${r.label} into '${r.toDatabase}' on cluster '${where}'${only.length ? ` (only ${only.join('; ')})` : ''}: ${formatBytes(r.bytes)} in ${secs(r.seconds)} with ${r.pgRestoreVersion}`,
  );
  if (!r.globals)
    lines.push(
      `globals (roles, tablespaces) were not applied: give --globals to create the dump's roles and tablespaces on cluster '${where}' first (existing ones are skipped)`,
    );
  return lines.join('\n');
}

/** What --globals did: created and skipped roles and tablespaces, and whether passwords came along. */
export function describeGlobals(g: RestoredGlobals, where: string): string[] {
  const names = (xs: readonly string[]) => (xs.length ? xs.join(', ') : 'none');
  return [
    `globals applied to cluster '${where}' (${g.statements} statement(s)): roles created ${names(g.rolesCreated)}; tablespaces created ${names(g.tablespacesCreated)}`,
    ...(g.rolesSkipped.length || g.tablespacesSkipped.length
      ? [
          `  skipped, they already exist and were left as they are: roles ${names(g.rolesSkipped)}; tablespaces ${names(g.tablespacesSkipped)}`,
        ]
      : []),
    g.withPasswords
      ? '  role passwords: set from the dump (it was taken with --with-passwords)'
      : '  role passwords: none in the dump (taken without --with-passwords): set them with ALTER ROLE ... PASSWORD',
  ];
}
