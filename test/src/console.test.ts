/**
 * The web console in a real headless Chromium (Debian's /usr/bin/chromium driven by
 * playwright-core; nothing downloads a browser): a controller with two real clusters, their
 * backups, a verify and a drill of one and an RPO alert on the other. The fleet page must show
 * the figures the admin API gives, the cluster page must draw its four charts (screenshots go to
 * test-artifacts/console, and each chart's canvas is checked for its series' colour), a viewer
 * token sees no action and the action calls refuse it, and a backup started from the page shows
 * its live progress and completes. Tokens are required (--require-auth) so the token handling
 * is the production one; HTTPS is covered by the controller's console.test.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { freePort, makeTempDir, removeDir, startPostgres } from '@pgfleet/testkit';
import { ErrorCodes } from '@pgfleet/core';
import { CONTROLLER_BIN, REPO_ROOT, runNode, startFleet, waitFor, type Fleet } from './harness.js';

const CHROMIUM = process.env.PGFLEET_CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = join(process.env.PGFLEET_TEST_ARTIFACTS ?? join(REPO_ROOT, 'test-artifacts'), 'console');
/** What CI passes to Chromium: no sandbox (root in a container), and nothing that reaches the network by itself. */
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** The little of the DOM the checks below read in the page (the test package compiles without DOM types). */
interface PageCanvas {
  width: number;
  height: number;
  getContext(kind: '2d'): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } };
}
interface PageDocument {
  querySelector(selector: string): (PageCanvas & { getAttribute(name: string): string | null }) | null;
  querySelectorAll(selector: string): { length: number };
}

/**
 * Runs in the page: how many pixels of the chart's canvas are within a small distance of the
 * colour, 0 until at least 20 are (a function, not a string: the console's CSP forbids eval).
 */
function colourPixels([id, rgb]: [string, [number, number, number]]): number {
  const doc = (globalThis as unknown as { document: PageDocument }).document;
  const canvas = doc.querySelector(`#${id} canvas`);
  if (!canvas || canvas.width === 0) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4)
    if (
      data[i + 3]! > 200 &&
      Math.abs(data[i]! - rgb[0]) < 24 &&
      Math.abs(data[i + 1]! - rgb[1]) < 24 &&
      Math.abs(data[i + 2]! - rgb[2]) < 24
    )
      n++;
  return n >= 20 ? n : 0;
}

interface ClusterJson {
  name: string;
  rpoSeconds?: number;
  pitrFrom?: string;
  alerts?: string[];
  lastVerify?: { ok?: boolean };
  lastDrill?: { ok?: boolean; rtoSeconds?: number; jobId: string };
}

describe('web console', { timeout: 420_000 }, () => {
  let dir: string;
  let fleet: Fleet;
  let browser: BrowserContext | undefined;
  let launching: Promise<BrowserContext> | undefined;
  let consoleUrl: string;
  const tokens: Record<string, string> = {};

  const clusters = async (): Promise<ClusterJson[]> => {
    const r = await fleet.cli('clusters', '--output', 'json');
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as ClusterJson[];
  };

  /** A new tab signed in with the token (sessionStorage is per tab: each page is its own session). */
  const signedIn = async (role: string, hash = ''): Promise<Page> => {
    const page = await browser!.newPage();
    await page.goto(`${consoleUrl}${hash}`);
    await page.fill('#token', tokens[role]!);
    await page.click('#login-submit');
    await page.waitForSelector(`#who[data-role="${role}"]`);
    return page;
  };

  /** POST /api/<method> as the page does, with an optional token. */
  const apiCall = async (method: string, body: object, token?: string) => {
    const res = await fetch(`${consoleUrl}api/${method}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as { code?: string; message?: string } };
  };

  before(async () => {
    dir = await makeTempDir('console');
    for (const role of ['viewer', 'operator', 'admin']) {
      const r = await runNode(CONTROLLER_BIN, [
        'token',
        'create',
        '--catalog',
        join(dir, 'catalog.db'),
        '--role',
        role,
        '--name',
        `console-${role}`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      tokens[role] = r.stdout.trim();
    }
    // Chromium starts while the fleet is set up (a fresh profile in the test's directory).
    await mkdir(ARTIFACTS, { recursive: true });
    launching = chromium.launchPersistentContext(join(dir, 'chromium-profile'), {
      executablePath: CHROMIUM,
      headless: true,
      chromiumSandbox: false,
      args: CHROMIUM_FLAGS,
      viewport: { width: 1280, height: 1400 },
    });
    // Awaited once the fleet is up (a failed launch fails the set-up there); until then a
    // rejection must not count as unhandled.
    void launching.catch(() => undefined);
    const consolePort = await freePort();
    consoleUrl = `http://127.0.0.1:${consolePort}/`;
    fleet = await startFleet({
      dir,
      cluster: 'shop',
      startAgent: false,
      controllerArgs: ['--require-auth', '--console-listen', `127.0.0.1:${consolePort}`],
      cliEnv: { PGFLEET_TOKEN: tokens.admin! },
    });
    const cli = async (...args: string[]) => {
      const r = await fleet.cli(...args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    };
    // The two clusters are set up side by side. A rate limit makes shop's backups last a few
    // seconds, so that a page can watch one progress.
    await Promise.all([
      (async () => {
        await fleet.startAgent(['--max-rate', '10MB']);
        await fleet.pg.query(
          'CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 50000) g',
        );
        await cli('backup', 'shop', '--wait');
        await Promise.all([cli('verify', 'shop', '--wait'), cli('drill', 'shop', '--wait')]);
      })(),
      (async () => {
        await fleet.addCluster('billing');
        await cli('backup', 'billing', '--wait');
        // billing's RPO threshold is one second: its alert is raised at the next heartbeat without new WAL.
        await cli('policy', 'set', 'billing', '--rpo-threshold', '1');
      })(),
    ]);
    await waitFor('billing to raise rpo-breached', async () =>
      (await clusters()).find((c) => c.name === 'billing')?.alerts?.includes('rpo-breached'),
    );
    browser = await launching;
  });

  after(async () => {
    await (browser ?? (await launching?.catch(() => undefined)))?.close();
    if (process.exitCode && fleet) console.error(await fleet.logs());
    await fleet?.stop();
    if (dir) await removeDir(dir);
  });

  test('the fleet page lists both clusters with the figures the admin API gives, sortable and filterable', async () => {
    const page = await signedIn('admin');
    await page.waitForSelector('tr[data-cluster="shop"] td[data-col="drill"][data-rto]:not([data-rto=""])');
    await page.waitForSelector('tr[data-cluster="billing"] td[data-col="health"][data-health="bad"]');
    const api = new Map((await clusters()).map((c) => [c.name, c]));
    const shop = api.get('shop')!;
    const cell = (cluster: string, col: string, attr: string) =>
      page.getAttribute(`tr[data-cluster="${cluster}"] td[data-col="${col}"]`, attr);
    const text = (cluster: string, col: string) =>
      page.textContent(`tr[data-cluster="${cluster}"] td[data-col="${col}"]`);

    assert.equal(Number(await cell('shop', 'drill', 'data-rto')), shop.lastDrill!.rtoSeconds, 'last drill RTO');
    assert.ok(shop.lastDrill!.rtoSeconds! > 0);
    assert.equal(await cell('shop', 'verify', 'data-ok'), 'true', 'last verify');
    assert.equal(await cell('billing', 'verify', 'data-ok'), '', 'billing was never verified');
    for (const name of ['shop', 'billing']) {
      const backups = JSON.parse((await fleet.cli('backups', name, '--output', 'json')).stdout) as {
        stopTime: string;
      }[];
      assert.equal(backups.length, 1);
      // The PITR window starts at the oldest backup's consistent point.
      assert.equal(Number(await cell(name, 'pitr', 'data-from')), Date.parse(backups[0]!.stopTime), `${name} PITR`);
      assert.equal(Date.parse(api.get(name)!.pitrFrom!), Date.parse(backups[0]!.stopTime));
      const backupAge = Number(await cell(name, 'backup', 'data-seconds'));
      assert.ok(backupAge >= 0 && backupAge < 600, `${name} last backup age ${backupAge}`);
      assert.ok(Number(await cell(name, 'rpo', 'data-seconds')) >= 0, `${name} RPO shown`);
    }
    assert.equal(await cell('shop', 'health', 'data-health'), 'ok');
    assert.match((await text('billing', 'alerts'))!, /rpo-breached/);
    assert.equal((await text('shop', 'alerts'))!.trim(), '');

    // Sorted by health, the cluster with an alert comes first; the filter keeps the matching row only.
    await page.screenshot({ path: join(ARTIFACTS, 'fleet-all.png'), fullPage: true });
    await page.click('th[data-sort="health"]');
    assert.equal(await page.getAttribute('#fleet tbody tr:first-child', 'data-cluster'), 'billing');
    await page.click('th[data-sort="health"]');
    assert.equal(await page.getAttribute('#fleet tbody tr:first-child', 'data-cluster'), 'shop');
    await page.fill('#filter', 'rpo-breached');
    await page.waitForFunction(
      () =>
        (globalThis as unknown as { document: PageDocument }).document.querySelectorAll('#fleet tbody tr').length === 1,
    );
    assert.equal(await page.getAttribute('#fleet tbody tr', 'data-cluster'), 'billing');
    await page.screenshot({ path: join(ARTIFACTS, 'fleet.png'), fullPage: true });
    await page.close();
  });

  test('the cluster page draws the backup, RPO, PITR window and drill RTO charts', async () => {
    const page = await signedIn('admin', '#/cluster/shop');
    await page.waitForSelector('#backups tbody tr');
    // Each chart's canvas must hold its series' colour (axes and grid alone do not count).
    const seriesColours: Record<string, [number, number, number]> = {
      'chart-backups': [0x3b, 0x5b, 0xdb],
      'chart-rpo': [0xd1, 0x3b, 0x3b],
      'chart-pitr': [0x2e, 0x9e, 0x5b],
      'chart-drills': [0x70, 0x48, 0xe8],
    };
    for (const [id, rgb] of Object.entries(seriesColours)) {
      const pixels = await page.waitForFunction(colourPixels, [id, rgb] as [string, [number, number, number]], {
        timeout: 30_000,
      });
      assert.ok(((await pixels.jsonValue()) as number) >= 20, `${id} draws its series`);
      await page.locator(`#${id}`).screenshot({ path: join(ARTIFACTS, `${id}.png`) });
    }
    await page.screenshot({ path: join(ARTIFACTS, 'cluster-shop.png'), fullPage: true });
    await page.close();
  });

  test('the restore wizard takes its target from a click on the PITR chart, and the restore it starts stops at that target', async () => {
    const page = await signedIn('operator', '#/cluster/shop');
    await page.waitForSelector('#chart-pitr .u-over');
    const shop = (await clusters()).find((c) => c.name === 'shop')!;
    const before = Date.now();
    await page.click('#chart-pitr .u-over');
    await page.waitForSelector('#restore-wizard #restore-time');
    const picked = Number(await page.getAttribute('#restore-time', 'data-ms'));
    // The middle of the chart lies inside the window: after the oldest backup's consistent point, before now.
    assert.ok(picked > Date.parse(shop.pitrFrom!) && picked < before, `picked ${new Date(picked).toISOString()}`);
    // A target typed in before the window goes to the controller, whose refusal the wizard shows.
    await page.fill('#restore-time', '2001-01-01T00:00:00');
    await page.fill('#restore-dir', join(fleet.dir, 'wizard-restore'));
    await page.click('#restore-start');
    const error = await page.waitForSelector('#restore-wizard .error');
    assert.match((await error.textContent())!, new RegExp(ErrorCodes.TargetBeforeOldestBackup.code));

    // A click on the chart picks a target again; what is committed after it must not be restored.
    await page.click('#chart-pitr .u-over');
    await page.waitForFunction(
      (old) =>
        Number(
          (globalThis as unknown as { document: PageDocument }).document
            .querySelector('#restore-time')
            ?.getAttribute('data-ms'),
        ) !== old,
      Date.parse('2001-01-01T00:00:00'),
    );
    const target = Number(await page.getAttribute('#restore-time', 'data-ms'));
    assert.ok(target > Date.parse(shop.pitrFrom!) && target <= Date.now(), `target ${new Date(target).toISOString()}`);
    await fleet.pg.query('CREATE TABLE after_target AS SELECT 1 AS x');
    await fleet.switchAndArchive();
    await page.click('#restore-start');
    // The wizard hands over to the job's page; the job is followed to its end from the CLI.
    await page.waitForURL(/#\/job\/[^/]+$/);
    const jobId = decodeURIComponent(page.url().split('#/job/')[1]!);
    const done = await fleet.cli('job', jobId, '--wait');
    assert.equal(done.code, 0, `restore job ${jobId}: ${done.stdout}${done.stderr}`);
    await page.waitForSelector('#job-state[data-state="succeeded"]', { timeout: 60_000 });
    await page.close();
    const restored = await startPostgres({
      dataDir: join(fleet.dir, 'wizard-restore'),
      waitForRecovery: true,
      settings: { archive_mode: 'off' },
    });
    try {
      const [orders] = await restored.query<{ n: string }>('SELECT count(*) AS n FROM orders');
      assert.equal(Number(orders!.n), 50000, 'the rows committed before the target');
      const [later] = await restored.query<{ t: string | null }>("SELECT to_regclass('after_target') AS t");
      assert.equal(later!.t, null, 'a table created after the target is not restored');
    } finally {
      await restored.stop();
    }
  });

  test('a viewer token sees no action, and the action calls refuse it', async () => {
    const page = await signedIn('viewer', '#/cluster/shop');
    await page.waitForSelector('#backups tbody tr');
    await page.waitForSelector('#read-only');
    assert.equal(await page.locator('#actions button, #action-backup, #action-restore').count(), 0);
    await page.close();

    for (const [method, body] of [
      ['startBackup', { cluster: 'shop' }],
      ['startVerify', { cluster: 'shop' }],
      ['startDrill', { cluster: 'shop' }],
      ['startRestore', { cluster: 'shop', targetDir: '/tmp/nowhere', target: { latest: true } }],
      ['cancelJob', { id: 'x' }],
    ] as const) {
      const r = await apiCall(method, body, tokens.viewer);
      assert.equal(r.status, 403, `${method} as viewer`);
      assert.equal(r.body.code, ErrorCodes.PermissionDenied.code);
    }
    assert.equal((await apiCall('listClusters', {}, tokens.viewer)).status, 200);
    const anonymous = await apiCall('listClusters', {});
    assert.equal(anonymous.status, 401);
    assert.equal(anonymous.body.code, ErrorCodes.Unauthenticated.code);
    assert.equal((await apiCall('listClusters', {}, 'pgfa_not-a-token')).status, 401);
    assert.equal(
      (await apiCall('createToken', { name: 'x', role: 'admin' }, tokens.admin)).body.code,
      ErrorCodes.ConsoleUnknownCall.code,
    );
  });

  test('a backup started from the console shows live progress and completes', async () => {
    const page = await signedIn('operator', '#/cluster/shop');
    await page.waitForSelector('#action-backup');
    await page.click('#action-backup');
    await page.waitForURL(/#\/job\//);
    const jobId = decodeURIComponent(new URL(page.url()).hash.replace('#/job/', ''));
    // Live: the page shows the job running with bytes copied before it shows it finished.
    await page.waitForSelector('#job-state[data-state="running"]', { timeout: 60_000 });
    await page.waitForFunction(
      () => {
        const doc = (globalThis as unknown as { document: PageDocument }).document;
        return (
          doc.querySelector('#job-state')?.getAttribute('data-state') === 'running' &&
          Number(doc.querySelector('#job-progress')?.getAttribute('data-bytes-done') ?? 0) > 0
        );
      },
      undefined,
      { timeout: 60_000 },
    );
    const running = await page.locator('#job-progress .progress').getAttribute('data-percent');
    assert.ok(Number(running) < 100, `progress while running: ${running}%`);
    await page.screenshot({ path: join(ARTIFACTS, 'backup-running.png') });
    await page.waitForSelector('#job-state[data-state="succeeded"]', { timeout: 120_000 });
    await page.waitForSelector('#job-backup');
    const backups = JSON.parse((await fleet.cli('backups', 'shop', '--output', 'json')).stdout) as {
      label: string;
      jobId: string;
    }[];
    const made = backups.find((b) => b.jobId === jobId);
    assert.ok(made, `the console's job ${jobId} made a backup`);
    assert.match((await page.textContent('#job-backup'))!, new RegExp(made.label));
    await page.close();
  });
});
