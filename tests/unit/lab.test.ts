// The lab (src/app/lab.ts), the layer the engine worker stands on, driven in Node over a Storage in memory
// and the tiny SD1.5-layout model: import a captioned folder (images copied in), rule-editor negatives,
// feature preparation, TDPO runs with events, a run cancelled and resumed which then loses its GPU device
// as it resumes (the lab opens a new device and resumes from the checkpoint), ending in the same LoRA weights as an
// uninterrupted run; scores, export in both formats, deleting.

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
import type { Gpu } from '../../src/gpu/gpu';
import { openNodeGpu } from '../../src/gpu/node';
import { decodeLora } from '../../src/models/lora-io';
import { dirModelFiles } from '../../src/models/model-files-node';
import { memorySource, SafetensorsFile } from '../../src/models/safetensors';
import { unetParams, type UNetConfig } from '../../src/models/unet';
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
  const params = unetParams(await readConfig<UNetConfig>(files, 'unet'));
  const decoded = await decodeLora(await SafetensorsFile.open(memorySource(bytes)), params);
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
});
