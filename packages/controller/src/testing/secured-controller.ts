/**
 * Test support for controllers started with `--tls-dir` and bearer tokens (security and console
 * tests): a fleet CA and server certificate in `<dir>/tls`, a SQLite catalog holding one token per
 * role, and a command IO that captures what the token commands print. Not exported from the package.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { strict as assert } from 'node:assert';
import { tokenCommand, type CommandIo } from '../security/commands.js';
import { initTlsDir } from '../security/tls-dir.js';

export function captureIo(now = Date.now()): CommandIo & { stdout: string; stderr: string } {
  const io = {
    stdout: '',
    stderr: '',
    out: (t: string) => void (io.stdout += t),
    err: (t: string) => void (io.stderr += t),
    now: () => now,
  };
  return io;
}

export interface SecuredSetup {
  readonly tlsDir: string;
  readonly catalogPath: string;
  readonly caPem: string;
  /** A bearer token per role asked for, created with `pgfleet-controller token create`. */
  readonly tokens: Record<string, string>;
}

/** Creates the TLS directory (localhost and 127.0.0.1) and one token per role under `dir`. */
export async function prepareSecuredController(
  dir: string,
  roles: readonly ('viewer' | 'operator' | 'admin')[],
): Promise<SecuredSetup> {
  const tlsDir = join(dir, 'tls');
  await initTlsDir(tlsDir, ['localhost', '127.0.0.1']);
  const catalogPath = join(dir, 'catalog.db');
  const tokens: Record<string, string> = {};
  for (const role of roles) {
    const io = captureIo();
    assert.equal(await tokenCommand(['create'], { catalog: catalogPath, role, name: role }, io), 0);
    tokens[role] = io.stdout.trim();
  }
  return { tlsDir, catalogPath, caPem: readFileSync(join(tlsDir, 'ca.crt'), 'utf8'), tokens };
}
