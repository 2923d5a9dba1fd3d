/**
 * What the end-to-end tests of several controllers on one catalog (leaderkill, lost-dispatch)
 * share: the CLI pointed at one controller, the controllers `pgfleet status` lists, the
 * controllers an agent's log says it connected to (and the waits it chose on the way), and the
 * controllers' logs merged into one timeline to read when a test fails.
 */
import { CLI_BIN, INSECURE_ENV, runNode, waitFor, type Fleet, type RunResult } from './harness.js';

/** A controller as `pgfleet status --output json` lists it. */
export interface ControllerJson {
  id?: string;
  address: string;
  alive?: boolean;
  leads?: string[];
  agentsHeld?: number;
}

/** The CLI talking to the controller at `address`. */
export function cliAt(address: string, ...args: string[]): Promise<RunResult> {
  return runNode(CLI_BIN, args, { env: { PGFLEET_CONTROLLER: address, ...INSECURE_ENV } });
}

/** The controllers of the catalog as the one at `address` lists them (none while it does not answer). */
export async function controllersAt(address: string): Promise<ControllerJson[]> {
  const r = await cliAt(address, 'status', '--output', 'json');
  return r.code === 0 ? (JSON.parse(r.stdout) as { controllers: ControllerJson[] }).controllers : [];
}

/** Waits until every controller of the fleet answers the CLI (a loaded machine: up to 5 minutes). */
export async function controllersListening(fleet: Fleet): Promise<void> {
  for (const address of fleet.controllerAddresses)
    await waitFor(
      `controller ${address} to listen`,
      async () => (await cliAt(address, 'clusters')).code === 0,
      300_000,
    );
}

/** One JSON line of an agent's log. */
interface AgentLogLine {
  msg?: string;
  time?: number;
  controller?: string;
  retryInMs?: number;
}

function logLines(log: string): AgentLogLine[] {
  const out: AgentLogLine[] = [];
  for (const line of log.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as AgentLogLine);
    } catch {
      // a partial last line
    }
  }
  return out;
}

/** The controllers an agent's log says it connected to, in order. */
export function agentConnections(log: string): string[] {
  return logLines(log)
    .filter((l) => l.msg === 'connected to controller')
    .map((l) => l.controller!);
}

/**
 * How the agent got from its last stream to `from` to its next stream elsewhere, from its own
 * log: the reconnect attempts it logged in between (`reconnecting to controller`, each with the
 * wait it chose and the controller it tries next) and the controller it reached. Undefined while
 * it has not connected elsewhere.
 */
export function agentMoveFrom(
  log: string,
  from: string,
): { attempts: { controller: string; retryInMs: number }[]; reached: string } | undefined {
  const lines = logLines(log);
  const held = lines.findLastIndex((l) => l.msg === 'connected to controller' && l.controller === from);
  if (held < 0) return undefined;
  const attempts: { controller: string; retryInMs: number }[] = [];
  for (const l of lines.slice(held + 1)) {
    if (l.msg === 'reconnecting to controller') attempts.push({ controller: l.controller!, retryInMs: l.retryInMs! });
    if (l.msg === 'connected to controller') return { attempts, reached: l.controller! };
  }
  return undefined;
}

/**
 * What the fleet's controllers logged that matches `wanted`, merged in time order, each line
 * with the controller's address: read when a test fails (or to see how long a handover took).
 */
export async function controllersTimeline(fleet: Fleet, wanted: RegExp): Promise<string> {
  const lines: Array<{ time: number; text: string }> = [];
  for (const [i, daemon] of fleet.controllers.entries())
    for (const line of (await daemon.log()).split('\n')) {
      if (!wanted.test(line)) continue;
      try {
        const e = JSON.parse(line) as {
          time: number;
          msg: string;
          leadership?: string;
          epoch?: number;
          agents?: string[];
          cluster?: string;
          scheduledAt?: string;
          jobId?: string;
          code?: string;
        };
        const extra = [
          e.leadership,
          e.epoch !== undefined ? `epoch ${e.epoch}` : '',
          e.cluster,
          e.scheduledAt,
          e.jobId,
          e.code,
          e.agents?.join(' '),
        ];
        lines.push({
          time: e.time,
          text: `${fleet.controllerAddresses[i]} ${e.msg} ${extra.filter(Boolean).join(' ')}`,
        });
      } catch {
        // not a log record
      }
    }
  return lines
    .sort((a, b) => a.time - b.time)
    .map((l) => `${new Date(l.time).toISOString()} ${l.text}`)
    .join('\n');
}
