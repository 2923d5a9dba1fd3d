/**
 * The in-memory registry of connected agents: (cluster, agent id) -> the open Connect stream that
 * jobs are dispatched on. The catalog's `connected` flag mirrors it for listings; this map is what
 * dispatch trusts, since only an open stream can carry a job.
 *
 * An agent is its cluster and its id together, here as in the catalog (agents keyed by both): the
 * same id in two clusters is two agents, so a stream of cluster A can never replace, receive the
 * jobs of, or be taken for an agent of cluster B with the same id.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { agentRefKey, type AgentRef } from '@pgfleet/catalog';
import type { ConnectResponseSchema, Repository } from '@pgfleet/proto';

export interface AgentSession {
  readonly agentId: string;
  readonly cluster: string;
  readonly hostname: string;
  /** Its PostgreSQL's system identifier (Hello): every agent of a cluster must report the same. */
  readonly systemIdentifier: string;
  readonly connectedAt: number;
  /** The repositories the agent's own configuration names (Hello), shown by status. */
  readonly repositories?: readonly Repository[];
  /**
   * Queues a message on the agent's stream; throws when the stream is gone. For an agent whose
   * stream another controller holds (`heldBy`, agents/peers.ts) the message is left in the catalog
   * for that controller, hence the promise.
   */
  send(msg: MessageInitShape<typeof ConnectResponseSchema>): void | Promise<void>;
  /** The controller holding the stream when it is not this one. */
  readonly heldBy?: string;
  /** Ends the stream from the controller's side (a newer connection of the same agent replaced it). */
  close(): void;
}

/** Who an agent is: the pair its certificate names (pgfleet://agent/<cluster>/<agent id>). */
export type AgentKey = AgentRef;

const keyOf = agentRefKey;

export class AgentSessions {
  private readonly byKey = new Map<string, AgentSession>();
  /** The same sessions by cluster: a Hello and each dispatch ask for one cluster's, among 10,000 agents. */
  private readonly byCluster = new Map<string, Set<AgentSession>>();

  /** Registers a session; an older session of the same agent (same cluster and id) is closed and returned. */
  register(session: AgentSession): AgentSession | undefined {
    const key = keyOf(session);
    const previous = this.byKey.get(key);
    this.byKey.set(key, session);
    if (previous) this.byCluster.get(previous.cluster)?.delete(previous);
    let ofCluster = this.byCluster.get(session.cluster);
    if (!ofCluster) this.byCluster.set(session.cluster, (ofCluster = new Set()));
    ofCluster.add(session);
    if (previous && previous !== session) {
      try {
        previous.close();
      } catch {
        // the old stream is already gone; nothing to end
      }
    }
    return previous;
  }

  /** Removes the session if it still is the agent's current one; false when a newer one replaced it. */
  unregister(session: AgentSession): boolean {
    const key = keyOf(session);
    if (this.byKey.get(key) !== session) return false;
    this.byKey.delete(key);
    const ofCluster = this.byCluster.get(session.cluster);
    ofCluster?.delete(session);
    if (ofCluster?.size === 0) this.byCluster.delete(session.cluster);
    return true;
  }

  /** The agent's session, looked up by both halves of its identity (a job's cluster and agent). */
  get(cluster: string, agentId: string): AgentSession | undefined {
    return this.byKey.get(keyOf({ cluster, agentId }));
  }

  /**
   * The cluster's connected agents, longest connected first. An HA cluster has one per host;
   * which one runs a job is choice.ts's decision (dispatch.ts clusterAgent), by role.
   */
  ofCluster(cluster: string): AgentSession[] {
    return [...(this.byCluster.get(cluster) ?? [])].sort((a, b) => a.connectedAt - b.connectedAt);
  }

  all(): AgentSession[] {
    return [...this.byKey.values()];
  }
}
