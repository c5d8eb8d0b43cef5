import { describe, expect, it } from 'vitest';
import { ADAMW_DEFAULTS, adamwStep, type AdamWConfig } from '../../src/nn/ops/adamw';
import { accumulateSumSquares, mseRows, mseRowsBackward, mseRowsDiff, sumAll, sumBroadcast } from '../../src/nn/ops/reduce';
import { timestepEmbedding } from '../../src/nn/ops/timestep';
import { Tensor } from '../../src/nn/tensor';
import { expectClose, expectGradient, randn, relError } from '../helpers/check';
import { testGpu } from '../helpers/gpu';
import * as ref from '../helpers/reference/elementwise';

/** diffusers' get_timestep_embedding in float64. */
function timestepRef(ts: number[], dim: number, flip: boolean, shift: number): Float64Array {
  const half = Math.floor(dim / 2);
  const out = new Float64Array(ts.length * dim);
  ts.forEach((t, b) => {
    for (let k = 0; k < half; k++) {
      const a = t * Math.exp((-Math.log(10000) * k) / (half - shift));
      const [first, second] = flip ? [Math.cos(a), Math.sin(a)] : [Math.sin(a), Math.cos(a)];
      out[b * dim + k] = first;
      out[b * dim + half + k] = second;
    }
  });
  return out;
}

describe('timestep embedding', () => {
  const ts = [0, 1, 37, 500, 981, 999];
  for (const [dim, flip, shift] of [
    [320, true, 0], // SD1.5's UNet
    [33, false, 1], // odd width, zero-padded; sin first; the other freq_shift
    [8, true, 1],
  ] as const) {
    it(`dim ${dim}, flip ${flip}, shift ${shift}`, async () => {
      const gpu = await testGpu();
      const emb = timestepEmbedding(gpu, Tensor.from(gpu, ts, [ts.length]), { dim, flipSinToCos: flip, freqShift: shift });
      const got = await emb.read();
      const want = timestepRef(ts, dim, flip, shift);
      expectClose(got, want, 1e-6, 'embedding');
      let worst = 0;
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
      expect(worst, 'largest absolute error').toBeLessThan(2e-6);
    });
  }
});

describe('reductions', () => {
  it('sumBroadcast over outer and inner, sumAll', async () => {
    const gpu = await testGpu();
    const [o, j, k] = [3, 5, 70];
    const x = randn(o * j * k, 1);
    expectClose(await sumBroadcast(Tensor.from(gpu, x, [o, j, k]), [j], k).read(), ref.sumBroadcast(x, j, k), 1e-6, 'sumBroadcast');
    const total = x.reduce((a, b) => a + b, 0);
    expectClose(await sumAll(Tensor.from(gpu, x, [x.length])).read(), [total], 1e-5, 'sumAll');
  });

  it('sumBroadcast in chunks: many terms per output, chunks that end inside a row, times a, and outputs past one workgroup', async () => {
    const gpu = await testGpu();
    // 7 * 333 = 2331 terms per output: three chunks of 777, each starting and ending mid-row.
    for (const [o, j, k] of [[7, 3, 333], [2500, 67, 1], [1, 130, 3000]]) {
      const x = randn(o * j * k, 2);
      const a = randn(o * j * k, 3);
      const name = `${o} x ${j} x ${k}`;
      expectClose(await sumBroadcast(Tensor.from(gpu, x, [o, j, k]), [j], k).read(), ref.sumBroadcast(x, j, k), 1e-5, name);
      const xa = x.map((v, i) => v * a[i]);
      const got = await sumBroadcast(Tensor.from(gpu, x, [o, j, k]), [j], k, Tensor.from(gpu, a, [o, j, k])).read();
      expectClose(got, ref.sumBroadcast(xa, j, k), 1e-5, `${name} times a`);
    }
  });

  it('per-example mean squared error, forward and backward, batch 1 and 3', async () => {
    const gpu = await testGpu();
    for (const n of [1, 3]) {
      const m = 4 * 9 * 7;
      const a = randn(n * m, 2);
      const b = randn(n * m, 3);
      const derr = randn(n, 4);
      const f = ([u, v]: Float64Array[]) => ref.mseRows(u, v, n);
      const at = Tensor.from(gpu, a, [n, 4, 9, 7]);
      const bt = Tensor.from(gpu, b, [n, 4, 9, 7]);
      expectClose(await mseRows(at, bt).read(), f([a, b]), 1e-5, 'mse');
      const da = await mseRowsBackward(at, bt, Tensor.from(gpu, derr, [n])).read();
      expectGradient(da, f, [a, b], 0, derr, 'mse da');
      expectGradient(da.map((v) => -v), f, [a, b], 1, derr, 'mse db = -da');
    }
  });

  it('difference of two errors against one target keeps its digits', async () => {
    const gpu = await testGpu();
    const [n, m] = [3, 500];
    const c = randn(n * m, 20);
    const b = randn(n * m, 21).map((v, i) => Math.fround(c[i] + v));
    // a differs from b by ~1e-4: the two errors agree to ~4 digits.
    const a = b.map((v, i) => Math.fround(v + 1e-4 * Math.sin(i)));
    const want = ref.mseRows(a, c, n).map((v, i) => v - ref.mseRows(b, c, n)[i]);
    const t = (x: Float64Array) => Tensor.from(gpu, x, [n, m]);
    const got = await mseRowsDiff(t(a), t(b), t(c)).read();
    expectClose(got, want, 1e-5, 'mseRowsDiff');
    // Subtracting the two f32 errors instead loses most of those digits: the reason the kernel exists.
    const [ea, eb] = [await mseRows(t(a), t(c)).read(), await mseRows(t(b), t(c)).read()];
    const naive = ea.map((v, i) => v - eb[i]);
    expect(relError(naive, want)).toBeGreaterThan(10 * relError(got, want));
  });

  it('sum of squares accumulates over several tensors', async () => {
    const gpu = await testGpu();
    const xs = [randn(1000, 5), randn(3, 6), randn(257, 7)];
    const acc = Tensor.from(gpu, [0.5], [1]);
    accumulateSumSquares(gpu, xs.map((x) => Tensor.from(gpu, x, [x.length])), acc);
    const want = 0.5 + xs.reduce((s, x) => s + x.reduce((a, v) => a + v * v, 0), 0);
    expectClose(await acc.read(), [want], 1e-6, 'sum of squares');
  });
});

/** torch.optim.AdamW after torch.nn.utils.clip_grad_norm_, in float64. */
function adamwRef(params: Float64Array[], grads: Float64Array[][], cfg: AdamWConfig) {
  const p = params.map((x) => Float64Array.from(x));
  const m = params.map((x) => new Float64Array(x.length));
  const v = params.map((x) => new Float64Array(x.length));
  grads.forEach((gs, s) => {
    const step = s + 1;
    const scale = cfg.gradScale ?? 1;
    const norm = Math.sqrt(gs.reduce((a, g) => a + g.reduce((b, x) => b + (x * scale) ** 2, 0), 0));
    if (!Number.isFinite(norm)) return;
    const clip = cfg.maxGradNorm ? Math.min(1, cfg.maxGradNorm / (norm + 1e-6)) : 1;
    p.forEach((w, t) => {
      for (let i = 0; i < w.length; i++) {
        const g = gs[t][i] * scale * clip;
        w[i] *= 1 - cfg.lr * cfg.weightDecay;
        m[t][i] = cfg.beta1 * m[t][i] + (1 - cfg.beta1) * g;
        v[t][i] = cfg.beta2 * v[t][i] + (1 - cfg.beta2) * g * g;
        const mhat = m[t][i] / (1 - cfg.beta1 ** step);
        const vhat = v[t][i] / (1 - cfg.beta2 ** step);
        w[i] -= (cfg.lr * mhat) / (Math.sqrt(vhat) + cfg.eps);
      }
    });
  });
  return { p, m, v };
}

describe('AdamW', () => {
  const configs: [string, AdamWConfig][] = [
    ['defaults, clip active', { ...ADAMW_DEFAULTS, lr: 1e-2 }],
    ['no clip, grad scale 0.5, no decay', { ...ADAMW_DEFAULTS, lr: 3e-3, maxGradNorm: 0, gradScale: 0.5, weightDecay: 0 }],
  ];
  for (const [name, cfg] of configs) {
    it(`three steps over two tensors: ${name}`, async () => {
      const gpu = await testGpu();
      const sizes = [300, 17];
      const params = sizes.map((n, i) => randn(n, 10 + i));
      const grads = [0, 1, 2].map((s) => sizes.map((n, i) => randn(n, 20 + 3 * s + i, 0.2)));
      const state = params.map((p) => ({
        param: Tensor.from(gpu, p, [p.length]),
        grad: Tensor.zeros(gpu, [p.length]),
        m: Tensor.zeros(gpu, [p.length]),
        v: Tensor.zeros(gpu, [p.length]),
      }));
      const normSq = Tensor.zeros(gpu, [1]);
      for (let s = 0; s < 3; s++) {
        state.forEach((st, i) => gpu.write(st.grad.buffer, Float32Array.from(grads[s][i])));
        adamwStep(gpu, state, normSq, s + 1, cfg);
      }
      const want = adamwRef(params, grads, cfg);
      for (let i = 0; i < sizes.length; i++) {
        // Compare the change, not the weights, so the check is as sharp as the update itself.
        const got = await state[i].param.read();
        expectClose(got.map((w, j) => w - params[i][j]), want.p[i].map((w, j) => w - params[i][j]), 1e-4, `param ${i} update`);
        expectClose(await state[i].m.read(), want.m[i], 1e-5, `m ${i}`);
        expectClose(await state[i].v.read(), want.v[i], 1e-5, `v ${i}`);
      }
    });
  }

  it('skips the whole step when any gradient is NaN or Inf', async () => {
    const gpu = await testGpu();
    for (const bad of [NaN, Infinity]) {
      const p0 = randn(50, 30);
      const g = randn(50, 31);
      g[7] = bad;
      const param = Tensor.from(gpu, p0, [50]);
      const other = Tensor.from(gpu, p0, [50]);
      const state = [
        { param, grad: Tensor.from(gpu, g, [50]), m: Tensor.zeros(gpu, [50]), v: Tensor.zeros(gpu, [50]) },
        { param: other, grad: Tensor.from(gpu, randn(50, 32), [50]), m: Tensor.zeros(gpu, [50]), v: Tensor.zeros(gpu, [50]) },
      ];
      const normSq = Tensor.zeros(gpu, [1]);
      adamwStep(gpu, state, normSq, 1, ADAMW_DEFAULTS);
      expect(Number.isFinite((await normSq.read())[0])).toBe(false);
      expect(Array.from(await param.read())).toEqual(Array.from(Float32Array.from(p0)));
      expect(Array.from(await other.read())).toEqual(Array.from(Float32Array.from(p0)));
      expect(Array.from(await state[0].m.read()).every((x) => x === 0)).toBe(true);
    }
  });
});
