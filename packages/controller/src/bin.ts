#!/usr/bin/env node
/**
 * pgfleet-controller entry point: Node's compile cache on (core's compile-cache.ts) before any of
 * the controller's modules load, then controller-main.ts.
 */
import { enableUserCompileCache } from '@pgfleet/core/compile-cache';

enableUserCompileCache();
await import('./controller-main.js');
