// The TPO trainer: one step = gradAccum micro-batches of B examples, each a reference forward (LoRA off,
// no tape), a policy forward with a tape, the loss kernel, and a backward into the LoRA matrices only;
// then one AdamW update with global-norm clipping. A step whose gradients are not finite is skipped by
// the AdamW kernel itself (weights and moments untouched) and reported.
// With `trainable: 'all'` the same loop trains every UNet weight on the plain denoising loss instead (to
// build a model from a seed): no LoRA, no reference model (it would be the policy itself), and only the
// matched rows.
// Runs the same in the browser worker and in Node: data comes in as examples plus a feature store,
// nothing here touches a file.

import type { Gpu } from '../gpu/gpu';
import { noiseSchedule, type NoiseSchedule, SD15_SCHEDULER, type SchedulerConfig } from '../diffusion/schedule';
import { checkResolution } from '../data/pixels';
import { createLora, DEFAULT_TARGETS, loraTargets, type Lora, OPTIONAL_TARGETS } from '../models/lora';
import { type UNet } from '../models/unet';
import { mseRows, mseRowsBackward, mseRowsDiff } from '../nn/ops/reduce';
import { accumulate, Ctx, Tape } from '../nn/tape';
import { Tensor } from '../nn/tensor';
import { batchTensors, drawNoise, rowTensors, type Features } from './batch';
import type { TermRef, TrainExample } from './examples';
import { LR_SCHEDULES, type LrSchedule } from './lr-schedule';
import { defaultLossConfig, parseMetrics, type StepMetrics, tpoLoss } from './losses';
import { LOSS_METHODS, type LossMethod } from './methods';
import { AdamW, type OptimizerMoments } from './optimizer';
import { drawRandom, epochOrder, takeInOrder } from './random';

export interface TrainConfig {
  method: LossMethod;
  beta: number;
  /** Negative-term clip in logit units; null turns it off. */
  kappa: number | null;
  lambdaD: number;
  lambdaU: number;
  /** Optimizer steps. */
  steps: number;
  batchSize: number;
  gradAccum: number;
  lr: number;
  lrSchedule: LrSchedule;
  warmupSteps: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEps: number;
  weightDecay: number;
  /** Global gradient-norm clip; 0 turns it off. */
  maxGradNorm: number;
  rank: number;
  alpha: number;
  targets: string[];
  seed: number;
  tMin: number;
  tMax: number;
  resolution: number;
  /** Recompute each block in the backward instead of keeping its activations (less memory, ~30% slower). */
  gradientCheckpointing: boolean;
  /**
   * What trains: a LoRA on the frozen UNet (absent or 'lora'), or every UNet weight ('all', method 'sft':
   * the denoising loss; the rank, alpha and targets are then unused).
   */
  trainable?: 'lora' | 'all';
}

/** The spec's defaults for a method. */
export function defaultTrainConfig(method: LossMethod = 'tdpo'): TrainConfig {
  const loss = defaultLossConfig(method);
  return {
    method,
    beta: loss.beta,
    kappa: loss.kappa,
    lambdaD: loss.lambdaD,
    lambdaU: loss.lambdaU,
    steps: 1000,
    batchSize: 1,
    gradAccum: 1,
    lr: 1e-4,
    lrSchedule: 'constant',
    warmupSteps: 0,
    adamBeta1: 0.9,
    adamBeta2: 0.999,
    adamEps: 1e-8,
    weightDecay: 1e-2,
    maxGradNorm: 1,
    rank: 8,
    alpha: 8,
    targets: [...DEFAULT_TARGETS],
    seed: 0,
    tMin: 0,
    tMax: 999,
    resolution: 512,
    gradientCheckpointing: true,
  };
}

/**
 * Checks a config and says what is wrong with it. Types are checked too: a config also comes back from a
 * checkpoint's state.json, which may have been edited or damaged.
 */
export function validateTrainConfig(c: TrainConfig): void {
  const bad = (m: string) => {
    throw new Error(`training config: ${m}`);
  };
  if (c === null || typeof c !== 'object') bad('not an object');
  const num = (k: keyof TrainConfig) => typeof c[k] === 'number' && Number.isFinite(c[k]);
  const int = (k: keyof TrainConfig, lo: number, hi: number) =>
    (!Number.isInteger(c[k]) || (c[k] as number) < lo || (c[k] as number) > hi) && bad(`${k} must be a whole number from ${lo} to ${hi}, got ${JSON.stringify(c[k])}`);
  if (!LOSS_METHODS.includes(c.method)) bad(`method must be one of ${LOSS_METHODS.join(', ')}, got ${JSON.stringify(c.method)}`);
  int('steps', 1, 1e9);
  int('batchSize', 1, 4096);
  int('gradAccum', 1, 4096);
  int('rank', 1, 4096);
  int('seed', 0, Number.MAX_SAFE_INTEGER);
  if (!num('lr') || !(c.lr > 0)) bad(`lr must be > 0, got ${JSON.stringify(c.lr)}`);
  if (!LR_SCHEDULES.includes(c.lrSchedule)) bad(`lrSchedule must be one of ${LR_SCHEDULES.join(', ')}, got ${JSON.stringify(c.lrSchedule)}`);
  if (!num('beta') || !(c.beta > 0)) bad(`beta must be > 0, got ${JSON.stringify(c.beta)}`);
  if (!num('alpha') || !(c.alpha > 0)) bad(`alpha must be > 0, got ${JSON.stringify(c.alpha)}`);
  if (c.kappa !== null && !num('kappa')) bad(`kappa must be a number or null, got ${JSON.stringify(c.kappa)}`);
  for (const k of ['lambdaD', 'lambdaU', 'weightDecay'] as const) if (!num(k) || c[k] < 0) bad(`${k} must be a number >= 0, got ${JSON.stringify(c[k])}`);
  if (!Number.isInteger(c.warmupSteps) || c.warmupSteps < 0) bad(`warmupSteps must be >= 0, got ${JSON.stringify(c.warmupSteps)}`);
  if (!(c.tMin >= 0 && c.tMax >= c.tMin && c.tMax <= 999 && Number.isInteger(c.tMin) && Number.isInteger(c.tMax))) bad(`timestep range ${c.tMin}..${c.tMax} must lie in 0..999`);
  if (!(num('adamBeta1') && num('adamBeta2') && c.adamBeta1 >= 0 && c.adamBeta1 < 1 && c.adamBeta2 >= 0 && c.adamBeta2 < 1)) bad('Adam betas must lie in [0, 1)');
  if (!num('adamEps') || !(c.adamEps > 0)) bad(`adamEps must be > 0, got ${JSON.stringify(c.adamEps)}`);
  if (!num('maxGradNorm') || !(c.maxGradNorm >= 0)) bad(`maxGradNorm must be >= 0, got ${JSON.stringify(c.maxGradNorm)}`);
  if (!Array.isArray(c.targets) || c.targets.length === 0) bad('no LoRA targets');
  const known: readonly string[] = [...DEFAULT_TARGETS, ...OPTIONAL_TARGETS];
  for (const t of c.targets) if (!known.includes(t)) bad(`unknown LoRA target ${JSON.stringify(t)} (use ${known.join(', ')})`);
  if (c.trainable !== undefined && c.trainable !== 'lora' && c.trainable !== 'all') bad(`trainable must be lora or all, got ${JSON.stringify(c.trainable)}`);
  // Every preference method compares with a reference model, which is the frozen UNet with its LoRA off:
  // with every weight training there is none, so only the plain denoising loss applies.
  if (c.trainable === 'all' && c.method !== 'sft') bad(`training all weights uses the denoising loss (method sft), got ${c.method}`);
  if (typeof c.gradientCheckpointing !== 'boolean') bad(`gradientCheckpointing must be true or false, got ${JSON.stringify(c.gradientCheckpointing)}`);
  try {
    checkResolution(c.resolution);
  } catch (e) {
    bad((e as Error).message);
  }
}

/** Where the data stands: what a checkpoint needs, besides weights and moments, to continue exactly. */
export interface TrainState {
  /** Optimizer steps taken, skipped ones included (the LR schedule and the draws follow this). */
  step: number;
  /** Steps that updated the weights (AdamW's bias correction follows this). */
  appliedSteps: number;
  epoch: number;
  /** The current epoch's example order and the next position in it. */
  order: number[];
  position: number;
  /** Steps skipped for non-finite gradients (1-based). */
  skipped: number[];
}

export interface StepReport {
  /** 1-based. */
  step: number;
  epoch: number;
  loss: number;
  accuracy: number;
  meanMargin: number;
  errPolicyW: number;
  errRefW: number;
  errPolicyL: number;
  errRefL: number;
  clipFraction: number;
  /** TKTO / KTO reference point z. */
  tktoZ?: number;
  gradNorm: number;
  lr: number;
  /** Seconds. */
  stepTime: number;
  skipped: boolean;
}

export type { OptimizerMoments } from './optimizer';

export class Trainer {
  /** The training schedule of the model: abar per timestep and what its UNet predicts (its scheduler config). */
  readonly schedule: NoiseSchedule;
  readonly params: Tensor[];
  /** Every UNet weight trains (config.trainable 'all'), not a LoRA. */
  readonly allWeights: boolean;
  private readonly optimizer: AdamW;

  /**
   * `unet.lora` must be set (see createTrainerLora) to train a LoRA; to train all weights it must not be,
   * and the UNet's weights must be float32. `state` and `moments` come from a checkpoint, or are fresh
   * when omitted.
   */
  constructor(
    readonly gpu: Gpu,
    readonly unet: UNet,
    readonly examples: readonly TrainExample[],
    readonly features: Features,
    readonly config: TrainConfig,
    public state: TrainState = { step: 0, appliedSteps: 0, epoch: 0, order: epochOrder(config.seed, 0, examples.length), position: 0, skipped: [] },
    moments?: OptimizerMoments,
    scheduler: SchedulerConfig = SD15_SCHEDULER,
  ) {
    validateTrainConfig(config);
    this.allWeights = config.trainable === 'all';
    if (this.allWeights && unet.lora) throw new Error('Trainer: training all weights, but the UNet carries a LoRA');
    if (!this.allWeights && !unet.lora) throw new Error('Trainer: the UNet has no LoRA to train');
    if (examples.length === 0) throw new Error('Trainer: no training examples');
    if (state.order.length !== examples.length) {
      throw new Error(`the checkpoint's data order covers ${state.order.length} examples, the data has ${examples.length}; resume with the same data`);
    }
    this.schedule = noiseSchedule(scheduler);
    this.params = this.allWeights ? [...unet.trainAllWeights().values()] : unet.lora!.params();
    this.optimizer = new AdamW(gpu, this.params, moments);
  }

  get lora(): Lora {
    return this.unet.lora!;
  }

  get optimizerMoments(): OptimizerMoments {
    return this.optimizer.moments;
  }

  get done(): boolean {
    return this.state.step >= this.config.steps;
  }

  /** The next B examples in data order, moving to a new epoch (new order) when one runs out. */
  private nextExamples(): TrainExample[] {
    return takeInOrder(this.state, this.config.seed, this.examples.length, this.config.batchSize).map((i) => this.examples[i]);
  }

  /** One optimizer step. */
  async step(): Promise<StepReport> {
    const c = this.config;
    const started = performance.now();
    const s = this.state.step;
    const grads = new Map<Tensor, Tensor>();
    const metrics: StepMetrics[] = [];
    try {
      for (let k = 0; k < c.gradAccum; k++) {
        const batch = this.nextExamples();
        const { t, eps } = drawNoise(drawRandom(c.seed, 'noise', s, k), batch.length, this.features.keys.latentShape, c.tMin, c.tMax);
        if (this.allWeights) {
          metrics.push(await this.denoisingMicroBatch(batch.map((e) => e.w), t, eps, grads));
        } else {
          const rows: TermRef[] = [...batch.map((e) => e.w), ...batch.map((e) => e.l)];
          metrics.push(await this.microBatch(rows, t, eps, grads));
        }
      }
      this.gpu.pool.phase('loraGrads'); // a parameter without a gradient gets a zero one
      const { lr, normSq, skipped } = await this.optimizer.update(grads, c, this.state);
      const mean = (f: (m: (typeof metrics)[number]) => number) => metrics.reduce((a, m) => a + f(m), 0) / metrics.length;
      const kto = c.method === 'tkto' || c.method === 'kto';
      return {
        step: this.state.step,
        epoch: this.state.epoch,
        loss: mean((m) => m.loss),
        accuracy: mean((m) => m.accuracy),
        meanMargin: mean((m) => m.meanMargin),
        errPolicyW: mean((m) => m.errPolicyW),
        errRefW: mean((m) => m.errRefW),
        errPolicyL: mean((m) => m.errPolicyL),
        errRefL: mean((m) => m.errRefL),
        clipFraction: mean((m) => m.clipFraction),
        ...(kto ? { tktoZ: mean((m) => m.tktoZ) } : {}),
        gradNorm: Math.sqrt(normSq),
        lr,
        stepTime: (performance.now() - started) / 1000,
        skipped,
      };
    } finally {
      for (const g of grads.values()) g.release();
      this.gpu.pool.phase('');
    }
  }

  /** The micro-batch's parameter gradients: counted as such by the memory plan, then added into `grads`. */
  private addGradients(grads: Map<Tensor, Tensor>, micro: Map<Tensor, Tensor>): void {
    for (const [p, g] of micro) {
      this.gpu.pool.retag(g.buffer, 'loraGrads');
      accumulate(grads, p, g);
    }
  }

  /** Forward and backward of one micro-batch; its LoRA gradients are added into `grads`. */
  private async microBatch(rows: TermRef[], t: number[], eps: Float32Array, grads: Map<Tensor, Tensor>) {
    const c = this.config;
    const { gpu, unet } = this;
    // The pool's phases name what the memory plan (models/memory-plan.ts) counts; they cost nothing here.
    gpu.pool.phase('batchInputs');
    const inputs = await batchTensors(gpu, this.features, rows, t, eps, this.schedule);
    const tape = new Tape();
    const owned: Tensor[] = [];
    try {
      gpu.pool.phase('referenceForward');
      unet.loraEnabled = false;
      const epsRef = await unet.forward(new Ctx(gpu), inputs.xt, inputs.timesteps, inputs.ctx);
      owned.push(epsRef);
      unet.loraEnabled = true;
      gpu.pool.phase('activationsKept');
      const epsPolicy = await unet.forward(new Ctx(gpu, tape), inputs.xt, inputs.timesteps, inputs.ctx, { checkpoint: c.gradientCheckpointing });
      gpu.pool.phase('backwardGradients');
      const errPolicy = mseRows(epsPolicy, inputs.target);
      const errDiff = mseRowsDiff(epsPolicy, epsRef, inputs.target);
      owned.push(epsPolicy, errPolicy, errDiff);
      const loss = tpoLoss(gpu, errPolicy, errDiff, { method: c.method, beta: c.beta, kappa: c.kappa, lambdaD: c.lambdaD, lambdaU: c.lambdaU }, 1 / c.gradAccum);
      owned.push(loss.dErrPolicy, loss.metrics);
      const dEps = mseRowsBackward(epsPolicy, inputs.target, loss.dErrPolicy);
      owned.push(dEps);
      this.addGradients(grads, tape.backward(epsPolicy, dEps));
      return parseMetrics(await loss.metrics.read());
    } finally {
      unet.loraEnabled = true;
      tape.dispose();
      for (const x of owned) x.release();
      inputs.release();
    }
  }

  /**
   * Forward and backward of one micro-batch of the denoising loss, mean_i mean((eps_theta(x_t, t, c) -
   * target)^2) over its B rows, the target being eps, or v for a v_prediction model (SFT's loss, on every weight); the gradients are added into `grads`. Only the
   * loss and errPolicyW (the same value) mean anything in its metrics: there is no reference model and no
   * mismatched row, so those fields are NaN.
   */
  private async denoisingMicroBatch(rows: TermRef[], t: number[], eps: Float32Array, grads: Map<Tensor, Tensor>): Promise<StepMetrics> {
    const { gpu, unet } = this;
    gpu.pool.phase('batchInputs');
    const inputs = await rowTensors(gpu, this.features, rows, t, eps, this.schedule);
    const tape = new Tape();
    const owned: Tensor[] = [];
    try {
      gpu.pool.phase('activationsKept');
      const out = await unet.forward(new Ctx(gpu, tape), inputs.xt, inputs.timesteps, inputs.ctx, { checkpoint: this.config.gradientCheckpointing });
      gpu.pool.phase('backwardGradients');
      const err = mseRows(out, inputs.target);
      owned.push(out, err);
      // d loss / d err_i = 1 / B for the mean over rows, and 1 / gradAccum for the mean over micro-batches.
      const dErr = Tensor.from(gpu, new Float32Array(rows.length).fill(1 / (rows.length * this.config.gradAccum)), [rows.length]);
      const dOut = mseRowsBackward(out, inputs.target, dErr);
      owned.push(dErr, dOut);
      this.addGradients(grads, tape.backward(out, dOut));
      const loss = (await err.read()).reduce((a, v) => a + v, 0) / rows.length;
      return { loss, errPolicyW: loss, accuracy: NaN, meanMargin: NaN, clipFraction: NaN, tktoZ: NaN, errRefW: NaN, errPolicyL: NaN, errRefL: NaN, margins: [] };
    } finally {
      tape.dispose();
      for (const x of owned) x.release();
      inputs.release();
    }
  }

  /** Steps until the configured count, or until `control` stops it. */
  async run(control: TrainControl, onStep: (r: StepReport) => void | Promise<void>): Promise<'done' | 'cancelled'> {
    while (!this.done) {
      if (await control.wait()) return 'cancelled';
      await onStep(await this.step());
    }
    return 'done';
  }

  /** Releases the optimizer state (the LoRA, or the trained weights, stay with the UNet). */
  release(): void {
    this.optimizer.release();
  }
}

/** A fresh LoRA for the UNet, initialised from the seed (A Kaiming-uniform, B zero). */
export function createTrainerLora(gpu: Gpu, unet: UNet, config: Pick<TrainConfig, 'rank' | 'alpha' | 'targets' | 'seed'>): Lora {
  const targets = loraTargets(unet.config, config.targets);
  if (targets.size === 0) throw new Error(`no UNet layer matches the LoRA targets ${config.targets.join(', ')}`);
  return createLora(gpu, targets, config.rank, config.alpha, drawRandom(config.seed, 'lora-init'));
}

/**
 * Pause / resume / cancel between steps. A step in flight always finishes, so the weights are never left
 * half-updated.
 */
export class TrainControl {
  private paused = false;
  private cancelled = false;
  private wake: (() => void) | null = null;

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    this.wake?.();
  }

  cancel(): void {
    this.cancelled = true;
    this.wake?.();
  }

  get isPaused(): boolean {
    return this.paused;
  }

  get isCancelled(): boolean {
    return this.cancelled;
  }

  /** Waits while paused; true when the run should stop. */
  async wait(): Promise<boolean> {
    while (this.paused && !this.cancelled) await new Promise<void>((r) => (this.wake = r));
    this.wake = null;
    return this.cancelled;
  }
}
