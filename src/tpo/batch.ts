// Turning examples into the GPU inputs of one TPO batch: the 2B rows (B matched, then B mismatched), their
// latents x0, text states, and the shared timesteps and noise. Used by the trainer and by the implicit
// scores, so both see exactly the same x_t for a given draw.

import type { Gpu } from '../gpu/gpu';
import { addNoise, type NoiseSchedule, velocity } from '../diffusion/schedule';
import { Tensor } from '../nn/tensor';
import type { TermRef } from './examples';
import type { FeatureKeys, FeatureStore } from './features';
import { normals, uniformInt } from './random';

export interface Features {
  store: FeatureStore;
  keys: FeatureKeys;
}

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

async function cachedValues(features: Features, key: string | undefined, n: number, what: string): Promise<Float32Array> {
  const values = key ? await features.store.get(key) : null;
  if (!values) throw new Error(`prepared features for ${what} are missing from the cache; prepare the data again`);
  if (values.length !== n) throw new Error(`cached features for ${what} hold ${values.length} values, ${n} expected; the cache was made for another model or resolution`);
  return values;
}

/** Row inputs for terms: x0 [R, C, h, w] and text states [R, N, D], as host arrays. */
export async function loadRows(features: Features, rows: readonly TermRef[]): Promise<{ x0: Float32Array; ctx: Float32Array }> {
  const { latentShape, textShape } = features.keys;
  const nl = numel(latentShape);
  const nt = numel(textShape);
  const x0 = new Float32Array(rows.length * nl);
  const ctx = new Float32Array(rows.length * nt);
  for (const [i, r] of rows.entries()) {
    x0.set(await cachedValues(features, features.keys.latent.get(r.image), nl, r.image), i * nl);
    ctx.set(await cachedValues(features, features.keys.text.get(r.caption), nt, `caption "${r.caption}"`), i * nt);
  }
  return { x0, ctx };
}

/** Timesteps and noise for `count` examples from one generator: the timesteps first, then the noise. */
export function drawNoise(rand: () => number, count: number, latentShape: readonly number[], tMin: number, tMax: number): { t: number[]; eps: Float32Array } {
  const t = Array.from({ length: count }, () => uniformInt(rand, tMin, tMax));
  return { t, eps: normals(rand, count * numel(latentShape)) };
}

export interface BatchTensors {
  xt: Tensor;
  timesteps: Tensor;
  ctx: Tensor;
  /**
   * What the UNet's output is compared with: the noise for an epsilon model (the spec's errors), the velocity
   * for a v_prediction one (the errors of its own target, as diffusers' training scripts take them).
   */
  target: Tensor;
  release(): void;
}

/** GPU inputs of R rows, row i noised at timestep t[i] with its own noise (eps holds R latents' worth). */
export async function rowTensors(gpu: Gpu, features: Features, rows: readonly TermRef[], t: number[], eps: Float32Array, schedule: NoiseSchedule): Promise<BatchTensors> {
  if (rows.length !== t.length) throw new Error(`rowTensors: ${rows.length} rows for ${t.length} timesteps`);
  const { x0, ctx } = await loadRows(features, rows);
  const { latentShape, textShape } = features.keys;
  const r = rows.length;
  const x0t = Tensor.from(gpu, x0, [r, ...latentShape]);
  const noise = Tensor.from(gpu, eps, [r, ...latentShape]);
  const xt = addNoise(x0t, noise, t, schedule.abar);
  let target = noise;
  if (schedule.prediction === 'v_prediction') {
    target = velocity(x0t, noise, t, schedule.abar);
    noise.release();
  }
  x0t.release();
  const timesteps = Tensor.from(gpu, t, [r]);
  const ctxT = Tensor.from(gpu, ctx, [r, ...textShape]);
  return {
    xt,
    timesteps,
    ctx: ctxT,
    target,
    release() {
      for (const x of [xt, timesteps, ctxT, target]) x.release();
    },
  };
}

/**
 * GPU inputs of 2B rows: rows[i] and rows[B + i] share timestep t[i] and noise eps[i] (the spec: the same
 * x_t, t and eps for c_w and c_l of one example).
 */
export async function batchTensors(gpu: Gpu, features: Features, rows: readonly TermRef[], t: number[], eps: Float32Array, schedule: NoiseSchedule): Promise<BatchTensors> {
  const b = t.length;
  if (rows.length !== 2 * b) throw new Error(`batchTensors: ${rows.length} rows for ${b} draws`);
  const eps2 = new Float32Array(2 * eps.length);
  eps2.set(eps);
  eps2.set(eps, eps.length);
  return rowTensors(gpu, features, rows, [...t, ...t], eps2, schedule);
}
