/**
 * Controllers as one (issue 16), end to end with real processes: three controllers on one real
 * PostgreSQL catalog, two clusters' agents each given the list of the three addresses, a real
 * NATS JetStream. All agents start on the first controller; a backup is started (and followed
 * with --wait) on the third, so it reaches its agent through the first; the first is killed
 * with SIGKILL in the middle of the backup. The agents move to the second controller, the
 * backup's result reaches the third's --wait, admin calls on the third reach agents the second
 * holds (info, verify, a backup and its cancel), status lists the controllers (the dead one, the
 * holder, the leader), and the JetStream stream holds every catalog event once.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { startNats, startPostgres, type NatsServer, type PgInstance } from '@pgfleet/testkit';
import { streamContents } from './jetstream.js';
import {
  CLI_BIN,
  INSECURE_ENV,
  runNode,
  startFleet,
  waitFor,
  type Fleet,
  type FleetMember,
  type JobJson,
} from './harness.js';

describe('controllers as one: three controllers on one PostgreSQL catalog', { timeout: 900_000 }, () => {
  let catalog: PgInstance;
  let nats: NatsServer;
  let fleet: Fleet;
  let books: FleetMember;
  /** `pgfleet` against one controller of the three. */
  const cliAt = (address: string, ...args: string[]) =>
    runNode(CLI_BIN, args, { env: { PGFLEET_CONTROLLER: address, ...INSECURE_ENV } });
  /** Lines of an agent's log that say it connected, with the controller each names. */
  const connections = async (log: string): Promise<string[]> =>
    log
      .split('\n')
      .filter((l) => l.includes('connected to controller'))
      .map((l) => (JSON.parse(l) as { controller: string }).controller);

  before(async () => {
    catalog = await startPostgres();
    await catalog.query('CREATE DATABASE pgfleet_catalog');
    const url = new URL(catalog.connectionString);
    url.pathname = '/pgfleet_catalog';
    nats = await startNats();
    fleet = await startFleet({
      cluster: 'shop',
      catalog: url.toString(),
      controllers: 3,
      // Rounds every second: leadership moves off a dead controller within seconds.
      controllerArgs: ['--nats-url', nats.url, '--schedule-interval', '1', '--health-interval', '1'],
      startAgent: false,
    });
    for (const address of fleet.controllerAddresses)
      await waitFor(`controller ${address} to listen`, async () => (await cliAt(address, 'clusters')).code === 0);
    // About 40 MB the backup reads at 4 MB/s: long enough to kill a controller in its middle.
    await fleet.pg.query(
      'CREATE TABLE orders AS SELECT g AS id, repeat(md5(g::text), 16) AS note FROM generate_series(1, 70000) g',
    );
    await fleet.startAgent(['--max-rate', '4MB']);
    books = await fleet.addCluster('books');
  });
  after(async () => {
    await fleet?.stop();
    await nats?.stop();
    await catalog?.stop();
  });

  it('a backup followed on C3 survives the death of C1 holding the agents; admin calls on C3 reach agents C2 holds', async () => {
    const [c1, c2, c3] = fleet.controllerAddresses as [string, string, string];
    // Every agent starts on the first controller of its list.
    for (const [name, agent] of [
      ['shop', fleet.agent!],
      ['books', books.agent],
    ] as const)
      await waitFor(`agent of ${name} on C1`, async () => (await connections(await agent.log())).includes(c1));

    // Started and followed on C3; the job goes through C1, which holds the agent's stream.
    const following = cliAt(c3, 'backup', 'shop', '--wait', '--output', 'json');
    const job = await waitFor(
      'the backup to run on the agent',
      async () => {
        const r = await cliAt(c3, 'jobs', '--cluster', 'shop', '--output', 'json');
        const running = (JSON.parse(r.stdout) as JobJson[]).find((j) => j.state === 'running');
        return running?.progress ? running : undefined;
      },
      300_000,
      200,
    );

    const killedAt = Date.now();
    fleet.controller.child.kill('SIGKILL');
    const moved = await waitFor(
      'both agents to reconnect to another controller',
      async () => {
        const shop = (await connections(await fleet.agent!.log())).at(-1);
        const book = (await connections(await books.agent.log())).at(-1);
        return shop && book && shop !== c1 && book !== c1 ? Date.now() : undefined;
      },
      120_000,
      100,
    );
    const reconnectSeconds = (moved - killedAt) / 1000;
    console.log(`# agents reconnected to another controller ${reconnectSeconds.toFixed(1)} s after C1 was killed`);
    // The next address of each agent's list: C2.
    assert.equal((await connections(await fleet.agent!.log())).at(-1), c2);

    // The backup's result, delivered to C2, reaches the --wait on C3.
    const followed = await following;
    let label: string;
    if (followed.code === 0) {
      const done = JSON.parse(followed.stdout) as JobJson;
      assert.equal(done.id, job.id);
      assert.equal(done.state, 'succeeded');
      label = done.backup!.label;
    } else {
      // Failing cleanly is allowed; a retry on C3 must then succeed.
      console.log(`# the interrupted backup ended: ${followed.stderr.trim()}`);
      const retry = await cliAt(c3, 'backup', 'shop', '--wait', '--output', 'json');
      assert.equal(retry.code, 0, `${retry.stderr}\n${await fleet.logs()}`);
      label = (JSON.parse(retry.stdout) as JobJson).backup!.label;
    }
    const backups = JSON.parse((await cliAt(c2, 'backups', 'shop', '--output', 'json')).stdout) as { label: string }[];
    assert.ok(
      backups.some((b) => b.label === label),
      `backup ${label} is in the catalog: ${JSON.stringify(backups)}`,
    );

    // An admin call on C3 for an agent whose stream C2 holds.
    const info = await cliAt(c3, 'info', 'books', '--output', 'json');
    assert.equal(info.code, 0, `${info.stderr}\n${await fleet.logs()}`);
    const verify = await cliAt(c3, 'verify', 'shop', '--wait', '--output', 'json');
    assert.equal(verify.code, 0, `${verify.stderr}\n${await fleet.logs()}`);

    // A cancel on C3 of a backup running on an agent C2 holds: the agent stops it.
    const started = await cliAt(c3, 'backup', 'shop', '--output', 'json');
    assert.equal(started.code, 0, started.stderr);
    const second = (JSON.parse(started.stdout) as JobJson).id;
    await waitFor(
      'the second backup to run',
      async () =>
        (JSON.parse((await cliAt(c3, 'job', second, '--output', 'json')).stdout) as JobJson).state === 'running',
      300_000,
      200,
    );
    const cancelled = await cliAt(c3, 'cancel', second, '--wait', '--output', 'json');
    assert.equal(cancelled.code, 0, `${cancelled.stderr}\n${await fleet.logs()}`);
    assert.equal((JSON.parse(cancelled.stdout) as JobJson).state, 'cancelled');

    // status on any controller: the three, C1 dead once its lease ran out, C2 holding both agents, one leader.
    const status = await waitFor(
      'status to show C1 dead, C2 holding the agents and a live scheduler leader',
      async () => {
        const r = await cliAt(c3, 'status');
        const line = (a: string) => r.stdout.split('\n').find((l) => l.startsWith(a)) ?? '';
        const led = r.stdout.split('\n').some((l) => /scheduler/.test(l) && !l.startsWith(c1));
        return /DEAD/.test(line(c1)) && /alive\s+\S+\s+2\s/.test(line(c2)) && led ? r.stdout : undefined;
      },
      120_000,
    );
    console.log(status);
    assert.match(status, new RegExp(`${c3.replaceAll('.', '\\.')} \\*\\s+alive`), 'the answering controller is marked');
    const leaders = status.split('\n').filter((l) => /scheduler/.test(l));
    assert.equal(leaders.length, 1, `one scheduler leader:\n${status}`);
    assert.doesNotMatch(leaders[0]!, new RegExp(c1.replaceAll('.', '\\.')), 'the dead controller leads nothing');

    // Events through the outbox: every event of the catalog on JetStream, none twice.
    const catalogIds = async (): Promise<string[]> =>
      (await cliAt(c2, 'events', '--cluster', 'shop', '--limit', '1000', '--output', 'json')).stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => (JSON.parse(l) as { id: string }).id);
    const events = await waitFor(
      'every catalog event of shop on JetStream, backup.completed among them',
      async () => {
        const onStream = await streamContents(nats.url);
        const ids = new Set(onStream.map((e) => e.body.id));
        const completed = onStream.some((e) => e.body.kind === 'backup.completed' && e.body.cluster === 'shop');
        return completed && (await catalogIds()).every((id) => ids.has(id)) ? onStream : undefined;
      },
      120_000,
    );
    const ids = events.map((e) => e.body.id);
    assert.equal(new Set(ids).size, ids.length, 'no event twice on the stream');
  });
});
