import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpuKernels } from '../../src/nn/ops/kernels';
import { groupNorm, layerNorm, normBackward } from '../../src/nn/ops/norm';
import { Tensor } from '../../src/nn/tensor';
import { expectClose, expectGradient, randn } from '../helpers/check';
import { testGpu } from '../helpers/gpu';
import * as ref from '../helpers/reference/norm';

// Both kernel sets on this adapter: the workgroup kernels (GPUs') and, on a CPU adapter, the `_serial` ones.
for (const cpu of [false, true]) describe(cpu ? "the CPU adapter's serial kernels" : 'the workgroup kernels', () => {
beforeAll(() => void (cpuKernels.enabled = cpu));
afterAll(() => void (cpuKernels.enabled = true));

describe('group norm', () => {
  const cases = [
    { n: 1, c: 6, h: 3, w: 5, groups: 3 },
    { n: 3, c: 8, h: 4, w: 7, groups: 2 },
    { n: 2, c: 4, h: 1, w: 1, groups: 4 }, // one value per group: var 0, rstd = 1/sqrt(eps)
    { n: 1, c: 32, h: 9, w: 11, groups: 32 }, // segment of 99 elements, under the workgroup size
    { n: 1, c: 4, h: 24, w: 23, groups: 1 }, // one segment longer than the workgroup
  ];
  for (const { n, c, h, w, groups } of cases) {
    it(`[${n}, ${c}, ${h}, ${w}] in ${groups} groups: forward and backward`, async () => {
      const gpu = await testGpu();
      const eps = 1e-6;
      const size = n * c * h * w;
      // An offset mean checks the variance for cancellation (E[x^2] - E[x]^2 would lose digits here).
      const x = randn(size, 1, 2).map((v) => Math.fround(v + 3));
      const gamma = randn(c, 2, 1.5);
      const beta = randn(c, 3);
      const dy = randn(size, 4);
      const f = ([xx, g, b]: Float64Array[]) => ref.groupNorm(xx, g, b, n, c, h * w, groups, eps);
      const gt = Tensor.from(gpu, gamma, [c]);
      const { y, saved } = groupNorm(Tensor.from(gpu, x, [n, c, h, w]), gt, Tensor.from(gpu, beta, [c]), groups, eps);
      expectClose(await y.read(), f([x, gamma, beta]), 1e-5, 'groupNorm forward');
      if (h * w * (c / groups) === 1) return; // y = beta exactly; the gradient w.r.t. x is 0 and FD is ill-conditioned
      const g = normBackward(saved, gt, Tensor.from(gpu, dy, [n, c, h, w]));
      expectGradient(await g.dx!.read(), f, [x, gamma, beta], 0, dy, 'groupNorm dx');
      expectGradient(await g.dgamma!.read(), f, [x, gamma, beta], 1, dy, 'groupNorm dgamma');
      expectGradient(await g.dbeta!.read(), f, [x, gamma, beta], 2, dy, 'groupNorm dbeta');
    });
  }

  it('refuses channels that do not split into groups', async () => {
    const gpu = await testGpu();
    const t = Tensor.zeros(gpu, [1, 6, 2, 2]);
    expect(() => groupNorm(t, Tensor.zeros(gpu, [6]), Tensor.zeros(gpu, [6]), 4, 1e-6)).toThrow(/do not split/);
  });
});

describe('layer norm', () => {
  for (const [rows, d] of [
    [1, 7],
    [3, 40],
    [77, 300], // a row longer than the workgroup
    [5, 32], // a short row: 32 threads, one element each
    [4, 256], // the longest row for 32 threads (8 each)
    [3, 257], // one past it: 64 threads
    [2, 2500], // 256 threads, the reduction's halving tree before its fold
  ]) {
    it(`[${rows}, ${d}]: forward and backward`, async () => {
      const gpu = await testGpu();
      const eps = 1e-5;
      // Offset by 20 standard deviations: the one-pass statistics must not cancel.
      const x = randn(rows * d, 5, 3).map((v) => Math.fround(v + 60));
      const gamma = randn(d, 6);
      const beta = randn(d, 7);
      const dy = randn(rows * d, 8);
      const f = ([xx, g, b]: Float64Array[]) => ref.layerNorm(xx, g, b, d, eps);
      const gt = Tensor.from(gpu, gamma, [d]);
      const { y, saved } = layerNorm(Tensor.from(gpu, x, [rows, d]), gt, Tensor.from(gpu, beta, [d]), eps);
      expectClose(await y.read(), f([x, gamma, beta]), 1e-5, 'layerNorm forward');
      const g = normBackward(saved, gt, Tensor.from(gpu, dy, [rows, d]));
      expectGradient(await g.dx!.read(), f, [x, gamma, beta], 0, dy, 'layerNorm dx');
      expectGradient(await g.dgamma!.read(), f, [x, gamma, beta], 1, dy, 'layerNorm dgamma');
      expectGradient(await g.dbeta!.read(), f, [x, gamma, beta], 2, dy, 'layerNorm dbeta');
    });
  }
});
});
