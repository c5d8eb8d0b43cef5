// Where the lab keeps what it makes (runs, datasets, the feature cache): a folder, seen through one small
// interface, so the orchestration layer runs on the browser's Origin Private File System (opfs-storage.ts),
// on Node's file system (the CLI's folder-storage.ts) and in memory (tests) alike.
//
// Two writes never leave a half-written result behind a crash or a closed tab:
// - `write` replaces one file as a whole (the old contents stay until the new ones are complete);
// - `writeFolder` replaces a folder of files as a whole (a checkpoint): the new files are written beside the
//   old ones, then one switch makes them current, then the old ones are removed.
// `append` is for logs (metrics.jsonl): a crash may cut its last line short, which readers skip.

import { formatBytes } from '../util/format';

/** A folder of files. Paths are POSIX, relative to the folder, without '.' or '..' segments. */
export interface Storage {
  /** For messages: where this is ("OPFS runs/run-3", "/home/me/out"). */
  readonly name: string;
  /** A file's bytes, or null when there is no such file. */
  read(path: string): Promise<Uint8Array | null>;
  /** Replaces (or creates) a file as a whole; parent folders are created. */
  write(path: string, data: Uint8Array | string): Promise<void>;
  /** Appends text to a file (created when missing). */
  append(path: string, text: string): Promise<void>;
  /** Whether a file or folder exists at `path`. */
  exists(path: string): Promise<boolean>;
  /** Names of the entries directly inside folder `path` ('' = this folder), sorted; [] when it is missing. */
  list(path?: string): Promise<string[]>;
  /** Removes a file or a folder with everything in it; nothing happens when it is missing. */
  remove(path: string): Promise<void>;
  /** Replaces folder `path` with exactly `files` (name -> bytes), all or nothing (see the note above). */
  writeFolder(path: string, files: Readonly<Record<string, Uint8Array>>): Promise<void>;
  /** The files `names` of a folder written by writeFolder, or null when the folder or one of them is missing. */
  readFolder(path: string, names: readonly string[]): Promise<Record<string, Uint8Array> | null>;
  /** Bytes of the file at `path`, or of every file below the folder at `path` ('' = this folder); 0 when missing. */
  size(path?: string): Promise<number>;
  /** The folder `path` inside this one, as a Storage of its own (created on first write). */
  folder(path: string): Storage;
  /** Bytes in use and available to this origin or disk, where the platform tells. */
  estimate?(): Promise<{ usage: number; quota: number } | null>;
}

/**
 * The storage is full (a browser's quota, a full disk). Says how much the write needed and how much is left,
 * so the message can say what to delete; whatever was stored before the failed write is still there.
 */
export class StorageFullError extends Error {
  constructor(
    readonly where: string,
    /** Bytes the failed write needed. */
    readonly needed: number,
    /** Bytes used and the quota, when the platform tells. */
    readonly estimate: { usage: number; quota: number } | null,
  ) {
    const free = estimate ? Math.max(0, estimate.quota - estimate.usage) : null;
    super(
      `not enough storage to write ${where}: it needs ${formatBytes(needed)}` +
        (free !== null ? `, ${formatBytes(free)} of ${formatBytes(estimate!.quota)} is free` : '') +
        '. Delete old runs, datasets or the feature cache (or free disk space), then resume: nothing stored before was lost.',
    );
    this.name = 'StorageFullError';
  }
}

/** Splits a storage path into its segments, refusing ones that would leave the folder. */
export function pathParts(path: string): string[] {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  for (const p of parts) if (p === '..' || p.includes('\\')) throw new Error(`storage path ${JSON.stringify(path)} leaves its folder`);
  return parts;
}

export function joinStoragePath(...parts: string[]): string {
  return parts.filter(Boolean).join('/');
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const toBytes = (data: Uint8Array | string): Uint8Array => (typeof data === 'string' ? encoder.encode(data) : data);

/** A file's text, or null when it is missing. */
export async function readText(storage: Storage, path: string): Promise<string | null> {
  const bytes = await storage.read(path);
  return bytes === null ? null : decoder.decode(bytes);
}

/** A Storage in memory: for tests, and for runs the user does not want kept. */
export class MemoryStorage implements Storage {
  /** Full path -> bytes; folders exist through their files. */
  constructor(
    readonly name = 'memory',
    private readonly files = new Map<string, Uint8Array>(),
    private readonly prefix = '',
  ) {}

  private key(path: string): string {
    return [this.prefix, ...pathParts(path)].filter(Boolean).join('/');
  }

  async read(path: string) {
    const v = this.files.get(this.key(path));
    return v ? v.slice() : null;
  }
  async write(path: string, data: Uint8Array | string) {
    this.files.set(this.key(path), toBytes(data).slice());
  }
  async append(path: string, text: string) {
    const k = this.key(path);
    const old = this.files.get(k) ?? new Uint8Array(0);
    const add = encoder.encode(text);
    const next = new Uint8Array(old.length + add.length);
    next.set(old);
    next.set(add, old.length);
    this.files.set(k, next);
  }
  async exists(path: string) {
    const k = this.key(path);
    if (k === this.prefix || this.files.has(k)) return true;
    for (const f of this.files.keys()) if (f.startsWith(`${k}/`)) return true;
    return false;
  }
  async list(path = '') {
    const k = this.key(path);
    const start = k ? `${k}/` : '';
    const names = new Set<string>();
    for (const f of this.files.keys()) if (f.startsWith(start)) names.add(f.slice(start.length).split('/')[0]);
    return [...names].sort();
  }
  async remove(path: string) {
    const k = this.key(path);
    for (const f of [...this.files.keys()]) if (f === k || f.startsWith(`${k}/`)) this.files.delete(f);
  }
  async writeFolder(path: string, files: Readonly<Record<string, Uint8Array>>) {
    await this.remove(path);
    for (const [name, bytes] of Object.entries(files)) await this.write(joinStoragePath(path, name), bytes);
  }
  async readFolder(path: string, names: readonly string[]) {
    const out: Record<string, Uint8Array> = {};
    for (const n of names) {
      const b = await this.read(joinStoragePath(path, n));
      if (!b) return null;
      out[n] = b;
    }
    return out;
  }
  async size(path = '') {
    const k = this.key(path);
    let total = 0;
    for (const [f, bytes] of this.files) if (f === k || k === '' || f.startsWith(`${k}/`)) total += bytes.length;
    return total;
  }
  folder(path: string): Storage {
    return new MemoryStorage(`${this.name}/${path}`, this.files, this.key(path));
  }
}
