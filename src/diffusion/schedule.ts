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

/** abar_t = prod_{i <= t} (1 - beta_i), float64. */
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
  return out;
}

/** DDIM inference timesteps, highest first ("leading" spacing plus steps_offset, SD1.5's setting). */
export function ddimTimesteps(steps: number, c: SchedulerConfig = SD15_SCHEDULER): number[] {
  const n = c.num_train_timesteps;
  if ((c.timestep_spacing ?? 'leading') !== 'leading') throw new Error(`timestep_spacing ${c.timestep_spacing} is not supported`);
  const ratio = Math.floor(n / steps);
  return Array.from({ length: steps }, (_, i) => Math.round((steps - 1 - i) * ratio) + (c.steps_offset ?? 0));
}

/** x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps for each example b at its own timestep t[b]. */
export function addNoise(x0: Tensor, eps: Tensor, timesteps: number[], abar: Float64Array): Tensor {
  const gpu = x0.gpu;
  const a = Tensor.from(gpu, timesteps.map((t) => Math.sqrt(abar[t])), [timesteps.length]);
  const s = Tensor.from(gpu, timesteps.map((t) => Math.sqrt(1 - abar[t])), [timesteps.length]);
  const ax = mul(x0, a, 0);
  const se = mul(eps, s, 0);
  const xt = add(ax, se);
  for (const t of [a, s, ax, se]) t.release();
  return xt;
}

/** One deterministic DDIM step (eta 0) from timestep t with predicted noise eps. */
export function ddimStep(sample: Tensor, eps: Tensor, t: number, steps: number, abar: Float64Array, c: SchedulerConfig = SD15_SCHEDULER): Tensor {
  const prevT = t - Math.floor(c.num_train_timesteps / steps);
  const aT = abar[t];
  const aPrev = prevT >= 0 ? abar[prevT] : c.set_alpha_to_one ? 1 : abar[0];
  // prev = sqrt(aPrev) * (sample - sqrt(1 - aT) eps) / sqrt(aT) + sqrt(1 - aPrev) eps
  const cs = Math.sqrt(aPrev / aT);
  const ce = Math.sqrt(1 - aPrev) - Math.sqrt(aPrev) * Math.sqrt(1 - aT) / Math.sqrt(aT);
  const a = scale(sample, cs);
  const b = scale(eps, ce);
  const out = add(a, b);
  a.release();
  b.release();
  return out;
}
