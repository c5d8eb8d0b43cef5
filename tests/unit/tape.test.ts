import { describe, expect, it } from 'vitest';
import * as F from '../../src/nn/functional';
import { Ctx, Tape } from '../../src/nn/tape';
import { Tensor } from '../../src/nn/tensor';
import { expectGradient, randn } from '../helpers/check';
import { testGpu } from '../helpers/gpu';

/** y = silu(layerNorm(x W^T + s (x A^T) B^T + x W^T)) in float64: x used three times, W twice. */
function reference([x, w, a, b]: Float64Array[], rows: number, inF: number, outF: number, r: number, s: number): Float64Array {
  const mm = (p: Float64Array, q: Float64Array, m: number, k: number, n: number) => {
    const out = new Float64Array(m * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) for (let t = 0; t < k; t++) out[i * n + j] += p[i * k + t] * q[j * k + t];
    return out;
  };
  const base = mm(x, w, rows, inF, outF);
  const h = mm(x, a, rows, inF, r);
  const delta = mm(h, b, rows, r, outF);
  const y = base.map((v, i) => 2 * v + s * delta[i]);
  for (let i = 0; i < rows; i++) {
    const row = y.subarray(i * outF, (i + 1) * outF);
    const mean = row.reduce((p, q) => p + q, 0) / outF;
    const rstd = 1 / Math.sqrt(row.reduce((p, q) => p + (q - mean) ** 2, 0) / outF + 1e-5);
    for (let j = 0; j < outF; j++) row[j] = (row[j] - mean) * rstd;
  }
  return y.map((v) => v / (1 + Math.exp(-v)));
}

describe('tape', () => {
  it('back-propagates into the trainable leaves only, matching finite differences, and frees everything', async () => {
    const gpu = await testGpu();
    const [rows, inF, outF, r, s] = [7, 12, 10, 3, 0.75];
    const x = randn(rows * inF, 1);
    const w = randn(outF * inF, 2, 0.5);
    const a = randn(r * inF, 3, 0.5);
    const b = randn(outF * r, 4, 0.5);
    const dy = randn(rows * outF, 5);
    const baseline = gpu.pool.bytesInUse;

    const xt = Tensor.from(gpu, x, [rows, inF]);
    const wt = Tensor.from(gpu, w, [outF, inF]);
    const at = Tensor.from(gpu, a, [r, inF]);
    const bt = Tensor.from(gpu, b, [outF, r]);
    const ones = Tensor.from(gpu, new Float32Array(outF).fill(1), [outF]);
    const zeros = Tensor.zeros(gpu, [outF]);
    at.requiresGrad = true;
    bt.requiresGrad = true;

    const tape = new Tape();
    const ctx = new Ctx(gpu, tape);
    const base1 = F.linear(ctx, xt, wt);
    const base2 = F.linear(ctx, xt, wt);
    const base = F.add(ctx, base1, base2);
    const h = F.linear(ctx, xt, at);
    const hb = F.linear(ctx, h, bt);
    const delta = F.scale(ctx, hb, s);
    const sum = F.add(ctx, base, delta);
    const normed = F.layerNorm(ctx, sum, ones, zeros, 1e-5);
    const y = F.activation(ctx, normed, 'silu');
    // Frozen path: base1/base2 need no gradient, so the tape records nothing for them.
    expect(base.requiresGrad).toBe(false);
    expect(y.requiresGrad).toBe(true);
    ctx.free(base1, base2, base, h, hb, delta, sum, normed);

    const dyt = Tensor.from(gpu, dy, [rows, outF]);
    const grads = tape.backward(y, dyt);
    expect([...grads.keys()].sort((p, q) => p.size - q.size)).toEqual([at, bt].sort((p, q) => p.size - q.size));
    const f = (inputs: Float64Array[]) => reference(inputs, rows, inF, outF, r, s);
    expectGradient(await grads.get(at)!.read(), f, [x, w, a, b], 2, dy, 'dA');
    expectGradient(await grads.get(bt)!.read(), f, [x, w, a, b], 3, dy, 'dB');

    for (const g of grads.values()) g.release();
    tape.dispose();
    for (const t of [y, dyt, xt, wt, at, bt, ones, zeros]) t.release();
    expect(gpu.pool.bytesInUse, 'every buffer went back to the pool').toBe(baseline);
  });

  it('references share storage: the buffer returns once every owning reference is released', async () => {
    const gpu = await testGpu();
    const baseline = gpu.pool.bytesInUse;
    const t = Tensor.zeros(gpu, [4, 6]);
    const alias = t.view([24]);
    alias.release(); // an alias owns nothing
    const r = t.ref([2, 12]);
    t.release();
    expect(gpu.pool.bytesInUse).toBeGreaterThan(baseline);
    expect(Array.from(await r.read())).toEqual(new Array(24).fill(0));
    const moved = r.reshape([24]);
    r.release(); // already moved: nothing happens
    expect(gpu.pool.bytesInUse).toBeGreaterThan(baseline);
    moved.release();
    expect(gpu.pool.bytesInUse).toBe(baseline);
    expect(() => moved.ref()).toThrow(/released/);
  });
});
