// Random weights for a model's ParamShapes, both as float64 arrays (for the references) and as GPU tensors.
// Norm scales are drawn around 1 and everything else around 0 with a 1/sqrt(fan-in) scale, so activations
// stay of order 1 through many layers.

import type { Gpu } from '../../src/gpu/gpu';
import { ModelWeights } from '../../src/models/model-weights';
import type { ParamShapes } from '../../src/models/weights';
import { Tensor } from '../../src/nn/tensor';
import { randn } from './check';

export function randomWeights(gpu: Gpu, shapes: ParamShapes, seed: number): { f64: Map<string, Float64Array>; gpu: ModelWeights } {
  const f64 = new Map<string, Float64Array>();
  const tensors = new Map<string, Tensor>();
  let s = seed;
  for (const [name, shape] of shapes) {
    const size = shape.reduce((a, b) => a * b, 1);
    const isNorm = /norm/.test(name) && shape.length === 1;
    const fanIn = shape.length > 1 ? size / shape[0] : 1;
    const scale = isNorm ? 0.3 : name.endsWith('bias') ? 0.1 : name.includes('embedding') ? 1 : 1.5 / Math.sqrt(fanIn);
    let v = randn(size, s++, scale);
    if (isNorm && name.endsWith('weight')) v = v.map((x) => Math.fround(1 + x));
    f64.set(name, v);
    tensors.set(name, Tensor.from(gpu, v, shape));
  }
  return { f64, gpu: new ModelWeights('random model', tensors) };
}
