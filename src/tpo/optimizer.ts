// The optimizer every trainer shares: AdamW over a list of parameters (LoRA matrices, or every weight of a
// network), its moments, and the global gradient norm the kernel reports. Which step counts for AdamW's
// bias correction, and what a skipped step means for the run, stay with the trainer that owns it.

import type { Gpu } from '../gpu/gpu';
import { adamwStep, type AdamWConfig, type AdamWParam } from '../nn/ops/adamw';
import { Tensor } from '../nn/tensor';
import { learningRate, type LrSchedule } from './lr-schedule';

export interface OptimizerMoments {
  m: Map<Tensor, Tensor>;
  v: Map<Tensor, Tensor>;
}

/** What a trainer's settings say of its updates (the LoRA and the full-weight trainers' configs both have it). */
export interface UpdateSettings {
  lr: number;
  lrSchedule: LrSchedule;
  warmupSteps: number;
  steps: number;
  adamBeta1: number;
  adamBeta2: number;
  adamEps: number;
  weightDecay: number;
  /** Global gradient-norm clip; 0 turns it off. */
  maxGradNorm: number;
}

/** What a trainer's state counts of its updates. */
export interface UpdateCounts {
  step: number;
  appliedSteps: number;
  skipped: number[];
}

export class AdamW {
  readonly moments: OptimizerMoments;
  private readonly normSq: Tensor;

  /** `moments` come from a checkpoint, or start at zero when omitted. */
  constructor(
    readonly gpu: Gpu,
    readonly params: readonly Tensor[],
    moments?: OptimizerMoments,
  ) {
    this.moments = moments ?? {
      m: new Map(params.map((p) => [p, Tensor.zeros(gpu, p.shape)])),
      v: new Map(params.map((p) => [p, Tensor.zeros(gpu, p.shape)])),
    };
    this.normSq = Tensor.zeros(gpu, [1]);
  }

  /**
   * One update (AdamW step number `step`, 1-based) from `grads`; a parameter without a gradient gets a
   * zero one (added to the map, which the caller still owns and releases). Returns the squared global
   * gradient norm; when it is not finite the kernel left every weight and moment untouched.
   */
  async step(grads: Map<Tensor, Tensor>, step: number, config: AdamWConfig): Promise<number> {
    const params: AdamWParam[] = this.params.map((p) => {
      if (!grads.has(p)) grads.set(p, Tensor.zeros(this.gpu, p.shape));
      return { param: p, grad: grads.get(p)!, m: this.moments.m.get(p)!, v: this.moments.v.get(p)! };
    });
    adamwStep(this.gpu, params, this.normSq, step, config);
    return (await this.normSq.read())[0];
  }

  /**
   * The update that ends a trainer's step `counts.step` (0-based): the scheduled learning rate, AdamW
   * (bias correction by the updates applied so far), and the counts moved on. A step whose gradient norm is
   * not finite changes nothing but is counted and listed as skipped.
   */
  async update(grads: Map<Tensor, Tensor>, c: UpdateSettings, counts: UpdateCounts): Promise<{ lr: number; normSq: number; skipped: boolean }> {
    const lr = learningRate({ lr: c.lr, schedule: c.lrSchedule, warmupSteps: c.warmupSteps, totalSteps: c.steps }, counts.step);
    const normSq = await this.step(grads, counts.appliedSteps + 1, {
      lr,
      beta1: c.adamBeta1,
      beta2: c.adamBeta2,
      eps: c.adamEps,
      weightDecay: c.weightDecay,
      maxGradNorm: c.maxGradNorm,
    });
    const skipped = !Number.isFinite(normSq);
    counts.step++;
    if (skipped) counts.skipped.push(counts.step);
    else counts.appliedSteps++;
    return { lr, normSq, skipped };
  }

  /** Releases the moments (the parameters belong to the model). */
  release(): void {
    for (const t of [...this.moments.m.values(), ...this.moments.v.values()]) t.release();
    this.moments.m.clear();
    this.moments.v.clear();
    this.normSq.release();
  }
}
