// Samplers for text to image: DDIM (diffusers' DDIMScheduler, eta 0 or above), Euler (EulerDiscreteScheduler)
// and DPM-Solver++ 2M (DPMSolverMultistepScheduler, solver_order 2, midpoint, final sigma 0), each driven by
// the model folder's scheduler config as diffusers drives it when that scheduler is built from the config.
//
// All three integrate the same reverse process from the same starting noise; they differ in where they
// evaluate the model and how they step. DDIM and DPM-Solver++ keep the sample in the training (VP) scale,
// x_t = sqrt(abar) x0 + sqrt(1 - abar) eps; Euler keeps it in the VE scale x0 + sigma eps, with
// sigma = sqrt((1 - abar) / abar), and hands the UNet x / sqrt(sigma^2 + 1) (the VP sample again).
// Step coefficients are float64 on the CPU; tensors stay on the GPU.

import type { Tensor } from '../nn/tensor';
import { alphasCumprod, ddimCoefficients, ddimTimesteps, linearCombination, predictionType, roundHalfEven, type SchedulerConfig, timestepSpacing } from './schedule';

export const SAMPLERS = ['ddim', 'euler', 'dpmpp-2m'] as const;
export type SamplerName = (typeof SAMPLERS)[number];

/** A1111's names, for the "parameters" text of saved images. */
export const SAMPLER_LABELS: Record<SamplerName, string> = { ddim: 'DDIM', euler: 'Euler', 'dpmpp-2m': 'DPM++ 2M' };

export interface Sampler {
  readonly name: SamplerName;
  /** The UNet's timestep at each step, highest first (Euler's may be fractional). */
  readonly timesteps: readonly number[];
  /** The starting latents are standard normal noise times this. */
  readonly initNoiseSigma: number;
  /** The UNet sees sample * inputScale(i) at step i. */
  inputScale(i: number): number;
  /** abar of what the UNet sees at step i (x_t = sqrt(abar) x0 + sqrt(1 - abar) eps): to read a v prediction as eps. */
  alphaBar(i: number): number;
  /**
   * The sample after step i, from the model's eps prediction. `noise` draws standard normal noise of the
   * sample's shape (DDIM with eta > 0 only). The inputs stay the caller's; the result is new.
   */
  step(sample: Tensor, eps: Tensor, i: number, noise?: () => Tensor): Tensor;
  /** Releases state kept between steps. */
  release(): void;
}

export interface SamplerOptions {
  /** DDIM's eta: 0 is deterministic, 1 is DDPM-like. Other samplers ignore it. */
  eta?: number;
}

export function createSampler(name: SamplerName, steps: number, config: SchedulerConfig, options: SamplerOptions = {}): Sampler {
  const n = config.num_train_timesteps;
  if (!Number.isInteger(steps) || steps < 1 || steps > n) throw new Error(`steps must be a whole number from 1 to ${n}, got ${steps}`);
  predictionType(config); // epsilon or v_prediction: the pipeline reads a v prediction as eps before each step
  // SD1.x configs set both off; their clamping and rescaling are not implemented.
  if (config.clip_sample === true) throw new Error('scheduler config: clip_sample true is not supported (SD1.x sets it false)');
  if (config.thresholding === true) throw new Error('scheduler config: thresholding is not supported');
  switch (name) {
    case 'ddim':
      return ddimSampler(steps, config, options.eta ?? 0);
    case 'euler':
      return eulerSampler(steps, config);
    case 'dpmpp-2m':
      return dpmSolverPP2M(steps, config);
    default:
      throw new Error(`unknown sampler ${String(name)} (use ${SAMPLERS.join(', ')})`);
  }
}

function ddimSampler(steps: number, config: SchedulerConfig, eta: number): Sampler {
  if (!(eta >= 0) || !Number.isFinite(eta)) throw new Error(`eta must be a number >= 0, got ${eta}`);
  const abar = alphasCumprod(config);
  const timesteps = ddimTimesteps(steps, config);
  return {
    name: 'ddim',
    timesteps,
    initNoiseSigma: 1,
    inputScale: () => 1,
    alphaBar: (i) => abar[timesteps[i]],
    step(sample, eps, i, noise) {
      const { cs, ce, std } = ddimCoefficients(timesteps[i], steps, abar, config, eta);
      if (std === 0) return linearCombination([[sample, cs], [eps, ce]]);
      if (!noise) throw new Error('DDIM with eta > 0 needs noise');
      const z = noise();
      const out = linearCombination([[sample, cs], [eps, ce], [z, std]]);
      z.release();
      return out;
    },
    release() {},
  };
}

/** sqrt((1 - abar) / abar) at every training timestep. */
function trainingSigmas(config: SchedulerConfig): Float64Array {
  return alphasCumprod(config).map((a) => Math.sqrt((1 - a) / a));
}

/** np.interp(t, arange(len), table) for t inside the table. */
function interpolate(table: Float64Array, t: number): number {
  const lo = Math.floor(t);
  const hi = Math.min(lo + 1, table.length - 1);
  return table[lo] + (t - lo) * (table[hi] - table[lo]);
}

function eulerSampler(steps: number, config: SchedulerConfig): Sampler {
  const n = config.num_train_timesteps;
  const spacing = timestepSpacing(config, 'linspace');
  const timesteps =
    spacing === 'linspace'
      ? Array.from({ length: steps }, (_, i) => (steps === 1 ? 0 : ((n - 1) * (steps - 1 - i)) / (steps - 1)))
      : spacing === 'leading'
        ? Array.from({ length: steps }, (_, i) => roundHalfEven((steps - 1 - i) * Math.floor(n / steps)) + (config.steps_offset ?? 0))
        : Array.from({ length: steps }, (_, i) => roundHalfEven(n - (i * n) / steps) - 1);
  const table = trainingSigmas(config);
  const sigmas = [...timesteps.map((t) => interpolate(table, t)), 0];
  const maxSigma = Math.max(...sigmas);
  return {
    name: 'euler',
    timesteps,
    initNoiseSigma: spacing === 'leading' ? Math.sqrt(maxSigma * maxSigma + 1) : maxSigma,
    inputScale: (i) => 1 / Math.sqrt(sigmas[i] * sigmas[i] + 1),
    alphaBar: (i) => 1 / (sigmas[i] * sigmas[i] + 1),
    // x0 = x - sigma eps, so dx/dsigma = eps and one Euler step is x + (sigma_next - sigma) eps.
    step: (sample, eps, i) => linearCombination([[sample, 1], [eps, sigmas[i + 1] - sigmas[i]]]),
    release() {},
  };
}

function dpmSolverPP2M(steps: number, config: SchedulerConfig): Sampler {
  const n = config.num_train_timesteps;
  const spacing = timestepSpacing(config, 'linspace');
  const timesteps =
    spacing === 'linspace'
      ? Array.from({ length: steps }, (_, i) => roundHalfEven(((n - 1) * (steps - i)) / steps))
      : spacing === 'leading'
        ? Array.from({ length: steps }, (_, i) => (steps - i) * Math.floor(n / (steps + 1)) + (config.steps_offset ?? 0))
        : Array.from({ length: steps }, (_, i) => roundHalfEven(n - (i * n) / steps) - 1);
  const table = trainingSigmas(config);
  const sigmas = [...timesteps.map((t) => table[t]), 0];
  // In VP terms: alpha = 1 / sqrt(sigma^2 + 1), sigma_t = sigma * alpha, lambda = log(alpha / sigma_t).
  const alpha = sigmas.map((s) => 1 / Math.sqrt(s * s + 1));
  const sigmaT = sigmas.map((s, i) => s * alpha[i]);
  const lambda = sigmas.map((s) => -Math.log(s));
  let previous: Tensor | null = null;
  return {
    name: 'dpmpp-2m',
    timesteps,
    initNoiseSigma: 1,
    inputScale: () => 1,
    alphaBar: (i) => alpha[i] * alpha[i],
    step(sample, eps, i) {
      // The data prediction D0 = (x - sigma_t eps) / alpha_t.
      const d0 = linearCombination([[sample, 1 / alpha[i]], [eps, -sigmaT[i] / alpha[i]]]);
      const h = lambda[i + 1] - lambda[i];
      const last = i === steps - 1;
      let out: Tensor;
      if (i === 0 || last || !previous) {
        // First order (DDIM in x0 form): x' = (sigma_t' / sigma_t) x - alpha' (e^-h - 1) D0. At the final
        // sigma 0 this is D0 itself.
        out = last ? linearCombination([[d0, 1]]) : linearCombination([[sample, sigmaT[i + 1] / sigmaT[i]], [d0, -alpha[i + 1] * Math.expm1(-h)]]);
      } else {
        // Second order (midpoint): D = D0 + (D0 - D_prev) / (2 r), r = h_prev / h.
        const r = (lambda[i] - lambda[i - 1]) / h;
        const k = -alpha[i + 1] * Math.expm1(-h);
        out = linearCombination([
          [sample, sigmaT[i + 1] / sigmaT[i]],
          [d0, k * (1 + 0.5 / r)],
          [previous, -k * (0.5 / r)],
        ]);
      }
      previous?.release();
      previous = d0;
      return out;
    },
    release() {
      previous?.release();
      previous = null;
    },
  };
}
