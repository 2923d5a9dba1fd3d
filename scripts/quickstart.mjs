// The quickstart's moving parts (see quickstart.sh). Every part is the real binary started as
// its own process, exactly as in production; the throwaway PostgreSQL comes from the testkit.
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join, resolve } from 'node:path';
import { freePort, makeTempDir, pgEnvForChild, removeDir, startPostgres } from '@pgfleet/testkit';

const root = resolve(new URL('..', import.meta.url).pathname);
const bin = (p) => join(root, 'packages', p, 'dist', 'bin.js');
const once = process.argv.includes('--once');
const say = (m) => process.stdout.write(`\x1b[1m==> ${m}\x1b[0m\n`);

const dir = await makeTempDir('quickstart');
const repo = join(dir, 'repo');
const cluster = 'demo';
const children = [];
let pg;
const cleanup = async () => {
  for (const c of children) c.kill('SIGTERM');
  await pg?.stop().catch(() => {});
  await removeDir(dir).catch(() => {});
};

function daemon(name, script, args, opts = {}) {
  const log = join(dir, `${name}.log`);
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  const out = createWriteStream(log);
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  children.push(child);
  return log;
}
function cli(...args) {
  return spawnSync(process.execPath, [bin('cli'), ...args], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, PGFLEET_CONTROLLER: controller, PGFLEET_INSECURE: 'true' },
  });
}

let controller = '';
try {
  say('starting a throwaway PostgreSQL (data checksums, wal_level=replica, archive_command = pgfleet-agent wal-push)');
  pg = await startPostgres({
    archiveCommand: `"${process.execPath}" "${bin('agent')}" wal-push "%p" --cluster ${cluster} --repo-path "${repo}"`,
  });
  await pg.query(`CREATE TABLE orders AS SELECT g AS id, 'order ' || g AS note FROM generate_series(1, 100000) g`);
  say(`PostgreSQL ${pg.dataDir} on port ${pg.port}, with a table of 100000 orders`);

  controller = `127.0.0.1:${await freePort()}`;
  const clog = daemon('controller', bin('controller'), [
    'run',
    '--listen',
    controller,
    '--catalog',
    join(dir, 'catalog.db'),
    '--repo-path',
    repo,
    // A throwaway fleet on loopback: clear text and no tokens, said explicitly (TLS is the default).
    '--insecure',
  ]);
  say(`controller on ${controller} (catalog ${join(dir, 'catalog.db')}, repository ${repo}; log ${clog})`);
  const alog = daemon(
    'agent',
    bin('agent'),
    [
      'run',
      '--controller',
      controller,
      '--cluster',
      cluster,
      '--pgdata',
      pg.dataDir,
      '--pg-host',
      '127.0.0.1',
      '--pg-port',
      String(pg.port),
      '--repo-path',
      repo,
      '--insecure',
    ],
    pgEnvForChild(),
  );
  say(`agent for cluster '${cluster}' (log ${alog})`);

  for (let i = 0; i < 120; i++) {
    const r = spawnSync(process.execPath, [bin('cli'), 'clusters', '--output', 'json'], {
      env: { ...process.env, PGFLEET_CONTROLLER: controller, PGFLEET_INSECURE: 'true' },
      encoding: 'utf8',
    });
    if (r.status === 0 && /"agentConnected":\s*true/.test(r.stdout)) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  say('pgfleet clusters');
  cli('clusters');
  say(`pgfleet backup ${cluster} --wait`);
  const b = cli('backup', cluster, '--wait');
  if (b.status !== 0) throw new Error(`backup failed (exit ${b.status}); see ${alog}`);
  say(`pgfleet backups ${cluster}`);
  cli('backups', cluster);
  if (once) {
    await cleanup();
  } else {
    say(
      `pgfleet is running (--insecure: a loopback lab). In another shell: export PGFLEET_CONTROLLER=${controller} PGFLEET_INSECURE=true; then try`,
    );
    console.log(
      `  node ${bin('cli')} backups ${cluster}\n  node ${bin('cli')} restore ${cluster} --to /tmp/restored --target immediate --wait\nPress Ctrl-C to stop and remove everything.`,
    );
    await new Promise((r) => process.once('SIGINT', r));
    await cleanup();
  }
} catch (err) {
  console.error(`quickstart failed: ${err.message}`);
  await cleanup();
  process.exit(1);
}
