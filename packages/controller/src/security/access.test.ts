// Unit tests of access control: the role table, tokens and their hashes, Hello vs certificate.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { ADMIN_ROLES, type AdminRole } from '@pgfleet/catalog';
import { AdminService } from '@pgfleet/proto';
import {
  ADMIN_METHOD_ROLES,
  ADMIN_TOKEN_PREFIX,
  checkHelloIdentity,
  hashToken,
  newToken,
  newTokenId,
  parseDuration,
  requiredRole,
  roleAllows,
} from './access.js';

test('every AdminService method has a minimum role, and the table names no other method', () => {
  const methods = AdminService.methods.map((m) => m.localName).sort();
  assert.deepEqual(Object.keys(ADMIN_METHOD_ROLES).sort(), methods);
  assert.equal(requiredRole('notAMethod'), undefined, 'unknown methods have no role (and are denied)');
});

test('what each role may call', () => {
  const allowed = (role: AdminRole) =>
    AdminService.methods
      .filter((m) => roleAllows(role, requiredRole(m.localName)!))
      .map((m) => m.localName)
      .sort();
  // viewer: read only (list, get, watch, plan, and info: a read of the repository).
  assert.deepEqual(allowed('viewer'), [
    'getClusterHistory',
    'getJob',
    'getPolicy',
    'listBackups',
    'listClusters',
    'listControllers',
    'listDrills',
    'listDumps',
    'listEvents',
    'listJobs',
    'planRetention',
    'startInfo',
    'watchEvents',
    'watchJob',
  ]);
  // operator: + backup, restore, verify, drill, check (it switches a WAL segment), retention apply,
  // pin, backup delete, restore points (pg_waldump over the archive: real work on the agent),
  // dump and restore-dump (a new database on the target cluster; --clean drops one).
  assert.deepEqual(allowed('operator'), [
    'applyRetention',
    'cancelJob',
    'deleteBackup',
    'getClusterHistory',
    'getJob',
    'getPolicy',
    'listBackups',
    'listClusters',
    'listControllers',
    'listDrills',
    'listDumps',
    'listEvents',
    'listJobs',
    'pinBackup',
    'planRetention',
    'startBackup',
    'startCheck',
    'startDrill',
    'startDump',
    'startInfo',
    'startRecoverTable',
    'startRestore',
    'startRestoreDump',
    'startRestorePoints',
    'startVerify',
    'startWalSearch',
    'watchEvents',
    'watchJob',
  ]);
  // admin: everything, policy set included.
  assert.deepEqual(allowed('admin'), AdminService.methods.map((m) => m.localName).sort());
  for (const r of ADMIN_ROLES) assert.equal(roleAllows(r, 'viewer'), true);
  assert.equal(roleAllows('operator', 'admin'), false);
});

test('tokens: 32 random bytes behind a prefix; the catalog gets a SHA-256 that does not contain them', () => {
  const a = newToken(ADMIN_TOKEN_PREFIX);
  const b = newToken(ADMIN_TOKEN_PREFIX);
  assert.notEqual(a, b);
  assert.match(a, /^pgfa_[A-Za-z0-9_-]{43}$/);
  assert.equal(Buffer.from(a.slice(5), 'base64url').length, 32);
  const h = hashToken(a);
  assert.match(h, /^[0-9a-f]{64}$/);
  assert.equal(hashToken(a), h, 'deterministic, so a token is found by its hash');
  assert.notEqual(hashToken(b), h);
  assert.ok(!h.includes(a.slice(5, 15)));
  assert.match(newTokenId(), /^tok_[0-9a-f]{12}$/);
});

test('Hello must match the certificate: same cluster, same agent', () => {
  const id = { agentId: 'db1', cluster: 'main' };
  checkHelloIdentity(id, { agentId: 'db1', cluster: 'main' });
  assert.throws(
    () => checkHelloIdentity(id, { agentId: 'db1', cluster: 'payments' }),
    (e: unknown) => PgfleetError.is(e, 'PermissionDenied') && /cluster 'main'/.test(e.message),
  );
  assert.throws(
    () => checkHelloIdentity(id, { agentId: 'db2', cluster: 'main' }),
    (e: unknown) => PgfleetError.is(e, 'PermissionDenied') && e.code === ErrorCodes.PermissionDenied.code,
  );
});

test('durations for --ttl', () => {
  assert.equal(parseDuration('90s', 'ttl'), 90_000);
  assert.equal(parseDuration('30m', 'ttl'), 1_800_000);
  assert.equal(parseDuration('1h', 'ttl'), 3_600_000);
  assert.equal(parseDuration('7d', 'ttl'), 604_800_000);
  for (const bad of ['', '0h', '1w', 'h', '-1h', '1.5h'])
    assert.throws(
      () => parseDuration(bad, 'ttl'),
      (e: unknown) => PgfleetError.is(e, 'InvalidArgument') && /--ttl/.test(e.message),
      bad,
    );
});

test('loopback addresses (dev mode without TLS stays quiet only on these)', async () => {
  const { isLoopback } = await import('../server.js');
  for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', '[::1]', '::1']) assert.equal(isLoopback(h), true, h);
  for (const h of ['0.0.0.0', '[::]', '10.0.0.5', 'db.example', '128.0.0.1']) assert.equal(isLoopback(h), false, h);
});
