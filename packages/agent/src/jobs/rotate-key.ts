/**
 * The rotate-key job (RotateKeyJob, `pgfleet repo rotate-key`): re-wraps the cluster's data keys
 * from the agent's previous key-encryption key to its current one (storage
 * Repository.rotateToCurrentKey). The operator put the new key in the key file and the old one
 * as the previous key, and restarted the agent; this moves the repository over. Only small key
 * objects are rewritten, each atomically, so an interrupted job is finished by starting it again.
 */
import type { AgentJobKind } from './job-kind.js';

export const rotateKeyJob: AgentJobKind<'rotateKey'> = {
  async run(_message, ctx) {
    const { cluster } = ctx.settings;
    ctx.progress({ phase: 'rotate-key', bytesDone: 0, bytesTotal: 0, filesDone: 0, filesTotal: 0 });
    const r = await ctx.repo.rotateToCurrentKey(cluster, (done) => {
      ctx.signal.throwIfAborted();
      ctx.progress({
        phase: 'rotate-key',
        bytesDone: 0,
        bytesTotal: 0,
        filesDone: done.rewrapped + done.alreadyNew,
        filesTotal: 0,
        message: `${done.rewrapped} data key(s) re-wrapped, ${done.alreadyNew} already under the new key`,
      });
    });
    ctx.log.info(
      { cluster, repository: ctx.repo.location, ...r },
      'data keys re-wrapped with the current key; the previous key no longer opens this repository',
    );
    return { case: 'rotateKey', value: r };
  },
};
