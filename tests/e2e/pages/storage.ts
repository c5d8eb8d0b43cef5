// Functions the storage e2e test calls through page.evaluate: OPFS conformance (on the page and in a
// worker), the OPFS layout behind writeFolder, a crash mid-writeFolder, and writes against a quota.

import { opfsRoot, opfsStorage, requestPersistence, storageEstimate } from '../../../src/app/opfs-storage';
import { readText, StorageFullError, type Storage } from '../../../src/app/storage';
import { runStorageChecks } from '../../helpers/storage-conformance';

async function freshFolder(name: string): Promise<FileSystemDirectoryHandle> {
  const root = await opfsRoot();
  await root.removeEntry(name, { recursive: true }).catch(() => {});
  return root.getDirectoryHandle(name, { create: true });
}

/** The raw names in an OPFS folder (what the storage hides included). */
async function rawNames(dir: FileSystemDirectoryHandle): Promise<string[]> {
  const out: string[] = [];
  for await (const [n] of (dir as unknown as { entries(): AsyncIterable<[string, FileSystemHandle]> }).entries()) out.push(n);
  return out.sort();
}

const enc = (s: string) => new TextEncoder().encode(s);

const api = {
  async conformance(): Promise<string[]> {
    const base = await freshFolder('conformance-page');
    let i = 0;
    return runStorageChecks(async () => opfsStorage(await base.getDirectoryHandle(`check-${i++}`, { create: true }), `OPFS check ${i}`));
  },

  async conformanceInWorker(): Promise<string[]> {
    await freshFolder('conformance-worker');
    const worker = new Worker(new URL('./storage-worker.ts', import.meta.url), { type: 'module' });
    try {
      const result = await new Promise<{ failures: string[] }>((resolve, reject) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => reject(new Error(`worker error: ${e.message}`));
        worker.postMessage({ folder: 'conformance-worker' });
      });
      return result.failures;
    } finally {
      worker.terminate();
    }
  },

  /** writeFolder's versions behind the plain name, and what a crash before the pointer switch leaves. */
  async layoutAndCrash() {
    const dir = await freshFolder('layout');
    const s = opfsStorage(dir, 'OPFS layout');
    await s.write('config.json', '{}');
    await s.writeFolder('checkpoint', { 'state.json': enc('{"step":1}') });
    await s.writeFolder('checkpoint', { 'state.json': enc('{"step":2}') });
    const afterTwo = await rawNames(dir);
    const listed = await s.list();
    // A crash mid-writeFolder: the next version folder is written, the pointer never switched.
    const half = await dir.getDirectoryHandle('checkpoint@3', { create: true });
    const w = await (await half.getFileHandle('state.json', { create: true })).createWritable();
    await w.write('{"step":"half"}');
    await w.close();
    const afterCrash = {
      read: await readText(s, 'checkpoint/state.json'),
      folder: await s.readFolder('checkpoint', ['state.json']).then((f) => f && new TextDecoder().decode(f['state.json'])),
      list: await s.list(),
      inside: await s.list('checkpoint'),
    };
    await s.writeFolder('checkpoint', { 'state.json': enc('{"step":4}') });
    const afterNext = { read: await readText(s, 'checkpoint/state.json'), raw: await rawNames(dir) };
    let reserved = '';
    await s.write('x@current', 'no').catch((e) => (reserved = (e as Error).message));
    return { afterTwo, listed, afterCrash, afterNext, reserved };
  },

  async persistence() {
    return { persisted: await requestPersistence(), estimate: await storageEstimate() };
  },

  /** Files and a checkpoint that the quota test then checks are intact. */
  async quotaSetup() {
    const s = opfsStorage(await freshFolder('quota'), 'OPFS quota');
    await s.write('data/small.txt', 'kept');
    await s.append('metrics.jsonl', '{"step":1}\n');
    await s.writeFolder('checkpoint', { 'state.json': enc('{"step":1}'), 'lora.safetensors': new Uint8Array(1000).fill(7) });
    return storageEstimate();
  },

  /** Tries each kind of write of `bytes` bytes; says what each threw. */
  async quotaWrites(bytes: number) {
    const s: Storage = opfsStorage(await (await opfsRoot()).getDirectoryHandle('quota'), 'OPFS quota');
    const big = new Uint8Array(bytes).fill(1);
    const attempt = async (f: () => Promise<void>) => {
      try {
        await f();
        return { ok: true };
      } catch (e) {
        const err = e as Error;
        return { ok: false, name: err.name, isStorageFull: e instanceof StorageFullError, needed: (e as StorageFullError).needed, message: err.message };
      }
    };
    return {
      estimate: await storageEstimate(),
      write: await attempt(() => s.write('data/small.txt', big)),
      writeNew: await attempt(() => s.write('data/new.bin', big)),
      append: await attempt(() => s.append('metrics.jsonl', 'x'.repeat(bytes))),
      writeFolder: await attempt(() => s.writeFolder('checkpoint', { 'state.json': enc('{"step":2}'), 'lora.safetensors': big })),
    };
  },

  async quotaIntact() {
    const dir = await (await opfsRoot()).getDirectoryHandle('quota');
    const s = opfsStorage(dir, 'OPFS quota');
    const cp = await s.readFolder('checkpoint', ['state.json', 'lora.safetensors']);
    return {
      small: await readText(s, 'data/small.txt'),
      newExists: await s.exists('data/new.bin'),
      metrics: await readText(s, 'metrics.jsonl'),
      state: cp && new TextDecoder().decode(cp['state.json']),
      loraBytes: cp ? cp['lora.safetensors'].length : null,
      list: await s.list(),
      raw: await rawNames(dir),
    };
  },
};

Object.assign(window, { storageTest: api });
export type StorageTestApi = typeof api;
document.title = 'storage e2e ready';
