// AdamW update with global gradient-norm clipping and a NaN/Inf guard (shaders/adamw.wgsl).

import source from '../../../shaders/adamw.wgsl?raw';
import { f32, u32, type Gpu } from '../../gpu/gpu';
import type { Tensor } from '../tensor';
import { family, grid1d, kernel } from './kernels';
import { accumulateSumSquares } from './reduce';

const fam = family('adamw', source);

export interface AdamWConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global gradient-norm clip; 0 or undefined turns it off. */
  maxGradNorm?: number;
  /** Multiplies every gradient first (1 / accumulation steps). */
  gradScale?: number;
}

export const ADAMW_DEFAULTS: AdamWConfig = { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2, maxGradNorm: 1 };

export interface AdamWParam {
  param: Tensor;
  grad: Tensor;
  m: Tensor;
  v: Tensor;
}

/**
 * One AdamW step (1-based `step`) over every parameter. `normSq` ([1], zeroed here) receives the sum of
 * squared gradients before scaling; the caller reads it later to report the gradient norm and whether the
 * step was skipped as non-finite.
 */
export function adamwStep(gpu: Gpu, params: AdamWParam[], normSq: Tensor, step: number, config: AdamWConfig): void {
  gpu.clear(normSq.buffer, 4);
  accumulateSumSquares(
    gpu,
    params.map((p) => p.grad),
    normSq,
  );
  const k = kernel(gpu, fam, 'adamw_step');
  for (const { param, grad, m, v } of params) {
    gpu.dispatch(k, {
      params: [
        u32(param.size),
        f32(config.lr),
        f32(config.beta1),
        f32(config.beta2),
        f32(config.eps),
        f32(config.weightDecay),
        f32(1 - config.beta1 ** step),
        f32(1 - config.beta2 ** step),
        f32(config.maxGradNorm ?? 0),
        f32(config.gradScale ?? 1),
        f32(1 - config.beta1),
        f32(1 - config.beta2),
      ],
      buffers: [param.buffer, grad.buffer, m.buffer, v.buffer, normSq.buffer],
      workgroups: grid1d(param.size),
    });
  }
}
