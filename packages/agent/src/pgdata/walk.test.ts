import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { listPgdata, walkPgdata, type PgdataEntry, type PgdataTree } from './walk.js';

describe('walkPgdata', () => {
  it('files removed after their directory was read are left out; files created in a directory not read yet are in', async () => {
    const d = await mkdtemp(join(tmpdir(), 'pgfleet-walk-'));
    try {
      await writeFile(join(d, 'PG_VERSION'), '15\n');
      for (const dir of ['x', 'y']) {
        await mkdir(join(d, dir));
        for (const n of ['1', '2', '3', '4']) await writeFile(join(d, dir, n), 'x');
      }
      const tree: PgdataTree = { directories: [], links: [] };
      const seen: string[] = [];
      let first: string | undefined;
      for await (const f of walkPgdata(d, tree)) {
        seen.push(f.path);
        const dir = f.path.split('/')[0]!;
        if (first === undefined && (dir === 'x' || dir === 'y')) {
          // The walk is in `dir` now: its listing is read, the other directory's is not.
          first = f.path;
          for (const n of ['1', '2', '3', '4']) if (`${dir}/${n}` !== f.path) await unlink(join(d, dir, n)); // dropped meanwhile
          await writeFile(join(d, dir === 'x' ? 'y' : 'x', 'new'), 'x'); // created meanwhile
        }
      }
      const other = first!.startsWith('x/') ? 'y' : 'x';
      assert.deepEqual(
        seen.sort(),
        ['PG_VERSION', first!, `${other}/1`, `${other}/2`, `${other}/3`, `${other}/4`, `${other}/new`].sort(),
      );
      assert.deepEqual(tree.directories.map((x) => x.path).sort(), ['x', 'y']);
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  it('yields what listPgdata lists, tablespaces included, and records their links', async () => {
    const root = await mkdtemp(join(tmpdir(), 'pgfleet-walk-'));
    try {
      const d = join(root, 'data');
      for (const dir of ['data/base/1', 'data/pg_tblspc', 'ts/PG_15_202209061/5', 'data/pg_wal/archive_status'])
        await mkdir(join(root, dir), { recursive: true });
      await writeFile(join(d, 'PG_VERSION'), '15\n');
      await writeFile(join(d, 'base/1/\u{1F600}'), 'x');
      await writeFile(join(root, 'ts/PG_15_202209061/5/16390'), 'xx');
      await writeFile(join(d, 'pg_wal/000000010000000000000001'), 'x');
      await symlink(join(root, 'ts'), join(d, 'pg_tblspc', '16389'));
      const tree: PgdataTree = { directories: [], links: [] };
      const walked: PgdataEntry[] = [];
      for await (const f of walkPgdata(d, tree)) walked.push(f);
      const listed = await listPgdata(d);
      assert.deepEqual(
        walked.map((f) => [f.path, f.size]).sort(),
        [
          ['PG_VERSION', 3],
          ['base/1/\u{1F600}', 1],
          ['pg_tblspc/16389/PG_15_202209061/5/16390', 2],
        ].sort(),
      );
      assert.deepEqual(listed.files, walked);
      assert.deepEqual(tree.links, [{ path: 'pg_tblspc/16389', target: join(root, 'ts') }]);
      assert.deepEqual(listed.links, tree.links);
      assert.deepEqual(listed.directories, tree.directories);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
