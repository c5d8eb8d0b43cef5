// `tpo-lab plan`, run in-process through main(): the model configs it reads, its table, verdict and JSON.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli';
import { planMemory } from '../../src/models/memory-plan';
import { formatBytes } from '../../src/util/format';
import { writeSafetensors } from '../../src/models/safetensors';
import { SD15_UNET_CONFIG } from '../../src/models/sd15-configs';
import { GOLDENS } from '../helpers/goldens';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const tmp = mkdtempSync(path.join(tmpdir(), 'cli-plan-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const run = (argv: string[], cwd?: string) => runCli(argv, { cwd });

describe('tpo-lab plan', () => {
  it('is listed and has help', async () => {
    let r = await run(['--help']);
    expect(r.out).toMatch(/\n\s+plan\s+print the GPU memory/);
    r = await run(['plan', '--help']);
    expect(r.status).toBe(0);
    for (const opt of ['--model PATH', '--resolution PX', '--rank R', '--alpha A', '--batch B', '--targets LIST', '--method NAME', '--precision f16|f32', '--json']) {
      expect(r.out).toContain(opt);
    }
  });

  it('prints SD1.5 at 512 px, rank 8, batch 1 with checkpointing on and off, and a verdict', async () => {
    const sampling = await run(['plan', '--precision', 'f16']);
    expect(sampling.out).toMatch(/^Sampling \(text to image at 512x512.*peak 3\.\d+ GiB.*fits in 4 GiB\.$/m);
    const r = await run(['plan', '--resolution', '512', '--rank', '8', '--batch', '1']);
    expect(r.err).toBe('');
    expect(r.status).toBe(0);
    const on = await planMemory({ unet: SD15_UNET_CONFIG, resolution: 512, rank: 8, batch: 1, weightBytes: 4, checkpointing: true });
    const off = await planMemory({ unet: SD15_UNET_CONFIG, resolution: 512, rank: 8, batch: 1, weightBytes: 4, checkpointing: false });
    expect(r.out).toMatch(/^Memory plan for Stable Diffusion 1\.5/);
    expect(r.out).toContain('UNet 859.5M parameters (f32), 512x512 px (latent 64x64), TDPO batch 1 = 2 UNet rows per forward');
    expect(r.out).toContain('128 modules, 1.59M parameters');
    expect(r.out).toMatch(/checkpointing on\s+checkpointing off/);
    for (const label of ['frozen UNet weights', 'LoRA parameters', 'AdamW moments', 'batch inputs', 'activations kept for the backward', 'LoRA gradients', 'gradients in flight', 'checkpoint recompute', 'reference forward (no tape)', 'pool size-class rounding']) {
      expect(r.out).toContain(label);
    }
    expect(r.out).toMatch(new RegExp(`peak in use\\s+${formatBytes(on.peakBytes)}\\s+${formatBytes(off.peakBytes)}`));
    expect(r.out).toMatch(new RegExp(`pool holds after a step\\s+${formatBytes(on.reservedBytes)}\\s+${formatBytes(off.reservedBytes)}`));
    expect(r.out).toContain('Not resident during training (used once to cache inputs): text encoder weights');
    expect(r.out).toMatch(/Verdict: does not fit in 4 GiB: .* even with checkpointing .* try --precision f16/);
    console.log(r.out);

    const f16 = await run(['plan', '--precision', 'f16']);
    expect(f16.status).toBe(0);
    expect(f16.out).toMatch(/Verdict: fits in 4 GiB with checkpointing \(/);
    console.log(f16.out);
  });

  it('--json gives both plans', async () => {
    const r = await run(['plan', '--json', '--batch', '2', '--method', 'sft', '--resolution', '256', '--budget', '16']);
    expect(r.status).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.budgetBytes).toBe(16 * 2 ** 30);
    expect(j.fits).toEqual({ checkpointing: true, noCheckpointing: true, sampling: true });
    // Text to image at the same size, from the real sampling code on a counting device.
    expect(j.sampling.peakBytes).toBeGreaterThan(j.sampling.weightBytes);
    expect(j.checkpointing.input).toMatchObject({ batch: 2, method: 'sft', rows: 4, reference: true, checkpointing: true, resolution: 256 });
    expect(j.noCheckpointing.input.checkpointing).toBe(false);
    const want = await planMemory({ unet: SD15_UNET_CONFIG, resolution: 256, rank: 8, batch: 2, method: 'sft', weightBytes: 4, checkpointing: true });
    expect(j.checkpointing.peakBytes).toBe(want.peakBytes);
    expect(j.checkpointing.lines).toEqual(want.lines);
  });

  it('reads a diffusers folder, a unet/config.json, and refuses a single file that is not SD1.5-shaped', async () => {
    for (const model of [TINY, path.join(TINY, 'unet', 'config.json'), path.join(TINY, 'unet')]) {
      const r = await run(['plan', '--model', model, '--resolution', '128', '--json']);
      expect(r.err, model).toBe('');
      const j = JSON.parse(r.out);
      expect(j.checkpointing.sizes.loraModules).toBe(128);
      expect(j.checkpointing.input.latent).toBe(16);
      // The tiny folder's text encoder and VAE configs come along (not in the step's total).
      expect(j.checkpointing.notResident.map((l: { key: string }) => l.key)).toEqual(['textEncoderWeights', 'vaeWeights']);
    }
    const rel = await run(['plan', '--model', 'tiny-sd15', '--resolution', '128'], GOLDENS);
    expect(rel.status).toBe(0);
    expect(rel.out).toMatch(/^Memory plan for tiny-sd15\n/);
    expect(rel.out).toMatch(/Verdict: fits in 4 GiB with or without checkpointing/);

    const single = await run(['plan', '--model', path.join(GOLDENS, 'tiny-sd15-single.safetensors')]);
    expect(single.status).toBe(1);
    expect(single.err).toMatch(/input conv is \[32, 4, 3, 3\], SD1\.5's is \[320, 4, 3, 3\]/);
  });

  it('plans a single-file SD1.5 checkpoint with the built-in configs', async () => {
    const n = 320 * 4 * 3 * 3;
    const file = path.join(tmp, 'sd15-like.safetensors');
    writeFileSync(file, writeSafetensors([{ name: 'model.diffusion_model.input_blocks.0.0.weight', dtype: 'F16', shape: [320, 4, 3, 3], data: new Uint8Array(2 * n) }]));
    const r = await run(['plan', '--model', file, '--precision', 'f16']);
    expect(r.err).toBe('');
    expect(r.out).toMatch(/^Memory plan for sd15-like\.safetensors \(single file, SD1\.5 configs\)/);
    expect(r.out).toContain('UNet 859.5M parameters (f16)');
  });

  it('rejects bad arguments with status 2', async () => {
    const cases: [string[], RegExp][] = [
      [['plan', '--precision', 'f8'], /--precision must be f16 or f32/],
      [['plan', '--method', 'ppo'], /unknown method 'ppo'/],
      [['plan', '--targets', 'to_q,attn9'], /unknown LoRA target 'attn9'/],
      [['plan', '--resolution', '500'], /resolution 500 must be a multiple of 64/],
      [['plan', '--rank', '0'], /--rank must be at least 1/],
      [['plan', '--model', '/no/such/model'], /no such file or folder/],
      [['plan', 'extra'], /unexpected argument 'extra'/],
    ];
    for (const [argv, message] of cases) {
      const r = await run(argv);
      expect(r.status, argv.join(' ')).toBe(2);
      expect(r.err).toMatch(message);
    }
  });
});
