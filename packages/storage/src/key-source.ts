/**
 * Where a cluster's key-encryption key comes from: a key file (readable by its owner only, so a
 * key readable by other local users is refused before it is used) or a key command run through
 * /bin/sh, whose standard output is the key (any KMS or vault plugs in without code: `vault kv
 * get -field=key secret/pgfleet/%c`). Either holds 32 bytes as base64 or as 64 hex digits.
 * `%c` in the file path or the command is replaced by the cluster's name (shell-quoted in a
 * command; PGFLEET_CLUSTER holds it too), so one setting serves a controller for many clusters.
 */
import { spawn } from 'node:child_process';
import { lstat, readFile, stat } from 'node:fs/promises';
import { PgfleetError } from '@pgfleet/core/errors';
import { KEK_BYTES, type KeyResolver } from './repository-keys.js';

export interface KeySource {
  /** --encryption-key-file */
  file?: string | undefined;
  /** --encryption-key-command */
  command?: string | undefined;
  /**
   * --previous-encryption-key-file/-command: the key rotated from. Between the agents' restart
   * with a new key and `pgfleet repo rotate-key`, the repository is still under this one.
   */
  previousFile?: string | undefined;
  previousCommand?: string | undefined;
}

const COMMAND_TIMEOUT_MS = 30_000;
const MAX_KEY_TEXT = 64 << 10;

function invalid(message: string, cause?: unknown): PgfleetError {
  return new PgfleetError('EncryptionKeyInvalid', message, cause === undefined ? undefined : { cause });
}

/** A key as text: 64 hex digits or base64 of 32 bytes (surrounding whitespace ignored). */
export function parseKeyText(text: string, from: string): Buffer {
  const t = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(t)) return Buffer.from(t, 'hex');
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(t)) {
    const key = Buffer.from(t, 'base64');
    if (key.length === KEK_BYTES) return key;
  }
  throw invalid(
    `${from} does not hold an encryption key: expected ${KEK_BYTES} bytes as base64 or 64 hex digits (e.g. \`openssl rand -base64 32\`)`,
  );
}

/** Reads a key file, refusing one that group or others may read or write (through a link, its target). */
export async function readKeyFile(path: string): Promise<Buffer> {
  let info;
  try {
    info = (await lstat(path)).isSymbolicLink() ? await stat(path) : await lstat(path);
  } catch (err) {
    throw invalid(`encryption key file ${path} cannot be read: ${(err as Error).message}`, err);
  }
  if (!info.isFile()) throw invalid(`encryption key file ${path} is not a regular file`);
  if ((info.mode & 0o077) !== 0) {
    throw invalid(
      `encryption key file ${path} has mode ${(info.mode & 0o777).toString(8).padStart(4, '0')}: other users could read it; make it 0600 (chmod 600 ${path}) or stricter`,
    );
  }
  const text = await readFile(path, 'utf8');
  if (text.length > MAX_KEY_TEXT) throw invalid(`encryption key file ${path} is larger than a key`);
  return parseKeyText(text, `encryption key file ${path}`);
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Runs a key command through /bin/sh for `cluster`; its standard output is the key. */
export function runKeyCommand(command: string, cluster: string): Promise<Buffer> {
  const script = command.replaceAll('%c', shellQuote(cluster));
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PGFLEET_CLUSTER: cluster },
      timeout: COMMAND_TIMEOUT_MS,
    });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = '';
    child.stdout.on('data', (c: Buffer) => {
      outBytes += c.length;
      if (outBytes <= MAX_KEY_TEXT) out.push(c);
    });
    child.stderr.on('data', (c: Buffer) => {
      err = (err + c.toString('utf8')).slice(-400);
    });
    child.on('error', (e) => reject(invalid(`encryption key command cannot start: ${e.message}`, e)));
    child.on('close', (code, signal) => {
      // The command line is not repeated in the message: it may carry a token.
      if (code !== 0) {
        reject(
          invalid(
            `encryption key command for cluster '${cluster}' failed (${signal ? `killed by ${signal}` : `exit status ${code}`})${err.trim() ? `: ${err.trim()}` : ''}`,
          ),
        );
        return;
      }
      try {
        resolve(
          parseKeyText(
            Buffer.concat(out).toString('utf8'),
            `the encryption key command's output for cluster '${cluster}'`,
          ),
        );
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}

/**
 * The resolver for a key source (undefined: no key given). `onlyCluster`: an agent's, which
 * holds its own cluster's key and no other's. Each cluster's key is read once per process. The
 * previous key, when one is given, is the resolver's `previous`.
 */
export function keyResolver(source: KeySource, onlyCluster?: string): KeyResolver | undefined {
  const current = oneKeyResolver(source.file, source.command, onlyCluster, 'encryption-key');
  const previous = oneKeyResolver(source.previousFile, source.previousCommand, onlyCluster, 'previous-encryption-key');
  if (!current) {
    if (previous)
      throw new PgfleetError(
        'InvalidConfig',
        "option 'previous-encryption-key-file' (or -command) needs the current key too: give 'encryption-key-file' or 'encryption-key-command'",
      );
    return undefined;
  }
  if (previous) current.previous = previous;
  return current;
}

function oneKeyResolver(
  file: string | undefined,
  command: string | undefined,
  onlyCluster: string | undefined,
  option: string,
): KeyResolver | undefined {
  if (file !== undefined && command !== undefined)
    throw new PgfleetError(
      'InvalidConfig',
      `options '${option}-file' and '${option}-command' exclude each other: give one`,
    );
  if (file === undefined && command === undefined) return undefined;
  const cache = new Map<string, Promise<Buffer>>();
  return (cluster) => {
    if (onlyCluster !== undefined && cluster !== onlyCluster) return Promise.resolve(undefined);
    let key = cache.get(cluster);
    if (!key) {
      key = file !== undefined ? readKeyFile(file.replaceAll('%c', cluster)) : runKeyCommand(command!, cluster);
      cache.set(cluster, key);
      key.catch(() => cache.delete(cluster));
    }
    return key;
  };
}

/** A resolver over keys already read (a copy worker thread gets its parent's). */
export function fixedKeys(keys: Readonly<Record<string, Buffer | Uint8Array>>): KeyResolver {
  return (cluster) => {
    const k = keys[cluster];
    return Promise.resolve(k === undefined ? undefined : Buffer.from(k));
  };
}
