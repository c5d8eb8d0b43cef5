// The sampling memory plan (src/diffusion/sampling-plan.ts) runs the real sampling code on a counting device;
// here it is checked to the byte against the buffer pool of a real run on the tiny golden model, and its
// SD1.5 numbers are checked for what they must show.

import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TextToImage, DEFAULT_SAMPLE_SETTINGS } from '../../src/diffusion/pipeline';
import { planSampling } from '../../src/diffusion/sampling-plan';
import { openNodeGpu } from '../../src/gpu/node';
import { clipTextConfig } from '../../src/models/clip-text';
import { dirModelFiles } from '../../src/models/model-files-node';
import { SD15_TEXT_ENCODER_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG } from '../../src/models/sd15-configs';
import { loadUNet, type UNetConfig } from '../../src/models/unet';
import { vaeConfig } from '../../src/models/vae';
import { readConfig } from '../../src/models/weights';
import { formatBytes } from '../../src/util/format';
import { GOLDENS } from '../helpers/goldens';

const DIR = join(GOLDENS, 'tiny-sd15');

describe('sampling memory plan', () => {
  it('equals the pool of a real run on the tiny model, to the byte', { timeout: 300_000 }, async () => {
    const files = dirModelFiles(DIR);
    const unetConfig = await readConfig<UNetConfig>(files, 'unet');
    const plan = await planSampling({
      unet: unetConfig,
      textEncoder: clipTextConfig(await readConfig(files, 'text_encoder')),
      vae: vaeConfig(await readConfig(files, 'vae')),
      width: 64,
      height: 48,
      batch: 2,
      unetWeightBytes: 4,
    });
    const gpu = await openNodeGpu();
    try {
      const unet = await loadUNet(gpu, files, { halfWeights: false });
      const t2i = await TextToImage.load(unet, files);
      expect(gpu.pool.bytesInUse).toBe(plan.weightBytes);
      await t2i.sample([{ prompt: '', seed: 0 }, { prompt: '', seed: 1 }], { ...DEFAULT_SAMPLE_SETTINGS, sampler: 'dpmpp-2m', steps: 2, width: 64, height: 48 });
      console.log(`tiny 64x48 batch 2: planned peak ${plan.peakBytes} B, measured ${gpu.pool.peakBytesInUse} B`);
      expect(gpu.pool.peakBytesInUse).toBe(plan.peakBytes);
      expect(gpu.pool.peakBytesAllocated).toBe(plan.reservedBytes);
      t2i.release();
      unet.release();
      expect(gpu.pool.bytesInUse, 'sampling frees all it made').toBe(0);
    } finally {
      await files.close?.();
      gpu.destroy();
    }
  });

  it('SD1.5 at 512 px: weights, then activations; float16 UNet weights halve the UNet', async () => {
    const base = { unet: SD15_UNET_CONFIG, textEncoder: SD15_TEXT_ENCODER_CONFIG, vae: SD15_VAE_CONFIG, width: 512, height: 512, batch: 1 } as const;
    const f32 = await planSampling({ ...base, unetWeightBytes: 4 });
    const f16 = await planSampling({ ...base, unetWeightBytes: 2 });
    console.log(`SD1.5 512 px: f32 peak ${formatBytes(f32.peakBytes)} (weights ${formatBytes(f32.weightBytes)}); f16 peak ${formatBytes(f16.peakBytes)}`);
    // 1.07 G parameters: UNet 859.5 M, text encoder 123.1 M, VAE 83.7 M (the pool rounds up by at most 1/8).
    expect(f32.weightBytes).toBeGreaterThan(4 * 1_066_235_307);
    expect(f32.weightBytes).toBeLessThan(1.125 * 4 * 1_066_235_307);
    expect(f32.weightBytes - f16.weightBytes).toBeGreaterThan(0.49 * 4 * 859_520_964);
    expect(f32.peakBytes).toBeGreaterThan(f32.weightBytes);
    // Activations at 512 px stay well under the weights: no tape, attention never stores N x N.
    expect(f32.peakBytes - f32.weightBytes).toBeLessThan(2 * 2 ** 30);
    expect(f16.peakBytes).toBeLessThan(4 * 2 ** 30);
    // The pool is trimmed between the UNet and the decoder's levels, so it holds little above the peak, and a
    // 512 px image fits the 4 GiB goal with float16 UNet weights.
    expect(f16.reservedBytes).toBeLessThan(1.2 * f16.peakBytes);
    expect(f16.reservedBytes).toBeLessThan(4 * 2 ** 30);
  });
});
