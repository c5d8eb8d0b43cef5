// The demo's constructed AutoencoderKL (src/demo/vae-weights.ts): run by the lab's own VAE code, its encoder's
// latent is each 4 x 4 patch's mean colour (to the construction's stated error), its posterior is
// deterministic, its decoder paints the patches back closely enough for the shapes judge, and architectures
// the construction does not cover are refused by name.

import { describe, expect, it } from 'vitest';
import { demoSettings, demoVaeConfig } from '../../src/demo/build';
import { judgeShapes } from '../../src/demo/judge';
import { shapesDataset } from '../../src/demo/shapes';
import { constructedVaeWeights } from '../../src/demo/vae-weights';
import { imageToCHW } from '../../src/data/pixels';
import { imagesToRgba } from '../../src/diffusion/pipeline';
import { ModelWeights } from '../../src/models/model-weights';
import { AutoencoderKL, vaeConfig, vaeDecode, vaeEncode, vaeParamShapes } from '../../src/models/vae';
import { Tensor } from '../../src/nn/tensor';
import { testGpu } from '../helpers/gpu';

const settings = demoSettings();
const architecture = (vae: Partial<typeof settings.vae>) => vaeConfig(demoVaeConfig({ ...settings, vae: { ...settings.vae, ...vae } }, 1));

describe('constructed demo VAE', () => {
  it('encodes patch means, decodes them back, and the judge reads the decoded images', async () => {
    const gpu = await testGpu();
    const config = architecture({});
    const shapes = vaeParamShapes(config);
    const weights = constructedVaeWeights(config);
    expect([...weights.keys()].sort()).toEqual([...shapes.keys()].sort());
    const vae = new AutoencoderKL(config, new ModelWeights('vae', new Map([...weights].map(([k, v]) => [k, Tensor.from(gpu, v, shapes.get(k)!)]))));
    const f = 2 ** (config.block_out_channels.length - 1);
    const items = shapesDataset({ seed: 3, count: 6, split: 'heldout' });
    const side = items[0].image.width;
    const n = side / f;
    let squaredError = 0;
    let judged = 0;
    try {
      for (const item of items) {
        const pixels = imageToCHW(item.image);
        const image = Tensor.from(gpu, pixels, [1, 3, side, side]);
        const moments = vaeEncode(vae, image);
        image.release();
        expect(moments.shape).toEqual([1, 8, n, n]);
        const m = await moments.read();
        moments.release();
        // Channels 0-2: the mean of each f x f patch; channel 3: zero; log-variances: -20.
        let worst = 0;
        for (let c = 0; c < 3; c++) {
          for (let y = 0; y < n; y++) {
            for (let x = 0; x < n; x++) {
              let sum = 0;
              for (let dy = 0; dy < f; dy++) for (let dx = 0; dx < f; dx++) sum += pixels[(c * side + y * f + dy) * side + x * f + dx];
              worst = Math.max(worst, Math.abs(m[(c * n + y) * n + x] - sum / (f * f)));
            }
          }
        }
        expect(worst).toBeLessThan(2e-3);
        expect(Math.max(...m.subarray(3 * n * n, 4 * n * n).map(Math.abs))).toBeLessThan(1e-6);
        for (const v of m.subarray(4 * n * n)) expect(v).toBeCloseTo(-20, 4);

        const latent = Tensor.from(gpu, m.slice(0, 4 * n * n), [1, 4, n, n]);
        const decoded = vaeDecode(vae, latent);
        latent.release();
        const y = await decoded.read();
        decoded.release();
        for (let i = 0; i < y.length; i++) squaredError += (y[i] - pixels[i]) ** 2 / y.length / items.length;
        judged += judgeShapes({ width: side, height: side, data: imagesToRgba(y, [1, 3, side, side])[0] }, item.caption).score / items.length;
      }
    } finally {
      vae.release();
    }
    // Measured: MSE 0.011-0.015 (the blocks' edges and the blurred outer ring), the judge 0.97 over 48 images.
    console.log(`constructed VAE: reconstruction MSE ${squaredError.toFixed(4)}, judge ${judged.toFixed(3)} over ${items.length} images`);
    expect(squaredError).toBeLessThan(0.03);
    expect(judged).toBeGreaterThanOrEqual(0.8);
  }, 300_000);

  it('refuses architectures the construction does not cover', () => {
    expect(() => constructedVaeWeights(architecture({ channels: [8, 16, 16] }))).toThrow(/same number of channels, at least 8/);
    expect(() => constructedVaeWeights(architecture({ channels: [4, 4] }))).toThrow(/at least 8/);
    expect(() => constructedVaeWeights(architecture({ groups: 2 }))).toThrow(/norm_num_groups must be 1/);
  });
});
