import { describe, expect, it, onTestFinished } from 'vitest';
import { isCpuAdapter } from '../../src/nn/ops/kernels';
import { conv2d, conv2dBackward, type Conv2dOptions } from '../../src/nn/ops/conv2d';
import { Tensor } from '../../src/nn/tensor';
import { expectClose, expectGradient, randn } from '../helpers/check';
import { testGpu } from '../helpers/gpu';
import * as ref from '../helpers/reference/conv2d';

const FWD_TOL = 1e-5;

interface Case {
  name: string;
  d: ref.ConvDims;
  /** How the case passes its padding to conv2d (a number when all four sides agree). */
  padding: Conv2dOptions['padding'];
  bias?: boolean;
  /** On a CPU adapter, every conv kernel of the case is one of conv2d-vec4.wgsl's (stride 1, "same" 1x1 or 3x3, width and channels multiples of 4). */
  vec4?: boolean;
}

const cases: Case[] = [
  { name: '3x3 s1 p1, batch 1, H != W', d: { n: 1, cIn: 3, h: 7, w: 5, cOut: 5, kh: 3, kw: 3, stride: 1, pad: [1, 1, 1, 1] }, padding: 1, bias: true },
  {
    // Two tiles of output channels and of positions, six K slices.
    name: '3x3 s1 p1, 67 output channels, 9x11 positions',
    d: { n: 1, cIn: 9, h: 9, w: 11, cOut: 67, kh: 3, kw: 3, stride: 1, pad: [1, 1, 1, 1] },
    padding: 1,
    bias: true,
  },
  { name: '3x3 s2 p1, batch 3, odd width', d: { n: 3, cIn: 5, h: 8, w: 7, cOut: 3, kh: 3, kw: 3, stride: 2, pad: [1, 1, 1, 1] }, padding: [1, 1, 1, 1], bias: true },
  {
    // The VAE's Downsample2D: pad right and bottom by one, then 3x3 stride 2 with no padding.
    name: '3x3 s2 pad (top 0, left 0, bottom 1, right 1), batch 3, odd height',
    d: { n: 3, cIn: 3, h: 7, w: 6, cOut: 4, kh: 3, kw: 3, stride: 2, pad: [0, 0, 1, 1] },
    padding: [0, 0, 1, 1],
    bias: true,
  },
  {
    // 70 input channels: two tiles of rows in the input-gradient product.
    name: '1x1 p0, batch 3, 70 -> 5 channels',
    d: { n: 3, cIn: 70, h: 3, w: 5, cOut: 5, kh: 1, kw: 1, stride: 1, pad: [0, 0, 0, 0] },
    padding: 0,
    bias: true,
  },
  {
    // 33 output channels x 24x24 positions: the forward takes the 64x64 tile, just above both switches to
    // the 32x32 one (M or N at most 32, or at most four 64x64 tiles); the other products here take 32x32.
    name: '3x3 s1 p1, 33 output channels, 24x24 positions',
    d: { n: 1, cIn: 2, h: 24, w: 24, cOut: 33, kh: 3, kw: 3, stride: 1, pad: [1, 1, 1, 1] },
    padding: 1,
    bias: true,
  },
  {
    // One input channel: the forward's K is 9 and the weight gradient's 4x4 outputs give K = 16, so both
    // take the direct (unstaged) kernels, at stride 2.
    name: '3x3 s2 p1, one input channel',
    d: { n: 1, cIn: 1, h: 7, w: 7, cOut: 5, kh: 3, kw: 3, stride: 2, pad: [1, 1, 1, 1] },
    padding: 1,
    bias: true,
  },
  {
    // One output channel: the input gradient's K is 9, the direct kernel, gathering at stride 2.
    name: '3x3 s2 pad (0, 0, 1, 1), one output channel',
    d: { n: 2, cIn: 6, h: 7, w: 6, cOut: 1, kh: 3, kw: 3, stride: 2, pad: [0, 0, 1, 1] },
    padding: [0, 0, 1, 1],
  },
  {
    // A 2x3 kernel at stride 3 skips input pixels (their gradient is zero); lopsided padding, no bias.
    name: '2x3 s3 pad (1, 0, 2, 1), no bias',
    d: { n: 2, cIn: 3, h: 8, w: 10, cOut: 7, kh: 2, kw: 3, stride: 3, pad: [1, 0, 2, 1] },
    padding: [1, 0, 2, 1],
  },
  // The CPU adapter's kernels (conv2d-vec4.wgsl): a row of four pixels per thread, its neighbours as padding
  // at the image's edges; channels four at a time.
  { name: '3x3 s1 p1, batch 2, 8 -> 12 channels, 5x8 (vec4 on a CPU adapter)', d: { n: 2, cIn: 8, h: 5, w: 8, cOut: 12, kh: 3, kw: 3, stride: 1, pad: [1, 1, 1, 1] }, padding: 1, bias: true, vec4: true },
  { name: '3x3 s1 p1, 4 -> 4 channels, 3x4: one row of four (vec4 on a CPU adapter)', d: { n: 1, cIn: 4, h: 3, w: 4, cOut: 4, kh: 3, kw: 3, stride: 1, pad: [1, 1, 1, 1] }, padding: 1, vec4: true },
  { name: '1x1 p0, batch 3, 4 -> 8 channels, 2x12 (vec4 on a CPU adapter)', d: { n: 3, cIn: 4, h: 2, w: 12, cOut: 8, kh: 1, kw: 1, stride: 1, pad: [0, 0, 0, 0] }, padding: 0, bias: true, vec4: true },
];

describe('conv2d', () => {
  for (const c of cases) {
    it(`${c.name}: forward, dx, dW${c.bias ? ', db' : ''}`, async () => {
      const gpu = await testGpu();
      const { d } = c;
      const [ho, wo] = ref.outputSize(d);
      const x = randn(d.n * d.cIn * d.h * d.w, 1);
      const w = randn(d.cOut * d.cIn * d.kh * d.kw, 2);
      const bias = c.bias ? randn(d.cOut, 3) : undefined;
      const dy = randn(d.n * d.cOut * ho * wo, 4);
      const inputs = bias ? [x, w, bias] : [x, w];
      const f = ([u, v, bb]: Float64Array[]) => ref.conv2d(u, v, bb, d);
      const opts = { stride: d.stride, padding: c.padding };

      const used: string[] = [];
      const dispatch = gpu.dispatch.bind(gpu);
      gpu.dispatch = (k, args) => (used.push(k.name), dispatch(k, args));
      onTestFinished(() => void (gpu.dispatch = dispatch));
      const xt = Tensor.from(gpu, x, [d.n, d.cIn, d.h, d.w]);
      const wt = Tensor.from(gpu, w, [d.cOut, d.cIn, d.kh, d.kw]);
      const y = conv2d(xt, wt, bias && Tensor.from(gpu, bias, [d.cOut]), opts);
      expect(y.shape).toEqual([d.n, d.cOut, ho, wo]);
      expectClose(await y.read(), f(inputs), FWD_TOL, `${c.name} forward`);

      const g = conv2dBackward(xt, wt, Tensor.from(gpu, dy, y.shape), opts, { input: true, weight: true, bias: !!bias });
      expect(g.dx!.shape).toEqual(xt.shape);
      expect(g.dweight!.shape).toEqual(wt.shape);
      expectGradient(await g.dx!.read(), f, inputs, 0, dy, `${c.name} dx`);
      expectGradient(await g.dweight!.read(), f, inputs, 1, dy, `${c.name} dW`);
      if (bias) expectGradient(await g.dbias!.read(), f, inputs, 2, dy, `${c.name} db`);
      else expect(g.dbias).toBeUndefined();
      const convs = used.filter((name) => name.startsWith('conv2d'));
      expect(convs).toHaveLength(3);
      expect(convs.every((name) => name.startsWith('conv2d-vec4.'))).toBe(!!c.vec4 && isCpuAdapter(gpu));
    });
  }

  it('computes only the gradients asked for', async () => {
    const gpu = await testGpu();
    const d: ref.ConvDims = { n: 2, cIn: 2, h: 5, w: 4, cOut: 3, kh: 3, kw: 3, stride: 1, pad: [1, 1, 1, 1] };
    const x = randn(d.n * d.cIn * d.h * d.w, 5);
    const w = randn(d.cOut * d.cIn * 9, 6);
    const dy = randn(d.n * d.cOut * d.h * d.w, 7);
    const xt = Tensor.from(gpu, x, [d.n, d.cIn, d.h, d.w]);
    const wt = Tensor.from(gpu, w, [d.cOut, d.cIn, 3, 3]);
    const g = conv2dBackward(xt, wt, Tensor.from(gpu, dy, [d.n, d.cOut, d.h, d.w]), { padding: 1 }, { input: true });
    expect(g.dweight).toBeUndefined();
    expect(g.dbias).toBeUndefined();
    expectGradient(await g.dx!.read(), ([u, v]) => ref.conv2d(u, v, undefined, d), [x, w], 0, dy, 'dx alone');
  });

  it('refuses mismatched shapes with a clear error', async () => {
    const gpu = await testGpu();
    const x = Tensor.zeros(gpu, [2, 3, 8, 8]);
    const w = Tensor.zeros(gpu, [4, 3, 3, 3]);
    expect(() => conv2d(x, Tensor.zeros(gpu, [4, 5, 3, 3]), undefined)).toThrow(/expects 5 input channels.*has 3/);
    expect(() => conv2d(x.view([6, 8, 8]), w, undefined)).toThrow(/input must be \[N, C, H, W\]/);
    expect(() => conv2d(x, w.view([4, 27]), undefined)).toThrow(/weight must be \[Cout, Cin, KH, KW\]/);
    expect(() => conv2d(x, w, Tensor.zeros(gpu, [3]))).toThrow(/bias must be \[4\]/);
    expect(() => conv2d(x, Tensor.zeros(gpu, [4, 3, 9, 9]), undefined)).toThrow(/does not fit the padded 8x8 input/);
    expect(() => conv2d(x, w, undefined, { stride: 0 })).toThrow(/stride must be a positive integer/);
    expect(() => conv2d(x, w, undefined, { padding: [1, -1, 1, 1] })).toThrow(/padding must be non-negative/);
    expect(() => conv2dBackward(x, w, Tensor.zeros(gpu, [2, 4, 8, 8]), { stride: 2, padding: 1 }, { input: true })).toThrow(
      /dy must be \[2, 4, 4, 4\], got \[2, 4, 8, 8\]/,
    );
  });
});
