// Resumable backups against a real posix repository: the progress journal as written and read
// back (authenticated, bad batches skipped), which interrupted backup a run continues and which
// entries it takes over, and which leftovers an expire removes.
import { strict as assert } from 'node:assert';
import { hostname } from 'node:os';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { PgfleetError, silentLogger } from '@pgfleet/core';
import type { BackupLease, BackupSource, JournalBatch, ManifestFile, Repository } from '@pgfleet/storage';
import { tempRepositories } from '../testing/repository-fixtures.js';
import { abandonedBackups, findResumePoint, ProgressJournal, resumeDecision } from './resume.js';

const C = 'main';
const L = '20260101-000000F';
const SOURCE: BackupSource = { role: 'primary', host: hostname(), pgdata: '/pg' };
const newRepository = tempRepositories('pgfleet-resume-');

/** Stores `content` as file `path` of backup `label`; its manifest entry. */
async function stored(repo: Repository, label: string, path: string, content: string): Promise<ManifestFile> {
  const key = repo.backupFileKey(C, label, path, 'none');
  const r = await repo.objects.storeStream(key, Readable.from([Buffer.from(content)]), 'none');
  return { path, mtimeMs: 1000, mode: 0o600, codec: 'none', backup: label, ...r };
}

function journal(repo: Repository, label: string, over: Partial<JournalBatch> = {}, seq = 0): ProgressJournal {
  return new ProgressJournal(
    repo,
    {
      format: 1,
      cluster: C,
      label,
      type: 'full',
      systemIdentifier: '42',
      source: SOURCE,
      listedAtMs: 10_000,
      resumeWindowMs: 60_000,
      ...over,
    },
    seq,
    silentLogger(),
  );
}

const context = (repo: Repository, over: Partial<Parameters<typeof findResumePoint>[0]> = {}) => ({
  repo,
  cluster: C,
  type: 'full' as const,
  prior: undefined,
  systemIdentifier: '42',
  source: SOURCE,
  mode: undefined,
  windowMs: 60_000,
  readers: 2,
  log: silentLogger(),
  ...over,
});

/** A leftover full with two journaled files (one batch each). */
async function leftover(repo: Repository): Promise<ManifestFile[]> {
  const a = await stored(repo, L, 'base/1/1', 'aaaa');
  const b = await stored(repo, L, 'base/1/2', 'bbbbbbbb');
  const j = journal(repo, L);
  j.add(a);
  await j.flush();
  j.add(b);
  await j.close(true);
  return [a, b];
}

describe('resumable backups', () => {
  test('the journal reads back in order; a batch moved or edited is skipped, not trusted', async () => {
    const { repo } = newRepository();
    const [a, b] = await leftover(repo);
    let read = await repo.readJournal(C, L);
    assert.deepEqual(
      read.batches.map((x) => x.files.map((f) => f.path)),
      [[a!.path], [b!.path]],
    );
    assert.equal(read.nextSeq, 2);
    // Batch 0 copied over batch 1's name (and over another label's batch): authentication fails.
    const first = await repo.driver.get(repo.backupJournalKey(C, L, 0));
    const bytes = Buffer.concat(await first.toArray());
    await repo.driver.put(repo.backupJournalKey(C, L, 1), bytes);
    read = await repo.readJournal(C, L);
    assert.deepEqual(
      read.batches.map((x) => x.files.map((f) => f.path)),
      [[a!.path]],
    );
    assert.equal(read.rejected.length, 1);
    assert.match(read.rejected[0]!.reason, /authentication/);
    const edited = bytes.toString('utf8').replace('"aaaa', '"zzzz').replace(`"size": 4`, `"size": 5`);
    await repo.driver.put(repo.backupJournalKey(C, L, 0), Buffer.from(edited));
    assert.equal((await repo.readJournal(C, L)).batches.length, 0);
  });

  test('a run continues the leftover of its kind, taking over the entries whose objects read back intact', async () => {
    const { repo } = newRepository();
    const [a, b] = await leftover(repo);
    await repo.writeBackupLease(lease(L, 'gone-host', Date.now() - 3_600_000));
    const point = await findResumePoint(context(repo));
    assert.equal(point?.label, L);
    assert.deepEqual([...point!.entries.keys()].sort(), [a!.path, b!.path]);
    assert.equal(point!.nextSeq, 2);

    // Same size, other bytes: the read-back drops it.
    await repo.driver.put(repo.backupFileKey(C, L, b!.path, 'none'), Buffer.from('BBBBBBBB'));
    const again = await findResumePoint(context(repo));
    assert.deepEqual([...again!.entries.keys()], [a!.path]);
    assert.equal(again!.dropped, 1);
  });

  test('not continued: fresh, another type or prior, another data directory, a live lease, past the window', async () => {
    const { repo } = newRepository();
    await leftover(repo);
    assert.equal(await findResumePoint(context(repo, { mode: 'fresh' })), undefined);
    assert.equal(await findResumePoint(context(repo, { type: 'incr' })), undefined);
    assert.equal(await findResumePoint(context(repo, { source: { ...SOURCE, pgdata: '/other' } })), undefined);
    assert.equal(await findResumePoint(context(repo, { windowMs: 0 })), undefined);
    // Required: the window does not apply, the kind does.
    assert.equal((await findResumePoint(context(repo, { mode: 'required', windowMs: 1 })))?.label, L);
    await assert.rejects(
      findResumePoint(context(repo, { mode: 'required', type: 'incr' })),
      (err: unknown) => err instanceof PgfleetError && err.errorName === 'NothingToResume',
    );
    // A live lease of another host: a backup runs there.
    await repo.writeBackupLease(lease(L, 'other-host', Date.now()));
    assert.equal(await findResumePoint(context(repo)), undefined);
    // A live lease of a process of this host that is gone: a leftover.
    await repo.writeBackupLease({ ...lease(L, hostname(), Date.now()), pid: 2 ** 22 + 1 });
    assert.equal((await findResumePoint(context(repo)))?.label, L);
  });

  test('an entry is taken over only while the file keeps the size and an mtime older than the listing', () => {
    const journaled = {
      file: { size: 8192, mtimeMs: 5000 } as ManifestFile,
      listedAtMs: 10_000,
    };
    assert.equal(resumeDecision({ size: 8192, mtimeMs: 5000 }, journaled, false), 'reuse');
    assert.equal(resumeDecision({ size: 8192, mtimeMs: 5001 }, journaled, false), 'copy');
    assert.equal(resumeDecision({ size: 16384, mtimeMs: 5000 }, journaled, false), 'copy');
    assert.equal(resumeDecision({ size: 8192, mtimeMs: 5000 }, { ...journaled, listedAtMs: 6000 }, false), 'copy');
    assert.equal(resumeDecision({ size: 8192, mtimeMs: 9000 }, journaled, true), 'compare');
    assert.equal(resumeDecision({ size: 8192, mtimeMs: 5000 }, undefined, false), 'copy');
  });

  test('expire removes a leftover past its window, not one inside it or one a running backup holds', async () => {
    const { repo } = newRepository();
    await leftover(repo);
    const past = '20260101-000001D';
    const held = '20260101-000002I';
    const j = journal(repo, past, { type: 'diff', resumeWindowMs: 1 });
    j.add(await stored(repo, past, 'base/1/1', 'x'));
    await j.close(true);
    await stored(repo, held, 'base/1/1', 'y');
    await repo.writeBackupLease(lease(held, 'other-host', Date.now()));
    const now = Date.now() + 1000;
    assert.deepEqual(
      (await abandonedBackups(repo, C, now)).map((a) => a.label),
      [past],
    );
    // Without a journal or lease the label's time dates it.
    const old = '20200101-000000F';
    await stored(repo, old, 'base/1/1', 'z');
    assert.deepEqual((await abandonedBackups(repo, C, now)).map((a) => a.label).sort(), [old, past]);
  });
});

function lease(label: string, host: string, refreshedMs: number): BackupLease {
  const at = new Date(refreshedMs).toISOString();
  return {
    format: 1,
    cluster: C,
    label,
    chain: [],
    host,
    pid: process.pid,
    startedAt: at,
    refreshedAt: at,
    staleAfterMs: 600_000,
  };
}
