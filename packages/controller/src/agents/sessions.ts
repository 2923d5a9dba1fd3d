/**
 * The in-memory registry of connected agents: agent id -> the open Connect stream that jobs are
 * dispatched on. The catalog's `connected` flag mirrors it for listings; this map is what
 * dispatch trusts, since only an open stream can carry a job.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
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
  /** Queues a message on the agent's stream; throws when the stream is gone. */
  send(msg: MessageInitShape<typeof ConnectResponseSchema>): void;
  /** Ends the stream from the controller's side (a newer connection of the same agent replaced it). */
  close(): void;
}

export class AgentSessions {
  private readonly byId = new Map<string, AgentSession>();

  /** Registers a session; an older session of the same agent is closed and returned. */
  register(session: AgentSession): AgentSession | undefined {
    const previous = this.byId.get(session.agentId);
    this.byId.set(session.agentId, session);
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
    if (this.byId.get(session.agentId) !== session) return false;
    this.byId.delete(session.agentId);
    return true;
  }

  get(agentId: string): AgentSession | undefined {
    return this.byId.get(agentId);
  }

  /**
   * The cluster's connected agents, longest connected first. An HA cluster has one per host;
   * which one runs a job is choice.ts's decision (dispatch.ts clusterAgent), by role.
   */
  ofCluster(cluster: string): AgentSession[] {
    return [...this.byId.values()].filter((s) => s.cluster === cluster).sort((a, b) => a.connectedAt - b.connectedAt);
  }

  all(): AgentSession[] {
    return [...this.byId.values()];
  }
}
