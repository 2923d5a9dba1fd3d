/**
 * A fleet larger than one gRPC message (issue 16): 12,000 clusters, seeded through the catalog
 * store as bench/fleet-scale.mjs does, behind a real controller process on a SQLite catalog.
 * 10,000 clusters' status is ~4.2 MB, over gRPC's 4 MiB default, which made `pgfleet status`
 * fail; ListClusters and ListBackups are paged now (controller/src/admin/paging.ts).
 *   1. `pgfleet status --output json` and `pgfleet clusters --output json` list every cluster,
 *      each once, in name order.
 *   2. `pgfleet backups` of a cluster with more backups than a page lists every one, oldest first.
 *   3. At the API: a request without page_size gets the default page and a token; the pages
 *      joined are the whole fleet; a page_size above the largest is capped; a token that is not
 *      the controller's is refused with PageTokenInvalid.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { openCatalog } from '@pgfleet/catalog';
import { freePort, makeTempDir, removeDir } from '@pgfleet/testkit';
import { createClient, type Client } from '@pgfleet/rpc';
import { AdminService } from '@pgfleet/proto';
import {
  CLI_BIN,
  CONTROLLER_BIN,
  INSECURE_ARGS,
  INSECURE_ENV,
  runNode,
  startDaemon,
  waitFor,
  type Daemon,
} from './harness.js';

const CLUSTERS = 12_000;
/** More than the CLI's page (5,000) in one cluster. */
const BACKUPS = 5_200;
const SYSID = '7300000000000000001';
const name = (i: number) => `c${String(i).padStart(5, '0')}`;
/** PostgreSQL's text form of an LSN (high and low 32 bits in hex). */
const lsnText = (x: number) =>
  `${Math.floor(x / 2 ** 32)
    .toString(16)
    .toUpperCase()}/${(x % 2 ** 32).toString(16).toUpperCase()}`;
/** Generous: the machine is shared, and the status of 12,000 clusters is seconds of CPU. */
const CALL_TIMEOUT_S = '300';

describe('a fleet larger than one gRPC message', () => {
  let dir: string;
  let controller: Daemon;
  let address: string;
  let admin: Client<typeof AdminService> & { close(): void };
  const labels: string[] = [];

  before(async () => {
    dir = await makeTempDir('fleet-paging');
    const catalog = join(dir, 'catalog.db');
    const store = await openCatalog(catalog);
    const now = Date.now();
    try {
      for (let i = CLUSTERS - 1; i >= 0; i--) {
        // Out of name order on purpose: the listing's order is the controller's, not the insertion's.
        await store.upsertCluster({ name: name(i), systemIdentifier: SYSID, pgVersion: 150000 }, now - 86_400_000);
      }
      for (let b = 0; b < BACKUPS; b++) {
        const stop = now - (BACKUPS - b) * 3_600_000;
        const label = `${new Date(stop).toISOString().replace(/[-:]/g, '').slice(0, 15)}F`;
        labels.push(label);
        await store.insertBackup({
          cluster: name(0),
          label,
          type: 'full',
          startLsn: lsnText(0x1000000 * (b + 1)),
          stopLsn: lsnText(0x1000000 * (b + 1) + 0x100),
          startTime: stop - 60_000,
          stopTime: stop,
          timeline: 1,
          systemIdentifier: SYSID,
          pgVersion: 150000,
          sizeBytes: 1 << 30,
          storedBytes: 1 << 28,
          fileCount: 1000,
          walStart: '000000010000000000000001',
          walStop: '000000010000000000000001',
          jobId: `seed-${b}`,
          priorLabel: '',
        });
      }
    } finally {
      await store.close();
    }
    const secret = join(dir, 'manifest.secret');
    await writeFile(secret, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    address = `127.0.0.1:${await freePort()}`;
    controller = startDaemon(
      CONTROLLER_BIN,
      [
        'run',
        '--listen',
        address,
        '--catalog',
        catalog,
        '--repo-path',
        join(dir, 'repo'),
        '--manifest-secret',
        secret,
        ...INSECURE_ARGS,
        '--metrics-listen',
        '127.0.0.1:0',
      ],
      join(dir, 'controller.log'),
    );
    admin = createClient(AdminService, address, { defaultDeadlineMs: Number(CALL_TIMEOUT_S) * 1000 });
    await waitFor('the controller to answer', async () => (await admin.listControllers({})) && true, 180_000);
  });

  after(async () => {
    admin?.close();
    await controller?.stop();
    await removeDir(dir);
  });

  const cli = (...args: string[]) =>
    runNode(CLI_BIN, [...args, '--timeout', CALL_TIMEOUT_S], {
      env: { ...INSECURE_ENV, PGFLEET_CONTROLLER: address },
      timeoutMs: 600_000,
    });
  const expected = Array.from({ length: CLUSTERS }, (_, i) => name(i));

  test('pgfleet status and pgfleet clusters list every cluster once, in name order', async () => {
    const status = await cli('status', '--output', 'json');
    assert.equal(status.code, 0, `${status.stderr}\n${await controller.log()}`);
    const shown = (JSON.parse(status.stdout) as { clusters: { name: string }[] }).clusters.map((c) => c.name);
    assert.equal(shown.length, CLUSTERS);
    assert.deepEqual(shown, expected);

    const clusters = await cli('clusters', '--output', 'json');
    assert.equal(clusters.code, 0, clusters.stderr);
    assert.deepEqual(
      (JSON.parse(clusters.stdout) as { name: string }[]).map((c) => c.name),
      expected,
    );

    // One cluster by name, found on whichever page holds it.
    const one = await cli('status', '--cluster', name(CLUSTERS - 1), '--output', 'json');
    assert.equal(one.code, 0, one.stderr);
    assert.deepEqual(
      (JSON.parse(one.stdout) as { clusters: { name: string }[] }).clusters.map((c) => c.name),
      [name(CLUSTERS - 1)],
    );
  });

  test('pgfleet backups lists every backup of a cluster with more than a page, oldest first', async () => {
    const r = await cli('backups', name(0), '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      (JSON.parse(r.stdout) as { label: string }[]).map((b) => b.label),
      labels,
    );
  });

  test('ListClusters pages: the default page, a capped page_size, the pages joined, a foreign token refused', async () => {
    const first = await admin.listClusters({});
    assert.equal(first.clusters.length, 1000, 'page_size 0 is the default page');
    assert.notEqual(first.nextPageToken, '');
    const names = first.clusters.map((c) => c.name);
    let pageToken = first.nextPageToken;
    const sizes: number[] = [];
    while (pageToken !== '') {
      const page = await admin.listClusters({ pageSize: 100_000, pageToken });
      sizes.push(page.clusters.length);
      names.push(...page.clusters.map((c) => c.name));
      pageToken = page.nextPageToken;
    }
    assert.deepEqual(sizes, [5000, 5000, 1000], 'a page_size above 5,000 is taken as 5,000');
    assert.deepEqual(names, expected);

    const backups = await admin.listBackups({ cluster: name(0), pageSize: 5000 });
    assert.equal(backups.backups.length, 5000);
    const rest = await admin.listBackups({ cluster: name(0), pageSize: 5000, pageToken: backups.nextPageToken });
    assert.deepEqual(
      [...backups.backups, ...rest.backups].map((b) => b.label),
      labels,
    );
    assert.equal(rest.nextPageToken, '');

    await assert.rejects(
      admin.listClusters({ pageToken: 'not a token' }),
      (e: unknown) => e instanceof PgfleetError && e.code === ErrorCodes.PageTokenInvalid.code,
    );
  });
});
