/**
 * Every file and directory a restore creates, created below its target without following a
 * symbolic link. The manifest's paths are checked when it is read (storage manifest-paths.ts);
 * this is the second wall, against what is already on disk: a delta restore runs over an
 * existing data directory, in which anyone who could write as the PostgreSQL user may have
 * planted a link (base/1 -> /etc) for the restore to write through.
 *
 * Node has no openat(), so the walk is done by hand: each directory component is checked with
 * lstat (a real directory, never a link), created one at a time when missing, and files are
 * opened with O_NOFOLLOW (and O_EXCL where they must be new). The one kind of link a restore
 * crosses is a tablespace's pg_tblspc/<oid>, and it does not cross it either: the files of a
 * tablespace are written straight into the directory the restore chose for it (`tablespaces`),
 * the link is only created, pointing there.
 */
import { constants as fsc } from 'node:fs';
import { lstat, mkdir, open, rm, symlink, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { PgfleetError } from '@pgfleet/core';
import { relativePathProblem, TABLESPACE_LINK_PATH_RE } from '@pgfleet/storage';

/** Where a manifest path lands: the directory it is below (the target, or a tablespace's) and the rest. */
interface Placed {
  base: string;
  rel: string;
  abs: string;
}

export class RestoreTree {
  /**
   * @param root the restore target (absolute, normalised)
   * @param tablespaces pg_tblspc/<oid> -> the absolute directory the restore restores that tablespace into
   * @param made only for a restore into a new or empty target (not delta): the directories this
   *   restore created or checked already (absolute paths), which newFile does not check again
   */
  constructor(
    readonly root: string,
    private readonly tablespaces: ReadonlyMap<string, string> = new Map(),
    private readonly made?: Set<string>,
  ) {}

  /**
   * A tree for a restore into a target that was new or empty (checked by the caller, created
   * 0700 by this restore): every directory in it is one this restore made, so a file's parents,
   * once walked, are not walked again for each file (newFile), and a file's name needs no
   * clearing (it is created with O_EXCL: anything there fails the restore).
   */
  static fresh(root: string): RestoreTree {
    return new RestoreTree(root, new Map(), new Set());
  }

  /** The same tree with the tablespace directories decided (after the links are laid out). */
  withTablespaces(tablespaces: ReadonlyMap<string, string>): RestoreTree {
    return new RestoreTree(this.root, tablespaces, this.made);
  }

  /** The absolute path of a manifest path, a tablespace's files mapped into its directory; the path rules checked again. */
  place(path: string): Placed {
    const problem = relativePathProblem(path);
    if (problem) throw escape(path, `the path ${problem}`);
    const parts = path.split('/');
    if (parts.length > 2 && parts[0] === 'pg_tblspc') {
      const link = `${parts[0]}/${parts[1]}`;
      const location = this.tablespaces.get(link);
      if (location === undefined) throw escape(path, `${link} is not a tablespace of this restore`);
      const rel = parts.slice(2).join('/');
      return { base: location, rel, abs: join(location, rel) };
    }
    return { base: this.root, rel: path, abs: join(this.root, path) };
  }

  /** The absolute path a file of the manifest is written to (see place). */
  pathOf(path: string): string {
    return this.place(path).abs;
  }

  /** Creates the directory (and its missing parents, with `mode`), each component a real directory; returns its absolute path. */
  async ensureDirectory(path: string, mode: number): Promise<string> {
    const p = this.place(path);
    await walkDirectories(p.base, p.rel.split('/'), mode, path, this.made);
    return p.abs;
  }

  /**
   * The absolute path of a file the caller creates new (O_EXCL, O_NOFOLLOW): in a fresh tree
   * (RestoreTree.fresh) its parents are walked once per restore and nothing else is done, a
   * restored PGDATA's ~1000 small files each costing three lstat calls on libuv's threadpool
   * otherwise, queued behind other files' fsyncs; in any other tree, clearForFile.
   */
  async newFile(path: string): Promise<string> {
    if (!this.made) return this.clearForFile(path);
    const p = this.place(path);
    await walkDirectories(p.base, p.rel.split('/').slice(0, -1), 0o700, path, this.made);
    return p.abs;
  }

  /**
   * Makes `path` ready to be created new: its parents real directories (created with 0700 when
   * missing), and whatever is at its name (a planted link, a hard link, an old copy) removed,
   * never followed. Returns the absolute path.
   */
  async clearForFile(path: string): Promise<string> {
    const p = this.place(path);
    const parts = p.rel.split('/');
    await walkDirectories(p.base, parts.slice(0, -1), 0o700, path);
    const st = await lstat(p.abs).catch(ignoreMissing);
    if (st?.isDirectory())
      await rm(p.abs, { recursive: true, force: true }); // rm never follows a link inside
    else if (st) await unlink(p.abs);
    return p.abs;
  }

  /**
   * An existing regular file at `path` (a delta restore's candidate to keep), reached through
   * real directories only; undefined when it is missing or anything but a regular file with one
   * link (which clearForFile then replaces).
   */
  async existingFile(path: string): Promise<{ abs: string; size: number } | undefined> {
    const p = this.place(path);
    const parts = p.rel.split('/');
    let dir = p.base;
    for (const part of parts.slice(0, -1)) {
      dir = join(dir, part);
      const st = await lstat(dir).catch(ignoreMissing);
      if (!st?.isDirectory()) return undefined;
    }
    const st = await lstat(p.abs).catch(ignoreMissing);
    return st?.isFile() && st.nlink === 1 ? { abs: p.abs, size: st.size } : undefined;
  }

  /** Creates a small file the restore writes itself (backup_label, recovery.signal): new, never through a link. */
  async createFile(path: string, content: string | Buffer, mode = 0o600): Promise<void> {
    const abs = await this.clearForFile(path);
    const fh = await open(abs, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode);
    try {
      await fh.writeFile(content);
    } finally {
      await fh.close();
    }
  }

  /** Appends to a file (postgresql.auto.conf, restored just before), never through a link at its name. */
  async appendFile(path: string, content: string, mode = 0o600): Promise<void> {
    const p = this.place(path);
    await walkDirectories(p.base, p.rel.split('/').slice(0, -1), 0o700, path);
    const fh = await open(p.abs, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_APPEND | fsc.O_NOFOLLOW, mode).catch(
      (err: NodeJS.ErrnoException) => {
        throw err.code === 'ELOOP' ? escape(path, 'it is a symbolic link') : err;
      },
    );
    try {
      if (!(await fh.stat()).isFile()) throw escape(path, 'it is not a regular file');
      await fh.writeFile(content);
    } finally {
      await fh.close();
    }
  }

  /** Opens an existing regular file for its size and attributes (a chunked file, a kept file): O_NOFOLLOW. */
  async openExisting(path: string, flags: number = fsc.O_RDONLY): Promise<import('node:fs/promises').FileHandle> {
    const abs = this.pathOf(path);
    return open(abs, flags | fsc.O_NOFOLLOW).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'ELOOP' ? escape(path, 'it is a symbolic link') : err;
    });
  }

  /** Creates a file new (O_EXCL, O_NOFOLLOW) after newFile; for chunked files, sized up front. */
  async createNew(path: string, mode: number): Promise<import('node:fs/promises').FileHandle> {
    const abs = await this.newFile(path);
    return open(abs, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode);
  }

  /** Creates a tablespace's pg_tblspc/<oid> link to the directory the restore chose for it. */
  async createTablespaceLink(path: string, location: string): Promise<void> {
    if (!TABLESPACE_LINK_PATH_RE.test(path)) throw escape(path, 'only pg_tblspc/<oid> may be a link');
    await walkDirectories(this.root, ['pg_tblspc'], 0o700, path);
    const abs = join(this.root, path);
    const st = await lstat(abs).catch(ignoreMissing);
    if (st) throw escape(path, 'something is already there');
    await symlink(location, abs);
  }
}

/**
 * Walks (and creates) directories below `base` one component at a time, refusing any that is not
 * a real directory; those in `made` are taken as checked, and every one checked is added to it.
 */
async function walkDirectories(
  base: string,
  parts: readonly string[],
  mode: number,
  path: string,
  made?: Set<string>,
): Promise<void> {
  let dir = base;
  for (const part of parts) {
    dir = join(dir, part);
    if (made?.has(dir)) continue;
    let st = await lstat(dir).catch(ignoreMissing);
    if (!st) {
      await mkdir(dir, { mode }).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'EEXIST') throw err;
      });
      st = await lstat(dir);
    }
    if (st.isSymbolicLink()) throw escape(path, `${dir} is a symbolic link`);
    if (!st.isDirectory()) throw escape(path, `${dir} is not a directory`);
    made?.add(dir);
  }
}

function ignoreMissing(err: NodeJS.ErrnoException): undefined {
  if (err.code === 'ENOENT') return undefined;
  throw err;
}

function escape(path: string, why: string): PgfleetError {
  return new PgfleetError(
    'RestoreEscapeRefused',
    `restore refused to write ${JSON.stringify(path)}: ${why} (a write there could leave the target directory)`,
  );
}
