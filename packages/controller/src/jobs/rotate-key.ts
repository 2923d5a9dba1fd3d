/**
 * Rotate-key jobs on the controller (`pgfleet repo rotate-key`): one connected agent of the
 * cluster re-wraps its data keys from the agent's previous key to its current one (agent
 * jobs/rotate-key.ts). The controller never holds encryption keys or repository credentials, so
 * the agent does the work; the result is kept with the job and key.rotated says how it ended.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import type { JobInfoSchema } from '@pgfleet/proto';
import type { ControllerContext } from '../context.js';
import { resultJson } from '../wire.js';
import { errorDetail, jobDurationSeconds, outboxEvent } from './events.js';
import { startOnAnyAgent } from './info.js';
import type { ControllerJobKind } from './job-kind.js';

export const rotateKeyJob: ControllerJobKind<'rotate-key'> = {
  events(job, to, details, now) {
    if (to !== 'succeeded' && to !== 'failed' && to !== 'cancelled') return [];
    const r = details.rotateKey;
    return [
      outboxEvent(
        job.cluster,
        {
          case: 'keyRotated',
          value: {
            jobId: job.id,
            ok: to === 'succeeded',
            rewrapped: r?.rewrapped ?? 0,
            alreadyNew: r?.alreadyNew ?? 0,
            oldKeyId: r?.oldKeyId ?? '',
            newKeyId: r?.newKeyId ?? '',
            durationSeconds: jobDurationSeconds(job, now),
            ...(details.error ? { error: errorDetail(details.error) } : {}),
          },
        },
        now,
      ),
    ];
  },
  succeeded(_job, result) {
    const rotateKey = result.case === 'rotateKey' ? result.value : undefined;
    return { result: resultJson({ rotateKey }), details: rotateKey ? { rotateKey } : {} };
  },
};

/** Starts a rotate-key job (RotateKeyJob) on a connected agent of the cluster (AgentNotConnected without one). */
export function startRotateKeyJob(
  ctx: ControllerContext,
  cluster: string,
): Promise<MessageInitShape<typeof JobInfoSchema>> {
  return startOnAnyAgent(ctx, cluster, 'rotate-key', { case: 'rotateKey', value: {} }, rotateKeyJob);
}
