/**
 * Node's compile cache (V8 code cache of every module loaded, kept on disk between runs) for the
 * binaries. Each of them starts many times: the CLI once per command, the agent once per
 * restore_command call, and the end-to-end tests start them hundreds of times, so compiling the
 * same modules again each time is CPU spent for nothing.
 *
 * The cache is one directory per OS user (root, and the postgres user that runs archive_command
 * and restore_command), in the temporary directory, used only when it is a real directory owned
 * by this user and writable by no one else: another local user who could write code cache there
 * could have it run by ours. A stale entry (another build of a module) is recompiled by Node,
 * which checks each entry against the source's hash; an unwritable or full disk only loses the
 * cache. Import this module before any other (it imports node builtins only): a module compiled
 * before the cache is on is not cached.
 */
import { lstatSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { createRequire, enableCompileCache } from 'node:module';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { constants as vmConstants, Script } from 'node:vm';
import { crc32 } from 'node:zlib';

/** This user's cache directory (see above), or undefined when it is not safe or cannot be made. */
function userCacheDir(): string | undefined {
  const uid = process.getuid?.();
  if (uid === undefined) return undefined;
  const dir = join(tmpdir(), `pgfleet-compile-cache-${uid}`);
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return undefined;
  }
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o022) !== 0) return undefined;
  return dir;
}

/** The directory enabled, or undefined when caching stays off (see above; also NODE_DISABLE_COMPILE_CACHE). */
export function enableUserCompileCache(): string | undefined {
  try {
    const dir = userCacheDir();
    return dir === undefined ? undefined : enableCompileCache(dir).directory;
  } catch {
    return undefined; // a cache is an optimisation: never a reason for a command to fail
  }
}

/**
 * Bytes before V8's data in a bundle's cache file: the source's CRC-32 and length (V8 checks
 * neither), then the CRC-32 of V8's data (release builds of V8 do not checksum it, so a file
 * damaged on disk would otherwise reach the deserializer).
 */
const BUNDLE_CACHE_HEADER = 12;
const SOURCE_HEADER = 8;

/**
 * Runs a one-file CommonJS bundle (esbuild's, `import.meta.url` defined as `__bundleUrl`) with a
 * V8 code cache of its own, written when the process exits, not when the file is compiled. Node's
 * compile cache is made right after compiling, when V8 has compiled only the top level: every
 * function the run calls (grpc-js's channel and HTTP/2 code, protobuf-es's decoder, the
 * command) is compiled again in each process. A cache made after a run holds those too (a CLI
 * command measured ~20 ms less CPU of ~150: docs/performance.md, "CLI start-up: a code cache
 * made after the run"). `profile` names which kind of run made it (a `--help` run compiles less
 * than a command), one file each, so a help run does not leave commands a thin cache.
 *
 * V8 checks a cache against its version and flags and the source's length only, so the file
 * starts with the source's CRC-32 and length, as Node's own cache does: another build of the
 * bundle finds a mismatch, runs uncached and writes its own. Same directory and the same
 * ownership rules as enableUserCompileCache; any failure to read or write only loses the cache.
 */
export function runBundleWithCodeCache(file: string, profile: string): void {
  const bytes = readFileSync(file);
  const source = bytes.toString('utf8');
  let cacheFile: string | undefined;
  let cachedData: Buffer | undefined;
  const header = Buffer.alloc(SOURCE_HEADER);
  header.writeUInt32LE(crc32(bytes), 0);
  header.writeUInt32LE(bytes.length, 4);
  if (!process.env.NODE_DISABLE_COMPILE_CACHE) {
    try {
      const dir = userCacheDir();
      if (dir !== undefined) {
        cacheFile = join(dir, `${basename(file)}-${crc32(file).toString(16)}-${profile}-${process.version}.v8cache`);
        const data = readFileSync(cacheFile);
        const v8data = data.subarray(BUNDLE_CACHE_HEADER);
        if (
          data.length > BUNDLE_CACHE_HEADER &&
          data.subarray(0, SOURCE_HEADER).equals(header) &&
          data.readUInt32LE(SOURCE_HEADER) === crc32(v8data)
        )
          cachedData = v8data;
      }
    } catch {
      // no cache yet, or none to be had: compiled from the source below
    }
  }
  // The wrapper is on the source's first line, so stack traces keep the bundle's line numbers.
  const script = new Script(`(function (exports, require, module, __filename, __dirname, __bundleUrl) {${source}\n})`, {
    filename: file,
    ...(cachedData === undefined ? {} : { cachedData }),
    importModuleDynamically: vmConstants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  if (cacheFile !== undefined && (cachedData === undefined || script.cachedDataRejected === true)) {
    const target = cacheFile;
    process.once('exit', () => {
      const tmp = `${target}.${process.pid}.tmp`;
      try {
        const v8data = script.createCachedData();
        const sum = Buffer.alloc(4);
        sum.writeUInt32LE(crc32(v8data), 0);
        writeFileSync(tmp, Buffer.concat([header, sum, v8data]), { mode: 0o600 });
        renameSync(tmp, target);
      } catch {
        // a cache is an optimisation: the next run compiles again (a full disk keeps no partial file)
        try {
          unlinkSync(tmp);
        } catch {
          // none was made
        }
      }
    });
  }
  const module = { exports: {} };
  const run = script.runInThisContext() as (...args: unknown[]) => void;
  run(module.exports, createRequire(file), module, file, dirname(file), pathToFileURL(file).href);
}
