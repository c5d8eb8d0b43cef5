// Where a dataset's files come from. The import code sees only this interface, so it runs on browser File
// objects (a picked folder) and on Node's file system (node-fs.ts) alike.

export interface DatasetSource {
  /** For messages: the folder's name or path. */
  readonly name: string;
  /** Every file, as POSIX paths relative to the root. */
  listFiles(): Promise<string[]>;
  /** A file's text (UTF-8, BOM removed). Throws when the file is missing. */
  readText(path: string): Promise<string>;
  /** The first `bytes` bytes of a file, or null when there is no such file. */
  readHead(path: string, bytes: number): Promise<Uint8Array | null>;
  /** A whole file, or null when there is no such file (for copying a dataset's images into the lab's storage). */
  readFile?(path: string): Promise<Uint8Array | null>;
}

/** Joins a directory and a relative path, resolving "." and ".." (POSIX, no leading slash kept; leading ".." kept). */
export function joinPath(dir: string, rel: string): string {
  const parts = `${dir}/${rel}`.replace(/\\/g, '/').split('/');
  const out: string[] = [];
  for (const p of parts) {
    if (p === '' || p === '.') continue;
    if (p === '..' && out.length > 0 && out[out.length - 1] !== '..') out.pop();
    else out.push(p); // a leading ".." stays: the path points above the root
  }
  return out.join('/');
}

export function dirName(path: string): string {
  const i = path.replace(/\\/g, '/').lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

export function baseName(path: string): string {
  const p = path.replace(/\\/g, '/');
  return p.slice(p.lastIndexOf('/') + 1);
}

export function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

/**
 * A source over browser File objects, e.g. from <input type="file" webkitdirectory> or a drop. Paths
 * come from webkitRelativePath without its first segment (the picked folder), else the file's name.
 */
export function filesSource(files: Iterable<File>, name = 'selected files'): DatasetSource {
  const byPath = new Map<string, File>();
  const list = [...files];
  const rel = (f: File) => (f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name;
  // Strip the common first folder only when every file has one (a picked folder), not for loose files.
  const stripFirst = list.length > 0 && list.every((f) => rel(f).includes('/')) && new Set(list.map((f) => rel(f).split('/')[0])).size === 1;
  for (const f of list) {
    const p = rel(f);
    byPath.set(stripFirst ? p.slice(p.indexOf('/') + 1) : p, f);
  }
  return {
    name,
    async listFiles() {
      return [...byPath.keys()];
    },
    async readText(path) {
      const f = byPath.get(joinPath('', path));
      if (!f) throw new Error(`no file ${path}`);
      return stripBom(await f.text());
    },
    async readHead(path, bytes) {
      const f = byPath.get(joinPath('', path));
      if (!f) return null;
      return new Uint8Array(await f.slice(0, bytes).arrayBuffer());
    },
    async readFile(path) {
      const f = byPath.get(joinPath('', path));
      return f ? new Uint8Array(await f.arrayBuffer()) : null;
    },
  };
}

/** A source over files held in memory (a data set the lab makes itself, such as the shapes demo). */
export function bytesSource(name: string, files: ReadonlyMap<string, Uint8Array>): DatasetSource {
  const get = (path: string) => files.get(joinPath('', path)) ?? null;
  return {
    name,
    async listFiles() {
      return [...files.keys()];
    },
    async readText(path) {
      const bytes = get(path);
      if (!bytes) throw new Error(`no file ${path}`);
      return stripBom(new TextDecoder().decode(bytes));
    },
    async readHead(path, bytes) {
      return get(path)?.slice(0, bytes) ?? null;
    },
    async readFile(path) {
      return get(path);
    },
  };
}
