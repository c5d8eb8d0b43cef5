// The Storage conformance suite (tests/helpers/storage-conformance.ts) on MemoryStorage and on
// folderStorage over a temporary folder, plus what only the disk implementation has: its crash leftovers
// (a stale `<dir>.new`, an `<dir>.old` from between the two renames), atomic writes leaving no temporary
// files, the plain on-disk layout the CLI relies on, and dirFeatureStore on top of it.

import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStorage, readText, StorageFullError } from '../../src/app/storage';
import { folderStorage } from '../../src/cli/folder-storage';
import { dirFeatureStore } from '../../src/tpo/feature-store-node';
import { storageChecks } from '../helpers/storage-conformance';

let tmp = '';
let n = 0;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'tpo-storage-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});
const freshDir = () => path.join(tmp, `s${n++}`);

const kinds = {
  MemoryStorage: async () => new MemoryStorage(),
  folderStorage: async () => folderStorage(freshDir()),
};

for (const [kind, make] of Object.entries(kinds)) {
  describe(`${kind} conformance`, () => {
    for (const check of storageChecks) it(check.name, async () => check.run(await make()));
  });
}

describe('folderStorage on disk', () => {
  const enc = (s: string) => new TextEncoder().encode(s);

  it('keeps the plain layout: OUT/checkpoint/state.json is a real file, no temporary files remain', async () => {
    const dir = freshDir();
    const s = folderStorage(dir);
    await s.write('config.json', '{}');
    await s.writeFolder('checkpoint', { 'state.json': enc('{"step":1}') });
    await s.writeFolder('checkpoint', { 'state.json': enc('{"step":2}') });
    expect(await readFile(path.join(dir, 'checkpoint', 'state.json'), 'utf8')).toBe('{"step":2}');
    expect((await readdir(dir)).sort()).toEqual(['checkpoint', 'config.json']);
  });

  it('a crash before the switch (a stale checkpoint.new) leaves the old checkpoint current; the next write replaces it', async () => {
    const dir = freshDir();
    const s = folderStorage(dir);
    await s.writeFolder('checkpoint', { 'state.json': enc('old') });
    // What a crash mid-writeFolder leaves: a half-written new version beside the old one.
    await mkdir(path.join(dir, 'checkpoint.new'));
    await writeFile(path.join(dir, 'checkpoint.new', 'state.json'), 'half');
    expect(new TextDecoder().decode((await s.readFolder('checkpoint', ['state.json']))!['state.json'])).toBe('old');
    expect(await readText(s, 'checkpoint/state.json')).toBe('old');
    expect(await s.list()).toEqual(['checkpoint']);
    await s.writeFolder('checkpoint', { 'state.json': enc('new') });
    expect(await readText(s, 'checkpoint/state.json')).toBe('new');
    expect((await readdir(dir)).sort()).toEqual(['checkpoint']);
  });

  it('a crash between the two renames (only checkpoint.old left) is repaired: the old checkpoint is read', async () => {
    const dir = freshDir();
    const s = folderStorage(dir);
    await s.writeFolder('checkpoint', { 'state.json': enc('old') });
    await mkdir(path.join(dir, 'checkpoint.new'));
    await writeFile(path.join(dir, 'checkpoint.new', 'state.json'), 'new');
    await rename(path.join(dir, 'checkpoint'), path.join(dir, 'checkpoint.old'));
    expect(await s.list()).toEqual(['checkpoint']);
    expect(await s.exists('checkpoint')).toBe(true);
    const got = await s.readFolder('checkpoint', ['state.json']);
    expect(new TextDecoder().decode(got!['state.json'])).toBe('old');
    await s.writeFolder('checkpoint', { 'state.json': enc('newer') });
    expect(await readText(s, 'checkpoint/state.json')).toBe('newer');
    expect((await readdir(dir)).sort()).toEqual(['checkpoint']);
  });

  it('estimate() tells the disk usage and size', async () => {
    const e = await folderStorage(freshDir()).estimate!();
    expect(e).not.toBeNull();
    expect(e!.quota).toBeGreaterThan(0);
    expect(e!.usage).toBeGreaterThanOrEqual(0);
    expect(e!.usage).toBeLessThanOrEqual(e!.quota);
  });

  it('StorageFullError says how much was needed and that nothing was lost', () => {
    const e = new StorageFullError('OPFS runs/checkpoint', 3 * 1024 * 1024, { usage: 9 * 1024 * 1024, quota: 10 * 1024 * 1024 });
    expect(e.message).toMatch(/needs 3 MiB, 1 MiB of 10 MiB is free/);
    expect(e.message).toMatch(/nothing stored before was lost/);
  });

  it('dirFeatureStore is the Storage-backed feature store on a folder (same files as before)', async () => {
    const dir = freshDir();
    const store = dirFeatureStore(dir);
    await store.put('latent-0a1b', new Float32Array([1, 2, 3]));
    expect([...(await store.get('latent-0a1b'))!]).toEqual([1, 2, 3]);
    expect((await readFile(path.join(dir, 'latent-0a1b.f32'))).length).toBe(12);
    await writeFile(path.join(dir, 'text-ff.f32'), Buffer.from([1, 2, 3]));
    expect(await store.get('text-ff')).toBeNull();
    expect(await store.get('text-00')).toBeNull();
    expect(await readdir(dir)).toEqual(['latent-0a1b.f32', 'text-ff.f32']);
  });
});
