// Training an AutoencoderKL from its weights up (the demo model's VAE): every encoder and decoder weight,
// on diffusers' DiagonalGaussianDistribution and a reconstruction + KL loss,
//
//   moments = encode(x);  mean, logvar = split(moments);  logvar = clamp(logvar, -30, 20)
//   z = mean + exp(logvar / 2) * eps                       (eps standard normal, seeded per step)
//   loss = mean((decode(z) - x)^2) + klWeight * mean(0.5 * (mean^2 + exp(logvar) - 1 - logvar))
//
// both means over every element (pixels, latent values) of the batch. The sampling and the KL run on the
// host: the latent is a 48th of the image, so one readback and one upload per step cost little next to
// the networks, and no new kernel is needed. The encoder and the decoder each record their own tape; the
// decoder's gradient at z, turned into the moments' gradient here, starts the encoder's backward.
//
// Around that the loop is the UNet trainer's: the data order (takeInOrder), per-step seeded draws, the LR
// schedule, the shared AdamW with global-norm clipping and its NaN/Inf skip, and checkpoints holding every
// weight (vae.safetensors, diffusers names), both moments and the state for an exact resume.

import type { Gpu } from '../gpu/gpu';
import { type AutoencoderKL, vaeDecode, vaeEncode, vaeParamShapes } from '../models/vae';
import { encodeStateDict } from '../models/weights';
import { mseRows, mseRowsBackward } from '../nn/ops/reduce';
import { Ctx, Tape } from '../nn/tape';
import { Tensor } from '../nn/tensor';
import { decodeMoments, encodeMoments, restoreWeights } from './checkpoint';
import { LR_SCHEDULES } from './lr-schedule';
import { AdamW, type OptimizerMoments, type UpdateSettings } from './optimizer';
import { drawRandom, epochOrder, normals, type DataCursor, takeInOrder } from './random';

/** The steps, learning rate and AdamW settings as the LoRA trainer has them (UpdateSettings), and: */
export interface VaeTrainConfig extends UpdateSettings {
  batchSize: number;
  /** Weight of the KL term against the reconstruction error (both per element). */
  klWeight: number;
  seed: number;
}

export function defaultVaeTrainConfig(): VaeTrainConfig {
  return { steps: 1000, batchSize: 4, lr: 1e-4, lrSchedule: 'constant', warmupSteps: 0, adamBeta1: 0.9, adamBeta2: 0.999, adamEps: 1e-8, weightDecay: 0, maxGradNorm: 1, klWeight: 1e-3, seed: 0 };
}

export function validateVaeTrainConfig(c: VaeTrainConfig): void {
  const bad = (m: string): never => {
    throw new Error(`VAE training config: ${m}`);
  };
  if (c === null || typeof c !== 'object') bad('not an object');
  const num = (k: keyof VaeTrainConfig) => typeof c[k] === 'number' && Number.isFinite(c[k]);
  const int = (k: keyof VaeTrainConfig, lo: number, hi: number) =>
    (!Number.isInteger(c[k]) || (c[k] as number) < lo || (c[k] as number) > hi) && bad(`${k} must be a whole number from ${lo} to ${hi}, got ${JSON.stringify(c[k])}`);
  int('steps', 1, 1e9);
  int('batchSize', 1, 4096);
  int('warmupSteps', 0, 1e9);
  int('seed', 0, Number.MAX_SAFE_INTEGER);
  if (!num('lr') || !(c.lr > 0)) bad(`lr must be > 0, got ${JSON.stringify(c.lr)}`);
  if (!LR_SCHEDULES.includes(c.lrSchedule)) bad(`lrSchedule must be one of ${LR_SCHEDULES.join(', ')}, got ${JSON.stringify(c.lrSchedule)}`);
  if (!(num('adamBeta1') && num('adamBeta2') && c.adamBeta1 >= 0 && c.adamBeta1 < 1 && c.adamBeta2 >= 0 && c.adamBeta2 < 1)) bad('Adam betas must lie in [0, 1)');
  if (!num('adamEps') || !(c.adamEps > 0)) bad(`adamEps must be > 0, got ${JSON.stringify(c.adamEps)}`);
  for (const k of ['weightDecay', 'maxGradNorm', 'klWeight'] as const) if (!num(k) || c[k] < 0) bad(`${k} must be a number >= 0, got ${JSON.stringify(c[k])}`);
}

/** Where a VAE run stands: the step counters (as the UNet trainer's) and its place in the data. */
export interface VaeTrainState extends DataCursor {
  step: number;
  appliedSteps: number;
  skipped: number[];
}

export interface VaeStepReport {
  /** 1-based. */
  step: number;
  epoch: number;
  loss: number;
  reconstruction: number;
  kl: number;
  gradNorm: number;
  lr: number;
  /** Seconds. */
  stepTime: number;
  skipped: boolean;
}

export interface VaeLoss {
  loss: number;
  reconstruction: number;
  kl: number;
  /** The gradient of `loss` for every trained weight (the caller releases them). */
  grads: Map<Tensor, Tensor>;
}

/**
 * The loss of the header on images [B, C, H, W] (values in [-1, 1]) with the latent noise `eps` (one value
 * per latent element), and its gradients: forward and backward through both halves.
 */
export async function vaeTrainingLoss(vae: AutoencoderKL, images: Tensor, eps: Float32Array, klWeight: number): Promise<VaeLoss> {
  const gpu = images.gpu;
  const encoderTape = new Tape();
  const decoderTape = new Tape();
  const owned: Tensor[] = [];
  try {
    const moments = vaeEncode(vae, images, new Ctx(gpu, encoderTape));
    owned.push(moments);
    const [b, twoL, h, w] = moments.shape;
    const latentCh = twoL / 2;
    const plane = h * w;
    const perExample = latentCh * plane;
    const n = b * perExample; // latent elements
    if (eps.length !== n) throw new Error(`vaeTrainingLoss: ${eps.length} noise values for ${n} latent elements`);
    const m = await moments.read();
    // Element i of the latent: example e, channel c, position p; its mean at channel c, its logvar at L + c.
    const meanAt = (i: number) => Math.floor(i / perExample) * 2 * perExample + (i % perExample);
    const z = new Float32Array(n);
    let kl = 0;
    for (let i = 0; i < n; i++) {
      const mu = m[meanAt(i)];
      const lv = Math.min(20, Math.max(-30, m[meanAt(i) + perExample]));
      z[i] = mu + Math.exp(0.5 * lv) * eps[i];
      kl += 0.5 * (mu * mu + Math.exp(lv) - 1 - lv);
    }
    kl /= n;
    const zT = Tensor.from(gpu, z, [b, latentCh, h, w]);
    zT.requiresGrad = true; // a leaf of the decoder's tape: its gradient continues into the encoder
    owned.push(zT);

    const recon = vaeDecode(vae, zT, {}, new Ctx(gpu, decoderTape));
    const err = mseRows(recon, images);
    owned.push(recon, err);
    const reconstruction = (await err.read()).reduce((a, v) => a + v, 0) / b;
    // mseRows is the mean per example; the mean over the batch adds 1/B.
    const dErr = Tensor.from(gpu, new Float32Array(b).fill(1 / b), [b]);
    const dRecon = mseRowsBackward(recon, images, dErr);
    owned.push(dErr, dRecon);
    const grads = decoderTape.backward(recon, dRecon);
    const dzT = grads.get(zT)!;
    grads.delete(zT);
    const dz = await dzT.read();
    dzT.release();

    // d loss / d moments: through z = mean + exp(logvar / 2) eps, and the KL term (mean over n elements).
    // The clamp passes no gradient outside [-30, 20], as torch.clamp does.
    const dm = new Float32Array(m.length);
    for (let i = 0; i < n; i++) {
      const mu = m[meanAt(i)];
      const raw = m[meanAt(i) + perExample];
      const lv = Math.min(20, Math.max(-30, raw));
      dm[meanAt(i)] = dz[i] + (klWeight * mu) / n;
      dm[meanAt(i) + perExample] = raw < -30 || raw > 20 ? 0 : dz[i] * eps[i] * 0.5 * Math.exp(0.5 * lv) + (klWeight * 0.5 * (Math.exp(lv) - 1)) / n;
    }
    const dMoments = Tensor.from(gpu, dm, moments.shape);
    owned.push(dMoments);
    for (const [p, g] of encoderTape.backward(moments, dMoments)) grads.set(p, g); // the two halves share no weight
    return { loss: reconstruction + klWeight * kl, reconstruction, kl, grads };
  } finally {
    encoderTape.dispose();
    decoderTape.dispose();
    for (const t of owned) t.release();
  }
}

export class VaeTrainer {
  readonly params: Tensor[];
  private readonly optimizer: AdamW;
  private readonly imageShape: number[];

  /**
   * `images`: each [C, H, W] with values in [-1, 1], all one size. `state` and `moments` come from a
   * checkpoint (loadVaeCheckpoint), or are fresh when omitted. The VAE's weights must be float32.
   */
  constructor(
    readonly gpu: Gpu,
    readonly vae: AutoencoderKL,
    readonly images: readonly Float32Array[],
    imageShape: readonly number[],
    readonly config: VaeTrainConfig,
    public state: VaeTrainState = { step: 0, appliedSteps: 0, epoch: 0, order: epochOrder(config.seed, 0, images.length), position: 0, skipped: [] },
    moments?: OptimizerMoments,
  ) {
    validateVaeTrainConfig(config);
    if (images.length === 0) throw new Error('VaeTrainer: no training images');
    const size = imageShape.reduce((a, v) => a * v, 1);
    if (imageShape.length !== 3 || images.some((im) => im.length !== size)) throw new Error(`VaeTrainer: every image must be [C, H, W] = [${imageShape.join(', ')}]`);
    if (state.order.length !== images.length) throw new Error(`the checkpoint's data order covers ${state.order.length} images, the data has ${images.length}; resume with the same data`);
    this.imageShape = [...imageShape];
    this.params = [...vae.trainAllWeights().values()];
    this.optimizer = new AdamW(gpu, this.params, moments);
  }

  get optimizerMoments(): OptimizerMoments {
    return this.optimizer.moments;
  }

  get done(): boolean {
    return this.state.step >= this.config.steps;
  }

  /** One optimizer step on the next batch of images. */
  async step(): Promise<VaeStepReport> {
    const c = this.config;
    const started = performance.now();
    const s = this.state.step;
    const picks = takeInOrder(this.state, c.seed, this.images.length, c.batchSize);
    const size = this.images[0].length;
    const pixels = new Float32Array(picks.length * size);
    picks.forEach((i, k) => pixels.set(this.images[i], k * size));
    const images = Tensor.from(this.gpu, pixels, [picks.length, ...this.imageShape]);
    let grads = new Map<Tensor, Tensor>();
    try {
      const [, h, w] = this.imageShape;
      const f = 2 ** (this.vae.config.block_out_channels.length - 1);
      const eps = normals(drawRandom(c.seed, 'vae-noise', s), picks.length * this.vae.config.latent_channels * Math.floor(h / f) * Math.floor(w / f));
      const result = await vaeTrainingLoss(this.vae, images, eps, c.klWeight);
      grads = result.grads;
      const { lr, normSq, skipped } = await this.optimizer.update(grads, c, this.state);
      return {
        step: this.state.step,
        epoch: this.state.epoch,
        loss: result.loss,
        reconstruction: result.reconstruction,
        kl: result.kl,
        gradNorm: Math.sqrt(normSq),
        lr,
        stepTime: (performance.now() - started) / 1000,
        skipped,
      };
    } finally {
      for (const g of grads.values()) g.release();
      images.release();
    }
  }

  /** Releases the optimizer state (the trained weights stay with the VAE). */
  release(): void {
    this.optimizer.release();
  }
}

// ---- checkpoints: vae.safetensors (every weight, float32, diffusers names: also a usable vae/ weight
// file), optimizer.safetensors (both moments, named after the weights), state.json (config and state) ----

export const VAE_CHECKPOINT_FILES = ['vae.safetensors', 'optimizer.safetensors', 'state.json'] as const;
export type VaeCheckpointFiles = Record<(typeof VAE_CHECKPOINT_FILES)[number], Uint8Array>;

export interface VaeCheckpointState {
  format: 'tpo-lab-vae-checkpoint';
  version: 1;
  savedAt: string;
  config: VaeTrainConfig;
  state: VaeTrainState;
  data: { images: number };
}

export async function saveVaeCheckpoint(trainer: VaeTrainer): Promise<VaeCheckpointFiles> {
  const weights = trainer.vae.weights.tensors;
  const state: VaeCheckpointState = {
    format: 'tpo-lab-vae-checkpoint',
    version: 1,
    savedAt: new Date().toISOString(),
    config: trainer.config,
    state: trainer.state,
    data: { images: trainer.images.length },
  };
  return {
    'vae.safetensors': await encodeStateDict(weights, 'F32', { steps: String(trainer.state.step) }),
    'optimizer.safetensors': await encodeMoments([...weights], trainer.optimizerMoments),
    'state.json': new TextEncoder().encode(`${JSON.stringify(state, null, 2)}\n`),
  };
}

/** Checks what a resumed VAE run relies on, naming the field that is wrong. */
function validateVaeCheckpointState(s: VaeCheckpointState): void {
  const bad = (what: string): never => {
    throw new Error(`state.json: ${what}; the checkpoint is damaged`);
  };
  if (s === null || typeof s !== 'object' || s.format !== 'tpo-lab-vae-checkpoint' || s.version !== 1) bad('not a TPO Lab VAE checkpoint (version 1)');
  try {
    validateVaeTrainConfig(s.config);
  } catch (e) {
    bad((e as Error).message);
  }
  const st = s.state;
  const n = s.data?.images;
  const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;
  if (!isCount(n) || n < 1) bad('data.images must be a whole number >= 1');
  if (!st || !isCount(st.step) || st.step > s.config.steps) bad(`state.step must be a whole number from 0 to ${s.config.steps}`);
  if (!isCount(st.appliedSteps) || st.appliedSteps > st.step) bad('state.appliedSteps must be a whole number up to the step');
  if (!Array.isArray(st.skipped) || st.skipped.length !== st.step - st.appliedSteps) bad('state.skipped must list every skipped step');
  // Each step takes batchSize images in order, so the step fixes the epoch, its order and the position.
  const seen = st.step * s.config.batchSize;
  const epoch = seen === 0 ? 0 : Math.floor((seen - 1) / n);
  if (st.epoch !== epoch || st.position !== seen - epoch * n) bad(`state.epoch and position must be ${epoch} and ${seen - epoch * n} after ${st.step} steps`);
  const order = epochOrder(s.config.seed, epoch, n);
  if (!Array.isArray(st.order) || st.order.length !== n || order.some((v, i) => v !== st.order[i])) bad(`state.order is not the data order of seed ${s.config.seed}, epoch ${epoch}`);
}

/**
 * Restores a VAE checkpoint onto `vae` (its weights become the saved float32 ones) and returns what a
 * VaeTrainer needs to continue exactly.
 */
export async function loadVaeCheckpoint(gpu: Gpu, vae: AutoencoderKL, files: VaeCheckpointFiles): Promise<{ saved: VaeCheckpointState; moments: OptimizerMoments }> {
  let saved: VaeCheckpointState;
  try {
    saved = JSON.parse(new TextDecoder().decode(files['state.json'])) as VaeCheckpointState;
  } catch (e) {
    throw new Error(`state.json is not valid JSON (${(e as Error).message}); the checkpoint is damaged`);
  }
  validateVaeCheckpointState(saved);
  await restoreWeights(gpu, vae.weights.tensors, files['vae.safetensors'], vaeParamShapes(vae.config), 'checkpoint/vae.safetensors');
  return { saved, moments: await decodeMoments(gpu, files['optimizer.safetensors'], [...vae.weights.tensors]) };
}
