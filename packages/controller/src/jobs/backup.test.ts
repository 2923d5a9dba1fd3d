// A backup's catalog row comes from its manifest by two routes that must agree: live (the agent
// reports backupInfoFromManifest over the stream, the controller records the result) and the
// catalog rebuild (the manifest read back from the repository). Both run here for real: a fake
// agent on a real controller, and rebuildCatalog over a posix repository into another catalog.
import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { PgfleetError } from '@pgfleet/core';
import { openCatalog } from '@pgfleet/catalog';
import { backupInfoFromManifest } from '@pgfleet/proto';
import { PosixDriver, Repository, secretManifestKeys, type BackupManifest } from '@pgfleet/storage';
import { rebuildCatalog } from '../catalog/rebuild.js';
import { FakeAgent, SYSID, waitFor } from '../testing/fake-agent.js';
import { useTestController } from '../testing/test-controller.js';
import { backupRecordFromManifest } from './backup.js';

const t = useTestController('backup-record');
let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'pgfleet-backup-record-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const SECOND_NOW = Math.floor(Date.now() / 1000) * 1000;

/** An incremental with sub-second times, a prior label and sizes past 2^32: what a lossy route would change. */
function manifest(label: string): BackupManifest {
  return {
    format: 1,
    label,
    cluster: 'main',
    type: 'incr',
    priorLabel: '20260301-010000F',
    systemIdentifier: SYSID,
    pgVersionNum: 170002,
    walSegmentSize: 16 * 1024 * 1024,
    timeline: 3,
    startLsn: '5/2000028',
    stopLsn: '5/2000138',
    // Sub-second times of a backup that just ran (the controller refuses one from before its job).
    startTime: new Date(SECOND_NOW - 8000 + 123).toISOString(),
    stopTime: new Date(SECOND_NOW - 1000 + 987).toISOString(),
    walStart: '000000030000000500000002',
    walStop: '000000030000000500000003',
    backupLabel: 'START WAL LOCATION: 5/2000028\n',
    directories: [{ path: 'base', mode: 0o700 }],
    links: [],
    files: ['PG_VERSION', 'global/pg_control'].map((path) => ({
      path,
      size: 3,
      mtimeMs: 0,
      mode: 0o600,
      sha256: 'a'.repeat(64),
      storedSize: 12,
      storedSha256: 'b'.repeat(64),
      codec: 'zstd' as const,
      backup: label,
    })),
    sizeBytes: 6 * 2 ** 32,
    storedBytes: 5 * 2 ** 32 + 1,
    agentVersion: '0.1.0',
  };
}

test('a backup recorded from the live job result equals the row the catalog rebuild makes from its manifest', async () => {
  const m = manifest('20260302-010000I');
  const agent = new FakeAgent(t.controller.address);
  agent.hello();
  assert.equal((await agent.receive()).msg.case, 'welcome');

  // Live: the agent's backup job reports backupInfoFromManifest (agent/src/jobs/backup.ts).
  const { job } = await t.admin.startBackup({ cluster: 'main' });
  const sent = await agent.receiveJob();
  agent.succeed(sent.jobId, { case: 'backup', value: backupInfoFromManifest(m, sent.jobId) });
  const live = await waitFor('backup recorded', () => t.controller.context.store.getBackup('main', m.label));
  assert.equal(live.jobId, job!.id);

  // Rebuild: the same manifest in a repository, re-indexed into a catalog that never saw the job.
  const repo = new Repository(new PosixDriver(join(dir, 'repo')), secretManifestKeys(Buffer.alloc(32, 0x5a)));
  await repo.ensureClusterInfo('main', {
    systemIdentifier: SYSID,
    pgVersionNum: 170002,
    walSegmentSize: 16 * 1024 * 1024,
  });
  await repo.writeManifest(m);
  const other = await openCatalog(join(dir, 'rebuilt.db'));
  try {
    await rebuildCatalog(other, repo, { now: Date.now() });
    const rebuilt = await other.getBackup('main', m.label);
    // The job id is the catalog's own (the repository does not know which job made a backup).
    assert.deepEqual({ ...rebuilt, jobId: live.jobId }, live);
    assert.deepEqual(live, { ...backupRecordFromManifest(m, job!.id), pinned: false });
  } finally {
    await other.close();
  }
});

test('two backups of one cluster started at once: one is dispatched, the other refused with BackupInProgress', async () => {
  const agent = new FakeAgent(t.controller.address);
  agent.hello({ agentId: 'agent-2', cluster: 'second' });
  assert.equal((await agent.receive()).msg.case, 'welcome');
  const outcomes = await Promise.allSettled([
    t.admin.startBackup({ cluster: 'second' }),
    t.admin.startBackup({ cluster: 'second' }),
  ]);
  const started = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value.job!] : []));
  const refused = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason as unknown] : []));
  assert.equal(started.length, 1);
  assert.equal(refused.length, 1);
  assert.ok(PgfleetError.is(refused[0], 'BackupInProgress'), String(refused[0]));
  assert.match((refused[0] as Error).message, new RegExp(`already has a backup job running \\(${started[0]!.id}`));
  assert.equal((await agent.receiveJob()).jobId, started[0]!.id);
  const jobs = await t.controller.context.store.listJobs({ cluster: 'second' });
  assert.deepEqual(
    jobs.map((j) => j.id),
    [started[0]!.id],
  );
});
