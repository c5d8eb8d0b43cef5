// Matrix multiply (shaders/matmul.wgsl) and the linear layer built on it, each forward next to its backward.
// Every product, forward or backward, is the one kernel (tiled, or its direct twin when K is short; see
// gemmPlan; on a CPU adapter matmul_vec4, shaders/matmul-vec4.wgsl): gradients are products with the
// transposes swapped, so no transposed copy is ever made.

import source from '../../../shaders/matmul.wgsl?raw';
import vec4Source from '../../../shaders/matmul-vec4.wgsl?raw';
import gemmTileSource from '../../../shaders/gemm-tile.wgsl?raw';
import { f32, u32, type Gpu } from '../../gpu/gpu';
import { numel, Tensor } from '../tensor';
import { family, foldGrid, kernel, useCpuKernels } from './kernels';
import { sumBroadcast } from './reduce';

const fam = family('matmul', gemmTileSource, source);
const vec4Fam = family('matmul-vec4', vec4Source);

/** Threads per workgroup of matmul_vec4 (VEC4_WG), each owning a 4 x 4 block of C. */
const VEC4_WG = 64;

/**
 * A tile shape of the tiled kernels (gemm-tile.wgsl, shared by matmul.wgsl and conv2d.wgsl): SIDE x SIDE
 * threads per workgroup, one workgroup per TILE x TILE output tile (TILE = 4 SIDE).
 */
export interface GemmTile {
  side: number;
  tile: number;
}

/** 256 threads, 64x64 tiles: the shape for big products, where it reuses each staged value 64 times. */
export const LARGE_TILE: GemmTile = { side: 16, tile: 64 };
/** 64 threads, 32x32 tiles. */
export const SMALL_TILE: GemmTile = { side: 8, tile: 32 };
/** K staged per step by the tiled kernels (TK in gemm-tile.wgsl). */
export const TILE_K = 16;

/** How to run an M x N x K product (K including any batch summed inside the kernel). */
export interface GemmPlan {
  tile: GemmTile;
  /** The barrier-free `_direct` entry point instead of the tiled one. */
  direct: boolean;
}

/**
 * When either side of the output is at most 32 (LoRA ranks, attention heads, single-pixel convolutions),
 * a 64-wide tile would be at least half zeros, so the small tile does the same useful work with a quarter
 * of the threads; and an output of at most four 64x64 tiles (tiny models) gets four times the workgroups
 * from 32x32 ones. (On SwiftShader the small tile's pipeline also compiles in half the time.) When K fits one staged slice (LoRA up-projections, stride-2 weight
 * gradients of tiny images), staging would cost a workgroup-memory round trip and two barriers for a single
 * use of each value, so the direct kernels read the operands straight from memory instead (same threads,
 * same outputs per thread).
 */
export function gemmPlan(m: number, n: number, k: number): GemmPlan {
  const small = Math.min(m, n) <= SMALL_TILE.tile || m * n <= 4 * LARGE_TILE.tile * LARGE_TILE.tile;
  return { tile: small ? SMALL_TILE : LARGE_TILE, direct: k <= TILE_K };
}

/** The pipeline constant that selects a tile shape (the SIDE override of gemm-tile.wgsl). */
export function tileConstants(t: GemmTile): Record<string, number> {
  return { SIDE: t.side };
}

/** One call of the kernel, in its own terms (shapes already resolved and checked). */
interface Gemm {
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  /** Elements between batches of A and B; 0 broadcasts. */
  strideA: number;
  strideB: number;
  /** Output batches, and input batches summed into each (1 for an ordinary product). */
  batches: number;
  batchSum: number;
  alpha: number;
  bias?: Tensor;
  accumulate: boolean;
}

function gemm(gpu: Gpu, a: Tensor, b: Tensor, c: Tensor, g: Gemm): void {
  if (c.dtype !== 'f32' || g.bias?.dtype === 'f16') throw new Error('matmul: only the A and B operands may be float16 (frozen weights)');
  const aligned = g.m % 4 === 0 && g.n % 4 === 0 && g.k % 4 === 0 && a.dtype === 'f32' && b.dtype === 'f32';
  if (aligned && useCpuKernels(gpu)) {
    gpu.dispatch(kernel(gpu, vec4Fam, 'matmul_vec4', { constants: { TRANS_A: g.transA ? 1 : 0, TRANS_B: g.transB ? 1 : 0, HAS_BIAS: g.bias ? 1 : 0, ACCUMULATE: g.accumulate ? 1 : 0 } }), {
      params: [u32(g.m), u32(g.n), u32(g.k), u32(g.batches), u32(g.batchSum), u32(g.strideA), u32(g.strideB), f32(g.alpha)],
      buffers: [a.buffer, b.buffer, c.buffer, (g.bias ?? a).buffer],
      workgroups: foldGrid(Math.ceil((g.batches * g.m * g.n) / 16 / VEC4_WG)),
    });
    return;
  }
  const { tile, direct } = gemmPlan(g.m, g.n, g.k * g.batchSum);
  const tilesN = Math.ceil(g.n / tile.tile);
  const tilesM = Math.ceil(g.m / tile.tile);
  const constants = {
    ...tileConstants(tile),
    TRANS_A: g.transA ? 1 : 0,
    TRANS_B: g.transB ? 1 : 0,
    HAS_BIAS: g.bias ? 1 : 0,
    ACCUMULATE: g.accumulate ? 1 : 0,
    A_F16: a.dtype === 'f16' ? 1 : 0,
    B_F16: b.dtype === 'f16' ? 1 : 0,
  };
  gpu.dispatch(kernel(gpu, fam, direct ? 'matmul_direct' : 'matmul', { constants }), {
    params: [
      u32(g.m),
      u32(g.n),
      u32(g.k),
      u32(tilesN),
      u32(tilesM),
      u32(g.batches),
      u32(g.batchSum),
      u32(g.strideA),
      u32(g.strideB),
      f32(g.alpha),
    ],
    // Without a bias the binding still needs a buffer; A stands in (read-only, so the alias is allowed).
    buffers: [a.buffer, b.buffer, c.buffer, (g.bias ?? a).buffer],
    workgroups: foldGrid(tilesN * tilesM * g.batches),
  });
}

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
  /** [N], added to every row of the product. */
  bias?: Tensor;
  /** Scales the product (not the bias or the accumulated values). Default 1. */
  alpha?: number;
  /** Adds the result into this tensor (which must have the output's shape) and returns it. */
  accumulateInto?: Tensor;
}

/** The shapes of a product: op(A) [M, K], op(B) [K, N], over leading batch dimensions. */
interface Geometry {
  m: number;
  n: number;
  k: number;
  batch: number;
  strideA: number;
  strideB: number;
  outShape: number[];
}

function geometry(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Geometry {
  const fmt = () => `A [${a.shape.join(', ')}]${transA ? 'ᵀ' : ''} @ B [${b.shape.join(', ')}]${transB ? 'ᵀ' : ''}`;
  if (a.shape.length < 2 || b.shape.length < 2) throw new Error(`matmul: ${fmt()}: both operands need at least 2 dimensions`);
  const [ar, ac] = a.shape.slice(-2);
  const [br, bc] = b.shape.slice(-2);
  const [m, ka] = transA ? [ac, ar] : [ar, ac];
  const [kb, n] = transB ? [bc, br] : [br, bc];
  if (ka !== kb) throw new Error(`matmul: ${fmt()}: inner dimensions differ (${ka} vs ${kb})`);
  const aLead = a.shape.slice(0, -2);
  const bLead = b.shape.slice(0, -2);
  const na = numel(aLead);
  const nb = numel(bLead);
  if (na > 1 && nb > 1 && (aLead.length !== bLead.length || aLead.some((d, i) => d !== bLead[i]))) {
    throw new Error(`matmul: ${fmt()}: batch dimensions differ (one side may be unbatched or batch 1 to broadcast)`);
  }
  const batch = Math.max(na, nb);
  const lead = na > 1 ? aLead : nb > 1 ? bLead : aLead.length >= bLead.length ? aLead : bLead;
  return {
    m,
    n,
    k: ka,
    batch,
    // One matrix, batched or not, is read at stride 0: batch 1 broadcasts like an unbatched operand.
    strideA: na > 1 ? m * ka : 0,
    strideB: nb > 1 ? ka * n : 0,
    outShape: [...lead, m, n],
  };
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * C = alpha * op(A) @ op(B) (+ bias) (+ accumulateInto). A is [..., M, K] ([..., K, M] with transA), B is
 * [..., K, N] ([..., N, K] with transB); either may be unbatched (or batch 1) and is then broadcast over
 * the other's batch. Output [..., M, N].
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  const g = geometry(a, b, transA, transB);
  if (opts.bias && !sameShape(opts.bias.shape, [g.n])) {
    throw new Error(`matmul: bias must be [${g.n}], got [${opts.bias.shape.join(', ')}]`);
  }
  const into = opts.accumulateInto;
  if (into) {
    if (!sameShape(into.shape, g.outShape)) {
      throw new Error(`matmul: accumulateInto must be [${g.outShape.join(', ')}], got [${into.shape.join(', ')}]`);
    }
    // The output is read-write: WebGPU forbids it aliasing another binding of the same dispatch.
    if (into.buffer === a.buffer || into.buffer === b.buffer || into.buffer === opts.bias?.buffer) {
      throw new Error('matmul: accumulateInto must not share a buffer with an input');
    }
  }
  const c = into ?? Tensor.empty(a.gpu, g.outShape);
  gemm(a.gpu, a, b, c, {
    m: g.m,
    n: g.n,
    k: g.k,
    transA,
    transB,
    strideA: g.strideA,
    strideB: g.strideB,
    batches: g.batch,
    batchSum: 1,
    alpha: opts.alpha ?? 1,
    bias: opts.bias,
    accumulate: into !== undefined,
  });
  return c;
}

/**
 * Gradients of C = alpha * op(A) @ op(B) (no bias; a bias's gradient is sumBroadcast(dc, [N], 1)).
 * With op(A) [M, K], op(B) [K, N]: d op(A) = alpha dC op(B)^T and d op(B) = alpha op(A)^T dC, each
 * computed directly in A's and B's stored layout by choosing which operand is transposed. A broadcast
 * operand's gradient is summed over the batch inside the kernel (batchSum). Only the gradients `need`
 * asks for are computed (a frozen weight needs none).
 */
export function matmulBackward(
  a: Tensor,
  b: Tensor,
  dc: Tensor,
  opts: { transA?: boolean; transB?: boolean; alpha?: number } = {},
  need: { a?: boolean; b?: boolean } = { a: true, b: true },
): { da?: Tensor; db?: Tensor } {
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  const alpha = opts.alpha ?? 1;
  const g = geometry(a, b, transA, transB);
  if (!sameShape(dc.shape, g.outShape)) {
    throw new Error(`matmulBackward: dc must be [${g.outShape.join(', ')}], got [${dc.shape.join(', ')}]`);
  }
  if ((need.a && a.dtype === 'f16') || (need.b && b.dtype === 'f16')) {
    throw new Error('matmulBackward: a float16 operand is a frozen weight and gets no gradient');
  }
  const gpu = a.gpu;
  const strideC = g.m * g.n;
  // An operand read at stride 0 over a batch > 1 gets one gradient: the sum of its batch's gradients.
  const batching = (stride: number) =>
    stride === 0 && g.batch > 1 ? { batches: 1, batchSum: g.batch } : { batches: g.batch, batchSum: 1 };
  const common = { alpha, accumulate: false };

  const result: { da?: Tensor; db?: Tensor } = {};
  if (need.a) {
    const da = (result.da = Tensor.empty(gpu, a.shape));
    if (!transA) {
      // dA [M, K] = dC [M, N] @ op(B)^T, and op(B)^T is B as stored when transB, else B transposed.
      gemm(gpu, dc, b, da, { m: g.m, n: g.k, k: g.n, transA: false, transB: !transB, strideA: strideC, strideB: g.strideB, ...batching(g.strideA), ...common });
    } else {
      // A is stored [K, M]: dA = (dC op(B)^T)^T = op(B) @ dC^T.
      gemm(gpu, b, dc, da, { m: g.k, n: g.m, k: g.n, transA: transB, transB: true, strideA: g.strideB, strideB: strideC, ...batching(g.strideA), ...common });
    }
  }
  if (need.b) {
    const db = (result.db = Tensor.empty(gpu, b.shape));
    if (!transB) {
      // dB [K, N] = op(A)^T @ dC, and op(A)^T is A as stored when transA, else A transposed.
      gemm(gpu, a, dc, db, { m: g.k, n: g.n, k: g.m, transA: !transA, transB: false, strideA: g.strideA, strideB: strideC, ...batching(g.strideB), ...common });
    } else {
      // B is stored [N, K]: dB = (op(A)^T dC)^T = dC^T @ op(A).
      gemm(gpu, dc, a, db, { m: g.n, n: g.k, k: g.m, transA: true, transB: transA, strideA: strideC, strideB: g.strideA, ...batching(g.strideB), ...common });
    }
  }
  return result;
}

/** PyTorch's nn.Linear: x [..., in], weight [out, in], bias [out] -> y = x W^T + b, [..., out]. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  const [out, inF] = checkLinear('linear', x, weight);
  const rows = x.size / inF;
  const y = matmul(x.view([rows, inF]), weight, { transB: true, bias });
  return y.reshape([...x.shape.slice(0, -1), out]);
}

/**
 * Gradients of linear: dx = dy W, dW = dy^T x (summed over every leading dimension of x, which fold into
 * the rows), db = column sums of dy. Only the ones asked for are computed.
 */
export function linearBackward(
  x: Tensor,
  weight: Tensor,
  dy: Tensor,
  need: { input?: boolean; weight?: boolean; bias?: boolean },
): { dx?: Tensor; dweight?: Tensor; dbias?: Tensor } {
  const [out, inF] = checkLinear('linearBackward', x, weight);
  const rows = x.size / inF;
  const yShape = [...x.shape.slice(0, -1), out];
  if (!sameShape(dy.shape, yShape)) {
    throw new Error(`linearBackward: dy must be [${yShape.join(', ')}], got [${dy.shape.join(', ')}]`);
  }
  const dy2 = dy.view([rows, out]);
  const result: { dx?: Tensor; dweight?: Tensor; dbias?: Tensor } = {};
  if (need.input) result.dx = matmul(dy2, weight).reshape(x.shape);
  if (need.weight && weight.dtype === 'f16') throw new Error('linearBackward: a float16 weight is frozen and gets no gradient');
  if (need.weight) result.dweight = matmul(dy2, x.view([rows, inF]), { transA: true });
  if (need.bias) result.dbias = sumBroadcast(dy2, [out], 1);
  return result;
}

function checkLinear(name: string, x: Tensor, weight: Tensor): [number, number] {
  if (weight.shape.length !== 2) throw new Error(`${name}: weight must be [out, in], got [${weight.shape.join(', ')}]`);
  const [out, inF] = weight.shape;
  if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== inF) {
    throw new Error(`${name}: input [${x.shape.join(', ')}] does not end in the weight's ${inF} input features`);
  }
  return [out, inF];
}
