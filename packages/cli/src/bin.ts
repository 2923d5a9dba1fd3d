#!/usr/bin/env node
/**
 * pgfleet entry point. The CLI runs once per command (scripts, and the end-to-end tests hundreds
 * of times), and loading its ~200 modules one by one (resolution, package.json reads, a compile
 * each) was most of a command's CPU: the build bundles cli-main.js with its dependencies into
 * dist/cli-main.bundle.mjs (bundle-cli.mjs), the commands' part in a chunk of its own so --help
 * loads none of it, and this runs that with Node's compile cache on (core's compile-cache.ts).
 */
import { enableUserCompileCache } from '@pgfleet/core/compile-cache';

enableUserCompileCache();
const bundle = new URL('./cli-main.bundle.mjs', import.meta.url).href;
try {
  await import(bundle);
} catch (err) {
  // A build that skipped the bundle step (tsc alone): the same code as ES modules, only slower to load.
  const e = err as NodeJS.ErrnoException & { url?: string };
  if (e.code !== 'ERR_MODULE_NOT_FOUND' || e.url !== bundle) throw err;
  await import('./cli-main.js');
}
