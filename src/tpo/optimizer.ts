// The optimizer every trainer shares: AdamW over a list of parameters (LoRA matrices, or every weight of a
// network), its moments, and the global gradient norm the kernel reports. Which step counts for AdamW's
// bias correction, and what a skipped step means for the run, stay with the trainer that owns it.

import type { Gpu } from '../gpu/gpu';
import { adamwStep, type AdamWConfig, type AdamWParam } from '../nn/ops/adamw';
import { Tensor } from '../nn/tensor';

export interface OptimizerMoments {
  m: Map<Tensor, Tensor>;
  v: Map<Tensor, Tensor>;
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

  /** Releases the moments (the parameters belong to the model). */
  release(): void {
    for (const t of [...this.moments.m.values(), ...this.moments.v.values()]) t.release();
    this.moments.m.clear();
    this.moments.v.clear();
    this.normSq.release();
  }
}
