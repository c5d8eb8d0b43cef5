// The lab (src/app/lab.ts), the layer the engine worker stands on, driven in Node over a Storage in memory
// and the tiny SD1.5-layout model: import a captioned folder (images copied in), rule-editor negatives,
// feature preparation, TDPO runs with events, a run cancelled and resumed which then loses its GPU device
// as it resumes (the lab opens a new device and resumes from the checkpoint), ending in the same LoRA weights as an
// uninterrupted run; scores, export in both formats, deleting; Diffusion-DPO and Diffusion-KTO datasets
// imported with their images and trained with their own methods.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Lab, type LabRunEvent } from '../../src/app/lab';
import { folderModel } from '../../src/app/model';
import { MemoryStorage } from '../../src/app/storage';
import { encodePng } from '../../src/cli/sample';
import { decodeImageNode } from '../../src/data/decode-node';
import { nodeSource } from '../../src/data/node-fs';
import { parseShapesPrompt, shapesDataset } from '../../src/demo/shapes';
import type { Gpu } from '../../src/gpu/gpu';
import { openNodeGpu } from '../../src/gpu/node';
import { decodeLora } from '../../src/models/lora-io';
import { dirModelFiles } from '../../src/models/model-files-node';
import { memorySource, SafetensorsFile } from '../../src/models/safetensors';
import { type UNetConfig } from '../../src/models/unet';
import { readConfig } from '../../src/models/weights';
import { GOLDENS } from '../helpers/goldens';
import { discPng } from '../helpers/train-data';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const tmp = mkdtempSync(path.join(tmpdir(), 'tpo-lab-'));
let current: Gpu | null = null;
let opened = 0;

/** The platform's GPU: one device, replaced by a new one when it is lost (as the worker does). */
async function gpu(): Promise<Gpu> {
  if (!current || current.isLost) {
    current = await openNodeGpu();
    opened++;
  }
  return current;
}

afterAll(async () => {
  current?.destroy();
  rmSync(tmp, { recursive: true, force: true });
});

function writeFolder(dir: string): void {
  const colours: [string, [number, number, number]][] = [['red', [220, 30, 30]], ['blue', [30, 40, 220]], ['green', [30, 200, 60]], ['yellow', [230, 220, 40]]];
  for (const [i, [name, rgb]] of colours.entries()) {
    writeFileSync(path.join(dir, `disc${i}.png`), discPng(64, rgb, [240, 240, 240], i + 1));
    writeFileSync(path.join(dir, `disc${i}.txt`), `a ${name} circle on the left of a white background`);
  }
}

async function loraTensors(bytes: Uint8Array): Promise<Map<string, number[]>> {
  const files = dirModelFiles(TINY);
  const decoded = await decodeLora(await SafetensorsFile.open(memorySource(bytes)), await readConfig<UNetConfig>(files, 'unet'));
  const out = new Map<string, number[]>();
  for (const [name, m] of decoded.lora) {
    out.set(`${name}.down`, [...m.down]);
    out.set(`${name}.up`, [...m.up]);
  }
  return out;
}

/** Runs until the lab reports a final status; returns the events. */
function collector() {
  const events: LabRunEvent[] = [];
  let resolveEnd: (s: string) => void = () => {};
  const ended = new Promise<string>((r) => (resolveEnd = r));
  return {
    events,
    ended,
    onEvent: (e: LabRunEvent) => {
      events.push(e);
      if (e.type === 'status' && e.status !== 'running') resolveEnd(e.status);
    },
  };
}

describe('lab', () => {
  const root = new MemoryStorage('lab');
  const lab = new Lab({ root, gpu, decode: decodeImageNode, encodePng });
  let dataset = '';
  const request = () => ({
    dataset,
    config: { method: 'tdpo' as const, steps: 2, resolution: 64, rank: 2, lr: 1e-3, batchSize: 2, seed: 7 },
    settings: { holdout: 0.25, checkpointEvery: 1, scoreDraws: 1, dtype: 'fp32' as const },
  });

  it('opens a model, imports a folder with its images, writes rule negatives, prepares features', async () => {
    const info = await lab.openModel(folderModel(dirModelFiles(TINY)));
    expect(info.kind).toBe('folder');
    expect(info.vae.downsample).toBe(8);
    const dir = path.join(tmp, 'discs');
    rmSync(dir, { recursive: true, force: true });
    (await import('node:fs')).mkdirSync(dir);
    writeFolder(dir);
    const imported = await lab.importDataset(nodeSource(dir), 'discs');
    dataset = imported.dataset.id;
    expect(imported.dataset.items).toBe(4);
    rmSync(dir, { recursive: true, force: true }); // the lab keeps its own copies
    expect(await root.list(`datasets/${dataset}/images`)).toEqual(['disc0.png', 'disc1.png', 'disc2.png', 'disc3.png']);
    const progress: number[] = [];
    const made = await lab.makeNegatives(dataset, { principles: ['attribute'], perCaption: 1, seed: 3 }, (e) => e.type === 'progress' && progress.push(e.done));
    expect(made.made).toBe(4);
    expect(progress.at(-1)).toBe(4);
    const items = await lab.datasetItems(dataset);
    expect(items.every((i) => i.negatives.length === 1 && i.negatives[0].status === 'pending')).toBe(true);
    const again = await lab.makeNegatives(dataset, { principles: ['attribute'], perCaption: 1, seed: 3 });
    expect(again.made).toBe(0); // resumed: nothing left to do
    const prepared = await lab.prepareFeatures(dataset, { method: 'tdpo', resolution: 64 });
    expect(prepared.features).toBe(12); // 4 images, 4 captions, 4 negatives
    expect((await root.list('features')).length).toBeGreaterThan(0);
  }, 300_000);

  it('makes the shapes demo dataset: captioned 64 px images of the demo model\'s world, ready for negatives', async () => {
    const imported = await lab.importDemoDataset(6);
    expect(imported.dataset.name).toBe('Shapes (demo)');
    expect(imported.dataset.items).toBe(6);
    const id = imported.dataset.id;
    const items = await lab.datasetItems(id);
    expect(items.map((i) => i.caption)).toEqual(shapesDataset({ seed: 0, count: 6 }).map((it) => it.caption));
    expect(items.map((i) => i.image)).toEqual(['shape-00000.png', 'shape-00001.png', 'shape-00002.png', 'shape-00003.png', 'shape-00004.png', 'shape-00005.png']);
    const image = await decodeImageNode(await lab.datasetImage(id, items[0].image), items[0].image);
    expect([image.width, image.height]).toEqual([64, 64]);
    const made = await lab.makeNegatives(id, { principles: ['content', 'attribute', 'spatial', 'context'], perCaption: 4, seed: 1 });
    expect(made.made).toBeGreaterThan(20); // a centred shape has no spatial edit
    // The rule editor keeps to the world's words: each negative is a caption the demo model and the judge read.
    for (const n of (await lab.datasetItems(id)).flatMap((i) => i.negatives)) expect(parseShapesPrompt(n.caption), n.caption).not.toBeNull();
    await lab.deleteDataset(id);
  });

  it('a run cancelled, resumed, and then losing its device ends where an uninterrupted run ends', async () => {
    const whole = collector();
    const a = await lab.startRun(request(), whole.onEvent);
    expect(await whole.ended).toBe('done');
    expect(whole.events.filter((e) => e.type === 'step').length).toBe(2);
    expect(whole.events.some((e) => e.type === 'scores')).toBe(true);
    const reference = await loraTensors((await lab.exportLora(a, { dtype: 'fp32' })).bytes);

    // Cancelled after its first step: stopped with a checkpoint, then resumed from it.
    const first = collector();
    const b = await lab.startRun(request(), (e) => {
      first.onEvent(e);
      if (e.type === 'step' && e.report.step === 1) void lab.cancelRun(b);
    });
    expect(await first.ended).toBe('stopped');
    const stopped = await lab.runInfo(b);
    expect(stopped).toMatchObject({ status: 'stopped', step: 1, config: { batchSize: 2, rank: 2, resolution: 64 } });
    expect(stopped.bytes).toBeGreaterThan(1000); // its checkpoint at least
    // Resumed; its device is lost as it starts again: reported, a new device opened, resumed from step 1.
    const second = collector();
    const devicesBefore = opened;
    let lose = true;
    await lab.resumeRun(b, (e) => {
      second.onEvent(e);
      if (e.type === 'start' && lose) {
        lose = false;
        current!.device.destroy();
      }
    });
    expect(await second.ended).toBe('done');
    const report = second.events.find((e) => e.type === 'device-lost');
    expect(report && report.type === 'device-lost' && report.resumeFrom).toBe(1);
    expect(opened).toBe(devicesBefore + 1);
    expect(await loraTensors((await lab.exportLora(b, { dtype: 'fp32' })).bytes)).toEqual(reference);
    expect((await lab.metrics(b)).map((m) => m.step)).toEqual([1, 2]); // no step twice

    const scores = await lab.scores(a);
    expect(scores.filter((s) => s.summary).map((s) => s.split)).toEqual(['train', 'held-out']);
    const diffusers = await lab.exportLora(a, { format: 'diffusers', dtype: 'fp16' });
    expect(await loraTensors(diffusers.bytes)).toHaveProperty('size', reference.size);
    expect((await lab.listRuns()).map((r) => r.status).sort()).toEqual(['done', 'done']);
    await lab.deleteRun(b);
    expect((await lab.listRuns()).length).toBe(1);
  }, 900_000); // two short runs: minutes on a loaded 2-core machine

  it('imports Diffusion-DPO pairs and Diffusion-KTO labels with their images and trains each with its own method only', async () => {
    const dir = path.join(tmp, 'preference');
    rmSync(dir, { recursive: true, force: true });
    (await import('node:fs')).mkdirSync(path.join(dir, 'img'), { recursive: true });
    writeFolder(path.join(dir, 'img'));
    const prompt = (i: number) => `a circle on the left, number ${i}`;
    writeFileSync(path.join(dir, 'pairs.jsonl'), [0, 2].map((i) => JSON.stringify({ prompt: prompt(i), image_w: `img/disc${i}.png`, image_l: `img/disc${i + 1}.png`, source: 'test' })).join('\n'));
    const dpo = await lab.importDataset(nodeSource(dir), 'pairs');
    expect(dpo.dataset).toMatchObject({ kind: 'dpo', items: 2, images: 4 });
    expect(await root.list(`datasets/${dpo.dataset.id}/images/img`)).toEqual(['disc0.png', 'disc1.png', 'disc2.png', 'disc3.png']);
    const records = await lab.datasetRecords(dpo.dataset.id);
    expect(records.kind === 'dpo' && records.records.map((r) => [r.imageW, r.imageL, r.extra.source])).toEqual([['img/disc0.png', 'img/disc1.png', 'test'], ['img/disc2.png', 'img/disc3.png', 'test']]);
    // No captions to write negatives for, and no TPO method trains on it.
    await expect(lab.datasetItems(dpo.dataset.id)).rejects.toThrow(/Diffusion-DPO pairs.*not captioned images/);
    await expect(lab.saveItems(dpo.dataset.id, [])).rejects.toThrow(/not captioned images/);
    await expect(lab.startRun({ ...request(), dataset: dpo.dataset.id }, () => {})).rejects.toThrow(/tdpo does not train on.*choose dpo/);

    const config = { steps: 1, resolution: 64, rank: 2, lr: 1e-3, batchSize: 1, seed: 7 };
    const settings = { holdout: 0, checkpointEvery: 1, scoreDraws: 1, dtype: 'fp32' as const };
    const dpoRun = collector();
    const run = await lab.startRun({ dataset: dpo.dataset.id, config: { method: 'dpo', ...config }, settings }, dpoRun.onEvent);
    expect(await dpoRun.ended).toBe('done');
    expect((await lab.runInfo(run)).method).toBe('dpo');

    // KTO: one image of each label is the least it trains on; removing a record and saving keeps the rest.
    rmSync(path.join(dir, 'pairs.jsonl'));
    writeFileSync(path.join(dir, 'labels.jsonl'), [0, 1, 2].map((i) => JSON.stringify({ image: `img/disc${i}.png`, caption: prompt(i), label: i === 0 ? 'desirable' : false })).join('\n'));
    const kto = await lab.importDataset(nodeSource(dir), 'labels');
    expect(kto.dataset).toMatchObject({ kind: 'kto', items: 3, images: 3 });
    const labelled = await lab.datasetRecords(kto.dataset.id);
    if (labelled.kind !== 'kto') throw new Error('expected KTO records');
    expect(labelled.records.map((r) => r.label)).toEqual([true, false, false]);
    await lab.saveRecords(kto.dataset.id, { kind: 'kto', records: labelled.records.slice(0, 2) });
    await expect(lab.saveRecords(kto.dataset.id, records)).rejects.toThrow(/holds kto records, not dpo/);
    expect((await lab.listDatasets()).find((d) => d.id === kto.dataset.id)).toMatchObject({ kind: 'kto', items: 2, images: 2 });
    const ktoRun = collector();
    await lab.startRun({ dataset: kto.dataset.id, config: { method: 'kto', ...config }, settings }, ktoRun.onEvent);
    expect(await ktoRun.ended).toBe('done');

    // A project of preference data moves as one file and comes back as the same kind.
    const project = await lab.exportProject(dpo.dataset.id);
    const back = await lab.importProject(project.bytes, project.name);
    expect(back.dataset).toMatchObject({ kind: 'dpo', items: 2, images: 4 });
    expect(back.runs.length).toBe(1);
    rmSync(dir, { recursive: true, force: true });
  }, 600_000);
});
