// Reductions (shaders/reduce.wgsl).

import source from '../../../shaders/reduce.wgsl?raw';
import workgroupReduce from '../../../shaders/workgroup-reduce.wgsl?raw';
import { f32, u32, type Gpu } from '../../gpu/gpu';
import { numel, Tensor } from '../tensor';
import { family, grid1d, kernel } from './kernels';

const fam = family('reduce', workgroupReduce, source);

function params(outer: number, size: number, inner: number, scale = 1, per = 0) {
  return [u32(outer), u32(size), u32(inner), f32(scale), u32(per)];
}

/**
 * Terms one thread of sum_broadcast sums before its chunk ends, and the most chunks per output: enough
 * threads to fill a GPU when the outputs are few (a bias of 320 channels over 8192 rows), while each thread
 * still does enough work to pay for its launch on a CPU adapter.
 */
const TERMS_PER_THREAD = 1024;
const MAX_CHUNKS = 64;

/**
 * Sums dy over a broadcast: out[j] = sum_{o,k} dy[(o * size + j) * inner + k], size = numel(outShape)
 * (times `a` elementwise when given). Bias gradients: linear [R, C] -> [C] with inner 1; conv [N, C, H, W]
 * -> [C] with inner H*W.
 */
export function sumBroadcast(dy: Tensor, outShape: readonly number[], inner: number, a?: Tensor): Tensor {
  const size = numel(outShape);
  const outer = dy.size / (size * inner);
  if (!Number.isInteger(outer)) throw new Error(`sumBroadcast: [${dy.shape}] does not tile [${outShape}] x ${inner}`);
  const gpu = dy.gpu;
  const count = outer * inner;
  const chunks = Math.min(MAX_CHUNKS, Math.max(1, Math.ceil(count / TERMS_PER_THREAD)));
  const per = Math.ceil(count / chunks);
  const out = Tensor.empty(gpu, chunks === 1 ? outShape : [chunks, size]);
  const [x, y] = grid1d(size, 64);
  gpu.dispatch(kernel(gpu, fam, 'sum_broadcast', { constants: { MUL_A: a ? 1 : 0 } }), {
    params: params(outer, size, inner, 1, per),
    // Without `a` the binding still needs a buffer; dy stands in and is never read through it.
    buffers: [dy.buffer, out.buffer, (a ?? dy).buffer],
    workgroups: [x, y, chunks],
  });
  if (chunks === 1) return out;
  const total = sumBroadcast(out, outShape, 1);
  out.release();
  return total;
}

/** Sum of every element: a tensor of shape [1]. */
export function sumAll(x: Tensor): Tensor {
  return sumBroadcast(x, [1], x.size);
}

/** Per-example mean squared error of a and b, both [N, ...]: err [N]. */
export function mseRows(a: Tensor, b: Tensor): Tensor {
  const n = a.shape[0];
  const m = a.size / n;
  if (b.size !== a.size) throw new Error(`mseRows: [${a.shape}] vs [${b.shape}]`);
  const err = Tensor.empty(a.gpu, [n]);
  a.gpu.dispatch(kernel(a.gpu, fam, 'mse_forward'), {
    params: params(m, a.size, 1),
    buffers: [a.buffer, b.buffer, err.buffer],
    workgroups: [n],
  });
  return err;
}

/**
 * mseRows(a, c) - mseRows(b, c) per example, computed as mean((a - b)(a + b - 2c)) so that the small
 * difference of two nearly equal errors keeps its precision. Its gradient w.r.t. a is mseRowsBackward(a, c).
 */
export function mseRowsDiff(a: Tensor, b: Tensor, c: Tensor): Tensor {
  const n = a.shape[0];
  if (b.size !== a.size || c.size !== a.size) throw new Error(`mseRowsDiff: [${a.shape}], [${b.shape}] and [${c.shape}] differ`);
  const d = Tensor.empty(a.gpu, [n]);
  a.gpu.dispatch(kernel(a.gpu, fam, 'mse_diff_forward'), {
    params: params(a.size / n, a.size, 1),
    buffers: [a.buffer, b.buffer, c.buffer, d.buffer],
    workgroups: [n],
  });
  return d;
}

/** Gradient of mseRows w.r.t. a, given derr [N]. The gradient w.r.t. b is its negative. */
export function mseRowsBackward(a: Tensor, b: Tensor, derr: Tensor): Tensor {
  const n = a.shape[0];
  const da = Tensor.empty(a.gpu, a.shape);
  a.gpu.dispatch(kernel(a.gpu, fam, 'mse_backward'), {
    params: params(a.size / n, a.size, 1),
    buffers: [a.buffer, b.buffer, derr.buffer, da.buffer],
    workgroups: grid1d(a.size),
  });
  return da;
}

/** Adds sum(x^2) into acc[0] for each x: the squared global gradient norm, with no readback. */
export function accumulateSumSquares(gpu: Gpu, xs: Tensor[], acc: Tensor): void {
  const k = kernel(gpu, fam, 'sum_squares_accumulate');
  for (const x of xs) gpu.dispatch(k, { params: params(x.size, 1, 1), buffers: [x.buffer, acc.buffer], workgroups: [1] });
}
