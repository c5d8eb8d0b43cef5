// A project as one file (src/app/project.ts through the Lab): a dataset and its runs exported to a zip and
// imported into another lab's storage under new ids, byte for byte; damaged or foreign files refused with
// what is wrong, and nothing left behind.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { strToU8, unzipSync, zipSync } from 'fflate';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError } from '../../src/app/errors';
import { Lab } from '../../src/app/lab';
import { MemoryStorage, readText } from '../../src/app/storage';
import { decodeImageNode } from '../../src/data/decode-node';
import { nodeSource } from '../../src/data/node-fs';
import { discPng } from '../helpers/train-data';

const tmp = mkdtempSync(path.join(tmpdir(), 'tpo-project-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A lab over memory storage; these tests never touch the GPU. */
function newLab(root = new MemoryStorage('lab')) {
  const lab = new Lab({
    root,
    gpu: () => Promise.reject(new Error('no GPU in this test')),
    decode: decodeImageNode,
    encodePng: () => new Uint8Array(),
  });
  return { lab, root };
}

async function tree(storage: MemoryStorage, dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (rel: string) => {
    for (const name of await storage.list(rel ? `${dir}/${rel}` : dir)) {
      const child = rel ? `${rel}/${name}` : name;
      const bytes = await storage.read(`${dir}/${child}`);
      if (bytes) out[child] = Buffer.from(bytes).toString('base64');
      else await walk(child);
    }
  };
  await walk('');
  return out;
}

describe('projects', () => {
  it('exports a dataset with its runs and imports them elsewhere under new ids, byte for byte', async () => {
    const dir = path.join(tmp, 'discs');
    (await import('node:fs')).mkdirSync(dir);
    for (const [i, name] of ['red', 'blue'].entries()) {
      writeFileSync(path.join(dir, `disc${i}.png`), discPng(32, [200, 30 * i, 40], [240, 240, 240], i + 1));
      writeFileSync(path.join(dir, `disc${i}.txt`), `a ${name} circle`);
    }
    const a = newLab();
    const { dataset } = await a.lab.importDataset(nodeSource(dir), 'my discs');
    const items = await a.lab.datasetItems(dataset.id);
    await a.lab.saveItems(dataset.id, items.map((it) => ({ ...it, negatives: [{ caption: `${it.caption} at night`, principle: 'context', source: 'manual', status: 'accepted', history: [], extra: {} }] })));
    // A run of this dataset (as training leaves it) and one of another dataset, which stays out.
    await a.root.write('runs/20260101-000000-aaaa/run.json', JSON.stringify({ model: 'tiny', data: dataset.id }));
    await a.root.write('runs/20260101-000000-aaaa/metrics.jsonl', '{"step":1}\n{"step":2}\n');
    await a.root.writeFolder('runs/20260101-000000-aaaa/checkpoint', { 'state.json': strToU8('{"step":2}'), 'lora.safetensors': new Uint8Array([1, 2, 3]) });
    await a.root.write('runs/20260101-000000-aaaa/samples/base/000-1.png', new Uint8Array([9, 9]));
    await a.root.write('runs/20260101-000000-bbbb/run.json', JSON.stringify({ model: 'tiny', data: 'another' }));

    const exported = await a.lab.exportProject(dataset.id);
    expect(exported.name).toBe('my-discs.tpo-lab.zip');
    const names = Object.keys(unzipSync(exported.bytes)).sort();
    expect(names).toContain('tpo-lab-project.json');
    expect(names).toContain('runs/20260101-000000-aaaa/checkpoint/state.json');
    expect(names.some((n) => n.includes('bbbb'))).toBe(false);

    const b = newLab();
    const imported = await b.lab.importProject(exported.bytes, exported.name);
    expect(imported.dataset).toMatchObject({ name: 'my discs', items: 2 });
    expect(imported.dataset.stats.byStatus.accepted).toBe(2);
    expect(imported.runs).toHaveLength(1);
    expect(await b.lab.datasetItems(imported.dataset.id)).toEqual(await a.lab.datasetItems(dataset.id));
    const before = await tree(a.root, `datasets/${dataset.id}`);
    const after = await tree(b.root, `datasets/${imported.dataset.id}`);
    const { 'dataset.json': _a, ...restBefore } = before;
    const { 'dataset.json': _b, ...restAfter } = after;
    expect(restAfter).toEqual(restBefore);
    const run = `runs/${imported.runs[0]}`;
    expect(JSON.parse((await readText(b.root, `${run}/run.json`))!)).toEqual({ model: 'tiny', data: imported.dataset.id });
    expect(await readText(b.root, `${run}/metrics.jsonl`)).toBe('{"step":1}\n{"step":2}\n');
    expect(await b.root.readFolder(`${run}/checkpoint`, ['state.json', 'lora.safetensors'])).toEqual({ 'state.json': strToU8('{"step":2}'), 'lora.safetensors': new Uint8Array([1, 2, 3]) });
    expect(await b.root.read(`${run}/samples/base/000-1.png`)).toEqual(new Uint8Array([9, 9]));
    expect((await b.lab.listDatasets()).map((d) => d.name)).toEqual(['my discs']);

    // Imported again beside itself: another dataset and run, nothing overwritten.
    const again = await b.lab.importProject(exported.bytes);
    expect(again.dataset.id).not.toBe(imported.dataset.id);
    expect((await b.lab.listDatasets()).length).toBe(2);
  });

  it('refuses what is not a project, saying why, and leaves nothing behind', async () => {
    const { lab, root } = newLab();
    const manifest = (extra: object = {}) => strToU8(JSON.stringify({ format: 'tpo-lab-project', version: 1, dataset: { name: 'x', createdAt: '' }, runs: [], ...extra }));
    const cases: [string, Uint8Array, RegExp][] = [
      ['not a zip', strToU8('hello'), /not a readable zip/],
      ['no manifest', zipSync({ 'a.txt': strToU8('a') }), /has no tpo-lab-project.json/],
      ['damaged manifest', zipSync({ 'tpo-lab-project.json': strToU8('{') }), /damaged/],
      ['newer version', zipSync({ 'tpo-lab-project.json': manifest({ version: 99 }) }), /newer TPO Lab/],
      ['escaping path', zipSync({ 'tpo-lab-project.json': manifest(), 'dataset/../../x': strToU8('x') }), /not a plain relative path|belongs to no part/],
      ['no items', zipSync({ 'tpo-lab-project.json': manifest() }), /no items.jsonl/],
      ['missing image', zipSync({ 'tpo-lab-project.json': manifest(), 'dataset/items.jsonl': strToU8('{"image":"a.png","caption":"a cat"}\n') }), /image a.png of the dataset is missing/],
      ['run without settings', zipSync({ 'tpo-lab-project.json': manifest({ runs: ['r1'] }), 'dataset/items.jsonl': strToU8(''), 'runs/r1/metrics.jsonl': strToU8('') }), /run r1 has no run.json/],
    ];
    for (const [what, bytes, message] of cases) {
      const attempt = lab.importProject(bytes, 'p.zip');
      await expect(attempt, what).rejects.toThrow(InputError);
      await expect(lab.importProject(bytes, 'p.zip'), what).rejects.toThrow(message);
    }
    expect(await root.list('datasets')).toEqual([]);
    expect(await root.list('runs')).toEqual([]);
  });
});
