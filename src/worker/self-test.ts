// The self-test: SiLU (the UNet's activation) on the GPU through the engine's own op, checked against the
// same function computed in float64 on the CPU. It exercises the whole path a training step uses: shader
// compilation, pipeline cache, pooled buffers, uniform parameters, dispatch and readback.

import type { Gpu } from '../gpu/gpu';
import { activation } from '../nn/ops/elementwise';
import { Tensor } from '../nn/tensor';

/** Not a multiple of the 256-wide workgroup, so the kernel's bounds check is exercised too. */
export const SELF_TEST_COUNT = 777;

/**
 * Largest |gpu - cpu| accepted. WGSL allows exp() an error of a few ULP that grows with |x|; over [-10, 10]
 * a correct kernel stays below 1e-5 on every adapter we know, while a wrong one is off by O(1).
 */
export const SELF_TEST_TOLERANCE = 1e-4;

/** Evenly spaced values over [-10, 10], float32 so the CPU reference sees exactly what the GPU sees. */
export function selfTestInputs(count = SELF_TEST_COUNT): Float32Array {
  const x = new Float32Array(count);
  for (let i = 0; i < count; i++) x[i] = -10 + (20 * i) / (count - 1);
  return x;
}

export function siluReference(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** max |actual[i] - silu(x[i])|, or NaN as soon as the GPU returned a non-finite value. */
export function siluMaxAbsError(x: Float32Array, actual: Float32Array): number {
  if (actual.length !== x.length) return Number.NaN;
  let worst = 0;
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(actual[i])) return Number.NaN;
    worst = Math.max(worst, Math.abs(actual[i] - siluReference(x[i])));
  }
  return worst;
}

/** One full round trip: upload, SiLU kernel, readback. Validation and out-of-memory errors are thrown. */
export async function siluOnGpu(gpu: Gpu, x: Float32Array): Promise<Float32Array> {
  const input = Tensor.from(gpu, x, [x.length]);
  let output: Tensor | undefined;
  try {
    output = await gpu.checked(() => activation(input, 'silu'));
    return await output.read();
  } finally {
    input.release();
    output?.release();
  }
}
