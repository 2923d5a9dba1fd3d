/**
 * Which files of pg_dump's output directory pg_dump still has open, seen in /proc (Linux): what
 * lets the agent store a table's data file while pg_dump goes on with the others
 * (spool-drain.ts, docs/logical.md "Storing while pg_dump runs").
 *
 * pg_dump -Fd -j N is a leader and N workers it forks before it opens any file of the directory
 * (pg_backup_directory.c _CloseArchive: ParallelBackupStart, then toc.dat, then WriteDataChunks);
 * with -j 1 the leader writes every file itself. So every process that can hold a file of the
 * directory is the pg_dump child itself or a descendant of it, alive since before that file
 * existed: /proc/<pid>/task/<tid>/children names them (kernels without CONFIG_PROC_CHILDREN: the
 * ppid field of every /proc/<pid>/stat), and /proc/<pid>/fd/* links to what each has open.
 *
 * The answer is a snapshot, never a promise about later: a file listed before the probe ran and
 * not open in it was closed before the probe and is never opened for writing again (see
 * spool-drain.ts for why). The only moment a file is in the directory without being in some
 * process's fd table is inside pg_dump's own open(2) (the name is linked before the descriptor
 * is installed), and then the file is empty; spool-drain.ts accepts no file that does not end as
 * complete COPY data, so that moment can only delay a file to the after-pg_dump path.
 */
import { readdir, readFile, readlink, realpath } from 'node:fs/promises';
import { basename, dirname } from 'node:path';

/**
 * Names of the files directly in the watched directory that some process of the watched tree has
 * open now; undefined when this cannot be told here (no /proc, a process whose fds cannot be
 * read): then nothing is taken as closed before pg_dump ends.
 */
export type OpenFilesProbe = () => Promise<ReadonlySet<string> | undefined>;

/** /proc's root: a parameter so a test can point it elsewhere; '/proc' in the agent. */
const PROC = '/proc';

function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH';
}

/** The pids of `root`'s descendants (root excluded), from the children files, else from every process's ppid. */
async function descendants(root: number, proc: string): Promise<number[]> {
  const out: number[] = [];
  const viaChildren = async (pid: number): Promise<boolean> => {
    let tids: string[];
    try {
      tids = await readdir(`${proc}/${pid}/task`);
    } catch (err) {
      if (isMissing(err)) return true; // gone: it holds nothing
      throw err;
    }
    for (const tid of tids) {
      let text: string;
      try {
        text = await readFile(`${proc}/${pid}/task/${tid}/children`, 'utf8');
      } catch (err) {
        if (!isMissing(err)) throw err;
        // The thread went, or the kernel has no children files: tell which by the task directory.
        const still = await readdir(`${proc}/${pid}/task/${tid}`).then(
          () => true,
          () => false,
        );
        if (still) return false;
        continue;
      }
      for (const c of text.split(' ').filter(Boolean)) {
        const child = Number(c);
        out.push(child);
        if (!(await viaChildren(child))) return false;
      }
    }
    return true;
  };
  if (await viaChildren(root)) return out;
  // Without children files: every process's parent from /proc/<pid>/stat ("pid (comm) state ppid ...").
  const parentOf = new Map<number, number>();
  for (const name of await readdir(proc)) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`${proc}/${name}/stat`, 'utf8').catch(() => undefined);
    if (stat === undefined) continue;
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    parentOf.set(Number(name), ppid);
  }
  const tree = new Set([root]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of parentOf)
      if (!tree.has(pid) && tree.has(ppid)) {
        tree.add(pid);
        grew = true;
      }
  }
  tree.delete(root);
  return [...tree];
}

/**
 * The probe of the files in `dir` held open by process `root` (pg_dump) and its descendants. Any
 * error other than a process or descriptor that went away while it was read makes it answer
 * undefined ("cannot tell"), never "closed".
 */
export function processTreeOpenFiles(root: number, dir: string, proc = PROC): OpenFilesProbe {
  let realDir: string | undefined;
  return async () => {
    try {
      realDir ??= await realpath(dir);
      const pids = await descendants(root, proc);
      const open = new Set<string>();
      for (const pid of [root, ...pids]) {
        let fds: string[];
        try {
          fds = await readdir(`${proc}/${pid}/fd`);
        } catch (err) {
          if (isMissing(err)) continue; // exited: its files are closed
          throw err;
        }
        for (const fd of fds) {
          const target = await readlink(`${proc}/${pid}/fd/${fd}`).catch((err: unknown) => {
            if (isMissing(err)) return undefined; // closed while we looked
            throw err;
          });
          if (target !== undefined && dirname(target) === realDir) open.add(basename(target));
        }
      }
      return open;
    } catch {
      return undefined;
    }
  };
}
