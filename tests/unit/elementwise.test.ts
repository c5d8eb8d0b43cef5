import { describe, expect, it } from 'vitest';
import {
  activation,
  activationBackward,
  add,
  addBackward,
  concatChannels,
  concatChannelsBackward,
  geglu,
  gegluBackward,
  mul,
  mulBackward,
  scale,
  upsampleNearest,
  upsampleNearest2x,
  upsampleNearest2xBackward,
  type Activation,
} from '../../src/nn/ops/elementwise';
import { Tensor } from '../../src/nn/tensor';
import { expectClose, expectGradient, randn } from '../helpers/check';
import { testGpu } from '../helpers/gpu';
import * as ref from '../helpers/reference/elementwise';

const FWD_TOL = 1e-5;

describe('activations', () => {
  for (const fn of ['silu', 'gelu', 'quick_gelu'] as Activation[]) {
    it(`${fn} forward and backward on an odd size`, async () => {
      const gpu = await testGpu();
      const n = 1031; // not a multiple of the workgroup size
      const x = randn(n, 1, 6);
      const dy = randn(n, 2);
      const xt = Tensor.from(gpu, x, [n]);
      const y = activation(xt, fn);
      expectClose(await y.read(), ref.map(x, ref.activations[fn]), FWD_TOL, `${fn} forward`);
      const dx = activationBackward(xt, Tensor.from(gpu, dy, [n]), fn);
      expectGradient(await dx.read(), ([v]) => ref.map(v, ref.activations[fn]), [x], 0, dy, `${fn} dx`);
    });
  }

  it('gelu is exact far into the tails', async () => {
    const gpu = await testGpu();
    const x = Float64Array.from([-12, -6, -3.5, -1e-3, 0, 1e-3, 3.5, 6, 12]);
    const y = await activation(Tensor.from(gpu, x, [x.length]), 'gelu').read();
    const want = ref.map(x, ref.activations.gelu);
    for (let i = 0; i < x.length; i++) expect(Math.abs(y[i] - want[i])).toBeLessThan(1e-6 * Math.max(1, Math.abs(want[i])));
  });
});

describe('geglu', () => {
  it('forward and backward, rows 3, width 2 x 37', async () => {
    const gpu = await testGpu();
    const rows = 3;
    const d = 37;
    const x = randn(rows * 2 * d, 3, 3);
    const dy = randn(rows * d, 4);
    const xt = Tensor.from(gpu, x, [rows, 2 * d]);
    expectClose(await geglu(xt).read(), ref.geglu(x, d), FWD_TOL, 'geglu forward');
    const dx = gegluBackward(xt, Tensor.from(gpu, dy, [rows, d]));
    expectGradient(await dx.read(), ([v]) => ref.geglu(v, d), [x], 0, dy, 'geglu dx');
  });
});

describe('binary ops with broadcast', () => {
  const cases = [
    { name: 'same shape', a: [3, 5, 7], b: [3, 5, 7], axis: undefined, inner: 1 },
    { name: 'bias over rows', a: [3, 13], b: [13], axis: undefined, inner: 1 },
    { name: 'per-channel over NCHW', a: [3, 5, 4, 3], b: [5], axis: 1, inner: 12 },
    { name: 'per-example vector over NCHW (time embedding)', a: [3, 5, 4, 3], b: [3, 5], axis: 1, inner: 12 },
  ];
  for (const c of cases) {
    it(`add and mul: ${c.name}`, async () => {
      const gpu = await testGpu();
      const na = c.a.reduce((x, y) => x * y);
      const nb = c.b.reduce((x, y) => x * y);
      const a = randn(na, 5);
      const b = randn(nb, 6);
      const dy = randn(na, 7);
      const at = Tensor.from(gpu, a, c.a);
      const bt = Tensor.from(gpu, b, c.b);
      const dyt = Tensor.from(gpu, dy, c.a);
      const addRef = ([u, v]: Float64Array[]) => ref.broadcastBinary(u, v, c.inner, (p, q) => p + q);
      const mulRef = ([u, v]: Float64Array[]) => ref.broadcastBinary(u, v, c.inner, (p, q) => p * q);
      expectClose(await add(at, bt, c.axis).read(), addRef([a, b]), FWD_TOL, 'add');
      expectClose(await mul(at, bt, c.axis).read(), mulRef([a, b]), FWD_TOL, 'mul');
      const ga = addBackward(dyt, c.b, c.axis);
      expectGradient(await ga.da.read(), addRef, [a, b], 0, dy, 'add da');
      expectGradient(await ga.db.read(), addRef, [a, b], 1, dy, 'add db');
      const gm = mulBackward(at, bt, dyt, c.axis);
      expectGradient(await gm.da.read(), mulRef, [a, b], 0, dy, 'mul da');
      expectGradient(await gm.db.read(), mulRef, [a, b], 1, dy, 'mul db');
    });
  }

  it('refuses shapes that do not broadcast', async () => {
    const gpu = await testGpu();
    const a = Tensor.zeros(gpu, [2, 3, 4]);
    expect(() => add(a, Tensor.zeros(gpu, [5]))).toThrow(/cannot broadcast/);
  });
});

describe('scale, concat, upsample', () => {
  it('scale forward and backward', async () => {
    const gpu = await testGpu();
    const x = randn(300, 8);
    const dy = randn(300, 9);
    const f = ([v]: Float64Array[]) => v.map((e) => -2.5 * e);
    expectClose(await scale(Tensor.from(gpu, x, [300]), -2.5).read(), f([x]), FWD_TOL, 'scale');
    expectGradient(await scale(Tensor.from(gpu, dy, [300]), -2.5).read(), f, [x], 0, dy, 'scale dx');
  });

  it('concat along channels, batch 3', async () => {
    const gpu = await testGpu();
    const [n, ca, cb, h, w] = [3, 5, 2, 3, 7];
    const a = randn(n * ca * h * w, 10);
    const b = randn(n * cb * h * w, 11);
    const dy = randn(n * (ca + cb) * h * w, 12);
    const f = ([u, v]: Float64Array[]) => ref.concatChannels(u, v, n, ca, cb, h * w);
    const y = concatChannels(Tensor.from(gpu, a, [n, ca, h, w]), Tensor.from(gpu, b, [n, cb, h, w]));
    expect(y.shape).toEqual([n, ca + cb, h, w]);
    expectClose(await y.read(), f([a, b]), 0, 'concat');
    const g = concatChannelsBackward(Tensor.from(gpu, dy, y.shape), ca);
    expectGradient(await g.da.read(), f, [a, b], 0, dy, 'concat da');
    expectGradient(await g.db.read(), f, [a, b], 1, dy, 'concat db');
  });

  it('nearest 2x upsample, batch 1 and 3, non-square', async () => {
    const gpu = await testGpu();
    for (const [n, c, h, w] of [
      [1, 2, 3, 5],
      [3, 4, 5, 2],
    ]) {
      const x = randn(n * c * h * w, 13);
      const dy = randn(n * c * 4 * h * w, 14);
      const f = ([v]: Float64Array[]) => ref.upsampleNearest2x(v, n * c, h, w);
      expectClose(await upsampleNearest2x(Tensor.from(gpu, x, [n, c, h, w])).read(), f([x]), 0, 'upsample');
      const dx = upsampleNearest2xBackward(Tensor.from(gpu, dy, [n, c, 2 * h, 2 * w]));
      expectGradient(await dx.read(), f, [x], 0, dy, 'upsample dx');
    }
  });

  it('nearest upsample to odd sizes (a UNet skip of an odd latent), as PyTorch picks the source pixel', async () => {
    const gpu = await testGpu();
    for (const [n, c, h, w, oh, ow] of [
      [1, 2, 2, 2, 3, 4],
      [3, 4, 3, 1, 5, 1],
      [2, 1, 4, 3, 7, 5],
    ]) {
      const x = randn(n * c * h * w, 15);
      const y = upsampleNearest(Tensor.from(gpu, x, [n, c, h, w]), oh, ow);
      expect(y.shape).toEqual([n, c, oh, ow]);
      expectClose(await y.read(), ref.upsampleNearest(x, n * c, h, w, oh, ow), 0, `upsample to ${oh}x${ow}`);
    }
    // Twice the size is the same picture as upsampleNearest2x.
    const x = randn(2 * 3 * 4, 16);
    expectClose(await upsampleNearest(Tensor.from(gpu, x, [1, 2, 3, 4]), 6, 8).read(), ref.upsampleNearest2x(x, 2, 3, 4), 0, 'upsample 2x');
  });
});
