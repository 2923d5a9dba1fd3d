/**
 * deploy/: the compose file and the example configs must stay runnable as the code changes. No
 * container is started here (images may not be pullable); instead the compose file is parsed and
 * cross-checked (services, dependencies, volumes, mounted files, Dockerfile targets), and every
 * config it mounts is read with the binaries' own option tables, as `--config` would at start.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseCommandLine, readYamlFile, type ProgramSpec } from '@pgfleet/core';
import { REPO_ROOT } from './harness.js';

const DEPLOY = join(REPO_ROOT, 'deploy');

interface Service {
  image?: string;
  build?: { context: string; dockerfile: string; target: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}

/** A binary's option table, loaded from its build (the e2e package runs the binaries, it does not link them). */
async function program(pkg: 'agent' | 'controller', name: string): Promise<ProgramSpec> {
  const mod = (await import(pathToFileURL(join(REPO_ROOT, `packages/${pkg}/dist/options.js`)).href)) as Record<
    string,
    ProgramSpec
  >;
  return mod[name]!;
}

describe('deploy/compose.yaml', () => {
  const compose = readYamlFile(join(DEPLOY, 'compose.yaml'), 'compose file') as {
    services: Record<string, Service>;
    volumes: Record<string, unknown>;
  };
  const services = compose.services;

  it('has the controller, NATS with JetStream, an S3 server and PostgreSQL with an agent', () => {
    assert.deepEqual(Object.keys(services).sort(), ['agent', 'controller', 'nats', 'postgres', 's3', 's3-init']);
    assert.ok(services.nats!.command!.includes('-js'), 'nats-server runs with JetStream');
    assert.match(services.s3!.image!, /^minio\/minio:/);
    assert.deepEqual(services.controller!.command!.slice(0, 2), ['pgfleet-controller', 'run']);
    assert.deepEqual(services.agent!.command!.slice(0, 2), ['pgfleet-agent', 'run']);
    assert.ok(services.postgres!.command!.some((c) => c.startsWith('archive_command=pgfleet-agent wal-push %p')));
  });

  it('PostgreSQL gets data checksums at initdb; the controller waits for a healthy NATS with JetStream', () => {
    assert.match(services.postgres!.environment!.POSTGRES_INITDB_ARGS ?? '', /(^|\s)(--data-checksums|-k)(\s|$)/);
    const check = services.nats!.healthcheck?.test.join(' ') ?? '';
    assert.match(check, /:8222\/healthz\?js-enabled-only=true/);
    // The health endpoint is the monitoring port nats-server is started with.
    assert.ok(services.nats!.command!.join(' ').includes('-m 8222'));
    assert.equal(services.controller!.depends_on?.nats?.condition, 'service_healthy');
  });

  it('references only services, volumes, files and build targets that exist', () => {
    const dockerfile = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
    for (const [name, s] of Object.entries(services)) {
      for (const dep of Object.keys(s.depends_on ?? {}))
        assert.ok(services[dep], `${name} depends on unknown service ${dep}`);
      for (const v of s.volumes ?? []) {
        const [source] = v.split(':');
        if (source!.startsWith('.')) assert.ok(existsSync(join(DEPLOY, source!)), `${name} mounts missing ${source}`);
        else assert.ok(source! in compose.volumes, `${name} uses undeclared volume ${source}`);
      }
      if (s.build) {
        assert.ok(existsSync(join(DEPLOY, s.build.context, s.build.dockerfile)), `${name}: ${s.build.dockerfile}`);
        assert.match(
          dockerfile,
          new RegExp(`^FROM \\S+ AS ${s.build.target}$`, 'm'),
          `${name}: build target ${s.build.target}`,
        );
      }
      assert.ok(s.image || s.build, `${name} has an image or a build`);
    }
    // The agent runs on the images the postgres service builds.
    assert.equal(services.agent!.image, services.postgres!.image);
  });

  it('the mounted configs are valid for the binaries that read them', async () => {
    const mounted = (s: Service, target: string) =>
      join(DEPLOY, s.volumes!.find((v) => v.split(':')[1] === target)!.split(':')[0]!);
    const controller = await program('controller', 'controllerProgram');
    const controllerConfig = mounted(services.controller!, '/etc/pgfleet/controller.yaml');
    const run = parseCommandLine(
      controller,
      [...services.controller!.command!.slice(1, 2), '--config', controllerConfig],
      {},
    );
    assert.match(String(run.options.repo), /^s3:\/\/pgfleet\/fleet\?endpoint=http:\/\/s3:9000/);
    assert.equal(run.options['nats-url'], 'nats://nats:4222');
    const { resolveRunConfig } = (await import(
      pathToFileURL(join(REPO_ROOT, 'packages/controller/dist/options.js')).href
    )) as { resolveRunConfig(v: unknown): { listen: string } };
    assert.equal(resolveRunConfig(run.options).listen, '0.0.0.0:7420');

    const agent = await program('agent', 'AGENT_PROGRAM');
    const agentConfig = mounted(services.agent!, '/etc/pgfleet/agent.yaml');
    assert.equal(
      agentConfig,
      mounted(services.postgres!, '/etc/pgfleet/agent.yaml'),
      "archive_command reads the agent's config",
    );
    const daemon = parseCommandLine(agent, ['run', '--config', agentConfig], {});
    assert.deepEqual(
      [daemon.options.cluster, daemon.options.controller, daemon.options.pgdata],
      ['demo', 'controller:7420', services.postgres!.environment!.PGDATA],
    );
    parseCommandLine(agent, ['wal-push', 'pg_wal/000000010000000000000001', '--config', agentConfig], {});
    // Environment variables meant for pgfleet must be ones it reads.
    const known = new Set(
      agent.options.filter((o) => !o.cliOnly).map((o) => `PGFLEET_${o.name.toUpperCase().replace(/-/g, '_')}`),
    );
    for (const [name, s] of Object.entries(services)) {
      for (const key of Object.keys(s.environment ?? {}).filter((k) => k.startsWith('PGFLEET_')))
        assert.ok(known.has(key), `${name}: ${key} is not an agent option`);
    }
  });
});

describe('deploy/config', () => {
  it('the example controller and agent configs are valid', async () => {
    parseCommandLine(
      await program('controller', 'controllerProgram'),
      ['run', '--config', join(DEPLOY, 'config/controller.yaml')],
      {},
    );
    parseCommandLine(
      await program('agent', 'AGENT_PROGRAM'),
      ['run', '--config', join(DEPLOY, 'config/agent.yaml')],
      {},
    );
  });
});
