// The lab's judge calls (src/app/lab.ts: openJudge, judgePairs, judgeImages), driven in Node over a Storage
// in memory with the tiny CLIP-interface judge (tests/helpers/clip-fixture.ts) on ONNX Runtime's wasm
// backend: a captioned folder imported with rule negatives of two principles, a run's scores file, and the
// judge's margins joined with the run's implicit margins at its last step; the numbers are checked against
// the judge run directly and the correlation functions. No GPU: judging needs none.

import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { failureKind } from '../../src/app/errors';
import { Lab } from '../../src/app/lab';
import { MemoryStorage } from '../../src/app/storage';
import { encodePng } from '../../src/cli/sample';
import { decodeImageNode } from '../../src/data/decode-node';
import { nodeSource } from '../../src/data/node-fs';
import { pairKey } from '../../src/judges/agreement';
import { cosine } from '../../src/judges/clip-judge';
import { judgeSourceFromDir, loadJudgeFolder } from '../../src/judges/clip-judge-node';
import { pearson, spearman } from '../../src/judges/correlation';
import { writeFixtureFolder } from '../helpers/clip-fixture';
import { tempDir } from '../helpers/llm/files';
import { discPng } from '../helpers/train-data';

const d = tempDir('tpo-lab-lab-judge-');
afterAll(() => d.cleanup());

const COLOURS: [string, [number, number, number]][] = [['red', [220, 30, 30]], ['blue', [30, 40, 220]], ['green', [30, 200, 60]], ['yellow', [230, 220, 40]]];

describe('the lab with an independent judge', () => {
  const root = new MemoryStorage('lab');
  // Judging runs on ONNX Runtime, not on the lab's GPU: a call that asked for the GPU would fail here.
  const lab = new Lab({ root, gpu: () => Promise.reject(new Error('the judge calls need no GPU')), decode: decodeImageNode, encodePng });
  const judgeDir = path.join(d.dir, 'clip');
  let dataset = '';

  it('opens a judge folder, scores every pair of a dataset, and correlates with a run at its last step', async () => {
    writeFixtureFolder(judgeDir, { onnxSubfolder: true });
    const images = path.join(d.dir, 'discs');
    mkdirSync(images);
    for (const [i, [name, rgb]] of COLOURS.entries()) {
      writeFileSync(path.join(images, `disc${i}.png`), discPng(24, rgb, [240, 240, 240], i + 1));
      writeFileSync(path.join(images, `disc${i}.txt`), `a ${name} circle on the left of a white background`);
    }
    dataset = (await lab.importDataset(nodeSource(images), 'discs')).dataset.id;
    await lab.makeNegatives(dataset, { principles: ['attribute', 'spatial'], perCaption: 2, seed: 3 });
    const items = await lab.datasetItems(dataset);
    const pairs = items.flatMap((it) => it.negatives.map((n) => ({ image: it.image, caption: it.caption, negative: n.caption, principle: n.principle })));
    expect(new Set(pairs.map((p) => p.principle))).toEqual(new Set(['attribute', 'spatial']));

    await expect(lab.judgePairs(dataset, null)).rejects.toThrow(/no judge is open/);
    const info = await lab.openJudge(judgeSourceFromDir(judgeDir), 'clip');
    expect(info).toMatchObject({ kind: 'clip', backend: 'wasm' });
    expect(lab.judgeInfo()).toEqual(info);

    // The run's scores file as training writes it: each pair at each scored step, a summary per split.
    // Step 2's margins are the ones compared; step 1's are an earlier checkpoint's and are left out.
    const implicit = new Map(pairs.map((p, i) => [pairKey(p.image, p.negative), Math.sin(i + 1)]));
    const run = '20260101-000000-abcd';
    await root.write(`runs/${run}/run.json`, JSON.stringify({ data: dataset, model: 'tiny' }));
    const lines = [1, 2].flatMap((step) => [
      ...pairs.map((p, i) => JSON.stringify({ step, split: i % 4 === 0 ? 'held-out' : 'train', id: `${p.image}\u0000${p.negative}`, principle: p.principle, rewardW: 0, rewardL: 0, margin: step === 2 ? implicit.get(pairKey(p.image, p.negative)) : 100 + i })),
      JSON.stringify({ step, split: 'train', summary: true, accuracy: 0.5 }),
    ]);
    await root.write(`runs/${run}/scores.jsonl`, `${lines.join('\n')}\n`);

    const progress: [number, number][] = [];
    const result = await lab.judgePairs(dataset, run, (done, total) => progress.push([done, total]));
    // 4 captions and 8 negatives, then 4 images.
    expect(progress.at(-1)).toEqual([16, 16]);
    expect(result).toMatchObject({ dataset, run, step: 2, matched: pairs.length });
    expect(result.rows.length).toBe(pairs.length);

    // The judge run directly on the same images and captions gives the same scores.
    const judge = await loadJudgeFolder(judgeDir, 'clip');
    try {
      for (const row of result.rows) {
        const [x] = await judge.embedImages([await decodeImageNode(await lab.datasetImage(dataset, row.image), row.image)]);
        const [w, l] = await judge.embedTexts([row.caption, row.negative]);
        expect(row.scoreW).toBeCloseTo(judge.score(x, w), 5);
        expect(row.scoreL).toBeCloseTo(judge.score(x, l), 5);
        expect(row.margin).toBeCloseTo(row.scoreW - row.scoreL, 10);
        expect(row.implicitMargin).toBe(implicit.get(pairKey(row.image, row.negative)));
      }
    } finally {
      await judge.release();
    }
    const judgeMargins = result.rows.map((r) => r.margin);
    const implicitMargins = result.rows.map((r) => r.implicitMargin!);
    expect(result.overall).toEqual({ pairs: pairs.length, pearson: pearson(judgeMargins, implicitMargins), spearman: spearman(judgeMargins, implicitMargins) });
    for (const principle of ['attribute', 'spatial']) {
      const of = result.rows.filter((r) => r.principle === principle);
      expect(result.byPrinciple[principle]).toEqual({ pairs: of.length, pearson: pearson(of.map((r) => r.margin), of.map((r) => r.implicitMargin!)), spearman: spearman(of.map((r) => r.margin), of.map((r) => r.implicitMargin!)) });
    }

    // Kept: another view of the same dataset (without a run) embeds nothing again.
    const again: unknown[] = [];
    const alone = await lab.judgePairs(dataset, null, (...p) => again.push(p));
    expect(again).toEqual([]);
    expect(alone).toMatchObject({ run: null, step: null, matched: 0, overall: null });
    expect(alone.rows.map((r) => r.margin)).toEqual(judgeMargins);

    // Edited negatives are judged again.
    await lab.saveItems(dataset, items.map((it, i) => (i === 0 ? { ...it, negatives: it.negatives.slice(0, 1) } : it)));
    const edited = await lab.judgePairs(dataset, run, (...p) => again.push(p));
    expect(again.length).toBeGreaterThan(0);
    expect(edited.rows.length).toBe(pairs.length - 1);
  }, 120_000);

  it('scores images against their prompts', async () => {
    const png = (rgb: [number, number, number]) => new Uint8Array(discPng(16, rgb, [0, 0, 0], 5));
    const images = [
      { bytes: png([220, 30, 30]), prompt: 'a red cat' },
      { bytes: png([30, 40, 220]), prompt: 'a red cat' },
      { bytes: png([30, 40, 220]), prompt: 'a dog' },
    ];
    const scores = await lab.judgeImages(images);
    const judge = await loadJudgeFolder(judgeDir, 'clip');
    try {
      for (const [i, image] of images.entries()) {
        const [x] = await judge.embedImages([await decodeImageNode(image.bytes, 'image')]);
        const [t] = await judge.embedTexts([image.prompt]);
        expect(scores[i]).toBeCloseTo(judge.score(x, t), 5);
      }
    } finally {
      await judge.release();
    }
  }, 60_000);

  it('refuses a wrong folder (as input, the file named) and keeps the open judge; refuses a run of other data and preference data; another judge (a reward model) replaces it', async () => {
    const wrong = path.join(d.dir, 'not-a-judge');
    mkdirSync(wrong);
    writeFileSync(path.join(wrong, 'text_model.onnx'), 'not onnx');
    const missing = await lab.openJudge(judgeSourceFromDir(wrong), 'clip').catch((e: unknown) => e);
    expect(failureKind(missing)).toBe('input');
    expect((missing as Error).message).toMatch(/no vision_model\.onnx/);
    writeFileSync(path.join(wrong, 'vision_model.onnx'), 'not onnx');
    writeFileSync(path.join(wrong, 'preprocessor_config.json'), JSON.stringify({ crop_size: 8, size: 8, image_mean: [0, 0, 0], image_std: [1, 1, 1] }));
    writeFileSync(path.join(wrong, 'tokenizer.json'), JSON.stringify({ model: { type: 'BPE', vocab: { a: 0 }, merges: [] } }));
    const broken = await lab.openJudge(judgeSourceFromDir(wrong), 'clip').catch((e: unknown) => e);
    expect(failureKind(broken)).toBe('input');
    expect((broken as Error).name).toBe('JudgeModelError');
    expect((broken as Error).message).toContain(path.join(wrong, 'text_model.onnx'));
    expect(lab.judgeInfo()?.name).toBe(judgeDir);

    const other = '20260101-000000-ffff';
    await root.write(`runs/${other}/run.json`, JSON.stringify({ data: 'some-other-dataset', model: 'tiny' }));
    await expect(lab.judgePairs(dataset, other)).rejects.toThrow(/trained on dataset some-other-dataset/);
    // Preference data has no captions and negatives to judge.
    const pref = path.join(d.dir, 'pref');
    mkdirSync(pref);
    writeFileSync(path.join(pref, 'a.png'), discPng(16, [220, 30, 30], [0, 0, 0], 1));
    writeFileSync(path.join(pref, 'b.png'), discPng(16, [30, 40, 220], [0, 0, 0], 2));
    writeFileSync(path.join(pref, 'pairs.jsonl'), JSON.stringify({ prompt: 'a red circle', image_w: 'a.png', image_l: 'b.png' }));
    const dpo = await lab.importDataset(nodeSource(pref), 'pairs');
    await expect(lab.judgePairs(dpo.dataset.id, null)).rejects.toThrow(/Diffusion-DPO pairs .*: the judge scores images against their captions/);

    // Another judge replaces the open one (a reward model: exp(logit_scale) * cosine); its scores are its own.
    const rewardDir = path.join(d.dir, 'reward');
    writeFixtureFolder(rewardDir, { logitScale: Math.log(50) });
    expect(await lab.openJudge(judgeSourceFromDir(rewardDir), 'reward')).toMatchObject({ kind: 'reward', name: rewardDir });
    const image = { bytes: new Uint8Array(discPng(16, [220, 30, 30], [0, 0, 0], 5)), prompt: 'a red cat' };
    const [reward] = await lab.judgeImages([image]);
    const plain = await loadJudgeFolder(rewardDir, 'clip');
    try {
      const [x] = await plain.embedImages([await decodeImageNode(image.bytes, 'image')]);
      const [t] = await plain.embedTexts([image.prompt]);
      expect(reward).toBeCloseTo(50 * cosine(x, t), 4);
    } finally {
      await plain.release();
    }
    const rejudged: unknown[] = [];
    await lab.judgePairs(dataset, null, (...p) => rejudged.push(p));
    expect(rejudged.length).toBeGreaterThan(0); // the clip judge's kept scores are not the reward model's
    await lab.closeJudge();
    expect(lab.judgeInfo()).toBeNull();
  }, 60_000);
});
