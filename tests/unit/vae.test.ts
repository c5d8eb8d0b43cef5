import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../../src/gpu/gpu';
import { Tensor } from '../../src/nn/tensor';
import { AutoencoderKL, loadVae, loadVaeFromSingleFile, vaeConfig, vaeDecode, vaeEncode, vaeParamShapes } from '../../src/models/vae';
import { ModelLoadError } from '../../src/models/weights';
import { expectClose, randn, relError } from '../helpers/check';
import { dirModelFiles, openSafetensorsFile, readEncoderGoldens, TINY_FOLDER, TINY_SINGLE, withReplacedText, type GoldenTensor } from '../helpers/encoders';
import { testGpu } from '../helpers/gpu';
import { randomWeights } from '../helpers/random-model';
import * as ref from '../helpers/reference/encoders';

const TOL = 1e-4;

describe('VAE against the goldens', () => {
  let gpu: Gpu;
  let goldens: Map<string, GoldenTensor>;
  const closers: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    gpu = await testGpu();
    goldens = await readEncoderGoldens();
  });
  afterAll(async () => {
    for (const close of closers) await close();
  });

  async function run(vae: AutoencoderKL, what: 'encode' | 'decode', source: string) {
    const [inName, outName] = what === 'encode' ? ['vae.image', 'vae.moments'] : ['vae.latent', 'vae.decoded'];
    const input = goldens.get(inName)!;
    const want = goldens.get(outName)!;
    const x = Tensor.from(gpu, input.data, input.shape);
    const y = await gpu.checked(() => (what === 'encode' ? vaeEncode(vae, x) : vaeDecode(vae, x)));
    expect(y.shape).toEqual(want.shape);
    const got = await y.read();
    console.log(`vae ${what} (${source}): ${outName} relative L2 error ${relError(got, want.data).toExponential(2)}`);
    expectClose(got, want.data, TOL, `${outName} (${source})`);
    x.release();
    y.release();
  }

  it('folder weights: image -> moments and latent -> decoded, releasing every intermediate', async () => {
    const inUse = gpu.pool.bytesInUse;
    const vae = await loadVae(gpu, dirModelFiles(TINY_FOLDER));
    await run(vae, 'encode', 'folder');
    await run(vae, 'decode', 'folder');
    vae.release();
    expect(gpu.pool.bytesInUse, 'forward and release leave nothing behind').toBe(inUse);
  });

  it('single-file checkpoint: the same results', async () => {
    const { file, close } = await openSafetensorsFile(TINY_SINGLE);
    closers.push(close);
    const vae = await loadVaeFromSingleFile(gpu, file, dirModelFiles(TINY_FOLDER));
    await run(vae, 'encode', 'single file');
    await run(vae, 'decode', 'single file');
    vae.release();
  });

  it('a config that does not match the weights fails with the list of missing and mis-shaped tensors', async () => {
    const files = dirModelFiles(TINY_FOLDER);
    const raw = JSON.parse(readFileSync(join(TINY_FOLDER, 'vae/config.json'), 'utf8'));
    const wrong = withReplacedText(files, {
      'vae/config.json': JSON.stringify({ ...raw, layers_per_block: 3, latent_channels: 6 }),
    });
    const before = gpu.pool.bytesInUse;
    const err = await loadVae(gpu, wrong).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/vae\/diffusion_pytorch_model\.safetensors does not match its config/);
    expect(msg).toMatch(/missing \(\d+\): encoder\.down_blocks\.0\.resnets\.2\.norm1\.weight/);
    expect(msg).toMatch(/mis-shaped \(\d+\): .*encoder\.conv_out\.weight: file has \[8, 32, 3, 3\], the config needs \[12, 32, 3, 3\]/);
    expect(gpu.pool.bytesInUse, 'nothing uploaded').toBe(before);
  });

  it('param shapes follow the config (one layer per block, three blocks, no attention)', () => {
    const config = vaeConfig({ block_out_channels: [8, 16, 24], layers_per_block: 1, norm_num_groups: 4, latent_channels: 3, mid_block_add_attention: false });
    const shapes = vaeParamShapes(config);
    expect(shapes.get('encoder.down_blocks.2.resnets.0.conv_shortcut.weight')).toEqual([24, 16, 1, 1]);
    expect(shapes.has('encoder.down_blocks.2.downsamplers.0.conv.weight')).toBe(false);
    expect(shapes.get('decoder.up_blocks.0.resnets.1.conv1.weight')).toEqual([24, 24, 3, 3]);
    expect(shapes.get('decoder.up_blocks.1.resnets.0.conv_shortcut.weight')).toEqual([16, 24, 1, 1]);
    expect(shapes.has('decoder.up_blocks.1.resnets.2.norm1.weight')).toBe(false);
    expect(shapes.has('decoder.up_blocks.2.upsamplers.0.conv.weight')).toBe(false);
    expect(shapes.get('decoder.conv_out.weight')).toEqual([3, 8, 3, 3]);
    expect(shapes.get('quant_conv.weight')).toEqual([6, 6, 1, 1]);
    expect([...shapes.keys()].some((k) => k.includes('attentions'))).toBe(false);
    expect(() => vaeConfig({ block_out_channels: [12], norm_num_groups: 8 })).toThrow(/do not divide/);
  });
});

describe('VAE on other configs, against the float64 reference', () => {
  const cases = [
    {
      name: 'three blocks of one layer, widths 8/16/24, batch 3, 12 x 20 image',
      raw: { in_channels: 2, out_channels: 3, block_out_channels: [8, 16, 24], layers_per_block: 1, norm_num_groups: 4, latent_channels: 3 },
      batch: 3,
      size: [12, 20],
    },
    {
      name: 'two blocks of two layers, no mid attention, odd 9 x 6 image',
      raw: { block_out_channels: [4, 8], layers_per_block: 2, norm_num_groups: 2, latent_channels: 2, mid_block_add_attention: false },
      batch: 1,
      size: [9, 6],
    },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const gpu = await testGpu();
      const config = vaeConfig(c.raw);
      const w = randomWeights(gpu, vaeParamShapes(config), 100);
      const vae = new AutoencoderKL(config, w.gpu);
      const reference = ref.vae(w.f64, config);
      const [h, wd] = c.size;
      const image = randn(c.batch * config.in_channels * h * wd, 7);
      const x = Tensor.from(gpu, image, [c.batch, config.in_channels, h, wd]);
      const moments = await gpu.checked(() => vaeEncode(vae, x));
      const want = reference.encode({ v: image, n: c.batch, c: config.in_channels, h, w: wd });
      expect(moments.shape).toEqual([want.n, want.c, want.h, want.w]);
      expectClose(await moments.read(), want.v, TOL, 'moments');

      const latent = randn(want.n * config.latent_channels * want.h * want.w, 8);
      const z = Tensor.from(gpu, latent, [want.n, config.latent_channels, want.h, want.w]);
      const decoded = await gpu.checked(() => vaeDecode(vae, z));
      const wantD = reference.decode({ v: latent, n: want.n, c: config.latent_channels, h: want.h, w: want.w });
      expect(decoded.shape).toEqual([wantD.n, wantD.c, wantD.h, wantD.w]);
      expectClose(await decoded.read(), wantD.v, TOL, 'decoded');
      for (const t of [x, moments, z, decoded]) t.release();
      vae.release();
    });
  }
});
