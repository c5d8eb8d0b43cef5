// A model folder on disk, for the CLI and tests.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, relative, sep } from 'node:path';
import { ModelLoadError, type ModelFiles } from './weights';
import { type FileSource, openFileSource } from './safetensors-node';

export function dirModelFiles(dir: string): ModelFiles {
  let stat;
  try {
    stat = statSync(dir);
  } catch {
    throw new ModelLoadError(`${dir}: no such folder.`);
  }
  if (!stat.isDirectory()) throw new ModelLoadError(`${dir}: not a folder (for a single .safetensors checkpoint use --single-file).`);
  const paths: string[] = [];
  const walk = (d: string, depth: number) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const full = join(d, entry.name);
      if (entry.isDirectory() && depth < 2) walk(full, depth + 1);
      else if (entry.isFile()) paths.push(relative(dir, full).split(sep).join('/'));
    }
  };
  walk(dir, 0);
  const opened: FileSource[] = [];
  return {
    name: basename(dir),
    list: () => paths,
    open: async (path) => {
      const source = await openFileSource(join(dir, path));
      opened.push(source);
      // Messages name the file by this: folder/component/file says which of a model's files is meant.
      return { ...source, name: `${basename(dir)}/${path}` };
    },
    readText: async (path) => readFileSync(join(dir, path), 'utf8'),
    close: async () => {
      await Promise.all(opened.splice(0).map((s) => s.close()));
    },
  };
}
