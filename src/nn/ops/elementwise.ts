// Element-wise ops (shaders/elementwise.wgsl): each forward next to its backward.

import source from '../../../shaders/elementwise.wgsl?raw';
import { f32, u32, type Gpu } from '../../gpu/gpu';
import { numel, Tensor } from '../tensor';
import { family, grid1d, kernel } from './kernels';
import { sumBroadcast } from './reduce';

const fam = family('elementwise', source);

export type Activation = 'silu' | 'gelu' | 'quick_gelu';
const ACT_CODE: Record<Activation, number> = { silu: 0, gelu: 1, quick_gelu: 2 };

function params(n: number, inner = 1, bSize = 1, extra = 0, alpha = 0) {
  return [u32(n), u32(inner), u32(bSize), u32(extra), f32(alpha)];
}

function run(gpu: Gpu, entry: string, p: ReturnType<typeof params>, buffers: GPUBuffer[], n: number, constants?: Record<string, number>) {
  gpu.dispatch(kernel(gpu, fam, entry, { constants }), { params: p, buffers, workgroups: grid1d(n) });
}

export function activation(x: Tensor, fn: Activation): Tensor {
  const y = Tensor.empty(x.gpu, x.shape);
  run(x.gpu, 'activation_forward', params(x.size), [x.buffer, y.buffer], x.size, { ACT: ACT_CODE[fn] });
  return y;
}

export function activationBackward(x: Tensor, dy: Tensor, fn: Activation): Tensor {
  const dx = Tensor.empty(x.gpu, x.shape);
  run(x.gpu, 'activation_backward', params(x.size), [x.buffer, dy.buffer, dx.buffer], x.size, { ACT: ACT_CODE[fn] });
  return dx;
}

/** diffusers' GEGLU after its projection: x [..., 2D] -> x[..., :D] * gelu(x[..., D:]). */
export function geglu(x: Tensor): Tensor {
  const d2 = x.shape[x.shape.length - 1];
  if (d2 % 2 !== 0) throw new Error(`geglu: last dimension ${d2} is odd`);
  const shape = [...x.shape.slice(0, -1), d2 / 2];
  const y = Tensor.empty(x.gpu, shape);
  run(x.gpu, 'geglu_forward', params(y.size, d2 / 2), [x.buffer, y.buffer], y.size, { ACT: ACT_CODE.gelu });
  return y;
}

export function gegluBackward(x: Tensor, dy: Tensor): Tensor {
  const dx = Tensor.empty(x.gpu, x.shape);
  const d = x.shape[x.shape.length - 1] / 2;
  run(x.gpu, 'geglu_backward', params(dy.size, d), [x.buffer, dy.buffer, dx.buffer], dy.size, { ACT: ACT_CODE.gelu });
  return dx;
}

/**
 * How `b` lines up with `a` for a broadcast: b's element for a[i] is b[(i / inner) % b.size].
 * `inner` is the product of a's dimensions after b's last one, found by matching b's shape to a
 * trailing-aligned run of a's dimensions ending before `inner` (e.g. [C] or [N, C] against [N, C, H, W]).
 */
export interface Broadcast {
  inner: number;
}

export function broadcastOf(a: readonly number[], b: readonly number[], axis?: number): Broadcast {
  if (numel(b) === numel(a)) return { inner: 1 };
  // b covers a's dimensions [axis - b.length + 1 .. axis]; by default the trailing ones.
  const last = axis ?? a.length - 1;
  const first = last - b.length + 1;
  if (first < 0 || b.some((d, i) => d !== a[first + i])) {
    throw new Error(`cannot broadcast [${b.join(', ')}] over [${a.join(', ')}] at axis ${last}`);
  }
  return { inner: numel(a.slice(last + 1)) };
}

/** y = a + b or a * b, with b broadcast (see broadcastOf; `axis` is the last dim of a that b spans). */
export function binary(op: 'add' | 'mul', a: Tensor, b: Tensor, axis?: number): Tensor {
  const { inner } = broadcastOf(a.shape, b.shape, axis);
  const y = Tensor.empty(a.gpu, a.shape);
  run(a.gpu, 'binary_forward', params(a.size, inner, b.size), [a.buffer, b.buffer, y.buffer], a.size, {
    BINARY_MUL: op === 'mul' ? 1 : 0,
  });
  return y;
}

export const add = (a: Tensor, b: Tensor, axis?: number) => binary('add', a, b, axis);
export const mul = (a: Tensor, b: Tensor, axis?: number) => binary('mul', a, b, axis);

/**
 * Gradients of a + b: da = dy (returned as is, not copied), db = dy summed over the broadcast; for a b of
 * a's size that sum is dy itself, returned as a further reference (see Tensor.ref), not a copy.
 */
export function addBackward(dy: Tensor, bShape: readonly number[], axis?: number): { da: Tensor; db: Tensor } {
  const { inner } = broadcastOf(dy.shape, bShape, axis);
  if (numel(bShape) === dy.size) return { da: dy, db: dy.ref(bShape) };
  return { da: dy, db: sumBroadcast(dy, bShape, inner) };
}

/** Gradients of a * b: da = dy * b, db = sum over the broadcast of dy * a. */
export function mulBackward(a: Tensor, b: Tensor, dy: Tensor, axis?: number): { da: Tensor; db: Tensor } {
  const { inner } = broadcastOf(a.shape, b.shape, axis);
  const da = Tensor.empty(a.gpu, a.shape);
  run(a.gpu, 'mul_backward_a', params(a.size, inner, b.size), [dy.buffer, b.buffer, da.buffer], a.size);
  if (b.size !== a.size) return { da, db: sumBroadcast(dy, b.shape, inner, a) };
  // Same size: db = dy * a element by element, the same kernel with the roles swapped.
  const db = Tensor.empty(a.gpu, b.shape);
  run(a.gpu, 'mul_backward_a', params(a.size, 1, a.size), [dy.buffer, a.buffer, db.buffer], a.size);
  return { da, db };
}

/** y = alpha * x. Its backward is scale(dy, alpha). */
export function scale(x: Tensor, alpha: number): Tensor {
  const y = Tensor.empty(x.gpu, x.shape);
  run(x.gpu, 'scale_forward', params(x.size, 1, 1, 0, alpha), [x.buffer, y.buffer], x.size);
  return y;
}

function channelDims(t: Tensor): [number, number, number] {
  const [n, c, ...rest] = t.shape;
  return [n, c, numel(rest)];
}

/** Concatenate along dim 1 (channels): a [N, Ca, ...], b [N, Cb, ...]. */
export function concatChannels(a: Tensor, b: Tensor): Tensor {
  const [n, ca, s] = channelDims(a);
  const [nb, cb, sb] = channelDims(b);
  if (n !== nb || s !== sb) throw new Error(`concatChannels: [${a.shape}] and [${b.shape}] differ outside dim 1`);
  const y = Tensor.empty(a.gpu, [n, ca + cb, ...a.shape.slice(2)]);
  run(a.gpu, 'concat_forward', params(y.size, s, ca, cb), [a.buffer, b.buffer, y.buffer], y.size);
  return y;
}

export function concatChannelsBackward(dy: Tensor, ca: number): { da: Tensor; db: Tensor } {
  const [n, c, s] = channelDims(dy);
  const cb = c - ca;
  const da = Tensor.empty(dy.gpu, [n, ca, ...dy.shape.slice(2)]);
  const db = Tensor.empty(dy.gpu, [n, cb, ...dy.shape.slice(2)]);
  run(dy.gpu, 'concat_backward', params(dy.size, s, ca, cb), [dy.buffer, da.buffer, db.buffer], dy.size);
  return { da, db };
}

/** Nearest-neighbour 2x upsampling of [N, C, H, W] (diffusers' Upsample2D before its conv). */
export function upsampleNearest2x(x: Tensor): Tensor {
  return upsampleNearest(x, 2 * x.shape[2], 2 * x.shape[3]);
}

/**
 * Nearest-neighbour upsampling of [N, C, H, W] to [N, C, outH, outW] (outH >= H, outW >= W), as PyTorch's
 * F.interpolate(mode="nearest"): the UNet's upsamplers meet odd-sized skip connections this way.
 */
export function upsampleNearest(x: Tensor, outH: number, outW: number): Tensor {
  const [n, c, h, w] = x.shape;
  if (!(outH >= h && outW >= w)) throw new Error(`upsampleNearest: [${x.shape}] cannot grow to ${outH}x${outW}`);
  const y = Tensor.empty(x.gpu, [n, c, outH, outW]);
  run(x.gpu, 'upsample_forward', params(y.size, h, outH, w), [x.buffer, y.buffer], y.size, outW === 2 * w ? undefined : { UP_W_OUT: outW });
  return y;
}

export function upsampleNearest2xBackward(dy: Tensor): Tensor {
  const [n, c, h2, w2] = dy.shape;
  const dx = Tensor.empty(dy.gpu, [n, c, h2 / 2, w2 / 2]);
  run(dy.gpu, 'upsample_backward', params(dx.size, h2 / 2, 1, w2 / 2), [dy.buffer, dx.buffer], dx.size);
  return dx;
}
