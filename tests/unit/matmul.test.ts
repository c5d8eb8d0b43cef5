import { describe, expect, it, onTestFinished } from 'vitest';
import { cpuKernels, isCpuAdapter } from '../../src/nn/ops/kernels';
import { linear, linearBackward, matmul, matmulBackward } from '../../src/nn/ops/matmul';
import { Tensor } from '../../src/nn/tensor';
import { expectClose, expectGradient, randn } from '../helpers/check';
import { testGpu } from '../helpers/gpu';
import * as ref from '../helpers/reference/matmul';

const FWD_TOL = 1e-5;

interface Case {
  m: number;
  n: number;
  k: number;
  /** Leading (batch) dimensions of A and B; [] for an unbatched operand. */
  aLead: number[];
  bLead: number[];
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
}

const prod = (xs: number[]) => xs.reduce((p, q) => p * q, 1);

async function checkProduct(c: Case, seed: number) {
  const gpu = await testGpu();
  const { m, n, k, transA = false, transB = false, alpha } = c;
  const aShape = [...c.aLead, ...(transA ? [k, m] : [m, k])];
  const bShape = [...c.bLead, ...(transB ? [n, k] : [k, n])];
  const dims: ref.MatmulDims = { m, n, k, batchA: prod(c.aLead), batchB: prod(c.bLead), transA, transB };
  const batch = Math.max(dims.batchA, dims.batchB);
  const a = randn(prod(aShape), seed);
  const b = randn(prod(bShape), seed + 1);
  const dc = randn(batch * m * n, seed + 2);
  const f = ([u, v]: Float64Array[]) => ref.matmul(u, v, dims, { alpha });
  const at = Tensor.from(gpu, a, aShape);
  const bt = Tensor.from(gpu, b, bShape);
  const what = `${m}x${n}x${k} A[${aShape}]${transA ? 'T' : ''} B[${bShape}]${transB ? 'T' : ''}`;

  const y = matmul(at, bt, { transA, transB, alpha });
  const lead = prod(c.aLead) > 1 ? c.aLead : prod(c.bLead) > 1 ? c.bLead : c.aLead.length >= c.bLead.length ? c.aLead : c.bLead;
  expect(y.shape).toEqual([...lead, m, n]);
  expectClose(await y.read(), f([a, b]), FWD_TOL, `${what} forward`);

  const g = matmulBackward(at, bt, Tensor.from(gpu, dc, y.shape), { transA, transB, alpha });
  expect(g.da!.shape).toEqual(aShape);
  expect(g.db!.shape).toEqual(bShape);
  expectGradient(await g.da!.read(), f, [a, b], 0, dc, `${what} da`);
  expectGradient(await g.db!.read(), f, [a, b], 1, dc, `${what} db`);
  // Only what is asked for is computed.
  const onlyA = matmulBackward(at, bt, Tensor.from(gpu, dc, y.shape), { transA, transB, alpha }, { a: true });
  expect(onlyA.db).toBeUndefined();
  expectClose(await onlyA.da!.read(), await g.da!.read(), 0, `${what} da alone`);
}

describe('matmul', () => {
  const flags = [
    [false, false],
    [true, false],
    [false, true],
    [true, true],
  ];
  for (const [transA, transB] of flags) {
    const tag = `${transA ? 'Aᵀ' : 'A'} @ ${transB ? 'Bᵀ' : 'B'}`;
    it(`${tag}: 130 x 17 x 65 unbatched, 17 x 65 x 33 batch 3`, async () => {
      // Neither M, N nor K is a multiple of the 64 tile or the 16 K slice; 130 spans three M tiles.
      await checkProduct({ m: 130, n: 17, k: 65, aLead: [], bLead: [], transA, transB }, 10);
      await checkProduct({ m: 17, n: 65, k: 33, aLead: [3], bLead: [3], transA, transB }, 20);
    });
    it(`${tag}: broadcast operands (a shared weight) and batch 1`, async () => {
      // B shared over A's batch: dB is the sum of three products, summed inside the kernel.
      await checkProduct({ m: 19, n: 23, k: 17, aLead: [3], bLead: [], transA, transB }, 30);
      // A shared over B's batch (with two batch dimensions), and a 3-D operand of batch 1.
      await checkProduct({ m: 5, n: 70, k: 9, aLead: [1], bLead: [3, 2], transA, transB }, 40);
    });
  }

  // gemmPlan picks the 32x32 tile when M or N is at most 32 or M N is at most 4 64x64 tiles, the 64x64
  // tile otherwise, and the direct (unstaged) kernel when K is at most 16; each product's gradients are
  // products of other shapes again.
  // (On a CPU adapter the products whose sides are all multiples of 4 would run as matmul_vec4: switched
  // off here, so that these shapes test the tiled kernels everywhere.)
  for (const [transA, transB] of [flags[0], flags[3]]) {
    const tag = `${transA ? 'Aᵀ' : 'A'} @ ${transB ? 'Bᵀ' : 'B'}`;
    it(`${tag}: each kernel variant, on both sides of its switch-over`, async () => {
      cpuKernels.enabled = false;
      onTestFinished(() => void (cpuKernels.enabled = true));
      await checkProduct({ m: 520, n: 33, k: 20, aLead: [], bLead: [], transA, transB }, 110); // 64 tile, N just above 32
      await checkProduct({ m: 130, n: 32, k: 40, aLead: [2], bLead: [], transA, transB }, 120); // 32 tile, N = 32
      await checkProduct({ m: 128, n: 128, k: 20, aLead: [], bLead: [], transA, transB }, 125); // 32 tile, 4 64-tiles
      await checkProduct({ m: 129, n: 128, k: 20, aLead: [], bLead: [], transA, transB }, 128); // 64 tile, just above
      await checkProduct({ m: 200, n: 100, k: 16, aLead: [], bLead: [], transA, transB }, 130); // direct, 64 tile, K = 16
      await checkProduct({ m: 200, n: 100, k: 17, aLead: [], bLead: [], transA, transB }, 140); // tiled, K one past a slice
      await checkProduct({ m: 9, n: 40, k: 5, aLead: [3], bLead: [3], transA, transB }, 150); // direct, 32 tile
    });
  }

  // matmul_vec4, the CPU adapter's kernel: every side a multiple of 4, float32 operands. Each transpose,
  // batched, broadcast (the weight gradient sums the batch inside the kernel), and K of one step (4).
  it('matmul_vec4 on a CPU adapter: each transpose, batched and broadcast, K = 4', async () => {
    const gpu = await testGpu();
    const used: string[] = [];
    const dispatch = gpu.dispatch.bind(gpu);
    gpu.dispatch = (k, args) => (used.push(k.name), dispatch(k, args));
    onTestFinished(() => void (gpu.dispatch = dispatch));
    for (const [transA, transB] of flags) {
      await checkProduct({ m: 12, n: 8, k: 20, aLead: [], bLead: [], transA, transB }, 210);
      await checkProduct({ m: 8, n: 16, k: 4, aLead: [3], bLead: [], transA, transB }, 220);
      await checkProduct({ m: 4, n: 12, k: 8, aLead: [2], bLead: [2], transA, transB }, 230);
    }
    expect(used.every((name) => name === 'matmul-vec4.matmul_vec4')).toBe(isCpuAdapter(gpu));
    expect(used.includes('matmul-vec4.matmul_vec4')).toBe(isCpuAdapter(gpu));
  });

  it('degenerate sizes: 1 x 1 x 1, a row times a column, K = 1', async () => {
    await checkProduct({ m: 1, n: 1, k: 1, aLead: [], bLead: [], alpha: 1 }, 50);
    await checkProduct({ m: 1, n: 1, k: 130, aLead: [3], bLead: [3] }, 60);
    await checkProduct({ m: 65, n: 66, k: 1, aLead: [], bLead: [], transA: true }, 70);
  });

  it('alpha scales the product and its gradients', async () => {
    await checkProduct({ m: 33, n: 20, k: 18, aLead: [3], bLead: [], transB: true, alpha: -0.375 }, 80);
  });

  for (const [batch, m, n, k] of [[3, 33, 66, 70], [3, 32, 64, 72]]) it(`bias, alpha and accumulate together, batch 3 with a broadcast weight, ${m} x ${n} x ${k}`, async () => {
    // The second shape runs matmul_vec4 on a CPU adapter.
    const gpu = await testGpu();
    const a = randn(batch * m * k, 90);
    const b = randn(n * k, 91);
    const bias = randn(n, 92);
    const prev = randn(batch * m * n, 93);
    const dims = { m, n, k, batchA: batch, batchB: 1, transB: true };
    const acc = Tensor.from(gpu, prev, [batch, m, n]);
    const y = matmul(Tensor.from(gpu, a, [batch, m, k]), Tensor.from(gpu, b, [n, k]), {
      transB: true,
      bias: Tensor.from(gpu, bias, [n]),
      alpha: 0.5,
      accumulateInto: acc,
    });
    expect(y).toBe(acc);
    expectClose(await y.read(), ref.matmul(a, b, dims, { bias, alpha: 0.5, acc: prev }), FWD_TOL, 'bias + accumulate');
    // Accumulating twice adds the product twice: gradient accumulation over micro-batches.
    matmul(Tensor.from(gpu, a, [batch, m, k]), Tensor.from(gpu, b, [n, k]), { transB: true, accumulateInto: acc });
    const once = ref.matmul(a, b, dims, { bias, alpha: 0.5, acc: prev });
    expectClose(await acc.read(), ref.matmul(a, b, dims, { acc: once }), FWD_TOL, 'second accumulate');
  });

  it('refuses mismatched shapes with a clear error', async () => {
    const gpu = await testGpu();
    const a = Tensor.zeros(gpu, [3, 4, 5]);
    expect(() => matmul(a, Tensor.zeros(gpu, [6, 7]))).toThrow(/inner dimensions differ \(5 vs 6\)/);
    expect(() => matmul(a, Tensor.zeros(gpu, [2, 5, 7]))).toThrow(/batch dimensions differ/);
    expect(() => matmul(a, Tensor.zeros(gpu, [5, 7]), { bias: Tensor.zeros(gpu, [5]) })).toThrow(/bias must be \[7\]/);
    expect(() => matmul(a, Tensor.zeros(gpu, [5, 7]), { accumulateInto: Tensor.zeros(gpu, [4, 7]) })).toThrow(
      /accumulateInto must be \[3, 4, 7\]/,
    );
    expect(() => matmul(Tensor.zeros(gpu, [5]), a)).toThrow(/at least 2 dimensions/);
    expect(() => linear(a, Tensor.zeros(gpu, [7, 4]))).toThrow(/does not end in the weight's 4 input features/);
  });
});

describe('linear', () => {
  for (const [lead, inF, out] of [
    [[2, 3], 37, 19],
    [[70], 17, 65],
  ] as [number[], number, number][]) {
    it(`x [${lead}, ${inF}] -> ${out}: forward, dx, dW, db`, async () => {
      const gpu = await testGpu();
      const rows = prod(lead);
      const x = randn(rows * inF, 100);
      const w = randn(out * inF, 101);
      const bias = randn(out, 102);
      const dy = randn(rows * out, 103);
      const f = ([u, v, bb]: Float64Array[]) => ref.linear(u, v, bb, inF, out);
      const xt = Tensor.from(gpu, x, [...lead, inF]);
      const wt = Tensor.from(gpu, w, [out, inF]);
      const y = linear(xt, wt, Tensor.from(gpu, bias, [out]));
      expect(y.shape).toEqual([...lead, out]);
      expectClose(await y.read(), f([x, w, bias]), FWD_TOL, 'linear forward');
      const g = linearBackward(xt, wt, Tensor.from(gpu, dy, y.shape), { input: true, weight: true, bias: true });
      expect(g.dx!.shape).toEqual(xt.shape);
      expectGradient(await g.dx!.read(), f, [x, w, bias], 0, dy, 'linear dx');
      expectGradient(await g.dweight!.read(), f, [x, w, bias], 1, dy, 'linear dW');
      expectGradient(await g.dbias!.read(), f, [x, w, bias], 2, dy, 'linear db');
      const only = linearBackward(xt, wt, Tensor.from(gpu, dy, y.shape), { weight: true });
      expect(only.dx).toBeUndefined();
      expect(only.dbias).toBeUndefined();
      expectGradient(await only.dweight!.read(), f, [x, w, bias], 1, dy, 'linear dW alone');
    });
  }

  it('without a bias', async () => {
    const gpu = await testGpu();
    const x = randn(5 * 8, 110);
    const w = randn(3 * 8, 111);
    const y = linear(Tensor.from(gpu, x, [5, 8]), Tensor.from(gpu, w, [3, 8]));
    expectClose(await y.read(), ref.linear(x, w, undefined, 8, 3), FWD_TOL, 'linear without bias');
  });
});
