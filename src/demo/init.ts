// Seeded first weights for the demo model's three networks, drawn as PyTorch initialises the same modules
// (so a network starts where diffusers' and transformers' training would):
//
//   conv and linear weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))   (nn.Conv2d / nn.Linear default)
//   norm scales 1, norm shifts 0                                              (GroupNorm / LayerNorm)
//   embeddings: N(0, std)                                                     (std per network, see below)
//
// Every tensor draws from its own stream, keyed by (seed, network, name), so a tensor's values do not
// depend on which other tensors the config declares. Platform-free.

import { Tensor } from '../nn/tensor';
import type { Gpu } from '../gpu/gpu';
import type { ParamShapes } from '../models/weights';
import { drawRandom, normals } from '../tpo/random';

export interface InitOptions {
  /** Standard deviation of each embedding table, by a substring of its name. */
  embeddingStd?: Record<string, number>;
}

const isNorm = (name: string, shape: readonly number[]) => shape.length === 1 && /norm/.test(name);
const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Every parameter of `shapes` on the GPU as float32, seeded. A bias takes its layer's fan-in (the weight
 * declared under the same layer name), as PyTorch's default does.
 */
export function initWeights(gpu: Gpu, seed: number, network: string, shapes: ParamShapes, options: InitOptions = {}): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  try {
    for (const [name, shape] of shapes) {
      const size = numel(shape);
      const rand = drawRandom(seed, 'demo-init', network, name);
      const embedding = Object.entries(options.embeddingStd ?? {}).find(([key]) => name.includes(key));
      let values: Float32Array;
      if (isNorm(name, shape)) {
        values = new Float32Array(size).fill(name.endsWith('.weight') ? 1 : 0);
      } else if (embedding) {
        values = normals(rand, size).map((v) => v * embedding[1]);
      } else {
        const layer = shape.length > 1 ? shape : shapes.get(name.replace(/\.bias$/, '.weight'));
        if (!layer || layer.length < 2) throw new Error(`initWeights: no layer weight for ${name}`);
        const bound = 1 / Math.sqrt(numel(layer) / layer[0]);
        values = Float32Array.from({ length: size }, () => (rand() * 2 - 1) * bound);
      }
      out.set(name, Tensor.from(gpu, values, shape));
    }
  } catch (e) {
    for (const t of out.values()) t.release();
    throw e;
  }
  return out;
}
