// 2-D convolution (shaders/conv2d.wgsl; on a CPU adapter, stride-1 1x1 / 3x3 "same" convolutions run
// shaders/conv2d-vec4.wgsl): forward next to its backward. NCHW, weight [Cout, Cin, KH, KW].

import source from '../../../shaders/conv2d.wgsl?raw';
import vec4Source from '../../../shaders/conv2d-vec4.wgsl?raw';
import gemmTileSource from '../../../shaders/gemm-tile.wgsl?raw';
import { u32, type Gpu } from '../../gpu/gpu';
import { Tensor } from '../tensor';
import { family, foldGrid, kernel, useCpuKernels } from './kernels';
import { gemmPlan, tileConstants } from './matmul';
import { sumBroadcast } from './reduce';

const fam = family('conv2d', gemmTileSource, source);
const vec4Fam = family('conv2d-vec4', vec4Source);
/** Threads per workgroup of the conv2d-vec4.wgsl kernels (VEC4_WG). */
const VEC4_WG = 64;

export interface Conv2dOptions {
  /** Default 1. */
  stride?: number;
  /** One value for all four sides, or [top, left, bottom, right]. Default 0. */
  padding?: number | [top: number, left: number, bottom: number, right: number];
}

/** Every size a conv2d kernel needs, resolved and checked once. */
interface Geometry {
  n: number;
  cIn: number;
  h: number;
  w: number;
  cOut: number;
  kh: number;
  kw: number;
  stride: number;
  top: number;
  left: number;
  ho: number;
  wo: number;
}

function geometry(name: string, x: Tensor, weight: Tensor, opts: Conv2dOptions): Geometry {
  if (x.shape.length !== 4) throw new Error(`${name}: input must be [N, C, H, W], got [${x.shape.join(', ')}]`);
  if (weight.shape.length !== 4) {
    throw new Error(`${name}: weight must be [Cout, Cin, KH, KW], got [${weight.shape.join(', ')}]`);
  }
  const [n, cIn, h, w] = x.shape;
  const [cOut, wIn, kh, kw] = weight.shape;
  if (wIn !== cIn) {
    throw new Error(`${name}: weight [${weight.shape.join(', ')}] expects ${wIn} input channels, input [${x.shape.join(', ')}] has ${cIn}`);
  }
  const stride = opts.stride ?? 1;
  if (!Number.isInteger(stride) || stride < 1) throw new Error(`${name}: stride must be a positive integer, got ${stride}`);
  const pad = opts.padding ?? 0;
  const [top, left, bottom, right] = typeof pad === 'number' ? [pad, pad, pad, pad] : pad;
  if (![top, left, bottom, right].every((v) => Number.isInteger(v) && v >= 0)) {
    throw new Error(`${name}: padding must be non-negative integers, got [${[top, left, bottom, right].join(', ')}]`);
  }
  const hp = h + top + bottom;
  const wp = w + left + right;
  if (kh < 1 || kw < 1 || hp < kh || wp < kw) {
    throw new Error(`${name}: a ${kh}x${kw} kernel does not fit the padded ${hp}x${wp} input`);
  }
  return { n, cIn, h, w, cOut, kh, kw, stride, top, left, ho: Math.floor((hp - kh) / stride) + 1, wo: Math.floor((wp - kw) / stride) + 1 };
}

/** One implicit-GEMM kernel of conv2d.wgsl, M x N x K per batch element (K summing over the batch for dW). */
function run(gpu: Gpu, entry: string, g: Geometry, gemmM: number, gemmN: number, gemmK: number, batches: number, buffers: GPUBuffer[], hasBias = false, halfWeight = false) {
  const { tile, direct } = gemmPlan(gemmM, gemmN, gemmK);
  const tilesN = Math.ceil(gemmN / tile.tile);
  const tilesM = Math.ceil(gemmM / tile.tile);
  const constants = { ...tileConstants(tile), HAS_BIAS: hasBias ? 1 : 0, W_F16: halfWeight ? 1 : 0 };
  gpu.dispatch(kernel(gpu, fam, direct ? `${entry}_direct` : entry, { constants }), {
    params: [
      u32(g.cIn),
      u32(g.h),
      u32(g.w),
      u32(g.cOut),
      u32(g.ho),
      u32(g.wo),
      u32(g.kh),
      u32(g.kw),
      u32(g.stride),
      u32(g.top),
      u32(g.left),
      u32(g.n),
      u32(tilesN),
      u32(tilesM),
    ],
    workgroups: foldGrid(tilesN * tilesM * batches),
    buffers,
  });
}

/**
 * Whether conv2d-vec4.wgsl's kernels take this convolution: on a CPU adapter (as matmul_vec4 does), float32
 * operands, stride 1, a 1x1 or 3x3 kernel with "same" padding, a width that is a multiple of 4, and
 * `channels` (those a thread takes four at a time) a multiple of 4.
 */
function sameVec4(gpu: Gpu, g: Geometry, channels: number, ...operands: Tensor[]): boolean {
  const same = g.stride === 1 && g.kh === g.kw && (g.kh === 1 || g.kh === 3) && g.top === (g.kh - 1) / 2 && g.left === g.top && g.ho === g.h && g.wo === g.w;
  return same && g.w % 4 === 0 && channels % 4 === 0 && operands.every((t) => t.dtype === 'f32') && useCpuKernels(gpu);
}

/** conv2d-vec4.wgsl's `entry` over `threads` threads; `channels` [read, written] (see its Params). */
function runVec4(gpu: Gpu, entry: string, g: Geometry, channels: [number, number], threads: number, buffers: GPUBuffer[], constants: Record<string, number>) {
  gpu.dispatch(kernel(gpu, vec4Fam, entry, { constants: { KSIZE: g.kh, ...constants } }), {
    params: [u32(channels[0]), u32(channels[1]), u32(g.h), u32(g.w), u32(g.n)],
    workgroups: foldGrid(Math.ceil(threads / VEC4_WG)),
    buffers,
  });
}

/**
 * y = conv2d(x, weight) + bias: x [N, Cin, H, W], weight [Cout, Cin, KH, KW], bias [Cout] or undefined.
 * Output [N, Cout, Ho, Wo] with Ho = floor((H + top + bottom - KH) / stride) + 1, Wo likewise.
 */
export function conv2d(x: Tensor, weight: Tensor, bias: Tensor | undefined, opts: Conv2dOptions = {}): Tensor {
  const g = geometry('conv2d', x, weight, opts);
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== g.cOut)) {
    throw new Error(`conv2d: bias must be [${g.cOut}], got [${bias.shape.join(', ')}]`);
  }
  const y = Tensor.empty(x.gpu, [g.n, g.cOut, g.ho, g.wo]);
  // Without a bias the binding still needs a buffer; the weight stands in and is never read through it.
  if (x.dtype !== 'f32' || bias?.dtype === 'f16') throw new Error('conv2d: only the weight may be float16');
  if (sameVec4(x.gpu, g, g.cOut, weight)) {
    const threads = g.n * g.cOut * g.h * g.w / 16;
    runVec4(x.gpu, 'conv_same_vec4', g, [g.cIn, g.cOut], threads, [x.buffer, weight.buffer, y.buffer, (bias ?? weight).buffer], { HAS_BIAS: bias ? 1 : 0, FLIP: 0 });
    return y;
  }
  run(x.gpu, 'conv_forward', g, g.cOut, g.ho * g.wo, g.cIn * g.kh * g.kw, g.n, [x.buffer, weight.buffer, y.buffer, (bias ?? weight).buffer], !!bias, weight.dtype === 'f16');
  return y;
}

/**
 * Gradients of conv2d given dy [N, Cout, Ho, Wo]: dx [N, Cin, H, W], dweight [Cout, Cin, KH, KW] (summed
 * over the batch), dbias [Cout]. Only the ones asked for are computed.
 */
export function conv2dBackward(
  x: Tensor,
  weight: Tensor,
  dy: Tensor,
  opts: Conv2dOptions,
  need: { input?: boolean; weight?: boolean; bias?: boolean },
): { dx?: Tensor; dweight?: Tensor; dbias?: Tensor } {
  const g = geometry('conv2dBackward', x, weight, opts);
  const yShape = [g.n, g.cOut, g.ho, g.wo];
  if (dy.shape.length !== 4 || dy.shape.some((d, i) => d !== yShape[i])) {
    throw new Error(`conv2dBackward: dy must be [${yShape.join(', ')}], got [${dy.shape.join(', ')}]`);
  }
  const gpu = x.gpu;
  const result: { dx?: Tensor; dweight?: Tensor; dbias?: Tensor } = {};
  if (need.input) {
    result.dx = Tensor.empty(gpu, x.shape);
    if (sameVec4(gpu, g, g.cIn, weight)) {
      const threads = g.n * g.cIn * g.h * g.w / 16;
      runVec4(gpu, 'conv_same_vec4', g, [g.cOut, g.cIn], threads, [dy.buffer, weight.buffer, result.dx.buffer, weight.buffer], { HAS_BIAS: 0, FLIP: 1 });
    } else run(gpu, 'conv_backward_input', g, g.cIn, g.h * g.w, g.cOut * g.kh * g.kw, g.n, [dy.buffer, weight.buffer, result.dx.buffer], false, weight.dtype === 'f16');
  }
  if (need.weight) {
    if (weight.dtype === 'f16') throw new Error('conv2dBackward: a float16 weight is frozen and gets no gradient');
    result.dweight = Tensor.empty(gpu, weight.shape);
    if (sameVec4(gpu, g, g.cOut, weight)) {
      const threads = (g.cOut / 4) * g.cIn * g.kh;
      runVec4(gpu, 'conv_same_vec4_weight', g, [g.cIn, g.cOut], threads, [x.buffer, dy.buffer, result.dweight.buffer], {});
    } else run(gpu, 'conv_backward_weight', g, g.cOut, g.cIn * g.kh * g.kw, g.n * g.ho * g.wo, 1, [x.buffer, dy.buffer, result.dweight.buffer]);
  }
  if (need.bias) result.dbias = sumBroadcast(dy, [g.cOut], g.ho * g.wo);
  return result;
}
