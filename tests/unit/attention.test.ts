import { describe, expect, it } from 'vitest';
import { attention, attentionBackward } from '../../src/nn/ops/attention';
import { Tensor } from '../../src/nn/tensor';
import { expectClose, expectGradient, randn } from '../helpers/check';
import { testGpu } from '../helpers/gpu';
import * as ref from '../helpers/reference/attention';

const FWD_TOL = 1e-5;

interface Case extends ref.AttentionDims {
  name: string;
  /** Inputs uniform in [-amp, amp). */
  amp?: number;
  /** Added to channel 0 of every head of q and k: a common score offset that softmax ignores. */
  offset?: number;
}

function inputs(c: Case, seed: number) {
  const width = c.heads * c.headDim;
  const q = randn(c.batch * c.nq * width, seed, c.amp ?? 1);
  const k = randn(c.batch * c.nk * width, seed + 1, c.amp ?? 1);
  const v = randn(c.batch * c.nk * width, seed + 2);
  const dOut = randn(c.batch * c.nq * width, seed + 3);
  if (c.offset) {
    for (const x of [q, k]) for (let i = 0; i < x.length; i += c.headDim) x[i] = Math.fround(x[i] + c.offset);
  }
  return { q, k, v, dOut, width };
}

/** Forward (out and logsumexp) against the float64 reference, then dq, dk, dv against its finite differences. */
async function check(c: Case, seed: number) {
  const gpu = await testGpu();
  const { q, k, v, dOut, width } = inputs(c, seed);
  const opts = { heads: c.heads, causal: c.causal, scale: c.scale };
  const qt = Tensor.from(gpu, q, [c.batch, c.nq, width]);
  const kt = Tensor.from(gpu, k, [c.batch, c.nk, width]);
  const vt = Tensor.from(gpu, v, [c.batch, c.nk, width]);
  const { out, logsumexp } = await gpu.checked(() => attention(qt, kt, vt, opts));
  expect(out.shape).toEqual([c.batch, c.nq, width]);
  expect(logsumexp.shape).toEqual([c.batch, c.heads, c.nq]);

  const want = ref.attention(q, k, v, c);
  expectClose(await out.read(), want.out, FWD_TOL, `${c.name}: out`);
  expectClose(await logsumexp.read(), want.logsumexp, FWD_TOL, `${c.name}: logsumexp`);

  const dOutT = Tensor.from(gpu, dOut, out.shape);
  const g = await gpu.checked(() => attentionBackward(qt, kt, vt, out, logsumexp, dOutT, opts));
  expect(g.dq.shape).toEqual(qt.shape);
  expect(g.dk.shape).toEqual(kt.shape);
  expect(g.dv.shape).toEqual(vt.shape);
  const f = ([a, b, d]: Float64Array[]) => ref.attention(a, b, d, c).out;
  const xs = [q, k, v];
  expectGradient(await g.dq.read(), f, xs, 0, dOut, `${c.name}: dq`);
  expectGradient(await g.dk.read(), f, xs, 1, dOut, `${c.name}: dk`);
  expectGradient(await g.dv.read(), f, xs, 2, dOut, `${c.name}: dv`);
  for (const t of [qt, kt, vt, out, logsumexp, dOutT, g.dq, g.dk, g.dv]) t.release();
  return want;
}

// Rows run 64 to a workgroup; key tiles hold min(64, 2048 / d) keys and query tiles min(64, 2048 / (d + 1)),
// so d = 5 and 8 tile by 64, d = 40 by 51 and 49, d = 80 by 25 and 25, d = 160 by 12 and 12. Each head
// dimension compiles its own pipelines (seconds each on SwiftShader), so the cases share a few.
const cases: Case[] = [
  { name: 'one head, 7 tokens, d 5', batch: 1, nq: 7, nk: 7, heads: 1, headDim: 5 },
  { name: 'batch 3, 3 heads, 130 tokens (partial last block and tile)', batch: 3, nq: 130, nk: 130, heads: 3, headDim: 8 },
  // SD1.5's cross-attention at the 64x64 level: 8 heads of 40 over 77 text tokens (here 2 heads, 130 queries).
  { name: 'cross-attention, 130 queries to 77 text tokens, d 40', batch: 2, nq: 130, nk: 77, heads: 2, headDim: 40 },
  { name: 'one query, 77 keys', batch: 1, nq: 1, nk: 77, heads: 3, headDim: 8 },
  { name: 'batch 3, 77 queries, one key', batch: 3, nq: 77, nk: 1, heads: 1, headDim: 5 },
  { name: 'd 80, cross 37 to 53 (several key and query tiles)', batch: 1, nq: 37, nk: 53, heads: 1, headDim: 80 },
  { name: 'd 160, cross 13 to 29 (tiles of 12)', batch: 1, nq: 13, nk: 29, heads: 1, headDim: 160 },
  { name: 'explicit scale', batch: 1, nq: 20, nk: 9, heads: 2, headDim: 8, scale: 0.9 },
  { name: 'causal, CLIP-like 77 tokens, 3 heads', batch: 1, nq: 77, nk: 77, heads: 3, headDim: 8, causal: true },
  { name: 'causal, batch 3, 130 tokens over three query blocks', batch: 3, nq: 130, nk: 130, heads: 1, headDim: 5, causal: true },
  { name: 'causal, d 160, 29 tokens over tiles of 12', batch: 1, nq: 29, nk: 29, heads: 1, headDim: 160, causal: true },
];

describe('attention forward and backward', () => {
  cases.forEach((c, n) => it(c.name, () => check(c, 100 + 10 * n)));
});

describe('attention with large logits', () => {
  it('scores past 88 (exp overflows float32) with a common offset, softmax not saturated', async () => {
    // Channel 0 of q and k near 17 adds about 17 * 17 / sqrt(8) = 102 to every score of a row: a naive exp
    // overflows, yet the softmax is unchanged by the shift, so gradients stay far from zero and testable.
    const c: Case = { name: 'offset logits', batch: 1, nq: 70, nk: 70, heads: 2, headDim: 8, offset: 17 };
    const want = await check(c, 7);
    expect(Math.min(...want.logsumexp)).toBeGreaterThan(88);
  });

  it('scores in the hundreds with a saturated softmax', async () => {
    const gpu = await testGpu();
    const c: Case = { name: 'saturated', batch: 2, nq: 70, nk: 33, heads: 2, headDim: 8, amp: 30 };
    const { q, k, v, width } = inputs(c, 9);
    const want = ref.attention(q, k, v, c);
    expect(Math.max(...want.logsumexp)).toBeGreaterThan(200);
    const { out, logsumexp } = attention(
      Tensor.from(gpu, q, [c.batch, c.nq, width]),
      Tensor.from(gpu, k, [c.batch, c.nk, width]),
      Tensor.from(gpu, v, [c.batch, c.nk, width]),
      { heads: c.heads },
    );
    expectClose(await out.read(), want.out, FWD_TOL, 'saturated out');
    expectClose(await logsumexp.read(), want.logsumexp, FWD_TOL, 'saturated logsumexp');
  });
});

describe('attention shape checks', () => {
  it('refuses inconsistent shapes with clear errors', async () => {
    const gpu = await testGpu();
    const q = Tensor.zeros(gpu, [2, 5, 12]);
    const k = Tensor.zeros(gpu, [2, 7, 12]);
    expect(() => attention(q, k, k, { heads: 5 })).toThrow(/5 heads do not divide the width 12/);
    expect(() => attention(q, Tensor.zeros(gpu, [3, 7, 12]), Tensor.zeros(gpu, [3, 7, 12]), { heads: 3 })).toThrow(
      /batch of q \(2\) and k \(3\) differ/,
    );
    expect(() => attention(q, Tensor.zeros(gpu, [2, 7, 8]), Tensor.zeros(gpu, [2, 7, 8]), { heads: 2 })).toThrow(/width/);
    expect(() => attention(q, k, Tensor.zeros(gpu, [2, 6, 12]), { heads: 3 })).toThrow(/v \(must match k\)/);
    expect(() => attention(q.view([10, 12]), k, k, { heads: 3 })).toThrow(/q must be \[batch, tokens/);
    expect(() => attention(q, k, k, { heads: 3, causal: true })).toThrow(/causal attention needs as many queries as keys/);
    expect(() => attention(Tensor.zeros(gpu, [1, 2, 600]), Tensor.zeros(gpu, [1, 2, 600]), Tensor.zeros(gpu, [1, 2, 600]), { heads: 2 })).toThrow(
      /head dimension 300/,
    );
    const { out, logsumexp } = attention(q, k, k, { heads: 3 });
    expect(() => attentionBackward(q, k, k, out, logsumexp.view([2, 15]), out, { heads: 3 })).toThrow(/logsumexp/);
    expect(() => attentionBackward(q, k, k, out, logsumexp, k, { heads: 3 })).toThrow(/dOut/);
  });
});
