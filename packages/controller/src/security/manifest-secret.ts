/**
 * The controller's manifest secret: 32 random bytes from which the manifest key of every
 * cluster is derived (storage manifest-auth.ts). Generated once, by the first `run`, into a file
 * only the controller's user can read; every controller of one catalog needs the same file, and
 * `catalog rebuild` and `manifest sign` read it too. It is kept outside the catalog on purpose:
 * rebuilding a lost catalog is exactly when it must still be there. Losing it makes every
 * manifest unverifiable (docs/security.md says how to recover).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { PgfleetError } from '@pgfleet/core';

const SECRET_FILE = 'manifest.secret';
const SECRET_RE = /^[0-9a-f]{64}$/;

/** Where the secret lives: --manifest-secret, else beside the TLS material, else beside a SQLite catalog. */
export function manifestSecretPath(o: { manifestSecret?: string; tlsDir?: string; catalog: string }): string {
  if (o.manifestSecret) return o.manifestSecret;
  if (o.tlsDir) return join(o.tlsDir, SECRET_FILE);
  if (!/^postgres(ql)?:\/\//.test(o.catalog)) return join(dirname(o.catalog), SECRET_FILE);
  throw new PgfleetError(
    'InvalidConfig',
    "option 'manifest-secret' is required with a PostgreSQL catalog and no --tls-dir: every controller of the catalog must read the same secret file",
  );
}

/**
 * Reads the secret; with `create`, generates it when the file does not exist (0600, never
 * overwritten: a second controller starting at once reads the first one's). Refused when others
 * can read it.
 */
export async function loadManifestSecret(path: string, create: boolean): Promise<Buffer> {
  const st = await stat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (!st) {
    if (!create)
      throw new PgfleetError('InvalidConfig', `option 'manifest-secret': ${path} does not exist`, {
        hint: 'Give --manifest-secret the file the controller that wrote the backups used (it generated it at its first start); without it no manifest can be trusted.',
      });
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeFile(path, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' }).catch(
      (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      },
    );
    return loadManifestSecret(path, false);
  }
  if ((st.mode & 0o077) !== 0)
    throw new PgfleetError(
      'InvalidConfig',
      `option 'manifest-secret': ${path} is readable by other users (mode ${(st.mode & 0o777).toString(8)})`,
      { hint: `chmod 600 ${path}: whoever reads it can forge the manifests of every cluster.` },
    );
  const text = (await readFile(path, 'utf8')).trim();
  if (!SECRET_RE.test(text))
    throw new PgfleetError('InvalidConfig', `option 'manifest-secret': ${path} does not hold 64 hex digits`);
  return Buffer.from(text, 'hex');
}
