// `tpo-lab judge` on the tiny CLIP-interface fixture (tests/helpers/clip-fixture.ts), run in-process:
// its scores against the TypeScript reference of the same graphs, the agreement with implicit scores of
// both file formats, base-against-LoRA samples, and refusals.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodePng } from '../../src/cli/sample';
import { decodeImageNode } from '../../src/data/decode-node';
import { clipScore } from '../../src/judges/clip-judge';
import { pearson, spearman } from '../../src/judges/correlation';
import { clipPixelValues, parseClipImageConfig } from '../../src/judges/preprocess';
import { seededRandom } from '../../src/util/random';
import { ClipTokenizer } from '../../src/models/tokenizer';
import { FIXTURE_MERGES, FIXTURE_PREPROCESSOR, fixtureVocab, referenceImageEmbeds, referenceTextEmbeds, writeFixtureFolder, type FixtureWeights } from '../helpers/clip-fixture';
import { runCli } from '../helpers/cli';
import { GOLDENS } from '../helpers/goldens';
import { testGpu } from '../helpers/gpu';
import { tempDir } from '../helpers/llm/files';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const d = tempDir('tpo-lab-cli-judge-');
afterAll(() => d.cleanup());
let weights: FixtureWeights;

function randomPng(seed: number, width: number, height: number): Uint8Array {
  const rand = seededRandom(seed, 'cli-judge');
  const rgba = new Uint8Array(width * height * 4);
  for (let i = 0; i < rgba.length; i++) rgba[i] = i % 4 === 3 ? 255 : Math.floor(rand() * 256);
  return encodePng(rgba, width, height, {});
}

// Four images, each with two negatives of different principles.
const ITEMS = [
  { image: 'imgs/a.png', size: [12, 9], caption: 'a red cat', negatives: [['a red dog', 'content'], ['a blue cat', 'attribute']] },
  { image: 'imgs/b.png', size: [10, 10], caption: 'a dog on grass', negatives: [['a cat on grass', 'content'], ['a dog on sand', 'attribute']] },
  { image: 'imgs/c.png', size: [9, 17], caption: 'two red cats', negatives: [['two red dogs', 'content'], ['three red cats', 'attribute']] },
  { image: 'imgs/d.png', size: [31, 14], caption: 'a dog and a cat', negatives: [['a cat and a cat', 'content'], ['a dog under a cat', 'attribute']] },
] as const;

beforeAll(() => {
  weights = writeFixtureFolder(path.join(d.dir, 'clip'), { onnxSubfolder: true });
  mkdirSync(path.join(d.dir, 'data', 'imgs'), { recursive: true });
  ITEMS.forEach((it, i) => writeFileSync(path.join(d.dir, 'data', it.image), randomPng(i + 1, it.size[0], it.size[1])));
  const lines = ITEMS.map((it) => JSON.stringify({ image: it.image, caption: it.caption, negatives: it.negatives.map(([caption, principle]) => ({ caption, principle, source: 'rule' })) }));
  writeFileSync(path.join(d.dir, 'data', 'tpo.jsonl'), `${lines.join('\n')}\n`);
});

/** The reference CLIP score of an image file and a caption: lab preprocessing, then the graphs in plain TypeScript. */
async function referenceScore(image: string, caption: string): Promise<number> {
  const tok = new ClipTokenizer({ vocab: fixtureVocab(), merges: FIXTURE_MERGES });
  const ids = tok.encodeForModel(caption);
  const eos = ids.indexOf(tok.eosId);
  const text = referenceTextEmbeds(weights, ids, ids.map((_, t) => (t <= eos ? 1 : 0)));
  const img = await decodeImageNode(new Uint8Array(readFileSync(image)), image);
  const pixels = clipPixelValues(img, parseClipImageConfig(JSON.stringify(FIXTURE_PREPROCESSOR)));
  return clipScore(referenceImageEmbeds(weights, pixels.data), text);
}

const lines = (file: string) =>
  readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));

describe('tpo-lab judge --data', () => {
  it("gives the TypeScript reference's CLIP scores for every pair (relative error at most 1e-5)", async () => {
    const r = await runCli(['judge', '--clip', 'clip', '--data', 'data/tpo.jsonl', '--out', 'judged.jsonl', '--batch', '3', '--quiet'], { cwd: d.dir });
    expect(r.status, r.err).toBe(0);
    expect(r.out).toMatch(/CLIP score: judge accuracy [\d.]+ .* over 8 pairs; wrote .*judged\.jsonl/);
    const out = lines(path.join(d.dir, 'judged.jsonl'));
    expect(out).toHaveLength(9);
    const rows = out.slice(0, 8);
    let worst = 0;
    for (const row of rows) {
      const file = path.join(d.dir, row.image);
      const w = await referenceScore(file, row.caption);
      const l = await referenceScore(file, row.negative);
      const scale = Math.max(Math.abs(w), Math.abs(l));
      worst = Math.max(worst, Math.abs(row.score_w - w) / scale, Math.abs(row.score_l - l) / scale);
      expect(row.margin).toBe(row.score_w - row.score_l);
    }
    expect(worst).toBeLessThan(1e-5);
    expect(rows.map((x) => [x.image, x.negative, x.principle])).toEqual(ITEMS.flatMap((it) => it.negatives.map(([n, p]) => [`data/${it.image}`, n, p])));
    // CLIP scores (0..100), none clamped to 0 (which would hide disagreements), margins of both signs.
    expect(rows.every((x) => x.score_w > 0 && x.score_w <= 100 && x.score_l > 0)).toBe(true);
    expect(rows.some((x) => x.margin > 0) && rows.some((x) => x.margin < 0)).toBe(true);
    expect(out[8]).toMatchObject({ summary: true, judge: 'clip', pairs: 8 });
  });

  it("correlates the judge's margins with a run's implicit margins at its last step, overall and per principle", async () => {
    const rand = seededRandom(11, 'implicit');
    const pairs = ITEMS.flatMap((it) => it.negatives.map(([negative, principle]) => ({ image: it.image, negative, principle })));
    const margins = pairs.map(() => rand() * 2 - 1);
    const scoreLines: string[] = [];
    for (const [step, scale] of [[5, -1], [10, 1]] as const) {
      pairs.forEach((p, i) => scoreLines.push(JSON.stringify({ step, split: i % 3 ? 'train' : 'held-out', id: `${p.image}\u0000${p.negative}`, rewardW: 0, rewardL: 0, margin: scale * margins[i], principle: p.principle })));
      scoreLines.push(JSON.stringify({ step, split: 'train', summary: true, examples: 8, accuracy: 0.5, meanMargin: 0 }));
    }
    // The last pair was not scored by the run.
    writeFileSync(path.join(d.dir, 'data', 'scores.jsonl'), `${scoreLines.filter((l) => !l.includes('a dog under a cat')).join('\n')}\n`);
    const r = await runCli(['judge', '--clip', 'clip', '--data', 'data/tpo.jsonl', '--scores', 'data/scores.jsonl', '--out', 'agree.jsonl', '-q'], { cwd: d.dir });
    expect(r.status, r.err).toBe(0);
    expect(r.err).toMatch(/1 of 8 pairs have no implicit score/);
    const out = lines(path.join(d.dir, 'agree.jsonl'));
    const rows = out.slice(0, 8);
    expect(rows.map((x) => x.implicit_margin)).toEqual([...margins.slice(0, 7), null]);
    const judged = rows.slice(0, 7).map((x) => x.margin);
    const summary = out[8];
    expect(summary).toMatchObject({ implicit_step: 10, matched: 7 });
    expect(summary.correlation.pearson).toBeCloseTo(pearson(judged, margins.slice(0, 7))!, 12);
    expect(summary.correlation.spearman).toBeCloseTo(spearman(judged, margins.slice(0, 7))!, 12);
    const contents = [0, 2, 4, 6];
    expect(summary.correlation_by_principle.content.pearson).toBeCloseTo(pearson(contents.map((i) => judged[i]), contents.map((i) => margins[i]))!, 12);
    expect(summary.correlation_by_principle.attribute.pairs).toBe(3);
    expect(r.out).toMatch(/agreement with the implicit margins at step 10: Pearson -?[\d.]+, Spearman -?[\d.]+ \(7 pairs\)/);
    expect(r.out).toMatch(/ {2}attribute: .*\(3 pairs\)\n {2}content: .*\(4 pairs\)/);

    // The same margins as `tpo-lab score` writes them (images relative to that file, in another folder).
    mkdirSync(path.join(d.dir, 'scored'), { recursive: true });
    const scoreOut = pairs.map((p, i) => JSON.stringify({ image_w: `../data/${p.image}`, caption_w: 'x', caption_l: p.negative, principle: p.principle, reward_w: 0, reward_l: 0, margin: margins[i] }));
    writeFileSync(path.join(d.dir, 'scored', 'scores.jsonl'), `${[...scoreOut, JSON.stringify({ summary: true })].join('\n')}\n`);
    const r2 = await runCli(['judge', '--clip', 'clip', '--data', 'data/tpo.jsonl', '--scores', 'scored/scores.jsonl', '--out', 'agree2.jsonl', '-q'], { cwd: d.dir });
    expect(r2.status, r2.err).toBe(0);
    const s2 = lines(path.join(d.dir, 'agree2.jsonl'))[8];
    expect(s2).toMatchObject({ implicit_step: null, matched: 8 });
    expect(s2.correlation.spearman).toBeCloseTo(spearman(lines(path.join(d.dir, 'agree2.jsonl')).slice(0, 8).map((x) => x.margin), margins)!, 12);
  });
});

describe('tpo-lab judge --samples', () => {
  it('scores base against LoRA images of tpo-lab sample --compare against their prompts', async () => {
    const dir = path.join(d.dir, 'samples');
    mkdirSync(dir, { recursive: true });
    const images = [];
    for (const [p, prompt] of ['a red cat', 'a dog'].entries()) {
      for (const variant of ['base', 'lora']) {
        const file = `00${p}-5-${variant}.png`;
        writeFileSync(path.join(dir, file), randomPng(100 + p * 2 + (variant === 'lora' ? 1 : 0), 16, 16));
        images.push({ file, prompt, promptIndex: p, seed: 5, variant });
      }
    }
    writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ images, grids: [] }));
    const r = await runCli(['judge', '--clip', 'clip', '--samples', 'samples', '--out', 'samples.jsonl', '-q'], { cwd: d.dir });
    expect(r.status, r.err).toBe(0);
    const out = lines(path.join(d.dir, 'samples.jsonl'));
    expect(out).toHaveLength(3);
    for (const row of out.slice(0, 2)) {
      const base = await referenceScore(path.join(d.dir, row.image_base), row.prompt);
      const lora = await referenceScore(path.join(d.dir, row.image_lora), row.prompt);
      expect(Math.abs(row.score_base - base) / base).toBeLessThan(1e-5);
      expect(Math.abs(row.score_lora - lora) / lora).toBeLessThan(1e-5);
      expect(row.delta).toBe(row.score_lora - row.score_base);
    }
    expect(out[2]).toMatchObject({ summary: true, samples: 2 });
    expect(r.out).toMatch(/CLIP score of 2 prompt and seed pairs: base [\d.]+, LoRA [\d.]+/);
  });
});

describe('tpo-lab judge --model --lora', () => {
  it('draws base and LoRA images of the prompts on the tiny model, then judges them', async () => {
    writeFileSync(path.join(d.dir, 'prompts.txt'), 'a red cat\na dog\n');
    const args = ['judge', '--clip', 'clip', '--model', TINY, '--lora', path.join(TINY, 'lora.safetensors'), '--prompts', 'prompts.txt'];
    const r = await runCli([...args, '--images', '1', '--steps', '1', '--size', '16', '--seed', '3', '--out', 'drawn.jsonl', '-q'], { cwd: d.dir, gpu: await testGpu() });
    expect(r.status, r.err).toBe(0);
    const index = JSON.parse(readFileSync(path.join(d.dir, 'drawn-samples', 'index.json'), 'utf8'));
    expect(index).toMatchObject({ steps: 1, width: 16, height: 16, seed: 3, batch: 1 });
    const out = lines(path.join(d.dir, 'drawn.jsonl'));
    expect(out.map((x) => [x.prompt, x.seed, x.image_base, x.image_lora])).toEqual([
      ['a red cat', 3, 'drawn-samples/000-3-base.png', 'drawn-samples/000-3-lora.png'],
      ['a dog', 3, 'drawn-samples/001-3-base.png', 'drawn-samples/001-3-lora.png'],
      [undefined, undefined, undefined, undefined],
    ]);
    const base = await referenceScore(path.join(d.dir, 'drawn-samples', '001-3-base.png'), 'a dog');
    expect(Math.abs(out[1].score_base - base) / base).toBeLessThan(1e-5);
    expect(r.out).toMatch(/CLIP score of 2 prompt and seed pairs/);
    // Options of the drawing alone are refused without --model; --model needs --lora and --prompts.
    for (const [extra, message] of [
      [['--data', 'data/tpo.jsonl', '--lora', 'x.safetensors'], /--lora goes with --model/],
      [['--model', TINY, '--prompts', 'prompts.txt'], /give --lora FILE/],
      [['--model', TINY, '--lora', 'x.safetensors'], /--model needs --prompts FILE\.txt/],
      [['--model', TINY, '--data', 'data/tpo.jsonl'], /give one of --data/],
    ] as const) {
      const bad = await runCli(['judge', '--clip', 'clip', ...extra, '--out', 'x.jsonl', '-q'], { cwd: d.dir });
      expect(bad.status).toBe(2);
      expect(bad.err).toMatch(message);
    }
  });
});

describe('tpo-lab judge refusals', () => {
  it('refuses bad options and malformed judge folders with the file named', async () => {
    for (const [args, status, message] of [
      [['--data', 'data/tpo.jsonl', '--out', 'x.jsonl'], 2, /--clip DIR .* is required/],
      [['--clip', 'clip', '--reward', 'clip', '--data', 'data/tpo.jsonl', '--out', 'x.jsonl'], 2, /give one judge/],
      [['--clip', 'clip', '--out', 'x.jsonl'], 2, /--data FILE\.jsonl, --samples DIR or --model PATH is required/],
      [['--clip', 'clip', '--samples', 'samples', '--scores', 'data/scores.jsonl', '--out', 'x.jsonl'], 2, /--scores compares pair margins/],
      [['--clip', 'clip', '--data', 'data/tpo.jsonl', '--scores', 'nope.jsonl', '--out', 'x.jsonl'], 2, /--scores nope\.jsonl: no such file/],
      [['--clip', 'clip', '--samples', 'data', '--out', 'x.jsonl'], 2, /--samples data: no index\.json/],
      [['--clip', 'data', '--data', 'data/tpo.jsonl', '--out', 'x.jsonl'], 1, /data: no text_model\.onnx \(looked in/],
      [['--reward', 'clip', '--data', 'data/tpo.jsonl', '--out', 'x.jsonl'], 1, /clip: no reward\.json/],
    ] as const) {
      const r = await runCli(['judge', ...args, '-q'], { cwd: d.dir });
      expect(r.status, r.err).toBe(status);
      expect(r.err).toMatch(message);
    }
    const bad = path.join(d.dir, 'bad');
    writeFixtureFolder(bad);
    writeFileSync(path.join(bad, 'vision_model.onnx'), 'not onnx at all');
    const r = await runCli(['judge', '--clip', 'bad', '--data', 'data/tpo.jsonl', '--out', 'x.jsonl', '-q'], { cwd: d.dir });
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/bad\/vision_model\.onnx: not an ONNX model that ONNX Runtime can read/);
  });
});
