// Group norm and layer norm (shaders/norm.wgsl): forward saves per-segment mean and rstd for the backward.

import source from '../../../shaders/norm.wgsl?raw';
import { f32, u32, type Gpu, type Kernel } from '../../gpu/gpu';
import { numel, Tensor } from '../tensor';
import { family, foldGrid, grid1d, kernel, useCpuKernels } from './kernels';

const fam = family('norm', source);

/** How a norm sees its input: see the header of shaders/norm.wgsl. */
interface NormLayout {
  segments: number;
  segLen: number;
  groups: number;
  inner: number;
  channels: number;
  eps: number;
}

/** What the backward needs from the forward. */
export interface NormSaved {
  x: Tensor;
  /** [segments, 2]: mean and rstd of each normalised segment. */
  stats: Tensor;
  layout: NormLayout;
}

export function groupNormLayout(shape: readonly number[], groups: number, eps: number): NormLayout {
  const [n, c, ...spatial] = shape;
  if (c % groups !== 0) throw new Error(`groupNorm: ${c} channels do not split into ${groups} groups`);
  const inner = numel(spatial);
  return { segments: n * groups, segLen: (c / groups) * inner, groups, inner, channels: c, eps };
}

export function layerNormLayout(shape: readonly number[], eps: number): NormLayout {
  const d = shape[shape.length - 1];
  return { segments: numel(shape) / d, segLen: d, groups: 1, inner: 1, channels: d, eps };
}

function params(l: NormLayout) {
  return [u32(l.segments), u32(l.segLen), u32(l.groups), u32(l.inner), u32(l.channels), f32(l.eps)];
}

/**
 * Threads per workgroup for `count` elements per workgroup (the NORM_WG override of norm.wgsl): about 8
 * elements per thread, a power of two from 32 to 256. Long segments (SD's group norms, its 1280-wide layer
 * norms) get 256 as before; short rows get fewer threads, since every thread waits at every barrier
 * whether or not it has data.
 */
export function normWorkgroupSize(count: number): number {
  let wg = 32;
  while (wg < 256 && wg * 8 < count) wg *= 2;
  return wg;
}

/** Threads per workgroup of the `_serial` kernels (SERIAL_WG in norm.wgsl). */
const SERIAL_WG = 64;

/**
 * The kernel for `entry` on this adapter and its grid over `units` segments (or parameters): on a CPU adapter
 * the `_serial` twin, one thread per unit; elsewhere one workgroup per unit, NORM_WG threads sharing its
 * `perUnit` elements.
 */
function normKernel(gpu: Gpu, entry: string, units: number, perUnit: number): { k: Kernel; workgroups: [number, number] } {
  if (useCpuKernels(gpu)) return { k: kernel(gpu, fam, `${entry}_serial`), workgroups: grid1d(units, SERIAL_WG) };
  return { k: kernel(gpu, fam, entry, { constants: { NORM_WG: normWorkgroupSize(perUnit) } }), workgroups: foldGrid(units) };
}

function normForward(x: Tensor, gamma: Tensor, beta: Tensor, layout: NormLayout): { y: Tensor; saved: NormSaved } {
  if (gamma.size !== layout.channels || beta.size !== layout.channels) {
    throw new Error(`norm: expected ${layout.channels} scale and bias values, got ${gamma.size} and ${beta.size}`);
  }
  const gpu = x.gpu;
  const y = Tensor.empty(gpu, x.shape);
  const stats = Tensor.empty(gpu, [layout.segments, 2]);
  const { k, workgroups } = normKernel(gpu, 'norm_forward', layout.segments, layout.segLen);
  gpu.dispatch(k, { params: params(layout), buffers: [x.buffer, gamma.buffer, beta.buffer, y.buffer, stats.buffer], workgroups });
  return { y, saved: { x, stats, layout } };
}

/** diffusers' GroupNorm on [N, C, ...]: y and what groupNormBackward needs. */
export function groupNorm(x: Tensor, gamma: Tensor, beta: Tensor, groups: number, eps: number) {
  return normForward(x, gamma, beta, groupNormLayout(x.shape, groups, eps));
}

/** LayerNorm over the last dimension. */
export function layerNorm(x: Tensor, gamma: Tensor, beta: Tensor, eps: number) {
  return normForward(x, gamma, beta, layerNormLayout(x.shape, eps));
}

/** Gradients of either norm: dx, and dgamma / dbeta when `affine` is asked for. */
export function normBackward(
  saved: NormSaved,
  gamma: Tensor,
  dy: Tensor,
  need: { input?: boolean; affine?: boolean } = { input: true, affine: true },
): { dx?: Tensor; dgamma?: Tensor; dbeta?: Tensor } {
  const { x, stats, layout } = saved;
  const gpu = x.gpu;
  const out: { dx?: Tensor; dgamma?: Tensor; dbeta?: Tensor } = {};
  if (need.input) {
    out.dx = Tensor.empty(gpu, x.shape);
    const { k, workgroups } = normKernel(gpu, 'norm_backward_input', layout.segments, layout.segLen);
    gpu.dispatch(k, { params: params(layout), buffers: [x.buffer, gamma.buffer, stats.buffer, dy.buffer, out.dx.buffer], workgroups });
  }
  if (need.affine) {
    out.dgamma = Tensor.empty(gpu, [layout.channels]);
    out.dbeta = Tensor.empty(gpu, [layout.channels]);
    const { k, workgroups } = normKernel(gpu, 'norm_backward_affine', layout.channels, (layout.segments * layout.segLen) / layout.channels);
    gpu.dispatch(k, { params: params(layout), buffers: [x.buffer, stats.buffer, dy.buffer, out.dgamma.buffer, out.dbeta.buffer], workgroups });
  }
  return out;
}
