// Node adapters: a DatasetSource over a folder, importing from a path (folder or data file), atomic writes.
// The only file-system code of the data layer; everything else works on browser File objects too.

import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { importDataset, type ImportOptions } from './import';
import { isAbsolutePath, isUrl } from './records';
import { type DatasetSource, stripBom } from './source';
import type { DatasetItem, ImportResult } from './types';


/** A source over a folder; relative paths resolve against it, absolute ones are used as they are. */
export function nodeSource(root: string): DatasetSource {
  const abs = path.resolve(root);
  const resolve = (p: string) => path.resolve(abs, p);
  return {
    name: abs,
    async listFiles() {
      const out: string[] = [];
      const walk = async (dir: string, rel: string) => {
        const entries = await readdir(dir, { withFileTypes: true });
        for (const e of entries) {
          if (e.name.startsWith('.') || e.name === 'node_modules') continue;
          const r = rel ? `${rel}/${e.name}` : e.name;
          if (e.isDirectory()) await walk(path.join(dir, e.name), r);
          else if (e.isFile()) out.push(r);
        }
      };
      await walk(abs, '');
      return out.sort();
    },
    async readText(p) {
      return stripBom(await readFile(resolve(p), 'utf8'));
    },
    async readFile(p) {
      try {
        return new Uint8Array(await readFile(resolve(p)));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
        throw e;
      }
    },
    async readHead(p, bytes) {
      let handle;
      try {
        handle = await open(resolve(p), 'r');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
        throw e;
      }
      try {
        const info = await handle.stat();
        if (!info.isFile()) return null;
        const buf = Buffer.alloc(bytes);
        const { bytesRead } = await handle.read(buf, 0, bytes, 0);
        return new Uint8Array(buf.subarray(0, bytesRead));
      } finally {
        await handle.close();
      }
    },
  };
}

export interface PathImport extends ImportResult {
  /** Absolute folder that item image paths are relative to. */
  root: string;
  /** The data file, when the path was a file. */
  file?: string;
}

/** Imports a folder (kohya, imagefolder, or a folder with one data file) or a data file (.csv, .jsonl, metadata.jsonl). */
export async function importPath(p: string, options: Omit<ImportOptions, 'file'> = {}): Promise<PathImport> {
  const abs = path.resolve(p);
  let info;
  try {
    info = await stat(abs);
  } catch {
    throw new Error(`no such file or folder: ${p}`);
  }
  if (info.isDirectory()) {
    const result = await importDataset(nodeSource(abs), options);
    return { ...result, root: abs };
  }
  const root = path.dirname(abs);
  const file = path.basename(abs);
  const result = await importDataset(nodeSource(root), { ...options, file });
  return { ...result, root, file: abs };
}

/** The image path of an item, relative to `toDir` (where the JSONL that names it is written), POSIX style. */
export function relativeImagePath(item: Pick<DatasetItem, 'image'>, root: string, toDir: string): string {
  if (isUrl(item.image)) return item.image;
  const abs = isAbsolutePath(item.image) ? item.image : path.resolve(root, item.image);
  const rel = path.relative(toDir, abs);
  return rel.split(path.sep).join('/');
}

/** Absolute path of an item's image. */
export function absoluteImagePath(item: Pick<DatasetItem, 'image'>, root: string): string {
  return isUrl(item.image) ? item.image : path.resolve(root, item.image);
}

let tmpCounter = 0;

/**
 * Writes via a temporary file beside `file` and a rename, so a reader never sees half a file: a crash or a full
 * disk leaves the old contents (and no temporary file) under the name.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await mkdir(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.${process.pid}-${tmpCounter++}.tmp`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
