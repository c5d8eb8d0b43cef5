// Sinusoidal timestep embedding (shaders/timestep.wgsl), diffusers' get_timestep_embedding.

import source from '../../../shaders/timestep.wgsl?raw';
import { u32, type Gpu } from '../../gpu/gpu';
import { Tensor } from '../tensor';
import { family, grid1d, kernel } from './kernels';

const fam = family('timestep', source);

export interface TimestepEmbeddingConfig {
  dim: number;
  flipSinToCos: boolean;
  freqShift: number;
  maxPeriod?: number;
}

/**
 * Each frequency in turns (freq / 2 pi), computed in float64 and split into hi + lo, hi with 12 significant
 * bits so that t * hi is exact in f32 for integer t < 2048 (see the shader's header).
 */
export function frequencyTurns(config: TimestepEmbeddingConfig): Float32Array {
  const half = Math.floor(config.dim / 2);
  const out = new Float32Array(2 * half);
  for (let k = 0; k < half; k++) {
    const freq = Math.exp((-Math.log(config.maxPeriod ?? 10000) * k) / (half - config.freqShift));
    const turns = freq / (2 * Math.PI);
    const quantum = 2 ** (Math.floor(Math.log2(turns)) - 11);
    const hi = Math.floor(turns / quantum) * quantum;
    out[2 * k] = hi;
    out[2 * k + 1] = turns - hi;
  }
  return out;
}

/** Embeds timesteps [B] (float32 values, integers for full precision) into [B, dim]. */
export function timestepEmbedding(gpu: Gpu, timesteps: Tensor, config: TimestepEmbeddingConfig, turns?: Tensor): Tensor {
  const batch = timesteps.size;
  const half = Math.floor(config.dim / 2);
  const table = turns ?? Tensor.from(gpu, frequencyTurns(config), [half, 2]);
  const emb = Tensor.empty(gpu, [batch, config.dim]);
  gpu.dispatch(kernel(gpu, fam, 'timestep_embedding'), {
    params: [u32(batch), u32(config.dim), u32(half), u32(config.flipSinToCos ? 1 : 0)],
    buffers: [timesteps.buffer, table.buffer, emb.buffer],
    workgroups: grid1d(batch * config.dim),
  });
  if (!turns) table.release();
  return emb;
}
