// Comparisons for kernel tests: float32 GPU results against float64 CPU references, and backward kernels
// against central finite differences of the float64 reference forward.

import { expect } from 'vitest';
import { mulberry32 } from '../../src/util/random';

/** A seeded generator, so every test sees the same data on every run. */
export const rng = mulberry32;

/** n values uniform in [-scale, scale), rounded to float32 so CPU and GPU see identical inputs. */
export function randn(n: number, seed: number, scale = 1): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.fround((r() * 2 - 1) * scale);
  return out;
}

export function relError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} vs ${expected.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num += (actual[i] - expected[i]) ** 2;
    den += expected[i] ** 2;
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what = 'result'): void {
  for (let i = 0; i < actual.length; i++) {
    if (!Number.isFinite(actual[i])) throw new Error(`${what}: element ${i} is ${actual[i]}`);
  }
  const err = relError(actual, expected);
  expect(err, `${what}: relative L2 error ${err.toExponential(2)} > ${tol}`).toBeLessThanOrEqual(tol);
}

/**
 * Central finite differences of loss(x) = sum(forward(x) * dy) at up to `samples` coordinates of input
 * `which`, in float64. Returns the indices probed and the numerical gradient there.
 */
export function finiteDifferences(
  forward: (inputs: Float64Array[]) => Float64Array,
  inputs: Float64Array[],
  which: number,
  dy: Float64Array,
  samples = 48,
  h = 1e-4,
): { indices: number[]; grad: number[] } {
  const x = inputs[which];
  const r = rng(1234 + which);
  const indices =
    x.length <= samples ? [...x.keys()] : [...new Set(Array.from({ length: samples }, () => Math.floor(r() * x.length)))];
  const loss = () => {
    const y = forward(inputs);
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i] * dy[i];
    return s;
  };
  const grad = indices.map((i) => {
    const keep = x[i];
    x[i] = keep + h;
    const up = loss();
    x[i] = keep - h;
    const down = loss();
    x[i] = keep;
    return (up - down) / (2 * h);
  });
  return { indices, grad };
}

/** Checks an analytic (GPU) gradient against finite differences of the float64 reference. */
export function expectGradient(
  analytic: ArrayLike<number>,
  forward: (inputs: Float64Array[]) => Float64Array,
  inputs: Float64Array[],
  which: number,
  dy: Float64Array,
  what: string,
  tol = 1e-4,
): void {
  expect(analytic.length, `${what}: gradient length`).toBe(inputs[which].length);
  const { indices, grad } = finiteDifferences(forward, inputs, which, dy);
  expectClose(
    indices.map((i) => analytic[i]),
    grad,
    tol,
    `${what} vs finite differences`,
  );
}
