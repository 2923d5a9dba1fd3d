/**
 * `pgfleet check <cluster> [--timeout 60s]`: proves on the cluster's agent that WAL archiving
 * works end to end (CheckJob): the archive settings, every repository writable, and a WAL segment
 * switched now reaching every repository within the timeout. It always waits for the result and
 * prints one line per check (ok / warn / FAIL and what to do); any failure exits non-zero with
 * PGF-4009 (ArchiveCheckFailed), after the lines. --output json prints the job with its `check`
 * result instead of the lines.
 */
import { parseDuration, PgfleetError, type OptionValues } from '@pgfleet/core';
import { CheckVerdict, type CheckResult } from '@pgfleet/proto';
import { err, followAndPrint, stateName, type Admin } from './output.js';
import { cliSettings } from './program.js';

/** The longest WAL wait a check may ask for. */
const MAX_CHECK_TIMEOUT_S = 3600;

/** --timeout as seconds: a duration (90s, 2m) or a bare number of seconds. */
export function checkTimeoutSeconds(options: OptionValues): number {
  const text = cliSettings('check', options).timeout.trim();
  const seconds = /^\d+$/.test(text) ? Number(text) : parseDuration(text, 'timeout') / 1000;
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_CHECK_TIMEOUT_S) {
    throw new PgfleetError(
      'InvalidArgument',
      `--timeout '${text}' must be between 1 s and ${MAX_CHECK_TIMEOUT_S / 60} min in whole seconds, e.g. 60s or 2m`,
    );
  }
  return seconds;
}

export async function checkCommand(
  admin: Admin,
  cluster: string,
  timeoutSeconds: number,
  json: boolean,
): Promise<number> {
  const { job } = await admin.startCheck({ cluster, timeoutSeconds });
  err(`check job ${job!.id} ${stateName(job!.state)} to agent ${job!.agentId}`);
  // A failed check has its lines: printed (stdout) before the job's own error code (stderr).
  await followAndPrint(admin, job!, json, (j) => j.check && describeCheck(j.check));
  return 0;
}

const VERDICT_TEXT: Record<CheckVerdict, string> = {
  [CheckVerdict.UNSPECIFIED]: '?',
  [CheckVerdict.OK]: 'ok',
  [CheckVerdict.WARN]: 'warn',
  [CheckVerdict.FAIL]: 'FAIL',
};

/** One line per check (verdict, name, message), then the summary line. */
export function describeCheck(c: CheckResult): string {
  const nameWidth = Math.max(0, ...c.items.map((i) => i.name.length));
  const lines = c.items.map((i) => `${VERDICT_TEXT[i.verdict].padEnd(4)}  ${i.name.padEnd(nameWidth)}  ${i.message}`);
  const failures = c.items.filter((i) => i.verdict === CheckVerdict.FAIL).length;
  const warnings = c.items.filter((i) => i.verdict === CheckVerdict.WARN).length;
  const counts = `${c.items.length} check(s), ${failures} failed, ${warnings} warning(s)`;
  lines.push(
    '',
    c.ok
      ? `check OK: ${counts}${c.walSegment ? `; WAL segment ${c.walSegment} archived in ${c.walSeconds.toFixed(1)} s` : ''}`
      : `check FAILED: ${counts}`,
  );
  return lines.join('\n');
}
