// Full-weight training (issue #16): every UNet weight as a trainable leaf of the same tape, the trainer's
// 'all' mode on the denoising loss, its checkpoints with exact resume, and the trained weights written as a
// diffusers unet/ folder that the loader reads back; then the same for the AutoencoderKL on reconstruction
// + KL. Everything runs on tiny random models (two levels of 8 and 16 channels, 8x8 latents), each test
// in well under a minute on SwiftShader.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { noiseSchedule, SD15_SCHEDULER } from '../../src/diffusion/schedule';
import type { Gpu } from '../../src/gpu/gpu';
import { dirModelFiles } from '../../src/models/model-files-node';
import { loadUNet, UNet, unetParamShapes, type UNetConfig } from '../../src/models/unet';
import { AutoencoderKL, loadVae, vaeConfig, vaeDecode, vaeEncode, vaeParamShapes } from '../../src/models/vae';
import { encodeStateDict } from '../../src/models/weights';
import { mseRows, mseRowsBackward } from '../../src/nn/ops/reduce';
import { Ctx, Tape } from '../../src/nn/tape';
import { Tensor } from '../../src/nn/tensor';
import { loadRows, rowTensors, type Features } from '../../src/tpo/batch';
import { loadWeightsCheckpoint, resumeCheck, saveCheckpoint, saveWeightsCheckpoint } from '../../src/tpo/checkpoint';
import type { TrainExample } from '../../src/tpo/examples';
import { MemoryFeatureStore } from '../../src/tpo/features';
import { AdamW } from '../../src/tpo/optimizer';
import { drawRandom, normals } from '../../src/tpo/random';
import { defaultTrainConfig, Trainer, type TrainConfig, validateTrainConfig } from '../../src/tpo/trainer';
import { defaultVaeTrainConfig, loadVaeCheckpoint, saveVaeCheckpoint, VaeTrainer, type VaeTrainConfig, vaeTrainingLoss } from '../../src/tpo/vae-trainer';
import { randn, relError } from '../helpers/check';
import { testGpu } from '../helpers/gpu';
import { randomWeights } from '../helpers/random-model';

const tmp = mkdtempSync(path.join(tmpdir(), 'full-weights-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The smallest UNet with every kind of layer: resnets with and without a shortcut, a transformer on each side, down- and upsampling. */
const CONFIG: UNetConfig = {
  in_channels: 4,
  out_channels: 4,
  block_out_channels: [8, 16],
  layers_per_block: 1,
  down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
  norm_num_groups: 4,
  norm_eps: 1e-5,
  cross_attention_dim: 8,
  attention_head_dim: 2,
  use_linear_projection: false,
};
const LATENT = [4, 8, 8];
const TEXT = [5, 8];

function randomUNet(gpu: Gpu, seed = 1): UNet {
  return new UNet(gpu, CONFIG, randomWeights(gpu, unetParamShapes(CONFIG), seed).gpu.tensors);
}

/** mean_i mseRows(eps_theta(x_t, t, c), target): the denoising loss, and the tape that recorded it when asked. */
async function denoisingLoss(gpu: Gpu, unet: UNet, inputs: Tensor[], tape: Tape | null, checkpoint = false) {
  const [xt, t, ctx, target] = inputs;
  const out = await unet.forward(new Ctx(gpu, tape), xt, t, ctx, { checkpoint });
  const err = mseRows(out, target);
  const loss = Array.from(await err.read()).reduce((a, v) => a + v, 0) / err.size;
  return { out, err, loss };
}

function batchInputs(gpu: Gpu): Tensor[] {
  const b = 2;
  return [
    Tensor.from(gpu, randn(b * 4 * 64, 11), [b, ...LATENT]),
    Tensor.from(gpu, [37, 811], [b]),
    Tensor.from(gpu, randn(b * 5 * 8, 12), [b, ...TEXT]),
    Tensor.from(gpu, randn(b * 4 * 64, 13), [b, ...LATENT]),
  ];
}

describe('UNet weight gradients', () => {
  it('match finite differences for every kind of layer, with and without checkpointing', { timeout: 300_000 }, async () => {
    const gpu = await testGpu();
    const unet = randomUNet(gpu);
    const inputs = batchInputs(gpu);
    const weights = unet.trainAllWeights();
    const b = inputs[0].shape[0];
    const gradients = async (checkpoint: boolean) => {
      const tape = new Tape();
      const { out, err } = await denoisingLoss(gpu, unet, inputs, tape, checkpoint);
      const dErr = Tensor.from(gpu, new Float32Array(b).fill(1 / b), [b]);
      const dOut = mseRowsBackward(out, inputs[3], dErr);
      const grads = tape.backward(out, dOut);
      const host = new Map<string, Float32Array>();
      for (const [name, w] of weights) host.set(name, await grads.get(w)!.read());
      expect(grads.size, 'every weight has a gradient').toBe(weights.size);
      for (const g of grads.values()) g.release();
      tape.dispose();
      for (const x of [out, err, dErr, dOut]) x.release();
      return host;
    };
    const plain = await gradients(false);
    const recomputed = await gradients(true);
    for (const [name, g] of plain) {
      expect(g.every(Number.isFinite), name).toBe(true);
      expect(relError(recomputed.get(name)!, g), `${name}: checkpointing changes the gradient`).toBeLessThanOrEqual(1e-5);
    }

    // Directional finite differences in float32: (L(w + h d) - L(w - h d)) / 2h against <grad, d>, for a
    // random direction d over the whole tensor (one pair of forwards per weight, and a signal far above
    // float32's rounding of the loss).
    const probe = [
      'conv_in.weight', // conv 3x3
      'time_embedding.linear_1.weight', // linear
      'down_blocks.0.resnets.0.norm1.weight', // group norm gamma
      'down_blocks.0.resnets.0.norm2.bias', // group norm beta
      'down_blocks.0.attentions.0.proj_in.weight', // 1x1 conv, as a matrix
      'down_blocks.0.attentions.0.transformer_blocks.0.norm1.weight', // layer norm gamma
      'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight', // self-attention
      'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight', // cross-attention
      'down_blocks.0.downsamplers.0.conv.weight', // stride 2
      'up_blocks.0.resnets.0.conv_shortcut.weight',
      'up_blocks.1.attentions.0.proj_out.bias', // bias over channels
      'conv_out.weight',
    ];
    const errors: string[] = [];
    for (const [k, name] of probe.entries()) {
      const w = weights.get(name)!;
      const original = await w.read();
      const d = randn(w.size, 100 + k);
      const h = 1e-2 * Math.sqrt(original.reduce((a, v) => a + v * v, 0) / w.size + 1e-2);
      const lossAt = async (sign: number) => {
        gpu.write(w.buffer, original.map((v, i) => v + sign * h * d[i]));
        const { out, err, loss } = await denoisingLoss(gpu, unet, inputs, null);
        out.release();
        err.release();
        return loss;
      };
      const numeric = ((await lossAt(1)) - (await lossAt(-1))) / (2 * h);
      gpu.write(w.buffer, original);
      const g = plain.get(name)!;
      const analytic = g.reduce((a, v, i) => a + v * d[i], 0);
      const rel = Math.abs(numeric - analytic) / Math.max(Math.abs(analytic), 1e-12);
      errors.push(`${name}: ${analytic.toExponential(3)} vs ${numeric.toExponential(3)} (${rel.toExponential(1)})`);
      expect(rel, errors[errors.length - 1]).toBeLessThanOrEqual(2e-2);
    }
    console.log(errors.join('\n'));
    for (const x of inputs) x.release();
    unet.release();
  });
});

/** Synthetic cached features: 4 examples with their own latents and text states. */
function features(examples: TrainExample[]): Features {
  const store = new MemoryFeatureStore();
  const latent = new Map<string, string>();
  const text = new Map<string, string>();
  for (const e of examples) {
    for (const t of [e.w, e.l]) {
      latent.set(t.image, `latent ${t.image}`);
      text.set(t.caption, `text ${t.caption}`);
      store.entries.set(`latent ${t.image}`, normals(drawRandom(5, t.image), 4 * 64));
      store.entries.set(`text ${t.caption}`, normals(drawRandom(6, t.caption), 5 * 8));
    }
  }
  return { store, keys: { latent, text, latentShape: LATENT, textShape: TEXT } };
}

const examples: TrainExample[] = ['a', 'b', 'c', 'd'].map((x) => ({ id: x, group: x, w: { image: `${x}.png`, caption: `${x} caption` }, l: { image: `${x}.png`, caption: `${x} caption` } }));
const data = features(examples);

const fullConfig = (over: Partial<TrainConfig> = {}): TrainConfig => ({
  ...defaultTrainConfig('sft'),
  trainable: 'all',
  resolution: 64,
  batchSize: 4,
  steps: 4,
  lr: 3e-3,
  weightDecay: 0,
  maxGradNorm: 0,
  seed: 7,
  gradientCheckpointing: false,
  ...over,
});

describe("Trainer with trainable: 'all'", () => {
  it('accepts only the denoising loss', () => {
    expect(() => validateTrainConfig(fullConfig({ method: 'tdpo' }))).toThrow(/denoising loss/);
    expect(() => validateTrainConfig({ ...fullConfig(), trainable: 'some' as 'all' })).toThrow(/trainable/);
    validateTrainConfig(fullConfig());
  });

  it('a v_prediction model regresses v = sqrt(abar) eps - sqrt(1 - abar) x0; an epsilon model the noise itself', async () => {
    const gpu = await testGpu();
    const rows = [examples[0].w, examples[1].w];
    const t = [20, 950];
    const eps = normals(drawRandom(9, 'target'), 2 * 4 * 64);
    const { x0 } = await loadRows(data, rows);
    for (const prediction of ['epsilon', 'v_prediction'] as const) {
      const schedule = noiseSchedule({ ...SD15_SCHEDULER, prediction_type: prediction });
      const inputs = await rowTensors(gpu, data, rows, t, eps, schedule);
      const target = await inputs.target.read();
      inputs.release();
      const want = eps.map((e, i) => {
        if (prediction === 'epsilon') return e;
        const a = schedule.abar[t[Math.floor(i / 256)]];
        return Math.sqrt(a) * e - Math.sqrt(1 - a) * x0[i];
      });
      expect(Math.max(...target.map((v, i) => Math.abs(v - want[i]))), prediction).toBeLessThan(1e-5);
    }
  });

  it('overfits a fixed batch: 6 AdamW steps on every weight cut its denoising loss by more than half', { timeout: 300_000 }, async () => {
    // The trainer draws fresh noise every step (and learns slowly from it, as diffusion training does); a
    // batch that never changes shows the optimisation itself: the same tape and AdamW the trainer runs.
    const gpu = await testGpu();
    const unet = randomUNet(gpu, 2);
    const fixed = await rowTensors(gpu, data, [examples[0].w, examples[1].w], [300, 700], normals(drawRandom(8, 'fixed'), 2 * 4 * 64), noiseSchedule());
    const weights = [...unet.trainAllWeights().values()];
    const optimizer = new AdamW(gpu, weights);
    const losses: number[] = [];
    try {
      for (let step = 1; step <= 6; step++) {
        const tape = new Tape();
        const { out, err, loss } = await denoisingLoss(gpu, unet, [fixed.xt, fixed.timesteps, fixed.ctx, fixed.target], tape);
        losses.push(loss);
        const dErr = Tensor.from(gpu, [0.5, 0.5], [2]);
        const dOut = mseRowsBackward(out, fixed.target, dErr);
        const grads = tape.backward(out, dOut);
        const normSq = await optimizer.step(grads, step, { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
        expect(Number.isFinite(normSq)).toBe(true);
        for (const g of grads.values()) g.release();
        tape.dispose();
        for (const x of [out, err, dErr, dOut]) x.release();
      }
      const { out, err, loss } = await denoisingLoss(gpu, unet, [fixed.xt, fixed.timesteps, fixed.ctx, fixed.target], null);
      out.release();
      err.release();
      console.log(`fixed-batch loss by step: ${[...losses, loss].map((l) => l.toFixed(4)).join(' ')}`);
      expect(loss, `loss ${losses[0]} -> ${loss}`).toBeLessThan(0.5 * losses[0]);
    } finally {
      optimizer.release();
      fixed.release();
      unet.release();
    }
  });

  it('resumes exactly: k steps, a checkpoint, and the rest equal an uninterrupted run (accumulating, checkpointed blocks)', { timeout: 300_000 }, async () => {
    const gpu = await testGpu();
    const config = fullConfig({ steps: 3, batchSize: 2, gradAccum: 2, gradientCheckpointing: true, weightDecay: 1e-2, maxGradNorm: 1 });
    const straight = randomUNet(gpu, 3);
    const t1 = new Trainer(gpu, straight, examples, data, config);
    const r1 = [await t1.step()];
    const inUse = gpu.pool.bytesInUse;
    while (!t1.done) r1.push(await t1.step());
    expect(gpu.pool.bytesInUse, 'a step frees everything it allocated').toBe(inUse);
    const want = new Map<string, Float32Array>();
    for (const [name, w] of straight.weights) want.set(name, await w.read());
    t1.release();
    straight.release();

    const first = randomUNet(gpu, 3);
    const t2 = new Trainer(gpu, first, examples, data, config);
    const r2 = [await t2.step()];
    await expect(saveCheckpoint(t2)).rejects.toThrow(/all weights/);
    const files = await saveWeightsCheckpoint(t2);
    t2.release();
    first.release();

    // A fresh UNet with other weights: the checkpoint must bring back every one.
    const resumedUNet = randomUNet(gpu, 99);
    const { saved, moments } = await loadWeightsCheckpoint(gpu, resumedUNet, files);
    await resumeCheck(saved, examples);
    const t3 = new Trainer(gpu, resumedUNet, examples, data, saved.config, saved.state, moments);
    try {
      expect(t3.state.step).toBe(1);
      while (!t3.done) r2.push(await t3.step());
      expect(r2.map((r) => r.loss)).toEqual(r1.map((r) => r.loss));
      for (const [name, w] of resumedUNet.weights) expect(await w.read(), name).toEqual(want.get(name));
    } finally {
      t3.release();
      resumedUNet.release();
    }
  });

  it('writes trained weights as a diffusers unet/ folder that loadUNet reads back', { timeout: 300_000 }, async () => {
    const gpu = await testGpu();
    const unet = randomUNet(gpu, 4);
    const trainer = new Trainer(gpu, unet, examples, data, fullConfig({ steps: 1 }));
    try {
      await trainer.step();
      const folder = path.join(tmp, 'model');
      mkdirSync(path.join(folder, 'unet'), { recursive: true });
      writeFileSync(path.join(folder, 'unet', 'config.json'), JSON.stringify({ _class_name: 'UNet2DConditionModel', ...CONFIG }));
      writeFileSync(path.join(folder, 'unet', 'diffusion_pytorch_model.safetensors'), await encodeStateDict(unet.weights));
      const files = dirModelFiles(folder);
      const loaded = await loadUNet(gpu, files, { halfWeights: false });
      await files.close?.();
      try {
        expect([...loaded.weights.keys()]).toEqual([...unet.weights.keys()]);
        for (const [name, w] of unet.weights) expect(await loaded.weights.get(name)!.read(), name).toEqual(await w.read());
      } finally {
        loaded.release();
      }
    } finally {
      trainer.release();
      unet.release();
    }
  });
});

// ---- the AutoencoderKL: a tiny random one (two levels of 8 and 16 channels, the mid-block attention,
// quant convs), 16x16 images, 8x8 latents ----

const VAE_CONFIG = vaeConfig({ block_out_channels: [8, 16], layers_per_block: 1, norm_num_groups: 4, latent_channels: 4 });
const randomVae = (gpu: Gpu, seed = 1) => new AutoencoderKL(VAE_CONFIG, randomWeights(gpu, vaeParamShapes(VAE_CONFIG), seed).gpu);

/** A 16x16 RGB image in [-1, 1]: a bright disc on a dark ground, its colours from k. */
function shapeImage(k: number): Float32Array {
  const out = new Float32Array(3 * 256);
  for (let y = 0; y < 16; y++) {
    for (let x = 0; x < 16; x++) {
      const inside = (x - 7.5 - k) ** 2 + (y - 7.5) ** 2 < 20;
      for (let c = 0; c < 3; c++) out[c * 256 + y * 16 + x] = inside ? [0.9, -0.2, 0.5][(c + k) % 3] : -0.8;
    }
  }
  return out;
}

/** The loss of vae-trainer.ts written out again, forward only, with the KL in float64 on the host. */
async function vaeLossForward(vae: AutoencoderKL, images: Tensor, eps: Float32Array, klWeight: number): Promise<number> {
  const moments = vaeEncode(vae, images);
  const m = await moments.read();
  const [b, twoL, h, w] = moments.shape;
  moments.release();
  const per = (twoL / 2) * h * w;
  const z = new Float32Array(b * per);
  let kl = 0;
  for (let e = 0; e < b; e++) {
    for (let j = 0; j < per; j++) {
      const mu = m[e * 2 * per + j];
      const lv = Math.min(20, Math.max(-30, m[e * 2 * per + per + j]));
      z[e * per + j] = mu + Math.exp(lv / 2) * eps[e * per + j];
      kl += 0.5 * (mu * mu + Math.exp(lv) - 1 - lv);
    }
  }
  const zT = Tensor.from(vae.gpu, z, [b, twoL / 2, h, w]);
  const recon = vaeDecode(vae, zT);
  const r = await recon.read();
  const x = await images.read();
  zT.release();
  recon.release();
  const mse = r.reduce((a, v, i) => a + (v - x[i]) ** 2, 0) / r.length;
  return mse + (klWeight * kl) / z.length;
}

describe('AutoencoderKL training', () => {
  it('gives weight gradients that match finite differences, encoder and decoder', { timeout: 300_000 }, async () => {
    const gpu = await testGpu();
    const vae = randomVae(gpu);
    const weights = vae.trainAllWeights();
    const images = Tensor.from(gpu, [...shapeImage(0), ...shapeImage(2)], [2, 3, 16, 16]);
    const eps = normals(drawRandom(3, 'vae eps'), 2 * 4 * 64);
    const klWeight = 0.5;
    const { loss, grads } = await vaeTrainingLoss(vae, images, eps, klWeight);
    expect(grads.size, 'every weight has a gradient').toBe(weights.size);
    const host = new Map<string, Float32Array>();
    for (const [name, t] of weights) host.set(name, await grads.get(t)!.read());
    for (const g of grads.values()) g.release();
    expect(Math.abs(loss - (await vaeLossForward(vae, images, eps, klWeight))) / loss, 'the loss as written out').toBeLessThan(1e-5);

    const probe = [
      'encoder.conv_in.weight',
      'encoder.down_blocks.0.resnets.0.norm1.weight', // group norm gamma
      'encoder.down_blocks.0.downsamplers.0.conv.weight', // stride 2, padded below and right
      'encoder.down_blocks.1.resnets.0.conv_shortcut.bias', // conv bias
      'encoder.mid_block.attentions.0.group_norm.bias',
      'encoder.mid_block.attentions.0.to_q.weight', // the materialised attention
      'encoder.mid_block.attentions.0.to_v.bias',
      'quant_conv.weight', // mean and logvar: the sampling and the KL
      'post_quant_conv.bias',
      'decoder.mid_block.attentions.0.to_out.0.weight',
      'decoder.up_blocks.0.upsamplers.0.conv.weight',
      'decoder.up_blocks.1.resnets.0.conv_shortcut.weight',
    ];
    const lines: string[] = [];
    for (const [k, name] of probe.entries()) {
      const w = weights.get(name)!;
      const original = await w.read();
      const d = randn(w.size, 200 + k);
      const h = 3e-2 * Math.sqrt(original.reduce((a, v) => a + v * v, 0) / w.size + 1e-2);
      const at = async (sign: number) => {
        gpu.write(w.buffer, original.map((v, i) => v + sign * h * d[i]));
        return vaeLossForward(vae, images, eps, klWeight);
      };
      const numeric = ((await at(1)) - (await at(-1))) / (2 * h);
      gpu.write(w.buffer, original);
      const analytic = host.get(name)!.reduce((a, v, i) => a + v * d[i], 0);
      const rel = Math.abs(numeric - analytic) / Math.max(Math.abs(analytic), 1e-12);
      lines.push(`${name}: ${analytic.toExponential(3)} vs ${numeric.toExponential(3)} (${rel.toExponential(1)})`);
      expect(rel, lines[lines.length - 1]).toBeLessThanOrEqual(2e-2);
    }
    console.log(lines.join('\n'));
    images.release();
    vae.release();
  });

  const vaeConfigFor = (over: Partial<VaeTrainConfig> = {}): VaeTrainConfig => ({ ...defaultVaeTrainConfig(), batchSize: 2, lr: 1e-2, klWeight: 1e-3, seed: 5, ...over });
  const shapes = [0, 1, 2].map(shapeImage);

  it('reconstruction + KL falls over a few steps', { timeout: 300_000 }, async () => {
    const gpu = await testGpu();
    const vae = randomVae(gpu, 2);
    const trainer = new VaeTrainer(gpu, vae, shapes.slice(0, 2), [3, 16, 16], vaeConfigFor({ steps: 8 }));
    try {
      const reports = [];
      while (!trainer.done) reports.push(await trainer.step());
      console.log(`VAE loss by step: ${reports.map((r) => `${r.loss.toFixed(4)} (kl ${r.kl.toFixed(3)})`).join(' ')}`);
      expect(reports.every((r) => !r.skipped && Number.isFinite(r.loss))).toBe(true);
      expect(reports[7].loss).toBeLessThan(0.5 * reports[0].loss);
    } finally {
      trainer.release();
      vae.release();
    }
  });

  it('resumes exactly from a checkpoint, and its weights load as a diffusers vae/ folder', { timeout: 300_000 }, async () => {
    const gpu = await testGpu();
    const config = vaeConfigFor({ steps: 3, weightDecay: 1e-2 });
    const straight = randomVae(gpu, 3);
    const t1 = new VaeTrainer(gpu, straight, shapes, [3, 16, 16], config);
    const r1 = [(await t1.step()).loss];
    const inUse = gpu.pool.bytesInUse;
    while (!t1.done) r1.push((await t1.step()).loss);
    expect(gpu.pool.bytesInUse, 'a step frees everything it allocated').toBe(inUse);
    const want = new Map<string, Float32Array>();
    for (const [name, w] of straight.weights.tensors) want.set(name, await w.read());
    t1.release();
    straight.release();

    const first = randomVae(gpu, 3);
    const t2 = new VaeTrainer(gpu, first, shapes, [3, 16, 16], config);
    const r2 = [(await t2.step()).loss];
    const files = await saveVaeCheckpoint(t2);
    t2.release();
    first.release();
    const resumedVae = randomVae(gpu, 98);
    const { saved, moments } = await loadVaeCheckpoint(gpu, resumedVae, files);
    const t3 = new VaeTrainer(gpu, resumedVae, shapes, [3, 16, 16], saved.config, saved.state, moments);
    try {
      while (!t3.done) r2.push((await t3.step()).loss);
      expect(r2).toEqual(r1);
      for (const [name, w] of resumedVae.weights.tensors) expect(await w.read(), name).toEqual(want.get(name));

      const folder = path.join(tmp, 'vae-model');
      mkdirSync(path.join(folder, 'vae'), { recursive: true });
      writeFileSync(path.join(folder, 'vae', 'config.json'), JSON.stringify({ _class_name: 'AutoencoderKL', ...VAE_CONFIG }));
      writeFileSync(path.join(folder, 'vae', 'diffusion_pytorch_model.safetensors'), await encodeStateDict(resumedVae.weights.tensors));
      const modelFiles = dirModelFiles(folder);
      const loaded = await loadVae(gpu, modelFiles);
      await modelFiles.close?.();
      for (const [name, w] of resumedVae.weights.tensors) expect(await loaded.weights.get(name).read(), name).toEqual(await w.read());
      loaded.release();
    } finally {
      t3.release();
      resumedVae.release();
    }
  });
});
