// The samplers' step math on a model whose exact answer is known: data x0 ~ N(mu, s^2) per element, for which
// the ideal noise prediction is closed-form, E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mu) /
// (abar s^2 + 1 - abar), and the deterministic reverse process (the probability-flow ODE) maps each starting
// value to the data by its z-score. DDIM (eta 0), Euler and DPM-Solver++ 2M must all land there; the
// second-order solver must get closer in few steps than the first-order ones; DDIM with eta 1 must give the
// data's distribution. Also the timestep spacings against diffusers' values, and the PNG text chunks.

import { crc32 as zlibCrc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { addPngText, crc32, readPngText } from '../../src/data/png-text';
import { createSampler, type SamplerName } from '../../src/diffusion/samplers';
import { a1111Parameters, DEFAULT_SAMPLE_SETTINGS, imageGrid, imagesToRgba, startLatents } from '../../src/diffusion/pipeline';
import { addNoise, alphasCumprod, ddimTimesteps, epsilonFromVelocity, noiseSchedule, SD15_SCHEDULER, type SchedulerConfig, velocity } from '../../src/diffusion/schedule';
import { Tensor } from '../../src/nn/tensor';
import { drawRandom, normals } from '../../src/tpo/random';
import { encodePng } from '../../src/cli/sample';
import { testGpu } from '../helpers/gpu';

const MU = 0.3;
const maxError = (a: ArrayLike<number>, b: ArrayLike<number>) => Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i])));
const noise = normals(drawRandom(5, 'test'), 256);
const S = 0.5;
const abar = alphasCumprod(SD15_SCHEDULER);
const ABAR = abar;
/** abar at a possibly fractional timestep, through sigma as Euler interpolates it. */
function abarAt(t: number, abar = ABAR): number {
  const sig = (i: number) => Math.sqrt((1 - abar[i]) / abar[i]);
  const lo = Math.floor(t);
  const s = sig(lo) + (t - lo) * (sig(Math.min(lo + 1, 999)) - sig(lo));
  return 1 / (1 + s * s);
}

/** A folder's config without its own timestep_spacing: each sampler spaces steps as diffusers' default. */
const FOLDER: SchedulerConfig = { ...SD15_SCHEDULER, timestep_spacing: undefined };
/** The demo model's schedule: zero terminal SNR, a v head, sampling from t = 999. */
const ZERO_SNR: SchedulerConfig = { ...SD15_SCHEDULER, rescale_betas_zero_snr: true, timestep_spacing: 'trailing', prediction_type: 'v_prediction' };

/**
 * Runs a sampler on the Gaussian model from standard normal `noise`. Returns the final sample and the one
 * before the last step, in the training (VP) scale with its abar: the last step of Euler and DPM-Solver++
 * jumps to noise level 0 with the model's x0 prediction, which is not the reverse process's answer, so the
 * comparison with the exact path is made one step before.
 */
async function solve(name: SamplerName, steps: number, noise: Float32Array, eta = 0, head: 'epsilon' | 'v' = 'epsilon', config = FOLDER): Promise<{ final: Float32Array; before: Float32Array; abarBefore: number }> {
  const gpu = await testGpu();
  const sampler = createSampler(name, steps, config, { eta });
  const table = alphasCumprod(config);
  const shape = [1, noise.length];
  let x = Tensor.from(gpu, noise.map((v) => v * sampler.initNoiseSigma), shape);
  let before = new Float32Array(0);
  let abarBefore = 0;
  for (let i = 0; i < sampler.timesteps.length; i++) {
    const a = abarAt(sampler.timesteps[i], table);
    const vp = (await x.read()).map((v) => v * sampler.inputScale(i));
    if (i === steps - 1) [before, abarBefore] = [vp, a];
    const idealEps = vp.map((v) => (Math.sqrt(1 - a) * (v - Math.sqrt(a) * MU)) / (a * S * S + 1 - a));
    let eps: Tensor;
    if (head === 'epsilon') {
      eps = Tensor.from(gpu, idealEps, shape);
    } else {
      // The same model with a velocity head: v = sqrt(a) eps - sqrt(1 - a) x0, with x0 = (x - sqrt(1 - a) eps) / sqrt(a).
      const v = Tensor.from(gpu, vp.map((x, j) => Math.sqrt(a) * idealEps[j] - (Math.sqrt(1 - a) * (x - Math.sqrt(1 - a) * idealEps[j])) / Math.sqrt(a)), shape);
      const input = Tensor.from(gpu, vp, shape);
      eps = epsilonFromVelocity(v, input, sampler.alphaBar(i));
      for (const z of [v, input]) z.release();
    }
    const next = sampler.step(x, eps, i, () => Tensor.from(gpu, normals(drawRandom(11, 'eta', i), noise.length), shape));
    eps.release();
    x.release();
    x = next;
  }
  sampler.release();
  const final = await x.read();
  x.release();
  return { final, before, abarBefore };
}

/** Where the exact reverse process takes the start at noise level `end`: the same z-score under that law. */
function exact(name: SamplerName, steps: number, noise: Float32Array, end: number, config = FOLDER): Float64Array {
  const sampler = createSampler(name, steps, config);
  const a = abarAt(sampler.timesteps[0], alphasCumprod(config));
  const start = (v: number) => v * sampler.initNoiseSigma * sampler.inputScale(0);
  return Float64Array.from(noise, (v) => {
    const z = (start(v) - Math.sqrt(a) * MU) / Math.sqrt(a * S * S + 1 - a);
    return Math.sqrt(end) * MU + Math.sqrt(end * S * S + 1 - end) * z;
  });
}

/** The path's error one step before the end. */
async function pathError(name: SamplerName, steps: number, head: 'epsilon' | 'v' = 'epsilon', config = FOLDER): Promise<number> {
  const r = await solve(name, steps, noise, 0, head, config);
  return maxError(r.before, exact(name, steps, noise, r.abarBefore, config));
}


describe('samplers on a Gaussian model with a known answer', () => {
  it('DDIM, Euler and DPM-Solver++ 2M all follow the exact reverse process', async () => {
    // First-order solvers: the error falls like 1 / steps. The multistep solver starts far lower and falls
    // more slowly (its integer-rounded timesteps jitter the step ratios its second-order term relies on).
    for (const name of ['ddim', 'euler', 'dpmpp-2m'] as const) {
      const [e10, e100] = [await pathError(name, 10), await pathError(name, 100)];
      console.log(`${name}: max error ${e10.toExponential(2)} at 10 steps, ${e100.toExponential(2)} at 100`);
      expect(e100, name).toBeLessThan(name === 'dpmpp-2m' ? 1e-2 : 0.05);
      expect(e100, name).toBeLessThan(e10 / (name === 'dpmpp-2m' ? 2 : 5));
    }
    // DDIM's last step is a step of the same process, down to abar[0] (set_alpha_to_one false).
    const ddim = await solve('ddim', 100, noise);
    expect(maxError(ddim.final, exact('ddim', 100, noise, abar[0]))).toBeLessThan(0.05);
    // Euler's and DPM-Solver++'s last step lands on the model's x0 prediction at the level before.
    for (const name of ['euler', 'dpmpp-2m'] as const) {
      const r = await solve(name, 12, noise);
      const a = r.abarBefore;
      const x0 = Array.from(r.before, (v) => MU + ((S * S * Math.sqrt(a)) / (a * S * S + 1 - a)) * (v - Math.sqrt(a) * MU));
      expect(maxError(r.final, x0), name).toBeLessThan(1e-4);
    }
  });

  it('v = sqrt(abar) eps - sqrt(1 - abar) x0 per row, and the noise read back from v and x_t', async () => {
    const gpu = await testGpu();
    const n = 16;
    const [x0, eps] = [normals(drawRandom(1, 'x0'), 2 * n), normals(drawRandom(2, 'eps'), 2 * n)];
    const t = [10, 990];
    const [x0T, epsT] = [Tensor.from(gpu, x0, [2, n]), Tensor.from(gpu, eps, [2, n])];
    const xt = addNoise(x0T, epsT, t, abar);
    const v = velocity(x0T, epsT, t, abar);
    const [xtV, vV] = [await xt.read(), await v.read()];
    for (const [b, tb] of t.entries()) {
      const want = Array.from({ length: n }, (_, j) => Math.sqrt(abar[tb]) * eps[b * n + j] - Math.sqrt(1 - abar[tb]) * x0[b * n + j]);
      expect(maxError(vV.subarray(b * n, (b + 1) * n), want)).toBeLessThan(1e-5);
      const [vRow, xRow] = [Tensor.from(gpu, vV.subarray(b * n, (b + 1) * n), [1, n]), Tensor.from(gpu, xtV.subarray(b * n, (b + 1) * n), [1, n])];
      const back = epsilonFromVelocity(vRow, xRow, abar[tb]);
      expect(maxError(await back.read(), eps.subarray(b * n, (b + 1) * n))).toBeLessThan(1e-5);
      for (const z of [vRow, xRow, back]) z.release();
    }
    expect(noiseSchedule({ ...SD15_SCHEDULER, prediction_type: 'v_prediction' }).prediction).toBe('v_prediction');
    expect(noiseSchedule().prediction).toBe('epsilon');
    for (const z of [x0T, epsT, xt, v]) z.release();
  });

  it('a v_prediction model read as eps (alphaBar of each step) takes every sampler to the same images', async () => {
    for (const name of ['ddim', 'euler', 'dpmpp-2m'] as const) {
      for (let i = 0; i < 10; i++) expect(createSampler(name, 10, FOLDER).alphaBar(i), `${name} step ${i}`).toBeCloseTo(abarAt(createSampler(name, 10, FOLDER).timesteps[i]), 12);
      const [e, v] = [await solve(name, 10, noise), await solve(name, 10, noise, 0, 'v')];
      expect(maxError(v.final, e.final), name).toBeLessThan(1e-4);
    }
  });

  it('zero terminal SNR (rescale_betas_zero_snr): pure noise at t = 999, and every sampler still follows the exact path', async () => {
    const rescaled = alphasCumprod(ZERO_SNR);
    // sqrt(abar) shifted to 0 at the end and scaled to keep its start (diffusers' rescale_zero_terminal_snr);
    // the last value is 2^-24, not 0, so that samplers can divide by it.
    expect(rescaled[0]).toBeCloseTo(abar[0], 15);
    expect(rescaled[999]).toBe(2 ** -24);
    const k = Math.sqrt(abar[0]) / (Math.sqrt(abar[0]) - Math.sqrt(abar[999]));
    for (const t of [1, 250, 500, 998]) expect(Math.sqrt(rescaled[t])).toBeCloseTo(k * (Math.sqrt(abar[t]) - Math.sqrt(abar[999])), 12);
    for (let t = 1; t < 1000; t++) expect(rescaled[t]).toBeLessThan(rescaled[t - 1]);
    expect(Math.sqrt(abar[999])).toBeGreaterThan(0.06); // what SD1.5's schedule leaves of the image
    // The start (t = 999 with trailing spacing) holds no image, so the exact path maps each noise value
    // to the data's quantile of the same z-score; a v head gets every sampler there.
    for (const name of ['ddim', 'euler', 'dpmpp-2m'] as const) {
      expect(createSampler(name, 10, ZERO_SNR).timesteps[0], name).toBe(999);
      const [e10, e100] = [await pathError(name, 10, 'v', ZERO_SNR), await pathError(name, 100, 'v', ZERO_SNR)];
      console.log(`zero SNR, ${name}: max error ${e10.toExponential(2)} at 10 steps, ${e100.toExponential(2)} at 100`);
      expect(e100, name).toBeLessThan(name === 'dpmpp-2m' ? 1e-2 : 0.05);
    }
    const ddim = await solve('ddim', 100, noise, 0, 'v', ZERO_SNR);
    expect(maxError(ddim.final, exact('ddim', 100, noise, abar[0], ZERO_SNR))).toBeLessThan(0.05);
    // A noise prediction is refused with it: at zero SNR the noise is the input.
    expect(() => createSampler('ddim', 10, { ...ZERO_SNR, prediction_type: 'epsilon' })).toThrow(/rescale_betas_zero_snr needs prediction_type v_prediction/);
    expect(() => noiseSchedule({ ...ZERO_SNR, prediction_type: 'epsilon' })).toThrow(/rescale_betas_zero_snr/);
  });

  it('the second-order solver beats the first-order ones at 10 steps', async () => {
    const errors: Record<string, number> = {};
    for (const name of ['ddim', 'euler', 'dpmpp-2m'] as const) errors[name] = await pathError(name, 10);
    console.log('10 steps:', errors);
    expect(errors['dpmpp-2m']).toBeLessThan(errors.ddim / 3);
    expect(errors['dpmpp-2m']).toBeLessThan(errors.euler / 3);
  });

  it('DDIM with eta 1 draws from the data distribution (and differs from eta 0)', async () => {
    const big = normals(drawRandom(6, 'test'), 8192);
    const { final: x } = await solve('ddim', 200, big, 1);
    const mean = x.reduce((a, v) => a + v, 0) / x.length;
    const sd = Math.sqrt(x.reduce((a, v) => a + (v - mean) ** 2, 0) / x.length);
    const endSd = Math.sqrt(abar[0] * S * S + 1 - abar[0]);
    console.log(`eta 1: mean ${mean.toFixed(4)} (want ${(Math.sqrt(abar[0]) * MU).toFixed(4)}), sd ${sd.toFixed(4)} (want ${endSd.toFixed(4)})`);
    // Ancestral steps lose a little variance per step (O(1 / steps): 10% at 50 steps, 3% at 200).
    expect(Math.abs(mean - Math.sqrt(abar[0]) * MU)).toBeLessThan(0.01);
    expect(Math.abs(sd - endSd) / endSd).toBeLessThan(0.05);
    expect(maxError(x, (await solve('ddim', 200, big, 0)).final)).toBeGreaterThan(0.1);
  });
});

describe('timesteps as diffusers spaces them', () => {
  it('DDIM leading / linspace / trailing, DPM-Solver++ and Euler', () => {
    expect(ddimTimesteps(10)).toEqual([901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    // np.linspace(0, 999, 10).round()[::-1]
    expect(ddimTimesteps(10, { ...SD15_SCHEDULER, timestep_spacing: 'linspace' })).toEqual([999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    // np.round(np.arange(1000, 0, -100)) - 1
    expect(ddimTimesteps(10, { ...SD15_SCHEDULER, timestep_spacing: 'trailing' })).toEqual([999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
    // DPMSolverMultistepScheduler, linspace (its default): np.linspace(0, 999, 11).round()[::-1][:-1]
    expect(createSampler('dpmpp-2m', 10, FOLDER).timesteps).toEqual([999, 899, 799, 699, 599, 500, 400, 300, 200, 100]);
    // leading: step_ratio = 1000 // 11 = 90, (arange(11) * 90)[::-1][:-1] + steps_offset
    expect(createSampler('dpmpp-2m', 10, { ...SD15_SCHEDULER, timestep_spacing: 'leading' }).timesteps).toEqual([901, 811, 721, 631, 541, 451, 361, 271, 181, 91]);
    // EulerDiscreteScheduler, linspace: fractional timesteps, np.linspace(0, 999, 4)[::-1]
    expect(createSampler('euler', 4, FOLDER).timesteps).toEqual([999, 666, 333, 0]);
    // init_noise_sigma = max sigma (about 14.6 for SD1.5) for linspace.
    expect(createSampler('euler', 4, FOLDER).initNoiseSigma).toBeCloseTo(Math.sqrt((1 - abar[999]) / abar[999]), 6);
  });

  it('refuses what it does not implement, with the key', () => {
    expect(() => createSampler('ddim', 10, { ...SD15_SCHEDULER, prediction_type: 'sample' })).toThrow(/prediction_type sample/);
    createSampler('ddim', 10, { ...SD15_SCHEDULER, prediction_type: 'v_prediction' });
    expect(() => createSampler('ddim', 10, { ...SD15_SCHEDULER, clip_sample: true })).toThrow(/clip_sample/);
    expect(() => createSampler('ddim', 0, SD15_SCHEDULER)).toThrow(/steps/);
    expect(() => createSampler('ddim', 10, { ...SD15_SCHEDULER, timestep_spacing: 'karras' })).toThrow(/timestep_spacing karras/);
    expect(() => createSampler('ddim', 10, SD15_SCHEDULER, { eta: -1 })).toThrow(/eta/);
  });
});

describe('images', () => {
  it('starting latents: one seed, one image, whatever the batch around it', () => {
    const one = startLatents([42], [4, 2, 3]);
    const two = startLatents([7, 42], [4, 2, 3]);
    expect(two.subarray(24)).toEqual(one);
    expect(two.subarray(0, 24)).not.toEqual(one);
  });

  it('bytes as diffusers hands them to PIL: x / 2 + 0.5, clamped, times 255, rounded half to even', () => {
    // Channel values -> expected bytes: clamping both ends; 0 lands on 127.5, which goes to the even 128.
    const xs = [-2, -1, 0, 1, 3, 0.5];
    const values = new Float32Array(3 * xs.length);
    values.set(xs, 0);
    const [rgba] = imagesToRgba(values, [1, 3, 1, xs.length]);
    expect(Array.from(xs, (_, i) => rgba[i * 4])).toEqual([0, 0, 128, 255, 255, 191]);
    expect(rgba[3]).toBe(255);
  });

  it('a grid puts each image in its cell', () => {
    const px = (v: number) => new Uint8Array(2 * 2 * 4).fill(v);
    const g = imageGrid([[px(1), px(2)], [px(3), px(4)]], 2, 2, 1);
    expect([g.width, g.height]).toEqual([5, 5]);
    const at = (x: number, y: number) => g.rgba[(y * g.width + x) * 4];
    expect([at(0, 0), at(3, 0), at(0, 3), at(4, 4), at(2, 2)]).toEqual([1, 2, 3, 4, 255]);
  });

  it('PNG text chunks: tEXt for Latin-1, iTXt for the rest, CRCs as zlib computes them', () => {
    const bytes = new TextEncoder().encode('IEND');
    expect(crc32(bytes)).toBe(zlibCrc32(bytes));
    const params = a1111Parameters({ prompt: 'a red circle', seed: 3, settings: { ...DEFAULT_SAMPLE_SETTINGS, negativePrompt: 'blurry', loraScale: 0.8 }, model: 'sd15', lora: 'cats' });
    expect(params).toBe('a red circle <lora:cats:0.8>\nNegative prompt: blurry\nSteps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 3, Size: 512x512, Model: sd15');
    const png = encodePng(new Uint8Array(4 * 4 * 4).fill(200), 4, 4, { parameters: params, note: 'ünïcødé ✓ 猫' });
    expect(readPngText(png)).toEqual({ parameters: params, note: 'ünïcødé ✓ 猫' });
    const again = addPngText(png, { extra: 'x' });
    expect(readPngText(again).extra).toBe('x');
    expect(() => addPngText(new Uint8Array([1, 2, 3]), { a: 'b' })).toThrow(/not a PNG/);
  });
});
