// `tpo-lab shapes` and `tpo-lab judge-shapes`, run in-process through main() on temporary folders: the
// data set they write is one the lab's import reads, and the judge reads prompts from .txt files and from
// the PNG text that `tpo-lab sample` writes.

import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { promptFromPngText } from '../../src/cli/judge-shapes';
import { encodePng, samplePng } from '../../src/cli/sample';
import { decodeImageNode } from '../../src/data/decode-node';
import { importPath } from '../../src/data/node-fs';
import type { JudgeSummary } from '../../src/demo/judge';
import { isHeldOutPair, parseShapesPrompt, renderShapes, shapesCaption, shapesDataset, type ShapesScene } from '../../src/demo/shapes';
import { DEFAULT_SAMPLE_SETTINGS } from '../../src/diffusion/pipeline';
import { runCli } from '../helpers/cli';
import { tempDir } from '../helpers/llm/files';

const dirs: { cleanup: () => void }[] = [];
afterEach(() => {
  while (dirs.length) dirs.pop()!.cleanup();
});
function temp() {
  const d = tempDir();
  dirs.push(d);
  return d;
}

describe('tpo-lab shapes', () => {
  it('writes PNGs with .txt captions that the lab imports, the same as the library makes', async () => {
    const d = temp();
    const r = await runCli(['shapes', '--out', 'data', '--count', '12', '--seed', '3', '--prompts', 'prompts.txt'], { cwd: d.dir });
    expect(r.status, r.err).toBe(0);
    expect(r.out).toMatch(/wrote 12 training images \(64 x 64\)/);
    const files = readdirSync(path.join(d.dir, 'data')).sort();
    expect(files.filter((f) => f.endsWith('.png'))).toHaveLength(12);
    expect(files.filter((f) => f.endsWith('.txt'))).toHaveLength(12);
    const expected = shapesDataset({ seed: 3, count: 12 });
    const caption = readFileSync(path.join(d.dir, 'data', 'shape-00004.txt'), 'utf8').trim();
    expect(caption).toBe(expected[4].caption);
    const image = await decodeImageNode(new Uint8Array(readFileSync(path.join(d.dir, 'data', 'shape-00004.png'))), 'shape-00004.png');
    expect(Buffer.from(image.data).equals(Buffer.from(expected[4].image.data))).toBe(true);
    expect(readFileSync(path.join(d.dir, 'prompts.txt'), 'utf8').trim().split('\n')).toEqual(expected.map((x) => x.caption));
    // The kohya folder the Data import and `tpo-lab pairs` read.
    const imported = await importPath(path.join(d.dir, 'data'));
    expect(imported.items).toHaveLength(12);
    expect(imported.items.map((x) => x.caption).sort()).toEqual(expected.map((x) => x.caption).sort());
  });

  it('writes held-out scenes, other sizes, captions without sizes; refuses bad options', async () => {
    const d = temp();
    let r = await runCli(['shapes', '--out', 'held', '--count', '6', '--split', 'heldout', '--size', '32', '--no-sizes'], { cwd: d.dir });
    expect(r.status, r.err).toBe(0);
    for (let i = 0; i < 6; i++) {
      const parsed = parseShapesPrompt(readFileSync(path.join(d.dir, 'held', `shape-0000${i}.txt`), 'utf8'))!;
      expect(parsed.shapes.some(isHeldOutPair)).toBe(true);
      expect(parsed.shapes.every((s) => s.size === null)).toBe(true);
    }
    const img = await decodeImageNode(new Uint8Array(readFileSync(path.join(d.dir, 'held', 'shape-00000.png'))), 'x.png');
    expect(img.width).toBe(32);
    for (const [args, message] of [
      [['shapes', '--count', '3'], /--out is required/],
      [['shapes', '--out', 'x', '--split', 'test'], /--split must be train or heldout/],
      [['shapes', '--out', 'x', '--size', '60'], /--size must be a multiple of 8/],
      [['shapes', '--out', 'x', '--size', '16'], /--size must be at least 32/],
    ] as [string[], RegExp][]) {
      r = await runCli(args, { cwd: d.dir });
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.err).toMatch(message);
    }
  });
});

describe('tpo-lab judge-shapes', () => {
  it('scores the generator\'s own images 1, in text and in JSON', async () => {
    const d = temp();
    expect((await runCli(['shapes', '--out', 'data', '--count', '10', '--seed', '5'], { cwd: d.dir })).status).toBe(0);
    const r = await runCli(['judge-shapes', '--images', 'data'], { cwd: d.dir });
    expect(r.status, r.err).toBe(0);
    expect(r.out).toMatch(/^file\s+score\s+facts\s+not shown\n/);
    expect(r.out).toMatch(/shape-00000\.png\s+1\.00\s+\d+\/\d+\n/);
    expect(r.out).toMatch(/mean score 1\.000 over 10 images\n/);
    expect(r.out).toMatch(/facts shown: 100\.0% \(\d+\/\d+\)/);
    expect(r.out).toMatch(/by kind of fact: kind 100\.0% .*background 100\.0% \(10\/10\)/);
    const j = await runCli(['judge-shapes', '--images', 'data', '--json'], { cwd: d.dir });
    const report = JSON.parse(j.out) as { images: { file: string; score: number; facts: { kind: string }[] }[]; skipped: unknown[]; summary: JudgeSummary };
    expect(report.images).toHaveLength(10);
    expect(report.skipped).toEqual([]);
    expect(report.summary.meanScore).toBe(1);
    expect(report.summary.byKind.background.total).toBe(10);
    expect(r.out).not.toMatch(/base model|LoRA/);
  });

  it('reads prompts from tpo-lab sample\'s PNG text, reports the facts an image misses, skips what it cannot judge', async () => {
    const d = temp();
    const scene: ShapesScene = { shapes: [{ kind: 'triangle', colour: 'red', size: 'large' }], position: 'left', background: 'white' };
    const prompt = shapesCaption(scene);
    const settings = { ...DEFAULT_SAMPLE_SETTINGS, width: 64, height: 64, negativePrompt: '', loraScale: 1 };
    // Right image, as `tpo-lab sample` saves it (the lab's JSON and A1111's parameters, with a LoRA tag).
    const right = renderShapes(scene);
    d.write('imgs/000-1.png', samplePng({ prompt, seed: 1, rgba: right.data, width: 64, height: 64 }, { prompt, seed: 1, settings, model: 'demo', lora: 'shapes' }));
    // Wrong background, prompt only in A1111's parameters.
    const wrong = renderShapes({ ...scene, background: 'blue' });
    d.write('imgs/001-1.png', encodePng(wrong.data, 64, 64, { parameters: `${prompt} <lora:shapes:1>\nSteps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 1, Size: 64x64, Model: demo` }));
    // No prompt at all (like sample's comparison grids), and a prompt from another world.
    d.write('imgs/002-grid.png', encodePng(right.data, 64, 64, { Description: 'a grid' }));
    d.write('imgs/003.png', encodePng(right.data, 64, 64, {}));
    d.write('imgs/003.txt', 'a photo of a cat\n');
    d.write('imgs/notes.md', 'not an image');
    const r = await runCli(['judge-shapes', '--images', 'imgs'], { cwd: d.dir });
    expect(r.status, r.err).toBe(0);
    expect(r.out).toMatch(/000-1\.png\s+1\.00\s+5\/5/);
    expect(r.out).toMatch(/001-1\.png\s+0\.80\s+4\/5\s+the background is white \(saw blue\)/);
    expect(r.out).toMatch(/mean score 0\.900 over 2 images \(2 skipped\)/);
    expect(r.out).toMatch(/background 50\.0% \(1\/2\)/);
    expect(r.err).toMatch(/skipped 002-grid\.png: no prompt/);
    expect(r.err).toMatch(/skipped 003\.png: not a shapes-world prompt: "a photo of a cat"/);
  });

  it('summarises the base model\'s and the LoRA\'s images apart, as tpo-lab sample --compare names them', async () => {
    const d = temp();
    const scene: ShapesScene = { shapes: [{ kind: 'square', colour: 'blue', size: 'small' }], position: 'top', background: 'yellow' };
    const prompt = shapesCaption(scene);
    // The base model draws the square at the bottom, the LoRA where the prompt says.
    const base = renderShapes({ ...scene, position: 'bottom' });
    const lora = renderShapes(scene);
    d.write('cmp/000-1-base.png', encodePng(base.data, 64, 64, { 'tpo-lab': JSON.stringify({ prompt, seed: 1 }) }));
    d.write('cmp/000-1-lora.png', encodePng(lora.data, 64, 64, { 'tpo-lab': JSON.stringify({ prompt, seed: 1 }) }));
    const r = await runCli(['judge-shapes', '--images', 'cmp'], { cwd: d.dir });
    expect(r.status, r.err).toBe(0);
    expect(r.out).toMatch(/\nbase model \(\*-base\.png\): mean score 0\.800 over 1; .*position 0\.0% \(0\/1\)/);
    expect(r.out).toMatch(/\nLoRA \(\*-lora\.png\): mean score 1\.000 over 1; .*position 100\.0% \(1\/1\)/);
    const json = JSON.parse((await runCli(['judge-shapes', '--images', 'cmp', '--json'], { cwd: d.dir })).out) as { variants: Record<string, JudgeSummary> };
    expect(json.variants.base.meanScore).toBeCloseTo(0.8);
    expect(json.variants.lora.meanScore).toBe(1);
  });

  it('reads the prompt out of PNG text', () => {
    expect(promptFromPngText({ 'tpo-lab': JSON.stringify({ prompt: 'a red circle on the left, on a white background', seed: 3 }) })).toBe('a red circle on the left, on a white background');
    expect(promptFromPngText({ parameters: 'a red circle\non the left <lora:x:0.5>\nNegative prompt: blurry\nSteps: 20, Seed: 1' })).toBe('a red circle\non the left');
    expect(promptFromPngText({ 'tpo-lab': 'not json', parameters: 'p\nSteps: 1' })).toBe('p');
    expect(promptFromPngText({ Description: 'x' })).toBeNull();
  });

  it('fails with status 2 when there is nothing to judge', async () => {
    const d = temp();
    d.write('empty/readme.txt', 'nothing');
    let r = await runCli(['judge-shapes'], { cwd: d.dir });
    expect(r.status).toBe(2);
    expect(r.err).toMatch(/--images is required/);
    r = await runCli(['judge-shapes', '--images', 'missing'], { cwd: d.dir });
    expect(r.status).toBe(2);
    expect(r.err).toMatch(/no such folder/);
    r = await runCli(['judge-shapes', '--images', 'empty'], { cwd: d.dir });
    expect(r.status).toBe(2);
    expect(r.err).toMatch(/no PNG with a shapes-world prompt to judge/);
  });
});
