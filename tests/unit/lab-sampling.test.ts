// The lab's sampling and LoRA inspection (src/app/lab.ts, src/app/sampling.ts) in Node over a Storage in
// memory and the tiny SD1.5-layout model: a short TDPO run, then base and LoRA samples of the same prompt and
// seed (equal to the byte at LoRA scale 0, different at 1, the prompt in the PNG's text), the networks kept
// between calls, and loraInfo saying what exportLora writes.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Lab, type LabRunEvent } from '../../src/app/lab';
import { folderModel } from '../../src/app/model';
import { MemoryStorage } from '../../src/app/storage';
import { encodePng } from '../../src/cli/sample';
import { decodeImageNode } from '../../src/data/decode-node';
import { nodeSource } from '../../src/data/node-fs';
import { readPngText } from '../../src/data/png-text';
import type { Gpu } from '../../src/gpu/gpu';
import { openNodeGpu } from '../../src/gpu/node';
import { dirModelFiles } from '../../src/models/model-files-node';
import { memorySource, SafetensorsFile } from '../../src/models/safetensors';
import { GOLDENS } from '../helpers/goldens';
import { discPng } from '../helpers/train-data';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const tmp = mkdtempSync(path.join(tmpdir(), 'tpo-lab-sampling-'));
let current: Gpu | null = null;

async function gpu(): Promise<Gpu> {
  if (!current || current.isLost) current = await openNodeGpu();
  return current;
}

afterAll(() => {
  current?.destroy();
  rmSync(tmp, { recursive: true, force: true });
});

describe('lab sampling', () => {
  const lab = new Lab({ root: new MemoryStorage('lab'), gpu, decode: decodeImageNode, encodePng });
  let run = '';
  const request = (loraScale: number) => ({ prompts: ['a red circle on the left', ''], seeds: [5], run, loraScale, steps: 2, guidance: 7.5, sampler: 'ddim' as const, width: 64, height: 64 });

  it('trains a short run to sample with', async () => {
    await lab.openModel(folderModel(dirModelFiles(TINY)));
    const dir = path.join(tmp, 'discs');
    mkdirSync(dir);
    const colours: [string, [number, number, number]][] = [['red', [220, 30, 30]], ['blue', [30, 40, 220]], ['green', [30, 200, 60]], ['yellow', [230, 220, 40]]];
    for (const [i, [name, rgb]] of colours.entries()) {
      writeFileSync(path.join(dir, `disc${i}.png`), discPng(64, rgb, [240, 240, 240], i + 1));
      writeFileSync(path.join(dir, `disc${i}.txt`), `a ${name} circle on the left of a white background`);
    }
    const dataset = (await lab.importDataset(nodeSource(dir), 'discs')).dataset.id;
    await lab.makeNegatives(dataset, { principles: ['attribute'], perCaption: 1, seed: 3 });
    let resolveEnd: (s: string) => void = () => {};
    const ended = new Promise<string>((r) => (resolveEnd = r));
    run = await lab.startRun(
      { dataset, config: { method: 'tdpo', steps: 3, resolution: 64, rank: 2, lr: 1e-2, batchSize: 2, seed: 7 }, settings: { holdout: 0.25, checkpointEvery: 1, scoreDraws: 1, dtype: 'fp32' } },
      (e: LabRunEvent) => e.type === 'status' && e.status !== 'running' && resolveEnd(e.status),
    );
    expect(await ended).toBe('done');
  }, 300_000);

  it('draws base and LoRA: the same bytes at scale 0, different at 1, parameters in the PNG', async () => {
    const progress: [number, number][] = [];
    const zero = await lab.sample(request(0), (done, total) => progress.push([done, total]));
    expect(zero.images.map((i) => [i.prompt, i.seed])).toEqual([['a red circle on the left', 5]]); // blank lines dropped
    expect(progress.at(-1)).toEqual([4, 4]); // 2 steps, base and LoRA
    expect(zero.lora?.name).toBe(`tpo-tdpo-${run}-step3`);
    const [a] = zero.images;
    expect(a.lora).not.toBeNull();
    expect(Buffer.from(a.lora!).equals(Buffer.from(a.base))).toBe(true);

    const one = await lab.sample(request(1));
    const [b] = one.images;
    expect(Buffer.from(b.base).equals(Buffer.from(a.base))).toBe(true); // the base does not depend on the LoRA
    expect(Buffer.from(b.lora!).equals(Buffer.from(b.base))).toBe(false);

    const text = readPngText(b.lora!);
    expect(text.parameters).toContain('a red circle on the left');
    expect(text.parameters).toContain(`<lora:tpo-tdpo-${run}-step3:1>`);
    expect(text.parameters).toMatch(/Steps: 2, .*Seed: 5, Size: 64x64/);
    expect(JSON.parse(text['tpo-lab'])).toMatchObject({ prompt: 'a red circle on the left', seed: 5, loraScale: 1, lora: `tpo-tdpo-${run}-step3` });
    expect(readPngText(b.base).parameters).not.toContain('<lora:');

    // Without a run: the base model only, the same image again from the kept networks.
    const base = await lab.sample({ ...request(1), run: undefined });
    expect(base.lora).toBeNull();
    expect(base.images[0].lora).toBeNull();
    expect(Buffer.from(base.images[0].base).equals(Buffer.from(a.base))).toBe(true);
  }, 300_000);

  it('stops after the pair in flight when its signal is aborted, with the pairs drawn by then', async () => {
    const stop = new AbortController();
    const asked = { ...request(1), prompts: ['a red circle', 'a blue circle'], seeds: [5, 6] }; // 4 pairs of 2 images, 2 steps each
    const progress: number[] = [];
    // Aborted during the first pair's base image: its LoRA image is still drawn, then nothing more.
    const r = await lab.sample(asked, (done) => (progress.push(done), done === 1 && stop.abort()), stop.signal);
    expect(r.stopped).toBe(true);
    expect(r.asked).toBe(4);
    expect(r.images.map((i) => [i.prompt, i.seed])).toEqual([['a red circle', 5]]);
    expect(r.images[0].lora).not.toBeNull();
    expect(progress.at(-1)).toBe(4);
    // A signal aborted before the call: nothing is drawn. Not aborted: everything, not stopped.
    expect((await lab.sample(asked, undefined, stop.signal)).images).toEqual([]);
    expect((await lab.sample({ ...asked, prompts: ['a red circle'], seeds: [5] }, undefined, new AbortController().signal)).stopped).toBe(false);
  }, 300_000);

  it('refuses a bad request with what to change', async () => {
    await expect(lab.sample({ ...request(1), prompts: [' '] })).rejects.toThrow(/at least one prompt/);
    await expect(lab.sample({ ...request(1), width: 60 })).rejects.toThrow(/width 60 must be a multiple of 8/);
    await expect(lab.sample({ ...request(1), seeds: [-1] })).rejects.toThrow(/seed -1/);
    await expect(lab.sample({ ...request(1), run: 'nope' })).rejects.toThrow(/no run nope/);
  });

  it('loraInfo says what exportLora writes', async () => {
    const info = await lab.loraInfo(run, { format: 'kohya', dtype: 'fp32' });
    const exported = await lab.exportLora(run, { format: 'kohya', dtype: 'fp32' });
    expect(info.name).toBe(exported.name);
    expect(info.bytes).toBe(exported.bytes.byteLength);
    expect(info.source).toBe('final');
    const file = await SafetensorsFile.open(memorySource(exported.bytes));
    expect(info.tensors).toBe(file.names.length);
    expect(info.tensors).toBe(info.modules * 3); // down, up, alpha
    expect(info.metadata).toEqual(file.metadata);
    expect(info.metadata.ss_network_dim).toBe('2');
    const diffusers = await lab.loraInfo(run, { format: 'diffusers', dtype: 'fp16' });
    expect(diffusers.tensors).toBe(info.modules * 2);
    expect(diffusers.bytes).toBeLessThan(info.bytes);
  });
});
