// Fused multi-head scaled-dot-product attention (shaders/attention.wgsl): forward next to its backward.
// Takes q [B, Nq, H*d], k and v [B, Nk, H*d] exactly as diffusers' to_q / to_k / to_v linears give them
// (head h in columns h*d .. h*d + d - 1) and returns out [B, Nq, H*d] in the same layout, ready for to_out.
// The Nq x Nk scores are never stored; the forward keeps only the per-row log-sum-exp for the backward.

import source from '../../../shaders/attention.wgsl?raw';
import { f32, u32 } from '../../gpu/gpu';
import { assertShape, Tensor } from '../tensor';
import { family, grid1d, kernel } from './kernels';

const fam = family('attention', source);

/** Rows (query or key) per workgroup, one per thread. Must match ROWS in attention.wgsl. */
const ROWS = 64;
/** WebGPU's guaranteed workgroup memory per entry point (maxComputeWorkgroupStorageSize's default). */
const WORKGROUP_BYTES = 16384;
/**
 * Largest head dimension. Each thread holds up to four d-length rows in private memory (dK/dV: k, v, dk, dv);
 * WGSL caps one function's private variables at 8 KiB, and SD1.5's largest head is 160.
 */
const MAX_HEAD_DIM = 256;

export interface AttentionOptions {
  heads: number;
  /** Query i sees only keys j <= i (CLIP's text encoder). Needs Nq == Nk. */
  causal?: boolean;
  /** Multiplies Q K^T; default 1 / sqrt(d). */
  scale?: number;
}

interface Dims {
  batch: number;
  nq: number;
  nk: number;
  heads: number;
  headDim: number;
  causal: boolean;
  scale: number;
}

function dims(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions, what: string): Dims {
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (t.shape.length !== 3) throw new Error(`${what}: ${name} must be [batch, tokens, heads * headDim], got [${t.shape}]`);
  }
  const [batch, nq, width] = q.shape;
  const [kb, nk, kw] = k.shape;
  const { heads } = opts;
  if (!Number.isInteger(heads) || heads < 1) throw new Error(`${what}: heads must be a positive integer, got ${heads}`);
  if (width % heads !== 0) throw new Error(`${what}: ${heads} heads do not divide the width ${width} of q`);
  if (kb !== batch) throw new Error(`${what}: batch of q (${batch}) and k (${kb}) differ`);
  if (kw !== width) throw new Error(`${what}: width of q (${width}) and k (${kw}) differ`);
  assertShape(`${what}: v (must match k)`, v, k.shape);
  if (batch < 1 || nq < 1 || nk < 1) throw new Error(`${what}: empty input, q [${q.shape}], k [${k.shape}]`);
  const headDim = width / heads;
  if (headDim > MAX_HEAD_DIM) throw new Error(`${what}: head dimension ${headDim} exceeds the supported ${MAX_HEAD_DIM}`);
  const causal = opts.causal ?? false;
  if (causal && nq !== nk) throw new Error(`${what}: causal attention needs as many queries as keys, got ${nq} and ${nk}`);
  const scale = opts.scale ?? 1 / Math.sqrt(headDim);
  if (!Number.isFinite(scale)) throw new Error(`${what}: scale must be finite, got ${scale}`);
  if (Math.ceil(Math.max(nq, nk) / ROWS) > 65535) throw new Error(`${what}: ${Math.max(nq, nk)} tokens is too many for one grid`);
  return { batch, nq, nk, heads, headDim, causal, scale };
}

/**
 * Compile-time sizes for head dimension d. The forward and dQ stage KEY_TILE rows of K and V
 * (2 * KEY_TILE * d floats); dK/dV stages QUERY_TILE rows of Q and dO plus their lse and delta
 * (QUERY_TILE * (2d + 2) floats). Both stay within 16 KiB; more than ROWS would only sit idle longer
 * between barriers for no reuse gain.
 */
function defines(d: number): Record<string, number> {
  const floats = WORKGROUP_BYTES / 4;
  return {
    HEAD_DIM: d,
    KEY_TILE: Math.min(ROWS, Math.floor(floats / (2 * d))),
    QUERY_TILE: Math.min(ROWS, Math.floor(floats / (2 * d + 2))),
  };
}

function params(s: Dims) {
  return [u32(s.batch), u32(s.nq), u32(s.nk), u32(s.heads), u32(s.causal ? 1 : 0), f32(s.scale)];
}

/** softmax(scale * Q K^T) V for every batch and head; logsumexp [B, H, Nq] is what the backward needs. */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): { out: Tensor; logsumexp: Tensor } {
  const s = dims(q, k, v, opts, 'attention');
  const gpu = q.gpu;
  const out = Tensor.empty(gpu, q.shape);
  const logsumexp = Tensor.empty(gpu, [s.batch, s.heads, s.nq]);
  gpu.dispatch(kernel(gpu, fam, 'attention_forward', { defines: defines(s.headDim) }), {
    params: params(s),
    buffers: [q.buffer, k.buffer, v.buffer, out.buffer, logsumexp.buffer],
    workgroups: [Math.ceil(s.nq / ROWS), s.heads, s.batch],
  });
  return { out, logsumexp };
}

/**
 * Gradients of attention() given its inputs, its outputs (out, logsumexp) and dOut. Three kernels: the
 * per-row delta = dOut . out, then dK and dV per key block, then dQ per query block; each recomputes the
 * probabilities from logsumexp.
 */
export function attentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  logsumexp: Tensor,
  dOut: Tensor,
  opts: AttentionOptions,
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const s = dims(q, k, v, opts, 'attentionBackward');
  assertShape('attentionBackward: out', out, q.shape);
  assertShape('attentionBackward: dOut', dOut, q.shape);
  assertShape('attentionBackward: logsumexp', logsumexp, [s.batch, s.heads, s.nq]);
  const gpu = q.gpu;
  const options = { defines: defines(s.headDim) };
  const p = params(s);

  const delta = Tensor.empty(gpu, [s.batch, s.heads, s.nq]);
  gpu.dispatch(kernel(gpu, fam, 'attention_backward_delta', options), {
    params: p,
    buffers: [dOut.buffer, out.buffer, delta.buffer],
    workgroups: grid1d(delta.size),
  });

  const dk = Tensor.empty(gpu, k.shape);
  const dv = Tensor.empty(gpu, v.shape);
  gpu.dispatch(kernel(gpu, fam, 'attention_backward_dkdv', options), {
    params: p,
    buffers: [q.buffer, k.buffer, v.buffer, dOut.buffer, logsumexp.buffer, delta.buffer, dk.buffer, dv.buffer],
    workgroups: [Math.ceil(s.nk / ROWS), s.heads, s.batch],
  });

  const dq = Tensor.empty(gpu, q.shape);
  gpu.dispatch(kernel(gpu, fam, 'attention_backward_dq', options), {
    params: p,
    buffers: [q.buffer, k.buffer, v.buffer, dOut.buffer, logsumexp.buffer, delta.buffer, dq.buffer],
    workgroups: [Math.ceil(s.nq / ROWS), s.heads, s.batch],
  });
  // Safe before the dispatches run: a later op reusing the buffer is ordered after them on the queue.
  delta.release();
  return { dq, dk, dv };
}
