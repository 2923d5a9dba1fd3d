/**
 * The catalog the fleet benchmarks start from (bench/fleet-scale.mjs, bench/fleet-catalog-cpu.mjs),
 * seeded through the catalog store: cluster names c00000, c00001, ...
 */
export const SYSID = '7300000000000000001';
export const cluster = (i) => `c${String(i).padStart(5, '0')}`;

/**
 * N clusters (one agent each, the bench's), each with a schedule policy whose runs are recorded
 * as just done (so rounds evaluate every cluster and start nothing), and `backups` backups: `big`
 * in the first cluster, the rest spread over the others. With `agentRows`, each cluster also has its
 * agent's row and one heartbeat (archiver figures, LSN), as after its agent went away: health and
 * status then have an agent's figures for every cluster without any agent connected.
 */
export async function seed(url, n, backups, big, { agentRows = false } = {}) {
  const { openCatalog } = await import('../packages/catalog/dist/index.js');
  const t0 = performance.now();
  const store = await openCatalog(url);
  const now = Date.now();
  const hour = (new Date(now).getUTCHours() + 12) % 24;
  const pool = async (count, limit, fn) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: limit }, async () => {
        while (next < count) await fn(next++);
      }),
    );
  };
  try {
    await pool(n, 16, async (i) => {
      const name = cluster(i);
      await store.upsertCluster({ name, systemIdentifier: SYSID, pgVersion: 150000 }, now - 90 * 86400_000);
      await store.putPolicy(
        {
          scope: name,
          // Twelve hours away from now: nothing falls due during the run, whatever the time of day.
          schedules: { full: `0 ${hour} * * 0`, incr: `0 ${hour} * * 1-6` },
          retention: {},
        },
        now,
      );
      await store.recordScheduleRuns([
        { cluster: name, type: 'full', lastRun: now },
        { cluster: name, type: 'incr', lastRun: now },
      ]);
      if (!agentRows) return;
      const agent = { id: `${name}-db1`, cluster: name, hostname: `${name}-db1.example`, version: 'fleet-scale' };
      await store.upsertAgent(agent, now);
      await store.recordHeartbeats([
        {
          agent: { cluster: name, agentId: agent.id },
          figures: {
            currentLsn: '0/3000060',
            archiver: {
              archivedCount: '10',
              lastArchivedWal: '000000010000000000000003',
              lastArchivedTime: new Date(now - 30_000).toISOString(),
              failedCount: '0',
            },
            role: 'primary',
            replay: null,
          },
          at: now,
        },
      ]);
      await store.setAgentConnected({ cluster: name, agentId: agent.id }, false, now);
    });
    const bigCount = Math.min(big, backups);
    const rest = backups - bigCount;
    const perOther = n > 1 ? Math.ceil(rest / (n - 1)) : 0;
    const list = [];
    for (let b = 0; b < bigCount; b++) list.push([0, b]);
    for (let c = 1; c < n && list.length < backups; c++)
      for (let b = 0; b < perOther && list.length < backups; b++) list.push([c, b]);
    await pool(list.length, 16, async (k) => {
      const [c, b] = list[k];
      const stop = now - (b + 1) * 8 * 3600_000;
      const lsn = (x) =>
        `${Math.floor(x / 2 ** 32)
          .toString(16)
          .toUpperCase()}/${(x % 2 ** 32).toString(16).toUpperCase()}`;
      const base = (100000 - b) * 0x1000000;
      await store.insertBackup({
        cluster: cluster(c),
        label: `${new Date(stop).toISOString().replace(/[-:]/g, '').slice(0, 15)}${b % 7 === 0 ? 'F' : 'I'}`,
        type: b % 7 === 0 ? 'full' : 'incr',
        startLsn: lsn(base),
        stopLsn: lsn(base + 0x100),
        startTime: stop - 600_000,
        stopTime: stop,
        timeline: 1,
        systemIdentifier: SYSID,
        pgVersion: 150000,
        sizeBytes: 10 * 2 ** 30,
        storedBytes: 3 * 2 ** 30,
        fileCount: 3000,
        walStart: '000000010000000000000001',
        walStop: '000000010000000000000001',
        jobId: `seed-${c}-${b}`,
        priorLabel: '',
      });
    });
  } finally {
    await store.close();
  }
  return (performance.now() - t0) / 1000;
}
