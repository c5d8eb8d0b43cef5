// tpo-lab sample and the trainer's previews on the tiny golden model: PNGs with their parameters, the same
// seed giving the same image, LoRA scale 0 giving the base model, grids, odd sizes, clear refusals; and a
// training run with previews ending with exactly the LoRA of the same run without them.

import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pngjs from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPngText } from '../../src/data/png-text';
import { openSafetensorsFile } from '../../src/models/safetensors-node';
import { runCli } from '../helpers/cli';
import { GOLDENS } from '../helpers/goldens';
import { testGpu } from '../helpers/gpu';
import { writeTpoSet } from '../helpers/train-data';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const LORA = path.join(TINY, 'lora.safetensors');
const tmp = mkdtempSync(path.join(tmpdir(), 'sample-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const LONG = 20 * 60_000;

const run = async (argv: string[]) => runCli(argv, { cwd: tmp, gpu: await testGpu() });
const png = (file: string) => pngjs.PNG.sync.read(readFileSync(file));
const common = ['--model', TINY, '--steps', '3', '--quiet'];

describe('tpo-lab sample', () => {
  it('writes PNGs with their parameters and an index; a seed makes the same image again', async () => {
    const out = path.join(tmp, 'a');
    const r = await run(['sample', ...common, '--prompt', 'a red circle', '--prompt', 'a blue square', '--seed', '5', '--batch', '2', '--width', '64', '--height', '64', '--out', out]);
    expect(r.status, r.err).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['000-5.png', '000-6.png', '001-5.png', '001-6.png', 'index.json']);
    const index = JSON.parse(readFileSync(path.join(out, 'index.json'), 'utf8'));
    expect(index).toMatchObject({ sampler: 'ddim', steps: 3, guidance: 7.5, width: 64, height: 64, seed: 5, batch: 2 });
    expect(index.images).toHaveLength(4);
    const text = readPngText(readFileSync(path.join(out, '001-6.png')));
    expect(text.parameters).toBe('a blue square\nSteps: 3, Sampler: DDIM, CFG scale: 7.5, Seed: 6, Size: 64x64, Model: tiny-sd15');
    expect(JSON.parse(text['tpo-lab'])).toMatchObject({ prompt: 'a blue square', seed: 6, steps: 3, lora: null });
    const image = png(path.join(out, '000-5.png'));
    expect([image.width, image.height]).toEqual([64, 64]);

    // The same seed alone (not in a batch of two) gives the same pixels.
    const again = path.join(tmp, 'again');
    expect((await run(['sample', ...common, '--prompt', 'a red circle', '--seed', '5', '--width', '64', '--height', '64', '--out', again])).status).toBe(0);
    expect(png(path.join(again, '000-5.png')).data).toEqual(image.data);
    expect(png(path.join(out, '000-6.png')).data).not.toEqual(image.data);
  }, LONG);

  it('--compare: base and LoRA from the same seeds, a grid per prompt; LoRA scale 0 is the base model', async () => {
    const out = path.join(tmp, 'cmp');
    const r = await run(['sample', ...common, '--prompt', 'a red circle', '--seed', '1', '--batch', '2', '--lora', LORA, '--compare', '--width', '64', '--height', '64', '--out', out]);
    expect(r.status, r.err).toBe(0);
    expect(readdirSync(out).sort()).toEqual(['000-1-base.png', '000-1-lora.png', '000-2-base.png', '000-2-lora.png', '000-grid.png', 'index.json']);
    const grid = png(path.join(out, '000-grid.png'));
    expect([grid.width, grid.height]).toEqual([2 * 64 + 4, 2 * 64 + 4]);
    expect(readPngText(readFileSync(path.join(out, '000-1-lora.png'))).parameters).toMatch(/^a red circle <lora:lora:1>\n/);
    const base = png(path.join(out, '000-1-base.png')).data;
    expect(png(path.join(out, '000-1-lora.png')).data).not.toEqual(base);
    // The grid's top-left cell is the base image.
    expect(grid.data.subarray(0, 64 * 4)).toEqual(base.subarray(0, 64 * 4));
    const zero = path.join(tmp, 'zero');
    expect((await run(['sample', ...common, '--prompt', 'a red circle', '--seed', '1', '--lora', LORA, '--lora-scale', '0', '--width', '64', '--height', '64', '--out', zero])).status).toBe(0);
    expect(png(path.join(zero, '000-1.png')).data).toEqual(base);
  }, LONG);

  it('draws non-square sizes whose latents do not halve evenly, other samplers, and no guidance', async () => {
    const out = path.join(tmp, 'odd');
    const r = await run(['sample', ...common, '--prompt', 'x', '--seed', '2', '--width', '48', '--height', '40', '--sampler', 'dpmpp-2m', '--guidance', '1', '--out', out]);
    expect(r.status, r.err).toBe(0);
    const image = png(path.join(out, '000-2.png'));
    expect([image.width, image.height]).toEqual([48, 40]);
    const e = await run(['sample', ...common, '--prompt', 'x', '--seed', '2', '--width', '32', '--height', '32', '--sampler', 'euler', '--out', path.join(tmp, 'euler')]);
    expect(e.status, e.err).toBe(0);
    expect(readPngText(readFileSync(path.join(tmp, 'euler', '000-2.png'))).parameters).toMatch(/Sampler: Euler,/);
  }, LONG);

  it('refuses bad settings before drawing, saying what is wrong', async () => {
    const cases: [string[], RegExp][] = [
      [['--prompt', 'x', '--width', '30', '--out', tmp], /width 30 must be a multiple of 8/],
      [['--out', tmp], /at least one --prompt/],
      [['--prompt', 'x', '--sampler', 'plms', '--out', tmp], /--sampler must be one of ddim, euler, dpmpp-2m/],
      [['--prompt', 'x', '--compare', '--out', tmp], /--compare .* give --lora/],
      [['--prompt', 'x', '--steps', '0', '--out', tmp], /--steps must be at least 1/],
      [['--prompt', 'x', '--prompts', path.join(tmp, 'nope.txt'), '--out', tmp], /nope\.txt: no such file/],
    ];
    for (const [args, message] of cases) {
      const r = await run(['sample', '--model', TINY, ...args]);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.err).toMatch(message);
    }
  }, LONG);
});

describe('previews while training', () => {
  let set: ReturnType<typeof writeTpoSet>;
  beforeAll(() => {
    set = writeTpoSet(tmp, 2, 64);
    writeFileSync(path.join(tmp, 'prompts.txt'), '# preview prompts\na red disc on a blue background\n\na green disc\n');
  });

  it('samples the base model and every N steps, and leaves the run exactly as without them', async () => {
    const args = ['train', '--model', TINY, '--data', set.file, '--resolution', '64', '--holdout', '0', '--quiet', '--cache', path.join(tmp, 'cache'), '--steps', '3', '--lr', '1e-3', '--score-draws', '0', '--dtype', 'fp32'];
    const plain = path.join(tmp, 'plain');
    expect((await run([...args, '--out', plain])).status).toBe(0);
    const withPreviews = path.join(tmp, 'previews');
    const r = await run([...args, '--out', withPreviews, '--sample-every', '2', '--sample-prompts', path.join(tmp, 'prompts.txt'), '--sample-steps', '2', '--sample-seed', '9']);
    expect(r.status, r.err).toBe(0);
    // The base model at the start, step 2, and the last step (3, not a multiple of 2).
    expect(readdirSync(path.join(withPreviews, 'samples')).sort()).toEqual(['base', 'step-2', 'step-3']);
    for (const folder of ['base', 'step-2', 'step-3']) {
      expect(readdirSync(path.join(withPreviews, 'samples', folder)).sort()).toEqual(['000-9.png', '001-9.png', 'index.json']);
    }
    expect(readPngText(readFileSync(path.join(withPreviews, 'samples', 'step-2', '000-9.png'))).parameters).toMatch(/^a red disc on a blue background <lora:step-2:1>\nSteps: 2, .*Seed: 9, Size: 64x64/);
    const tensors = async (file: string) => {
      const { file: f, close } = await openSafetensorsFile(file);
      const out = new Map<string, Float32Array>();
      for (const name of f.names) out.set(name, await f.readF32(name));
      await close();
      return out;
    };
    const a = await tensors(path.join(plain, 'lora.safetensors'));
    const b = await tensors(path.join(withPreviews, 'lora.safetensors'));
    for (const [k, v] of a) expect(b.get(k), k).toEqual(v);
    expect(readFileSync(path.join(withPreviews, 'metrics.jsonl'), 'utf8').split('\n').map((l) => l.replace(/"stepTime":[^,]*,/, ''))).toEqual(
      readFileSync(path.join(plain, 'metrics.jsonl'), 'utf8').split('\n').map((l) => l.replace(/"stepTime":[^,]*,/, '')),
    );
    expect(existsSync(path.join(plain, 'samples'))).toBe(false);
  }, LONG);

  it('refuses --sample-every without prompts', async () => {
    const r = await run(['train', '--model', TINY, '--data', set.file, '--steps', '1', '--sample-every', '1', '--out', path.join(tmp, 'np')]);
    expect(r.status).toBe(2);
    expect(r.err).toMatch(/--sample-every needs --sample-prompts/);
  });
});
