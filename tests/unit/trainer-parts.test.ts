// The trainer's parts on their own: LR schedules, the counter-based random draws, examples and splits, and
// on the GPU (tiny model, synthetic features) the NaN guard, pause / cancel, and a checkpoint round trip.

import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseTrainerJsonl } from '../../src/data/import';
import { dirModelFiles } from '../../src/models/model-files-node';
import { loadUNet } from '../../src/models/unet';
import type { Features } from '../../src/tpo/batch';
import { loadCheckpoint, resumeCheck, saveCheckpoint } from '../../src/tpo/checkpoint';
import { ktoExamples, splitExamples, tpoExamples, type TrainExample } from '../../src/tpo/examples';
import { MemoryFeatureStore } from '../../src/tpo/features';
import { learningRate } from '../../src/tpo/lr-schedule';
import { drawRandom, epochOrder, normals } from '../../src/tpo/random';
import { createTrainerLora, defaultTrainConfig, TrainControl, Trainer } from '../../src/tpo/trainer';
import { GOLDENS } from '../helpers/goldens';
import { testGpu } from '../helpers/gpu';

describe('learning-rate schedules', () => {
  it('warms up linearly, then holds or follows a cosine to zero', () => {
    const c = { lr: 1e-3, schedule: 'constant' as const, warmupSteps: 4, totalSteps: 20 };
    expect([0, 1, 2, 3].map((s) => learningRate(c, s))).toEqual([2.5e-4, 5e-4, 7.5e-4, 1e-3]);
    expect(learningRate(c, 19)).toBe(1e-3);
    const cos = { ...c, schedule: 'cosine' as const };
    expect(learningRate(cos, 4)).toBeCloseTo(1e-3, 12);
    expect(learningRate(cos, 12)).toBeCloseTo(5e-4, 12);
    expect(learningRate(cos, 20)).toBeCloseTo(0, 12);
    for (let s = 5; s < 20; s++) expect(learningRate(cos, s)).toBeLessThan(learningRate(cos, s - 1));
  });
});

describe('random draws', () => {
  it('depend only on the seed and the draw context', () => {
    expect(normals(drawRandom(7, 'noise', 3, 0), 10)).toEqual(normals(drawRandom(7, 'noise', 3, 0), 10));
    expect(normals(drawRandom(7, 'noise', 3, 1), 10)).not.toEqual(normals(drawRandom(7, 'noise', 3, 0), 10));
    expect(epochOrder(1, 2, 50)).toEqual(epochOrder(1, 2, 50));
    expect([...epochOrder(1, 2, 50)].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(epochOrder(1, 3, 50)).not.toEqual(epochOrder(1, 2, 50));
  });

  it('are standard normal', () => {
    const x = normals(drawRandom(1, 'stats'), 200_001);
    const mean = x.reduce((a, v) => a + v, 0) / x.length;
    const variance = x.reduce((a, v) => a + (v - mean) ** 2, 0) / x.length;
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(Math.abs(variance - 1)).toBeLessThan(0.01);
    expect(x.every(Number.isFinite)).toBe(true);
  });
});

describe('examples', () => {
  const { items } = parseTrainerJsonl(
    [
      { image: 'a.png', caption: 'a cat', negatives: [{ caption: 'a dog', status: 'accepted' }, { caption: 'a cow', status: 'rejected' }, { caption: 'two cats' }] },
      { image: 'b.png', caption: 'a red car', negatives: [] },
    ]
      .map((r) => JSON.stringify(r))
      .join('\n'),
  );

  it('give one TPO pair per usable negative, and one SFT example per image', () => {
    const all = tpoExamples(items, 'tdpo');
    expect(all.map((e) => [e.w.caption, e.l.caption])).toEqual([['a cat', 'a dog'], ['a cat', 'two cats']]);
    expect(tpoExamples(items, 'tdpo', 'accepted').map((e) => e.l.caption)).toEqual(['a dog']);
    expect(tpoExamples(items, 'sft').map((e) => e.w.caption)).toEqual(['a cat', 'a red car']);
  });

  it('pair every desirable and undesirable KTO image at least once', () => {
    const ex = ktoExamples([
      { image: 'g1', caption: 'x', label: true, line: 1, extra: {} },
      { image: 'b1', caption: 'y', label: false, line: 2, extra: {} },
      { image: 'b2', caption: 'z', label: false, line: 3, extra: {} },
    ]);
    expect(ex.map((e) => [e.w.image, e.l.image])).toEqual([['g1', 'b1'], ['g1', 'b2']]);
    expect(() => ktoExamples([{ image: 'g1', caption: 'x', label: true, line: 1, extra: {} }])).toThrow(/undesirable/);
  });

  it('split by image, stably', () => {
    const ex: TrainExample[] = Array.from({ length: 40 }, (_, i) => ({ id: `${i}`, group: `img${i >> 1}`, w: { image: '', caption: '' }, l: { image: '', caption: '' } }));
    const a = splitExamples(ex, 0.25, 0);
    expect(a.heldOut.length).toBe(10);
    const heldGroups = new Set(a.heldOut.map((e) => e.group));
    expect(a.train.some((e) => heldGroups.has(e.group))).toBe(false);
    expect(splitExamples([...ex].reverse(), 0.25, 0).heldOut.map((e) => e.id).sort()).toEqual(a.heldOut.map((e) => e.id).sort());
    expect(splitExamples(ex, 0, 0).heldOut).toEqual([]);
  });
});

/** Synthetic cached features for the tiny model: 8x8 latents, 77 x 48 text states. */
function syntheticFeatures(examples: TrainExample[], poison?: string): Features {
  const store = new MemoryFeatureStore();
  const latent = new Map<string, string>();
  const text = new Map<string, string>();
  for (const e of examples) {
    for (const t of [e.w, e.l]) {
      const lk = `latent-${Buffer.from(t.image).toString('hex')}`;
      const tk = `text-${Buffer.from(t.caption).toString('hex')}`;
      latent.set(t.image, lk);
      text.set(t.caption, tk);
      const x = normals(drawRandom(5, t.image), 4 * 8 * 8);
      if (t.image === poison) x[3] = NaN;
      store.entries.set(lk, x);
      store.entries.set(tk, normals(drawRandom(6, t.caption), 77 * 48));
    }
  }
  return { store, keys: { latent, text, latentShape: [4, 8, 8], textShape: [77, 48] } };
}

const examples: TrainExample[] = ['a', 'b', 'c'].map((x) => ({ id: x, group: x, w: { image: `${x}.png`, caption: `${x} right` }, l: { image: `${x}.png`, caption: `${x} wrong` } }));

describe('Trainer on the GPU', () => {
  it('skips a step with non-finite gradients without touching weights or moments, and reports it', async () => {
    const gpu = await testGpu();
    const unet = await loadUNet(gpu, dirModelFiles(path.join(GOLDENS, 'tiny-sd15')));
    const config = { ...defaultTrainConfig('tdpo'), steps: 3, lr: 1e-3, resolution: 64, seed: 3 };
    unet.lora = createTrainerLora(gpu, unet, config);
    // Example "b" (second in this seed's order or not: every step is checked) carries a NaN latent.
    const trainer = new Trainer(gpu, unet, examples, syntheticFeatures(examples, 'b.png'), config);
    try {
      const before = await Promise.all(trainer.params.map((p) => p.read()));
      const reports = [];
      for (let i = 0; i < 3; i++) {
        const snapshot = await Promise.all(trainer.params.map((p) => p.read()));
        const r = await trainer.step();
        reports.push(r);
        const after = await Promise.all(trainer.params.map((p) => p.read()));
        if (r.skipped) after.forEach((a, j) => expect(a).toEqual(snapshot[j]));
        else expect(after.some((a, j) => a.some((v, k) => v !== snapshot[j][k]))).toBe(true);
        for (const a of after) expect(a.every(Number.isFinite)).toBe(true);
      }
      const poisoned = trainer.state.skipped.length;
      expect(poisoned).toBeGreaterThan(0);
      expect(reports.filter((r) => r.skipped).map((r) => r.step)).toEqual(trainer.state.skipped);
      expect(trainer.state.appliedSteps).toBe(3 - poisoned);
      expect(before.length).toBe(trainer.params.length);
    } finally {
      trainer.release();
      unet.lora?.release();
      unet.release();
    }
  }, 30 * 60_000);

  it('pauses and cancels between steps; a checkpoint restores weights, moments and state exactly', async () => {
    const gpu = await testGpu();
    const unet = await loadUNet(gpu, dirModelFiles(path.join(GOLDENS, 'tiny-sd15')));
    const config = { ...defaultTrainConfig('tkto'), steps: 4, lr: 1e-3, resolution: 64, seed: 9 };
    unet.lora = createTrainerLora(gpu, unet, config);
    const features = syntheticFeatures(examples);
    const trainer = new Trainer(gpu, unet, examples, features, config);
    const control = new TrainControl();
    const seen: number[] = [];
    control.pause();
    const running = trainer.run(control, (r) => {
      seen.push(r.step);
      if (r.step === 2) control.cancel();
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toEqual([]);
    control.resume();
    expect(await running).toBe('cancelled');
    expect(seen).toEqual([1, 2]);

    const files = await saveCheckpoint(trainer);
    const third = await trainer.step();
    const weights = await Promise.all(trainer.params.map((p) => p.read()));
    trainer.release();
    unet.lora?.release();
    unet.lora = null;

    const { saved, moments } = await loadCheckpoint(gpu, unet, files);
    await resumeCheck(saved, examples);
    await expect(resumeCheck(saved, examples.slice(1))).rejects.toThrow(/same data/);
    const resumed = new Trainer(gpu, unet, examples, features, saved.config, saved.state, moments);
    try {
      expect(resumed.state.step).toBe(2);
      const again = await resumed.step();
      expect(again).toEqual({ ...third, stepTime: again.stepTime });
      const w2 = await Promise.all(resumed.params.map((p) => p.read()));
      w2.forEach((w, i) => expect(w).toEqual(weights[i]));
    } finally {
      resumed.release();
      resumed.lora.release();
      unet.release();
    }
  }, 30 * 60_000);
});
