// A Storage on the browser's Origin Private File System (OPFS), usable on the page and in a dedicated
// worker. What makes it safe against a closed tab or a crash:
// - `write` goes through createWritable(), which writes to a swap file and only replaces the file when the
//   writable is closed; on any failure the writable is aborted, so the old file stays as it was.
// - `writeFolder(path)` writes the new files into a fresh sibling folder `<name>@<n>`, then replaces the
//   small pointer file `<name>@current` (one atomic write, holding the version folder's name), then
//   deletes the older versions. A crash before the pointer switch leaves the old version current (the
//   half-written folder is removed by the next writeFolder); after it, the new one.
// Readers never see the machinery: `checkpoint/state.json` is read through the pointer, and `list` shows
// `checkpoint`, not `checkpoint@3` or `checkpoint@current`. Names ending in `@<digits>` or `@current`
// are therefore reserved.
// A write refused by the origin's quota becomes a StorageFullError (after its partial output is removed).

import { joinStoragePath, pathParts, type Storage, StorageFullError, toBytes } from './storage';

const POINTER = '@current';
const VERSION = /^(.*)@(\d+)$/;
/** Chromium's createWritable swap files, should one ever show up in a listing. */
const SWAP = /\.crswap$/;

const encoder = new TextEncoder();

/** The OPFS root of this origin (on the page or in a worker). */
export async function opfsRoot(): Promise<FileSystemDirectoryHandle> {
  if (!globalThis.navigator?.storage?.getDirectory) {
    throw new Error('this browser has no Origin Private File System (navigator.storage.getDirectory); use a recent Chrome, Edge, Firefox or Safari');
  }
  return navigator.storage.getDirectory();
}

/**
 * Asks the browser not to evict this origin's storage under pressure. Chromium grants it silently to sites
 * the user engages with (or installed ones); false when refused or unsupported, which only means the browser
 * may clear the data when the disk runs low.
 */
export async function requestPersistence(): Promise<boolean> {
  try {
    if (!globalThis.navigator?.storage?.persist) return false;
    if (await navigator.storage.persisted?.()) return true;
    return await navigator.storage.persist();
  } catch {
    return false;
  }
}

/** Bytes used and the quota of this origin, or null where the browser does not tell. */
export async function storageEstimate(): Promise<{ usage: number; quota: number } | null> {
  try {
    const e = await globalThis.navigator?.storage?.estimate?.();
    if (!e || typeof e.usage !== 'number' || typeof e.quota !== 'number') return null;
    return { usage: e.usage, quota: e.quota };
  } catch {
    return null;
  }
}

const isQuotaError = (e: unknown) => (e as { name?: unknown } | null)?.name === 'QuotaExceededError';
const isMissing = (e: unknown) => {
  const name = (e as { name?: unknown } | null)?.name;
  // NotFoundError: no such entry; TypeMismatchError: a file where a folder was expected or the reverse.
  return name === 'NotFoundError' || name === 'TypeMismatchError';
};

function checkNotReserved(parts: string[], path: string): void {
  for (const p of parts) {
    if (VERSION.test(p) || p.endsWith(POINTER) || SWAP.test(p)) {
      throw new Error(`storage path ${JSON.stringify(path)}: names ending in @<number>, @current or .crswap are reserved for the OPFS storage's own bookkeeping`);
    }
  }
}

/** The entries of a folder (the async iterator is not in every TypeScript DOM lib, hence the cast). */
async function entriesOf(dir: FileSystemDirectoryHandle): Promise<[string, FileSystemHandle][]> {
  const out: [string, FileSystemHandle][] = [];
  for await (const entry of (dir as unknown as { entries(): AsyncIterable<[string, FileSystemHandle]> }).entries()) out.push(entry);
  return out;
}

async function removeEntry(dir: FileSystemDirectoryHandle, name: string): Promise<void> {
  try {
    await dir.removeEntry(name, { recursive: true });
  } catch (e) {
    if (!isMissing(e)) throw e;
  }
}

/** Reads a small text file, or null when it is missing. */
async function readSmallText(dir: FileSystemDirectoryHandle, name: string): Promise<string | null> {
  try {
    const h = await dir.getFileHandle(name);
    return (await h.getFile()).text();
  } catch (e) {
    if (isMissing(e)) return null;
    throw e;
  }
}

/** The folder an entry `name` of `dir` stands for: the current version of a writeFolder folder, or the plain one. */
async function childFolder(dir: FileSystemDirectoryHandle, name: string, create: boolean): Promise<FileSystemDirectoryHandle | null> {
  const current = await readSmallText(dir, name + POINTER);
  if (current !== null) {
    try {
      return await dir.getDirectoryHandle(current.trim());
    } catch (e) {
      if (!isMissing(e)) throw e;
      // A pointer to a missing version cannot come from writeFolder (it removes old versions only after the
      // switch); fall through to the plain folder rather than fail every read.
    }
  }
  try {
    return await dir.getDirectoryHandle(name, { create });
  } catch (e) {
    if (isMissing(e)) return null;
    throw e;
  }
}

/**
 * The Storage rooted at OPFS folder `root` (for example `await opfsRoot()`, or a folder inside it); `name`
 * says where it is in messages ("OPFS runs").
 */
export function opfsStorage(root: FileSystemDirectoryHandle, name: string): Storage {
  return new OpfsStorage(root, [], name);
}

class OpfsStorage implements Storage {
  constructor(
    private readonly root: FileSystemDirectoryHandle,
    /** Where this storage sits below `root` (folder() storages share the root and resolve lazily). */
    private readonly prefix: string[],
    readonly name: string,
  ) {}

  private parts(path: string): string[] {
    const parts = pathParts(path);
    checkNotReserved(parts, path);
    return [...this.prefix, ...parts];
  }

  private where(path: string): string {
    return joinStoragePath(this.name, path);
  }

  /** The folder at `parts` below the root, through writeFolder pointers; null when missing (and not created). */
  private async dir(parts: string[], create: boolean): Promise<FileSystemDirectoryHandle | null> {
    let dir = this.root;
    for (const p of parts) {
      const next = await childFolder(dir, p, create);
      if (!next) return null;
      dir = next;
    }
    return dir;
  }

  private async fileHandle(path: string): Promise<FileSystemFileHandle | null> {
    const parts = this.parts(path);
    if (parts.length === 0) return null;
    const dir = await this.dir(parts.slice(0, -1), false);
    if (!dir) return null;
    try {
      return await dir.getFileHandle(parts[parts.length - 1]);
    } catch (e) {
      if (isMissing(e)) return null;
      throw e;
    }
  }

  private async full(path: string, needed: number): Promise<StorageFullError> {
    return new StorageFullError(this.where(path), needed, await storageEstimate());
  }

  async read(path: string): Promise<Uint8Array | null> {
    const h = await this.fileHandle(path);
    if (!h) return null;
    return new Uint8Array(await (await h.getFile()).arrayBuffer());
  }

  async write(path: string, data: Uint8Array | string): Promise<void> {
    const bytes = toBytes(data);
    const parts = this.parts(path);
    if (parts.length === 0) throw new Error(`${this.name}: cannot write a file at the folder itself`);
    const dir = (await this.dir(parts.slice(0, -1), true))!;
    try {
      await writeFileAtomic(dir, parts[parts.length - 1], bytes);
    } catch (e) {
      if (isQuotaError(e)) throw await this.full(path, bytes.length);
      throw e;
    }
  }

  async append(path: string, text: string): Promise<void> {
    const bytes = encoder.encode(text);
    const parts = this.parts(path);
    const dir = (await this.dir(parts.slice(0, -1), true))!;
    const leaf = parts[parts.length - 1];
    const created = !(await hasFile(dir, leaf));
    const h = await dir.getFileHandle(leaf, { create: true });
    // keepExistingData copies the file into the swap file first: appends cost the file's size, which is fine
    // for logs of a few MiB, and a crash leaves the old log whole instead of a torn one.
    let w: FileSystemWritableFileStream | null = null;
    try {
      const size = (await h.getFile()).size;
      w = await h.createWritable({ keepExistingData: true });
      await w.seek(size);
      await w.write(bytes as Uint8Array<ArrayBuffer>);
      await w.close();
    } catch (e) {
      await w?.abort().catch(() => {});
      if (created) await removeEntry(dir, leaf);
      if (isQuotaError(e)) throw await this.full(path, bytes.length);
      throw e;
    }
  }

  async exists(path: string): Promise<boolean> {
    const parts = this.parts(path);
    if (parts.length === 0) return (await this.dir(parts, false)) !== null;
    const dir = await this.dir(parts.slice(0, -1), false);
    if (!dir) return false;
    const leaf = parts[parts.length - 1];
    return (await hasFile(dir, leaf)) || (await childFolder(dir, leaf, false)) !== null;
  }

  async list(path = ''): Promise<string[]> {
    const dir = await this.dir(this.parts(path), false);
    if (!dir) return [];
    const names = new Set<string>();
    for (const [n, h] of await entriesOf(dir)) {
      if (SWAP.test(n)) continue;
      if (h.kind === 'file' && n.endsWith(POINTER)) names.add(n.slice(0, -POINTER.length));
      else if (!(h.kind === 'directory' && VERSION.test(n))) names.add(n);
    }
    return [...names].sort();
  }

  async remove(path: string): Promise<void> {
    const parts = this.parts(path);
    if (parts.length === 0) {
      // The folder itself: empty it (the root handle cannot remove itself).
      const dir = await this.dir(parts, false);
      if (dir) for (const [n] of await entriesOf(dir)) await removeEntry(dir, n);
      return;
    }
    const dir = await this.dir(parts.slice(0, -1), false);
    if (!dir) return;
    const leaf = parts[parts.length - 1];
    // The pointer goes first: from then on the folder is gone as a whole, whatever happens to the rest.
    await removeEntry(dir, leaf + POINTER);
    for (const v of await versionsOf(dir, leaf)) await removeEntry(dir, v.name);
    await removeEntry(dir, leaf);
  }

  async writeFolder(path: string, files: Readonly<Record<string, Uint8Array>>): Promise<void> {
    const parts = this.parts(path);
    if (parts.length === 0) throw new Error(`${this.name}: writeFolder needs a folder path inside the storage`);
    for (const n of Object.keys(files)) checkNotReserved(pathParts(n), n);
    const parent = (await this.dir(parts.slice(0, -1), true))!;
    const leaf = parts[parts.length - 1];
    const current = (await readSmallText(parent, leaf + POINTER))?.trim() ?? null;
    // Versions other than the current one are leftovers of a crashed writeFolder: remove them first (they
    // hold space the new version may need), and number the new one past every version seen.
    const versions = await versionsOf(parent, leaf);
    for (const v of versions) if (v.name !== current) await removeEntry(parent, v.name);
    const next = `${leaf}@${versions.reduce((m, v) => Math.max(m, v.n), 0) + 1}`;
    const needed = Object.values(files).reduce((n, b) => n + b.length, 0);
    try {
      const target = await parent.getDirectoryHandle(next, { create: true });
      for (const [name, bytes] of Object.entries(files)) {
        const fileParts = pathParts(name);
        let dir = target;
        for (const p of fileParts.slice(0, -1)) dir = await dir.getDirectoryHandle(p, { create: true });
        await writeFileAtomic(dir, fileParts[fileParts.length - 1], bytes);
      }
      // The switch: until this write completes, the old version is the folder.
      await writeFileAtomic(parent, leaf + POINTER, encoder.encode(next));
    } catch (e) {
      await removeEntry(parent, next).catch(() => {});
      if (isQuotaError(e)) throw await this.full(path, needed);
      throw e;
    }
    // The old version (and a plain folder of that name written file by file before) are no longer current.
    if (current && current !== next) await removeEntry(parent, current);
    await removeEntry(parent, leaf);
  }

  async readFolder(path: string, names: readonly string[]): Promise<Record<string, Uint8Array> | null> {
    const out: Record<string, Uint8Array> = {};
    for (const n of names) {
      const b = await this.read(joinStoragePath(path, n));
      if (!b) return null;
      out[n] = b;
    }
    return out;
  }

  async size(path = ''): Promise<number> {
    if (pathParts(path).length > 0) {
      const h = await this.fileHandle(path);
      if (h) return (await h.getFile()).size;
    }
    // A folder: walk what list() shows, so a writeFolder's current version counts and its leftovers do not.
    let total = 0;
    for (const name of await this.list(path)) total += await this.size(joinStoragePath(path, name));
    return total;
  }

  folder(path: string): Storage {
    return new OpfsStorage(this.root, this.parts(path), this.where(path));
  }

  estimate(): Promise<{ usage: number; quota: number } | null> {
    return storageEstimate();
  }
}

async function hasFile(dir: FileSystemDirectoryHandle, name: string): Promise<boolean> {
  try {
    await dir.getFileHandle(name);
    return true;
  } catch (e) {
    if (isMissing(e)) return false;
    throw e;
  }
}

async function versionsOf(dir: FileSystemDirectoryHandle, leaf: string): Promise<{ name: string; n: number }[]> {
  const out: { name: string; n: number }[] = [];
  for (const [n, h] of await entriesOf(dir)) {
    const m = VERSION.exec(n);
    if (h.kind === 'directory' && m && m[1] === leaf) out.push({ name: n, n: Number(m[2]) });
  }
  return out;
}

/**
 * Replaces file `name` of `dir` with `bytes`: createWritable() writes a swap file that replaces the file
 * only on close(), so a failure (quota, a closed tab) leaves the old file; a file this call created is
 * removed again on failure, so nothing half-made is left behind.
 */
async function writeFileAtomic(dir: FileSystemDirectoryHandle, name: string, bytes: Uint8Array): Promise<void> {
  const created = !(await hasFile(dir, name));
  let w: FileSystemWritableFileStream | null = null;
  try {
    const h = await dir.getFileHandle(name, { create: true });
    w = await h.createWritable({ keepExistingData: false });
    await w.write(bytes as Uint8Array<ArrayBuffer>);
    await w.close();
  } catch (e) {
    await w?.abort().catch(() => {});
    if (created) await removeEntry(dir, name).catch(() => {});
    throw e;
  }
}

