#!/usr/bin/env node
// The agent runs on every database host and must stay light: its npm dependency tree (what
// `npm ci --workspace @pgfleet/agent` would install) may contain neither better-sqlite3 nor a
// NATS client. dependency-cruiser checks the module graph; this checks the package graph.
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const banned = [/^better-sqlite3$/, /^nats$/, /^@nats-io\//];
const workspaces = new Map();
for (const dir of ['core', 'proto', 'rpc', 'pg', 'storage', 'catalog', 'agent', 'controller', 'cli', 'testkit']) {
  const p = join(root, 'packages', dir, 'package.json');
  if (existsSync(p)) {
    const pkg = JSON.parse(readFileSync(p, 'utf8'));
    workspaces.set(pkg.name, pkg);
  }
}
function manifest(name) {
  if (workspaces.has(name)) return workspaces.get(name);
  const p = join(root, 'node_modules', name, 'package.json');
  return existsSync(p) ? JSON.parse(readFileSync(p, 'utf8')) : undefined;
}
const seen = new Map();
const queue = [['@pgfleet/agent', ['@pgfleet/agent']]];
while (queue.length) {
  const [name, path] = queue.shift();
  if (seen.has(name)) continue;
  seen.set(name, path);
  const pkg = manifest(name);
  if (!pkg) continue;
  for (const dep of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies }))
    queue.push([dep, [...path, dep]]);
}
const bad = [...seen.entries()].filter(([n]) => banned.some((b) => b.test(n)));
if (bad.length) {
  for (const [n, path] of bad) console.error(`agent dependency tree contains ${n}: ${path.join(' -> ')}`);
  process.exit(1);
}
console.log(`agent dependency tree: ${seen.size} packages, no better-sqlite3, no NATS client`);
