// What a reported backup must pass before it becomes a catalog row: each forged field of the
// attack in issue 13 (a path for a label, FF/FFFFFFFF, a stop time a year ahead, another
// system's identifier) is refused on its own, a real backup passes, and a manifest that says
// otherwise than the report is refused too.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import type { BackupRecord } from '@pgfleet/catalog';
import { Lsn } from '@pgfleet/pg';
import {
  backupFactsProblems,
  backupManifestProblems,
  CLOCK_SKEW_MS,
  type BackupAdmissionFacts,
} from './backup-admission.js';

const NOW = Date.parse('2026-03-02T01:10:00Z');
const SYSID = '7300000000000000001';

const real: BackupRecord = {
  cluster: 'shop',
  label: '20260302-010000F',
  type: 'full',
  startLsn: '5/2000028',
  stopLsn: '5/2000138',
  startTime: Date.parse('2026-03-02T01:00:00Z'),
  stopTime: Date.parse('2026-03-02T01:00:07Z'),
  timeline: 1,
  systemIdentifier: SYSID,
  pgVersion: 170002,
  sizeBytes: 100,
  storedBytes: 50,
  fileCount: 2,
  walStart: '000000010000000500000002',
  walStop: '000000010000000500000002',
  jobId: 'job-1',
  priorLabel: '',
};

const facts: BackupAdmissionFacts = {
  systemIdentifier: SYSID,
  reportedLsn: Lsn.parse('5/3000000'),
  jobCreatedAt: Date.parse('2026-03-02T00:59:59Z'),
  now: NOW,
};

function problems(change: Partial<BackupRecord>, f: Partial<BackupAdmissionFacts> = {}): string[] {
  return backupFactsProblems({ ...real, ...change }, { ...facts, ...f });
}

test('a real backup passes every check', () => {
  assert.deepEqual(problems({}), []);
  // An incremental with its prior; the stop exactly at the reported position; no heartbeat position known yet.
  assert.deepEqual(problems({ type: 'incr', label: '20260302-010000I', priorLabel: '20260301-010000F' }), []);
  assert.deepEqual(problems({}, { reportedLsn: Lsn.parse('5/2000138') }), []);
  assert.deepEqual(problems({}, { reportedLsn: undefined }), []);
});

test('the label must be one the agent makes: no path, no other type letter', () => {
  for (const label of [
    '../../etc/fake-F',
    '20260302-010000F/../x',
    '20260302-010000F\n',
    '',
    'latest',
    '20260302-010000X',
  ]) {
    const p = problems({ label });
    assert.equal(p.length, 1, label);
    assert.match(p[0]!, /is not a backup label/);
  }
  assert.match(problems({ label: '20260302-010000I' })[0]!, /does not end in F/);
  assert.match(problems({ priorLabel: '../x' })[0]!, /prior label/);
  // What is shown of a reported string is bounded and escaped.
  const long = problems({ label: `${'a'.repeat(5000)}\u0000` })[0]!;
  assert.ok(long.length < 300, long);
});

test('the system identifier must be the cluster’s', () => {
  assert.match(
    problems({ systemIdentifier: '6999999999999999999' })[0]!,
    /is not the cluster's \(7300000000000000001\)/,
  );
});

test('LSNs: well formed, start <= stop, not zero, stop not beyond what the heartbeats reported', () => {
  assert.match(
    problems({ stopLsn: 'FF/FFFFFFFF' })[0]!,
    /stop LSN FF\/FFFFFFFF is beyond the cluster's reported position 5\/3000000/,
  );
  assert.match(problems({ startLsn: '5/3000000', stopLsn: '5/2000000' })[0]!, /is after stop LSN/);
  assert.match(problems({ startLsn: '0/0' })[0]!, /start LSN is 0\/0/);
  assert.match(problems({ stopLsn: 'nonsense' })[0]!, /are not LSNs/);
});

test('times: start <= stop, the stop not in the future, the start not before the job', () => {
  const yearAhead = NOW + 365 * 86_400_000;
  assert.match(problems({ stopTime: yearAhead })[0]!, /is in the future/);
  assert.deepEqual(problems({ stopTime: NOW + CLOCK_SKEW_MS - 1000 }), [], 'a clock a little ahead is tolerated');
  assert.match(problems({ startTime: real.stopTime + 1 })[0]!, /is after stop time/);
  assert.match(problems({ startTime: facts.jobCreatedAt - CLOCK_SKEW_MS - 1000 })[0]!, /before the job was created/);
});

test('timeline and WAL names must be well formed', () => {
  assert.match(problems({ timeline: 0 })[0]!, /timeline 0/);
  assert.match(problems({ walStop: '../wal' })[0]!, /WAL range/);
});

test('the forged backup of the issue fails on every count at once', () => {
  const p = problems({
    label: '../../etc/fake-F',
    stopLsn: 'FF/FFFFFFFF',
    stopTime: NOW + 365 * 86_400_000,
    systemIdentifier: '1',
  });
  assert.equal(p.length, 4, p.join('\n'));
});

test('the manifest in the repository must say what the agent reported', () => {
  assert.deepEqual(backupManifestProblems(real, { ...real }), []);
  assert.deepEqual(
    backupManifestProblems(real, { ...real, jobId: 'other', pinned: true }),
    [],
    'job id and pin are the catalog’s own',
  );
  assert.deepEqual(backupManifestProblems(real, { ...real, stopLsn: '5/2000100', stopTime: real.stopTime - 1 }), [
    'the manifest in the repository says otherwise about stopLsn, stopTime',
  ]);
});
