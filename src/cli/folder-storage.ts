// A Storage on Node's file system (the CLI's run folders and caches).

import { appendFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathParts, type Storage, StorageFullError, toBytes } from '../app/storage';

const full = (code: unknown) => code === 'ENOSPC' || code === 'EDQUOT';

export function folderStorage(dir: string): Storage {
  const at = (p: string) => path.join(dir, ...pathParts(p));
  const guard = async <T>(where: string, bytes: number, f: () => Promise<T>): Promise<T> => {
    try {
      return await f();
    } catch (e) {
      if (full((e as NodeJS.ErrnoException).code)) throw new StorageFullError(where, bytes, null);
      throw e;
    }
  };
  const writeAtomic = async (file: string, data: Uint8Array) => {
    await mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      await writeFile(tmp, data);
      await rename(tmp, file);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  };
  const self: Storage = {
    name: dir,
    async read(p) {
      try {
        return new Uint8Array(await readFile(at(p)));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw e;
      }
    },
    async write(p, data) {
      const bytes = toBytes(data);
      await guard(at(p), bytes.length, () => writeAtomic(at(p), bytes));
    },
    async append(p, text) {
      await mkdir(path.dirname(at(p)), { recursive: true });
      await guard(at(p), text.length, () => appendFile(at(p), text));
    },
    async exists(p) {
      try {
        await stat(at(p));
        return true;
      } catch {
        return false;
      }
    },
    async list(p = '') {
      try {
        return (await readdir(at(p))).sort();
      } catch {
        return [];
      }
    },
    async remove(p) {
      await rm(at(p), { recursive: true, force: true });
    },
    // The new folder is written beside the old one, then swapped in by two renames: a crash leaves either
    // the old folder or the new one complete (and maybe a stale .new / .old, removed by the next write).
    async writeFolder(p, files) {
      const target = at(p);
      const fresh = `${target}.new`;
      const old = `${target}.old`;
      const bytes = Object.values(files).reduce((n, b) => n + b.length, 0);
      await guard(target, bytes, async () => {
        await rm(fresh, { recursive: true, force: true });
        await mkdir(fresh, { recursive: true });
        for (const [name, data] of Object.entries(files)) await writeFile(path.join(fresh, ...pathParts(name)), data);
        await rm(old, { recursive: true, force: true });
        if (await self.exists(p)) await rename(target, old);
        await rename(fresh, target);
        await rm(old, { recursive: true, force: true });
      });
    },
    async readFolder(p, names) {
      const out: Record<string, Uint8Array> = {};
      for (const n of names) {
        const b = await self.read(`${p}/${n}`);
        if (!b) return null;
        out[n] = b;
      }
      return out;
    },
    folder(p) {
      return folderStorage(at(p));
    },
  };
  return self;
}
