import { describe, expect, it } from 'vitest';
import { parseMetrics, tpoLoss, type LossConfig } from '../../src/tpo/losses';
import { Tensor } from '../../src/nn/tensor';
import { expectClose, expectGradient, randn } from '../helpers/check';
import { testGpu } from '../helpers/gpu';

const sig = (x: number) => 1 / (1 + Math.exp(-x));

/** The spec's losses in float64 from [2B] policy and reference errors (w half, then l half). */
function referenceLoss(ep: Float64Array, er: Float64Array, c: LossConfig): { loss: number; z: number; margins: number[] } {
  const b = ep.length / 2;
  const tau = c.kappa === null ? Infinity : c.kappa / c.beta;
  const dw = Array.from({ length: b }, (_, i) => ep[i] - er[i]);
  const dl = Array.from({ length: b }, (_, i) => ep[b + i] - er[b + i]);
  const margins = dw.map((w, i) => c.beta * (dl[i] - w));
  if (c.method === 'sft') return { loss: dw.reduce((s, _, i) => s + ep[i], 0) / b, z: 0, margins };
  if (c.method === 'tdpo' || c.method === 'dpo') {
    const loss = dw.reduce((s, w, i) => s - Math.log(sig(c.beta * (Math.min(dl[i], tau) - w))), 0) / b;
    return { loss, z: 0, margins };
  }
  const z = Math.max(0, [...dw, ...dl].reduce((s, d) => s - d, 0) / (2 * b));
  const loss =
    dw.reduce((s, w, i) => s + c.lambdaD * (1 - sig(c.beta * (-w - z))) + c.lambdaU * (1 - sig(c.beta * (z - Math.max(-dl[i], -tau)))), 0) / (2 * b);
  return { loss, z, margins };
}

describe('TPO losses', () => {
  const b = 5;
  // Errors near 1 with policy-reference differences of a few 1e-3, as in training.
  const er = randn(2 * b, 1, 0.3).map((v) => Math.fround(1 + v));
  const ep = er.map((v, i) => Math.fround(v + 4e-3 * Math.sin(3 * i + 1)));
  const configs: [string, LossConfig][] = [
    ['TDPO, clip active on some examples', { method: 'tdpo', beta: 2500, kappa: 5, lambdaD: 1, lambdaU: 1 }],
    ['TDPO without clipping', { method: 'tdpo', beta: 2500, kappa: null, lambdaD: 1, lambdaU: 1 }],
    ['TDPO with a negative kappa', { method: 'tdpo', beta: 242.9, kappa: -0.63, lambdaD: 1, lambdaU: 1 }],
    ['TKTO', { method: 'tkto', beta: 1000, kappa: 5, lambdaD: 1, lambdaU: 1.3 }],
    ['TKTO without clipping', { method: 'tkto', beta: 300, kappa: null, lambdaD: 0.7, lambdaU: 1 }],
    ['SFT', { method: 'sft', beta: 1, kappa: null, lambdaD: 1, lambdaU: 1 }],
  ];
  for (const [name, config] of configs) {
    it(`${name}: loss, metrics and gradient w.r.t. the policy errors`, async () => {
      const gpu = await testGpu();
      const { dErrPolicy, metrics } = tpoLoss(gpu, Tensor.from(gpu, ep, [2 * b]), Tensor.from(gpu, ep.map((v, i) => v - er[i]), [2 * b]), config, 0.5);
      const m = parseMetrics(await metrics.read());
      const want = referenceLoss(ep, er, config);
      expectClose([m.loss], [want.loss], 1e-5, 'loss');
      expectClose(m.margins, want.margins, 1e-4, 'margins');
      if (config.method === 'tkto') expectClose([m.tktoZ], [want.z], 1e-4, 'z');
      const acc = want.margins.reduce((s, v) => s + (v > 0 ? 1 : v === 0 ? 0.5 : 0), 0) / b;
      expect(m.accuracy).toBeCloseTo(acc, 6);
      // The gradient (times the 0.5 grad scale) against finite differences of the float64 loss; z is a
      // constant for TKTO, so it is frozen at its value for the differences.
      const f = ([p]: Float64Array[]) => {
        const r = referenceLoss(p, er, config);
        if (config.method !== 'tkto') return Float64Array.of(0.5 * r.loss);
        const fixed = { ...config };
        const tau = config.kappa === null ? Infinity : config.kappa / config.beta;
        let loss = 0;
        for (let i = 0; i < b; i++) {
          const dw = p[i] - er[i];
          const dl = p[b + i] - er[b + i];
          loss += fixed.lambdaD * (1 - sig(fixed.beta * (-dw - want.z))) + fixed.lambdaU * (1 - sig(fixed.beta * (want.z - Math.max(-dl, -tau))));
        }
        return Float64Array.of((0.5 * loss) / (2 * b));
      };
      expectGradient(await dErrPolicy.read(), f, [Float64Array.from(ep)], 0, Float64Array.of(1), 'dLoss/dErrPolicy', 1e-3);
    });
  }

  it('counts where the clip is active', async () => {
    const gpu = await testGpu();
    const config: LossConfig = { method: 'tdpo', beta: 1000, kappa: 1, lambdaD: 1, lambdaU: 1 };
    // tau = 1e-3: D_l = 2e-3 (clipped) and -1e-3 (not).
    const { metrics, dErrPolicy } = tpoLoss(gpu, Tensor.from(gpu, [1, 1, 1.002, 0.999], [4]), Tensor.from(gpu, [0, 0, 0.002, -0.001], [4]), config);
    expect(parseMetrics(await metrics.read()).clipFraction).toBe(0.5);
    expect((await dErrPolicy.read())[2]).toBe(0);
  });
});
