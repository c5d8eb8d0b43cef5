// Stable Diffusion 1.x's DDPM training schedule and the DDIM sampling step (eta 0), as diffusers'
// DDPMScheduler / DDIMScheduler define them. Coefficients are float64 on the CPU; tensors stay on the GPU.

import { add, mul, scale } from '../nn/ops/elementwise';
import { Tensor } from '../nn/tensor';

export interface SchedulerConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
  set_alpha_to_one?: boolean;
  steps_offset?: number;
  timestep_spacing?: string;
  prediction_type?: string;
  clip_sample?: boolean;
  thresholding?: boolean;
  /** diffusers' rescale_betas_zero_snr: shift and scale sqrt(abar) so that the last timestep is pure noise. */
  rescale_betas_zero_snr?: boolean;
}

export const SD15_SCHEDULER: SchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  set_alpha_to_one: false,
  steps_offset: 1,
  timestep_spacing: 'leading',
  prediction_type: 'epsilon',
};

/**
 * abar at the last timestep of a zero-terminal-SNR schedule: 2^-24 instead of 0, as diffusers'
 * EulerDiscreteScheduler sets it, so that sigma = sqrt((1 - abar) / abar) stays finite and every sampler can
 * read the UNet's output as noise (with abar 0 the x0 that a noise prediction implies is 0 / 0). The signal
 * left, sqrt(2^-24) = 0.00024 of x0, is below anything a UNet can read.
 */
export const ZERO_SNR_ALPHA_BAR = 2 ** -24;

/**
 * abar_t = prod_{i <= t} (1 - beta_i), float64. With rescale_betas_zero_snr (Lin et al. 2024, "Common
 * Diffusion Noise Schedules and Sample Steps are Flawed"; diffusers' rescale_zero_terminal_snr), sqrt(abar)
 * is shifted to reach 0 at the last timestep and scaled to keep its first value: SD1.5's schedule leaves
 * sqrt(abar) = 0.068 of the image in x_999, which a model learns to read (an image's mean colour, over 256
 * latent positions, stands out of the noise), while sampling starts from noise that holds none of it.
 */
export function alphasCumprod(c: SchedulerConfig = SD15_SCHEDULER): Float64Array {
  const n = c.num_train_timesteps;
  const betas = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (c.beta_schedule === 'scaled_linear') {
      const s = Math.sqrt(c.beta_start) + (i / (n - 1)) * (Math.sqrt(c.beta_end) - Math.sqrt(c.beta_start));
      betas[i] = s * s;
    } else if (c.beta_schedule === 'linear') {
      betas[i] = c.beta_start + (i / (n - 1)) * (c.beta_end - c.beta_start);
    } else {
      throw new Error(`beta_schedule ${c.beta_schedule} is not supported (SD1.x uses scaled_linear)`);
    }
  }
  const out = new Float64Array(n);
  let prod = 1;
  for (let i = 0; i < n; i++) out[i] = prod *= 1 - betas[i];
  if (c.rescale_betas_zero_snr) {
    const first = Math.sqrt(out[0]);
    const last = Math.sqrt(out[n - 1]);
    for (let i = 0; i < n; i++) out[i] = (((Math.sqrt(out[i]) - last) * first) / (first - last)) ** 2;
    out[n - 1] = ZERO_SNR_ALPHA_BAR;
  }
  return out;
}

/** numpy's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export type TimestepSpacing = 'leading' | 'linspace' | 'trailing';

export function timestepSpacing(c: SchedulerConfig, fallback: TimestepSpacing): TimestepSpacing {
  const s = c.timestep_spacing ?? fallback;
  if (s !== 'leading' && s !== 'linspace' && s !== 'trailing') throw new Error(`timestep_spacing ${s} is not supported (use leading, linspace or trailing)`);
  return s;
}

/**
 * DDIM inference timesteps, highest first, as DDIMScheduler.set_timesteps spaces them: "leading" (SD1.5's
 * default, plus steps_offset), "linspace" or "trailing".
 */
export function ddimTimesteps(steps: number, c: SchedulerConfig = SD15_SCHEDULER): number[] {
  const n = c.num_train_timesteps;
  if (!Number.isInteger(steps) || steps < 1 || steps > n) throw new Error(`DDIM steps must be a whole number from 1 to ${n}, got ${steps}`);
  const spacing = timestepSpacing(c, 'leading');
  if (spacing === 'linspace') return Array.from({ length: steps }, (_, i) => roundHalfEven(steps === 1 ? 0 : ((n - 1) * (steps - 1 - i)) / (steps - 1)));
  if (spacing === 'trailing') return Array.from({ length: steps }, (_, i) => roundHalfEven(n - (i * n) / steps) - 1);
  const ratio = Math.floor(n / steps);
  return Array.from({ length: steps }, (_, i) => (steps - 1 - i) * ratio + (c.steps_offset ?? 0));
}

/** x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps for each example b at its own timestep t[b]. */
export function addNoise(x0: Tensor, eps: Tensor, timesteps: number[], abar: Float64Array): Tensor {
  return perRowSum(x0, timesteps.map((t) => Math.sqrt(abar[t])), eps, timesteps.map((t) => Math.sqrt(1 - abar[t])));
}

/**
 * What a UNet predicts, from its scheduler config: the noise (epsilon: SD1.x) or the velocity
 * v = sqrt(abar) eps - sqrt(1 - abar) x0 (v_prediction: SD2.x 768-v, and the lab's demo model). With v, an
 * error of the network costs at most its own size in x0 at every timestep; with epsilon it is multiplied by
 * sqrt((1 - abar) / abar), about 15 at t = 999, which a small network trained briefly cannot afford.
 */
export type PredictionType = 'epsilon' | 'v_prediction';

export function predictionType(c: SchedulerConfig): PredictionType {
  const p = c.prediction_type ?? 'epsilon';
  if (p !== 'epsilon' && p !== 'v_prediction') throw new Error(`scheduler config: prediction_type ${p} is not supported (use epsilon or v_prediction)`);
  // At zero SNR x_999 is the noise itself: predicting it is trivial and says nothing of the image.
  if (c.rescale_betas_zero_snr && p !== 'v_prediction') throw new Error('scheduler config: rescale_betas_zero_snr needs prediction_type v_prediction (at zero SNR the noise is the input, and predicting it says nothing of the image)');
  return p;
}

/** A model's training schedule: abar per timestep and what its UNet predicts. */
export interface NoiseSchedule {
  abar: Float64Array;
  prediction: PredictionType;
}

export function noiseSchedule(c: SchedulerConfig = SD15_SCHEDULER): NoiseSchedule {
  return { abar: alphasCumprod(c), prediction: predictionType(c) };
}

/** The velocity v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 of x0 noised with eps at timestep t[b] (row b). */
export function velocity(x0: Tensor, eps: Tensor, timesteps: number[], abar: Float64Array): Tensor {
  return perRowSum(eps, timesteps.map((t) => Math.sqrt(abar[t])), x0, timesteps.map((t) => -Math.sqrt(1 - abar[t])));
}

/**
 * The noise a predicted velocity stands for, given the UNet's input x_t = sqrt(abar) x0 + sqrt(1 - abar) eps:
 * eps = sqrt(1 - abar) x_t + sqrt(abar) v (substitute v = sqrt(abar) eps - sqrt(1 - abar) x0). Samplers step
 * with eps; the map is affine in v with the same x_t for both halves of guidance, so guiding v and then
 * converting equals converting and then guiding.
 */
export function epsilonFromVelocity(v: Tensor, xt: Tensor, abar: number): Tensor {
  return linearCombination([[xt, Math.sqrt(1 - abar)], [v, Math.sqrt(abar)]]);
}

/** x * cx[b] + y * cy[b] for each row b of two [B, ...] tensors. */
function perRowSum(x: Tensor, cx: number[], y: Tensor, cy: number[]): Tensor {
  const gpu = x.gpu;
  const a = Tensor.from(gpu, cx, [cx.length]);
  const b = Tensor.from(gpu, cy, [cy.length]);
  const ax = mul(x, a, 0);
  const by = mul(y, b, 0);
  const out = add(ax, by);
  for (const t of [a, b, ax, by]) t.release();
  return out;
}

/**
 * DDIMScheduler.step's coefficients from timestep t: prev = cs * sample + ce * eps + std * noise, where
 * x0 = (sample - sqrt(1 - aT) eps) / sqrt(aT) and prev = sqrt(aPrev) x0 + sqrt(1 - aPrev - std^2) eps + std z,
 * std = eta * sqrt((1 - aPrev) / (1 - aT) * (1 - aT / aPrev)). eta 0 is deterministic.
 */
export function ddimCoefficients(t: number, steps: number, abar: Float64Array, c: SchedulerConfig = SD15_SCHEDULER, eta = 0): { cs: number; ce: number; std: number } {
  const prevT = t - Math.floor(c.num_train_timesteps / steps);
  const aT = abar[t];
  const aPrev = prevT >= 0 ? abar[prevT] : c.set_alpha_to_one ? 1 : abar[0];
  const std = eta * Math.sqrt(((1 - aPrev) / (1 - aT)) * (1 - aT / aPrev));
  const cs = Math.sqrt(aPrev / aT);
  const ce = Math.sqrt(Math.max(0, 1 - aPrev - std * std)) - (Math.sqrt(aPrev) * Math.sqrt(1 - aT)) / Math.sqrt(aT);
  return { cs, ce, std };
}

/** One deterministic DDIM step (eta 0) from timestep t with predicted noise eps. */
export function ddimStep(sample: Tensor, eps: Tensor, t: number, steps: number, abar: Float64Array, c: SchedulerConfig = SD15_SCHEDULER): Tensor {
  const { cs, ce } = ddimCoefficients(t, steps, abar, c);
  return linearCombination([[sample, cs], [eps, ce]]);
}

/** sum_i w_i x_i over tensors of one shape (scale and add kernels; each term scaled in f32 as PyTorch does). */
export function linearCombination(terms: readonly (readonly [Tensor, number])[]): Tensor {
  if (terms.length === 0) throw new Error('linearCombination: no terms');
  let acc: Tensor | null = null;
  for (const [x, w] of terms) {
    const scaled = scale(x, w);
    if (!acc) {
      acc = scaled;
      continue;
    }
    const sum: Tensor = add(acc, scaled);
    acc.release();
    scaled.release();
    acc = sum;
  }
  return acc!;
}
