#!/usr/bin/env node
/**
 * pgfleet entry point. The CLI runs once per command (scripts, and the end-to-end tests hundreds
 * of times), and loading its ~200 modules one by one (resolution, package.json reads, a compile
 * each) was most of a command's CPU: the build bundles cli-main.js with its dependencies into one
 * CommonJS file, dist/cli-main.bundle.cjs (bundle-cli.mjs; the commands' part is evaluated only
 * when a command runs, so --help runs none of it), and this runs it with a code cache made after
 * the run (core's runBundleWithCodeCache: Node's own compile cache holds only the top level).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { enableUserCompileCache, runBundleWithCodeCache } from '@pgfleet/core/compile-cache';

// For what is still loaded as modules: the fallback below, and the packages core and the commands
// require on first use (pino, zod, yaml, cli-progress).
enableUserCompileCache();
const bundle = fileURLToPath(new URL('./cli-main.bundle.cjs', import.meta.url));
if (existsSync(bundle)) {
  // Which cache to use is only a guess from the words (a wrong one costs time, not behaviour):
  // a help or version run compiles the option table's code, a command also gRPC and protobuf.
  const args = process.argv.slice(2);
  const helpRun = args.length === 0 || args.some((a) => a === '--help' || a === '-h' || a === '--version');
  runBundleWithCodeCache(bundle, helpRun ? 'help' : 'command');
} else {
  // A build that skipped the bundle step (tsc alone): the same code as ES modules, only slower to load.
  await import('./cli-main.js');
}
