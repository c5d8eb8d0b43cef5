// TPO losses (shaders/loss.wgsl): loss, gradient w.r.t. the policy's per-example errors and the step
// metrics, computed on the GPU so a training step never waits for a readback.

import source from '../../shaders/loss.wgsl?raw';
import { f32, u32, type Gpu } from '../gpu/gpu';
import { family, kernel } from '../nn/ops/kernels';
import { Tensor } from '../nn/tensor';
import type { LossMethod } from './methods';

const fam = family('loss', source);


export interface LossConfig {
  method: LossMethod;
  beta: number;
  /** Negative-term clip in logit units; null turns clipping off. */
  kappa: number | null;
  lambdaD: number;
  lambdaU: number;
}

/** The spec's defaults: beta 2500 for the DPO family, 1000 for the KTO family, kappa 5. */
export function defaultLossConfig(method: LossMethod): LossConfig {
  const kto = method === 'tkto' || method === 'kto';
  return { method, beta: kto ? 1000 : 2500, kappa: 5, lambdaD: 1, lambdaU: 1 };
}

const METHOD_CODE: Record<LossMethod, number> = { tdpo: 0, dpo: 0, tkto: 1, kto: 1, sft: 2 };

export interface StepMetrics {
  loss: number;
  accuracy: number;
  meanMargin: number;
  clipFraction: number;
  tktoZ: number;
  errPolicyW: number;
  errRefW: number;
  errPolicyL: number;
  errRefL: number;
  margins: number[];
}

/**
 * errPolicy: [2B] per-example policy errors, the B matched (w) then the B mismatched (l); errDiff: the
 * same rows' e_policy - e_ref (mseRowsDiff, which keeps the precision a subtraction of errors would lose).
 * Returns the gradient w.r.t. errPolicy [2B] (times gradScale) and a metrics tensor (see parseMetrics).
 */
export function tpoLoss(gpu: Gpu, errPolicy: Tensor, errDiff: Tensor, config: LossConfig, gradScale = 1): { dErrPolicy: Tensor; metrics: Tensor } {
  if (errPolicy.size % 2 !== 0 || errDiff.size !== errPolicy.size) {
    throw new Error(`tpoLoss: expected [2B] policy errors and differences, got [${errPolicy.shape}] and [${errDiff.shape}]`);
  }
  const b = errPolicy.size / 2;
  const dErrPolicy = Tensor.empty(gpu, [2 * b]);
  const metrics = Tensor.empty(gpu, [9 + b]);
  const clip = config.kappa !== null;
  gpu.dispatch(kernel(gpu, fam, 'tpo_loss'), {
    params: [
      u32(b),
      u32(METHOD_CODE[config.method]),
      u32(clip ? 1 : 0),
      f32(config.beta),
      f32(clip ? config.kappa! / config.beta : 0),
      f32(config.lambdaD),
      f32(config.lambdaU),
      f32(gradScale),
    ],
    buffers: [errPolicy.buffer, errDiff.buffer, dErrPolicy.buffer, metrics.buffer],
    workgroups: [1],
  });
  return { dErrPolicy, metrics };
}

export function parseMetrics(values: Float32Array): StepMetrics {
  return {
    loss: values[0],
    accuracy: values[1],
    meanMargin: values[2],
    clipFraction: values[3],
    tktoZ: values[4],
    errPolicyW: values[5],
    errRefW: values[6],
    errPolicyL: values[7],
    errRefL: values[8],
    margins: Array.from(values.subarray(9)),
  };
}
