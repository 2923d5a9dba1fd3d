/**
 * Controllers as one: any number of controllers share a PostgreSQL catalog, and an agent's
 * stream is held by one of them (agents take a list of controller addresses and move on when
 * theirs dies). A job or a cancel for an agent whose stream another controller holds is left in
 * the catalog (agent_messages) for that controller, which sends it on the stream; the agent's
 * progress and result come back through the catalog's job rows, which every controller reads.
 *
 * Why the catalog and not NATS: the catalog is already the one thing every controller needs
 * (NATS is optional, for events), a job is a catalog row before anything is sent, and a message
 * left in the same database cannot be delivered for a job the catalog does not hold. On
 * PostgreSQL a NOTIFY sent when the message commits makes the holder look at once
 * (store.listenAgentMessages); it also looks every MESSAGE_POLL_MS, the safety net for a
 * notification lost with its connection.
 *
 * Each controller beats in the catalog (controllers.last_seen) every BEAT_MS; one not seen for
 * LEASE_MS is dead: the streams it held are released (their agents count as disconnected until
 * they reconnect elsewhere) and no message is left for it any more.
 */
import { randomUUID } from 'node:crypto';
import { create, fromBinary, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { agentRefKey } from '@pgfleet/catalog';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { ConnectResponseSchema, type ListControllersResponseSchema } from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import type { AgentSession } from './sessions.js';

export const BEAT_MS = 2_000;
/** Five beats: a controller paused by a long GC or a loaded host is not declared dead at once. */
export const LEASE_MS = 10_000;
export const MESSAGE_POLL_MS = 1_000;

/** A new controller's id: one per process, so a restarted controller is a new one (its old holdings died with it). */
export function newControllerId(): string {
  return randomUUID();
}

/**
 * The agents (of `cluster`, or of every cluster) whose streams other live controllers hold, as
 * sessions whose send leaves the message in the catalog for the holder. Agents this controller
 * holds are not among them.
 */
export async function remoteSessions(ctx: ControllerContext, cluster?: string): Promise<AgentSession[]> {
  const now = ctx.now();
  const live = new Set(
    (await ctx.store.listControllers())
      .filter((c) => c.id !== ctx.controllerId && c.lastSeen >= now - LEASE_MS)
      .map((c) => c.id),
  );
  // No other controller alive (always so on SQLite): no agent is held elsewhere. Without this the
  // scheduler's round read every agent and stream of a 10,000-agent fleet for nothing.
  if (live.size === 0) return [];
  const [streams, agents] = await Promise.all([ctx.store.listAgentStreams(cluster), ctx.store.listAgents(cluster)]);
  const connected = new Map(
    agents.filter((a) => a.connected).map((a) => [agentRefKey({ cluster: a.cluster, agentId: a.id }), a]),
  );
  const out: AgentSession[] = [];
  for (const s of streams) {
    if (cluster !== undefined && s.cluster !== cluster) continue;
    if (!live.has(s.controllerId)) continue;
    const agent = connected.get(agentRefKey(s));
    if (!agent || ctx.sessions.get(s.cluster, s.agentId)) continue;
    const a = { cluster: s.cluster, agentId: s.agentId, hostname: agent.hostname, since: s.since };
    out.push(remoteSession(ctx, a, s.controllerId));
  }
  return out;
}

function remoteSession(
  ctx: ControllerContext,
  a: { cluster: string; agentId: string; hostname: string; since: number },
  controllerId: string,
): AgentSession {
  return {
    agentId: a.agentId,
    cluster: a.cluster,
    hostname: a.hostname,
    systemIdentifier: '',
    connectedAt: a.since,
    heldBy: controllerId,
    send: async (msg: MessageInitShape<typeof ConnectResponseSchema>) => {
      const payload = toBinary(ConnectResponseSchema, create(ConnectResponseSchema, msg));
      await ctx.store.queueAgentMessage(controllerId, a, payload, ctx.now());
    },
    close: () => {
      // Another controller's stream: not this one's to end.
    },
  };
}

/** The agent's session here, or one through the controller holding its stream; undefined when none does. */
export async function agentSession(
  ctx: ControllerContext,
  cluster: string,
  agentId: string,
): Promise<AgentSession | undefined> {
  return ctx.sessions.get(cluster, agentId) ?? (await remoteSessions(ctx, cluster)).find((s) => s.agentId === agentId);
}

/** This controller's membership: its beat, the release of dead controllers' streams, and delivery of messages left for it. */
export class ControllerPeers {
  private beatTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private delivering: Promise<void> | undefined;
  private again = false;
  private unlisten: (() => Promise<void>) | undefined;
  private readonly startedAt: number;

  constructor(
    private readonly ctx: ControllerContext,
    private readonly address: string,
    private readonly onDeadStreams: (agents: readonly { cluster: string; agentId: string }[]) => void,
  ) {
    this.startedAt = ctx.now();
  }

  async start(): Promise<void> {
    await this.beat();
    try {
      this.unlisten = await this.ctx.store.listenAgentMessages?.(this.ctx.controllerId, () => this.deliver());
    } catch (err) {
      this.ctx.logger.warn({ err }, 'not listening for messages left for agents held here: polling only');
    }
    this.beatTimer = setInterval(() => void this.beat(), BEAT_MS);
    this.beatTimer.unref();
    this.pollTimer = setInterval(() => this.deliver(), MESSAGE_POLL_MS);
    this.pollTimer.unref();
  }

  /** Looks for messages left for this controller now (a NOTIFY said there is one). */
  deliver(): void {
    if (this.delivering) {
      this.again = true;
      return;
    }
    this.delivering = this.deliverAll()
      .catch((err: unknown) => this.ctx.logger.warn({ err }, 'could not deliver messages left for agents held here'))
      .finally(() => {
        this.delivering = undefined;
        if (this.again) {
          this.again = false;
          this.deliver();
        }
      });
  }

  async stop(): Promise<void> {
    clearInterval(this.beatTimer);
    clearInterval(this.pollTimer);
    await this.unlisten?.();
    await this.delivering;
    // A clean stop: nobody waits out the lease for the streams this controller held.
    await this.ctx.store.removeController(this.ctx.controllerId).catch(() => {});
  }

  private async beat(): Promise<void> {
    try {
      const now = this.ctx.now();
      await this.ctx.store.heartbeatController({
        id: this.ctx.controllerId,
        address: this.address,
        startedAt: this.startedAt,
        lastSeen: now,
      });
      await this.reholdStreams(now);
      const gone = await this.ctx.store.releaseDeadStreams(this.ctx.controllerId, now - LEASE_MS, now);
      if (gone.length > 0) {
        this.ctx.logger.warn(
          { agents: gone.map((g) => `${g.cluster}/${g.agentId}`) },
          'agents held by a controller that stopped beating count as disconnected until they reconnect',
        );
        this.onDeadStreams(gone);
      }
    } catch (err) {
      this.ctx.logger.warn({ err }, 'controller heartbeat not recorded in the catalog');
    }
  }

  /**
   * A pause longer than the lease (a long GC, a starved host) made the others take this
   * controller for dead: they released the streams it still holds open, so its agents counted
   * as disconnected, the scheduler leader skipped their clusters and jobs for them from other
   * controllers failed with AgentNotConnected, until each agent reconnected, which a healthy
   * stream never does. Hold them again at the first beat after the pause.
   */
  private async reholdStreams(now: number): Promise<void> {
    const open = this.ctx.sessions.all().map((s) => ({ cluster: s.cluster, agentId: s.agentId }));
    const again = await this.ctx.store.reholdAgentStreams(this.ctx.controllerId, open, now);
    if (again.length === 0) return;
    // A stream that ended while this ran is released again (its end found nothing to release).
    const ended = again.filter((a) => !this.ctx.sessions.get(a.cluster, a.agentId));
    for (const a of ended)
      if (await this.ctx.store.releaseAgentStream(a, this.ctx.controllerId))
        await this.ctx.store.setAgentConnected(a, false, this.ctx.now());
    this.ctx.logger.warn(
      { agents: again.map((g) => `${g.cluster}/${g.agentId}`) },
      'streams released by another controller while this one was not beating (a pause longer than the lease) are held here again',
    );
  }

  private async deliverAll(): Promise<void> {
    for (;;) {
      const messages = await this.ctx.store.takeAgentMessages(this.ctx.controllerId, 100);
      for (const m of messages) {
        const msg = fromBinary(ConnectResponseSchema, m.payload);
        const session = this.ctx.sessions.get(m.cluster, m.agentId);
        const log = this.ctx.logger.child({ cluster: m.cluster, agentId: m.agentId, msg: msg.msg.case });
        if (!session) {
          // The agent left this controller after the message was left: its reconnect Hello
          // reconciles its jobs (one it never received fails as AgentDisconnected).
          log.warn('a message left for an agent that is no longer held here was dropped');
          continue;
        }
        try {
          await session.send(msg);
          log.debug('message left by another controller sent to the agent');
        } catch (err) {
          log.warn({ err: (err as Error).message }, 'the agent stream ended before a forwarded message was sent');
        }
      }
      if (messages.length < 100) return;
    }
  }
}

/** Every controller of the catalog for `pgfleet status` (ListControllers): alive or not, what it leads and holds. */
export async function listControllerInfo(
  ctx: ControllerContext,
): Promise<MessageInitShape<typeof ListControllersResponseSchema>> {
  const now = ctx.now();
  const [controllers, streams] = await Promise.all([ctx.store.listControllers(), ctx.store.listAgentStreams()]);
  const held = new Map<string, number>();
  for (const s of streams) held.set(s.controllerId, (held.get(s.controllerId) ?? 0) + 1);
  return {
    controllers: controllers.map((c) => {
      const alive = c.id === ctx.controllerId || c.lastSeen >= now - LEASE_MS;
      return {
        id: c.id,
        address: c.address,
        started: timestampFromMs(c.startedAt),
        lastSeen: timestampFromMs(c.lastSeen),
        alive,
        // A dead controller's leaderships went with its catalog sessions.
        leads: alive ? c.leads : [],
        agentsHeld: held.get(c.id) ?? 0,
        answering: c.id === ctx.controllerId,
      };
    }),
  };
}
