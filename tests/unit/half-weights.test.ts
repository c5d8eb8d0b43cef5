// Frozen weights stored as float16 (packed pairs, read with unpack2x16float): matmul operands and conv2d
// weights give the same results as float32 storage of the same (float16-representable) values.

import { describe, expect, it } from 'vitest';
import { f16ToF32, f32ToF16, packHalf, unpackHalf } from '../../src/nn/half';
import { conv2d, conv2dBackward } from '../../src/nn/ops/conv2d';
import { linear, linearBackward, matmul } from '../../src/nn/ops/matmul';
import { Tensor } from '../../src/nn/tensor';
import { expectClose, randn } from '../helpers/check';
import { testGpu } from '../helpers/gpu';

/** Values rounded to float16, so both storages hold exactly the same numbers. */
const halfValues = (n: number, seed: number) => randn(n, seed).map((v) => f16ToF32(f32ToF16(v)));

describe('float16 weight storage', () => {
  it('packs and unpacks pairs, odd lengths included', () => {
    const v = Float32Array.from(halfValues(7, 1));
    expect(Array.from(unpackHalf(packHalf(v), 7))).toEqual(Array.from(v));
  });

  it('matmul with a float16 B (linear) or A (proj_out) equals float32 storage', async () => {
    const gpu = await testGpu();
    const [rows, inF, outF] = [37, 70, 19];
    const x = randn(rows * inF, 2);
    const w = halfValues(outF * inF, 3);
    const xt = Tensor.from(gpu, x, [rows, inF]);
    const w32 = Tensor.from(gpu, w, [outF, inF]);
    const w16 = Tensor.fromHalf(gpu, w, [outF, inF]);
    expect(w16.dtype).toBe('f16');
    expect(Array.from(await w16.read())).toEqual(Array.from(Float32Array.from(w)));
    expectClose(await linear(xt, w16).read(), await linear(xt, w32).read(), 1e-6, 'linear, f16 B');
    const dy = Tensor.from(gpu, randn(rows * outF, 4), [rows, outF]);
    const g16 = linearBackward(xt, w16, dy, { input: true });
    const g32 = linearBackward(xt, w32, dy, { input: true });
    expectClose(await g16.dx!.read(), await g32.dx!.read(), 1e-6, 'linear dx, f16 weight');
    // As the A operand, with the activation batched: W [out, in] @ X^T per batch.
    const xb = Tensor.from(gpu, randn(3 * rows * inF, 5), [3, rows, inF]);
    expectClose(await matmul(w16, xb, { transB: true }).read(), await matmul(w32, xb, { transB: true }).read(), 1e-6, 'matmul, f16 A');
    expect(() => linearBackward(xt, w16, dy, { weight: true })).toThrow(/frozen/);
  });

  it('conv2d with a float16 weight equals float32 storage, forward and input gradient', async () => {
    const gpu = await testGpu();
    const [n, cin, cout, h, w] = [2, 5, 7, 6, 9];
    const x = Tensor.from(gpu, randn(n * cin * h * w, 6), [n, cin, h, w]);
    const wv = halfValues(cout * cin * 9, 7);
    const w32 = Tensor.from(gpu, wv, [cout, cin, 3, 3]);
    const w16 = Tensor.fromHalf(gpu, wv, [cout, cin, 3, 3]);
    const bias = Tensor.from(gpu, randn(cout, 8), [cout]);
    const opts = { stride: 2, padding: 1 };
    const y32 = conv2d(x, w32, bias, opts);
    expectClose(await conv2d(x, w16, bias, opts).read(), await y32.read(), 1e-6, 'conv2d, f16 weight');
    const dy = Tensor.from(gpu, randn(y32.size, 9), y32.shape);
    const dx16 = conv2dBackward(x, w16, dy, opts, { input: true }).dx!;
    const dx32 = conv2dBackward(x, w32, dy, opts, { input: true }).dx!;
    expectClose(await dx16.read(), await dx32.read(), 1e-6, 'conv2d dx, f16 weight');
    expect(() => conv2dBackward(x, w16, dy, opts, { weight: true })).toThrow(/frozen/);
  });
});
