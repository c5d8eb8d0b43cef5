// A Storage on Node's file system: the CLI's output folders and caches. The layout on disk is the plain one
// (`OUT/checkpoint/state.json` is a real file in a real folder), so people and scripts can read it directly.
// - `write` writes a temporary sibling file and renames it over the target (rename is atomic on POSIX).
// - `writeFolder(p)` writes `<p>.new`, renames the old `<p>` to `<p>.old`, renames `<p>.new` to `<p>`, then
//   deletes `<p>.old`. A crash leaves either the old folder (with a stale `.new`, removed by the next
//   writeFolder) or, in the instant between the two renames, only `<p>.old`: readFolder and the next
//   writeFolder put that back, so the old checkpoint is never lost.
// - A full disk (ENOSPC, EDQUOT) becomes a StorageFullError, after the partial output is removed.

import { appendFile, mkdir, readdir, readFile, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { joinStoragePath, pathParts, type Storage, StorageFullError, toBytes } from '../app/storage';
import { writeFileAtomic } from '../data/node-fs';

const isFull = (e: unknown) => {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
};
const isMissing = (e: unknown) => {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
};

/** Temporary names this storage makes (hidden from list): `<file>.<pid>-<n>.tmp` (writeFileAtomic), `<folder>.new`, `<folder>.old`. */
const TMP_FILE = /\.\d+-\d+\.tmp$/;
const STAGED_FOLDER = /\.(new|old)$/;

async function isDir(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch (e) {
    if (isMissing(e)) return false;
    throw e;
  }
}

/** Bytes used and the size of the file system holding `dir` (its nearest existing ancestor). */
async function diskEstimate(dir: string): Promise<{ usage: number; quota: number } | null> {
  let p = path.resolve(dir);
  for (;;) {
    try {
      const s = await statfs(p);
      const quota = s.blocks * s.bsize;
      return { usage: quota - s.bavail * s.bsize, quota };
    } catch (e) {
      const up = path.dirname(p);
      if (!isMissing(e) || up === p) return null;
      p = up;
    }
  }
}

/** If a crash came between writeFolder's two renames, `<target>.old` is the complete old folder: restore it. */
async function settle(target: string): Promise<void> {
  if (!(await isDir(target)) && (await isDir(`${target}.old`))) await rename(`${target}.old`, target);
}

/** The folder `dir` (created on first write) as a Storage. */
export function folderStorage(dir: string): Storage {
  const at = (p: string) => path.join(dir, ...pathParts(p));
  const full = async (p: string, needed: number) => new StorageFullError(at(p), needed, await diskEstimate(dir));

  const self: Storage = {
    name: dir,

    async read(p) {
      try {
        return new Uint8Array(await readFile(at(p)));
      } catch (e) {
        if (isMissing(e) || (e as NodeJS.ErrnoException).code === 'EISDIR') return null;
        throw e;
      }
    },

    async write(p, data) {
      const bytes = toBytes(data);
      if (pathParts(p).length === 0) throw new Error(`${dir}: cannot write a file at the folder itself`);
      try {
        await writeFileAtomic(at(p), bytes);
      } catch (e) {
        if (isFull(e)) throw await full(p, bytes.length);
        throw e;
      }
    },

    async append(p, text) {
      try {
        await mkdir(path.dirname(at(p)), { recursive: true });
        await appendFile(at(p), text);
      } catch (e) {
        if (isFull(e)) throw await full(p, Buffer.byteLength(text));
        throw e;
      }
    },

    async exists(p) {
      if (pathParts(p).length > 0) await settle(at(p));
      try {
        await stat(at(p));
        return true;
      } catch (e) {
        if (isMissing(e)) return false;
        throw e;
      }
    },

    async list(p = '') {
      let entries;
      try {
        entries = await readdir(at(p), { withFileTypes: true });
      } catch (e) {
        if (isMissing(e)) return [];
        throw e;
      }
      const names = new Set<string>();
      for (const e of entries) {
        if (e.isFile() && TMP_FILE.test(e.name)) continue;
        // A staged folder shows under its plain name (the '.old' one only ever stands for a folder that a
        // crash left mid-switch, which readFolder puts back).
        const staged = e.isDirectory() ? STAGED_FOLDER.exec(e.name) : null;
        if (staged) {
          if (staged[1] === 'old') names.add(e.name.slice(0, -4));
          continue;
        }
        names.add(e.name);
      }
      return [...names].sort();
    },

    async remove(p) {
      const target = at(p);
      if (pathParts(p).length === 0) {
        // The folder itself: empty it, keep the folder.
        let names: string[] = [];
        try {
          names = await readdir(dir);
        } catch (e) {
          if (!isMissing(e)) throw e;
        }
        for (const name of names) await rm(path.join(dir, name), { recursive: true, force: true });
        return;
      }
      await rm(target, { recursive: true, force: true });
      await rm(`${target}.new`, { recursive: true, force: true });
      await rm(`${target}.old`, { recursive: true, force: true });
    },

    async writeFolder(p, files) {
      if (pathParts(p).length === 0) throw new Error(`${dir}: writeFolder needs a folder path inside the storage`);
      const target = at(p);
      const fresh = `${target}.new`;
      const old = `${target}.old`;
      const needed = Object.values(files).reduce((n, b) => n + b.length, 0);
      await settle(target);
      await rm(fresh, { recursive: true, force: true }); // a crashed writeFolder's leftover
      try {
        await mkdir(fresh, { recursive: true });
        for (const [name, data] of Object.entries(files)) {
          const file = path.join(fresh, ...pathParts(name));
          await mkdir(path.dirname(file), { recursive: true });
          await writeFile(file, data);
        }
      } catch (e) {
        await rm(fresh, { recursive: true, force: true });
        if (isFull(e)) throw await full(p, needed);
        throw e;
      }
      // The switch: two renames, which need no space.
      await rm(old, { recursive: true, force: true });
      if (await isDir(target)) await rename(target, old);
      await rename(fresh, target);
      await rm(old, { recursive: true, force: true });
    },

    async readFolder(p, names) {
      await settle(at(p));
      const out: Record<string, Uint8Array> = {};
      for (const n of names) {
        const b = await self.read(joinStoragePath(p, n));
        if (!b) return null;
        out[n] = b;
      }
      return out;
    },

    async size(p = '') {
      if (pathParts(p).length > 0) {
        await settle(at(p));
        try {
          const s = await stat(at(p));
          if (s.isFile()) return s.size;
        } catch (e) {
          if (isMissing(e)) return 0;
          throw e;
        }
      }
      // A folder: walk what list() shows, so staged copies and temporary files do not count.
      let total = 0;
      for (const name of await self.list(p)) total += await self.size(joinStoragePath(p, name));
      return total;
    },

    folder(p) {
      return folderStorage(at(p));
    },

    estimate: () => diskEstimate(dir),
  };
  return self;
}
