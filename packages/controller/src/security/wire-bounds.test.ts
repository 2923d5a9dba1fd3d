/**
 * Bounds on wire input, through the real controller over gRPC: what an agent or an admin client
 * sends cannot break the fleet view, alias another cluster, or be echoed back whole.
 */
import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { ErrorCodes, PgfleetError } from '@pgfleet/core';
import { useTestController } from '../testing/test-controller.js';
import { FakeAgent, waitFor } from '../testing/fake-agent.js';
import { rejectsWith } from '../testing/assertions.js';

const t = useTestController('wire-bounds');
const U64_MAX = 2n ** 64n - 1n;

describe('wire bounds', () => {
  test('a heartbeat with every uint64 at 2^64-1 and NaN/infinite lags leaves ListClusters working, values clamped', async () => {
    const agent = new FakeAgent(t.controller.address);
    agent.hello({ cluster: 'shop', agentId: 'shop-1' });
    assert.equal((await agent.receive()).msg.case, 'welcome');
    agent.stream.send({
      msg: {
        case: 'heartbeat',
        value: {
          pgUp: true,
          currentLsn: '0/1000000',
          archiver: { archivedCount: U64_MAX, failedCount: U64_MAX },
          wal: {
            pgWalBytes: U64_MAX,
            pgWalFreeBytes: U64_MAX,
            pgWalTotalBytes: U64_MAX,
            slotRetainedBytes: U64_MAX,
            streamLagBytes: U64_MAX,
            walSegmentsArchived: U64_MAX,
            walBytesArchived: U64_MAX,
            streamLagSeconds: Number.NaN,
          },
          replay: { receiveReplayBytes: U64_MAX, replayLagSeconds: Number.POSITIVE_INFINITY },
        },
      },
    });
    const shop = await waitFor('the heartbeat in ListClusters', async () => {
      const c = (await t.admin.listClusters({})).clusters.find((x) => x.name === 'shop');
      return c?.archiver ? c : undefined;
    });
    assert.equal(shop.archiver?.archivedCount, BigInt(Number.MAX_SAFE_INTEGER));
    assert.equal(shop.wal?.pgWalBytes, BigInt(Number.MAX_SAFE_INTEGER));
    assert.equal(shop.wal?.streamLagSeconds, 0);
  });

  test('a hostile field in one agent message is refused alone; the stream and the fleet view go on', async () => {
    const agent = new FakeAgent(t.controller.address);
    agent.hello({ cluster: 'shop', agentId: 'shop-2' });
    assert.equal((await agent.receive()).msg.case, 'welcome');
    agent.stream.send({ msg: { case: 'heartbeat', value: { pgUp: true, currentLsn: 'x'.repeat(5_000_000 / 2) } } });
    agent.stream.send({ msg: { case: 'heartbeat', value: { pgUp: true, currentLsn: '0/2000000' } } });
    await waitFor('the well-formed heartbeat after the hostile one', async () =>
      (await t.admin.listClusters({})).clusters.some((c) =>
        c.hosts.some((h) => h.agentId === 'shop-2' && h.currentLsn === '0/2000000'),
      )
        ? true
        : undefined,
    );
  });

  for (const [cluster, error] of [
    ['shop/wal', 'InvalidClusterName'],
    ['Shop', 'InvalidClusterName'],
    ['../shop', 'InvalidClusterName'],
  ] as const) {
    test(`Hello for cluster ${JSON.stringify(cluster)} is refused with ${ErrorCodes[error].code} and records nothing`, async () => {
      const agent = new FakeAgent(t.controller.address);
      agent.hello({ cluster, agentId: 'alias-1' });
      const err = await agent.ended();
      assert.ok(PgfleetError.is(err, error), String(err));
      assert.ok(!(await t.admin.listClusters({})).clusters.some((c) => c.name === cluster));
    });
  }

  test('Hello with an agent id holding a slash is refused with InvalidAgentId', async () => {
    const agent = new FakeAgent(t.controller.address);
    agent.hello({ cluster: 'shop', agentId: 'shop-1/../other' });
    assert.ok(PgfleetError.is(await agent.ended(), 'InvalidAgentId'));
  });

  test('admin calls: bad or oversized names are INVALID_ARGUMENT with a PGF code, never echoed whole', async () => {
    const huge = 'c'.repeat(1_000_000);
    const tooLarge = await rejectsWith(
      t.admin.listBackups({ cluster: huge }),
      'InputTooLarge',
      /^ListBackups\.cluster: 1000000 characters/,
    );
    assert.ok(tooLarge.message.length < 200);
    const name = await rejectsWith(t.admin.listBackups({ cluster: 'shop/wal' }), 'InvalidClusterName');
    assert.match(name.message, /"shop\/wal" is not a cluster name/);
    await rejectsWith(
      t.admin.pinBackup({ cluster: 'shop', label: '../../etc/fake-F', pinned: true }),
      'InvalidBackupLabel',
    );
    await rejectsWith(t.admin.createEnrollmentToken({ cluster: 'shop/wal', ttlSeconds: 60 }), 'InvalidClusterName');
    await rejectsWith(t.admin.setPolicy({ cluster: 'Shop', settings: {} }), 'InvalidClusterName');
    await rejectsWith(t.admin.applyFleet({ clusters: { 'shop/wal': {} } }), 'InvalidClusterName');
  });

  test('an impossible recovery target time is the target error (PGF-6003), not an internal one', async () => {
    for (const seconds of [-1n, 253_402_300_800n, U64_MAX >> 1n]) {
      await rejectsWith(
        t.admin.startRestore({
          cluster: 'shop',
          targetDir: '/tmp/x',
          target: { target: { case: 'time', value: { seconds, nanos: 0 } } },
        }),
        'TargetInvalid',
        /target\.time/,
      );
    }
    await rejectsWith(
      t.admin.startDrill({
        cluster: 'shop',
        target: { target: { case: 'time', value: { ...timestampFromMs(0), nanos: 2_000_000_000 } } },
      }),
      'TargetInvalid',
    );
  });
});
