// `tpo-lab export`, run in-process through main(): kohya -> diffusers -> kohya on the golden tiny LoRA,
// checkpoint and training-output folders as input, and bad inputs refused with a clear message.

import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli';
import { decodeLora } from '../../src/models/lora-io';
import { memorySource, SafetensorsFile, writeSafetensors } from '../../src/models/safetensors';
import { type UNetConfig } from '../../src/models/unet';
import { GOLDENS } from '../helpers/goldens';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const GOLDEN_LORA = path.join(TINY, 'lora.safetensors');
const TINY_UNET = JSON.parse(readFileSync(path.join(TINY, 'unet/config.json'), 'utf8')) as UNetConfig;
const tmp = mkdtempSync(path.join(tmpdir(), 'cli-export-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const run = (argv: string[], cwd = tmp) => runCli(argv, { cwd });

const decode = async (file: string) => decodeLora(await SafetensorsFile.open(memorySource(new Uint8Array(readFileSync(file)), path.basename(file))), TINY_UNET);

describe('tpo-lab export', () => {
  it('is listed and has help', async () => {
    expect((await run(['--help'])).out).toMatch(/\n\s+export\s+write a LoRA in kohya/);
    const r = await run(['export', '--help']);
    expect(r.status).toBe(0);
    for (const opt of ['--from PATH', '--format kohya|diffusers', '--dtype fp16|fp32', '--out FILE', '--model PATH']) expect(r.out).toContain(opt);
  });

  it('converts the golden kohya LoRA to diffusers and back, losslessly in fp32, carrying the metadata', async () => {
    const a = await run(['export', '--from', GOLDEN_LORA, '--format', 'diffusers', '--dtype', 'fp32', '--out', 'a.safetensors', '--model', TINY]);
    expect(a.err).toBe('');
    expect(a.status).toBe(0);
    expect(a.out).toMatch(/^wrote a\.safetensors: 128 modules, rank 4, alpha 2, diffusers, fp32, \d+ bytes \(from kohya lora\.safetensors, checked against tiny-sd15\)\n$/);
    const b = await run(['export', '--from', 'a.safetensors', '--format', 'kohya', '--dtype', 'fp32', '--out', 'b.safetensors', '--model', path.join(TINY, 'unet', 'config.json')]);
    expect(b.status, b.err).toBe(0);
    expect(b.out).toMatch(/: 128 modules, rank 4, alpha 2, kohya, fp32, .*from diffusers a\.safetensors/);

    const golden = await decode(GOLDEN_LORA);
    const viaDiffusers = await decode(path.join(tmp, 'a.safetensors'));
    const back = await decode(path.join(tmp, 'b.safetensors'));
    expect(viaDiffusers.format).toBe('diffusers');
    expect(back.format).toBe('kohya');
    expect(viaDiffusers.lora).toEqual(golden.lora);
    expect(back.lora).toEqual(golden.lora);
    expect(back.metadata).toMatchObject({ ss_network_module: 'networks.lora', ss_network_dim: '4', ss_network_alpha: '2.0', ss_base_model_version: 'sd_v1' });
    expect(back.metadata.sshs_model_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(back.metadata.lora_adapter_metadata).toBeUndefined();
    expect(JSON.parse(viaDiffusers.metadata.lora_adapter_metadata)).toMatchObject({ 'unet.r': 4, 'unet.lora_alpha': 2 });
    // Written atomically: no temporary file left behind.
    expect(readdirSync(tmp).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('writes fp16 by default and names the file diffusers looks for when --out is a folder', async () => {
    const dir = path.join(tmp, 'for-diffusers');
    mkdirSync(dir);
    const r = await run(['export', '--from', GOLDEN_LORA, '--format', 'diffusers', '--out', dir, '--model', TINY]);
    expect(r.status, r.err).toBe(0);
    expect(r.out).toContain('diffusers, fp16');
    const file = await SafetensorsFile.open(memorySource(new Uint8Array(readFileSync(path.join(dir, 'pytorch_lora_weights.safetensors')))));
    expect(new Set([...file.tensors.values()].map((t) => t.dtype))).toEqual(new Set(['F16']));
  });

  it('takes a checkpoint folder or a training output folder', async () => {
    const ckpt = path.join(tmp, 'ckpt');
    mkdirSync(ckpt);
    copyFileSync(GOLDEN_LORA, path.join(ckpt, 'lora.safetensors'));
    const run1 = path.join(tmp, 'run1');
    mkdirSync(path.join(run1, 'checkpoint'), { recursive: true });
    copyFileSync(GOLDEN_LORA, path.join(run1, 'checkpoint', 'lora.safetensors'));
    for (const [from, picked] of [[ckpt, 'lora.safetensors'], [run1, 'lora.safetensors'], ['run1', 'lora.safetensors']]) {
      const out = path.join(tmp, `from-${path.basename(from)}.safetensors`);
      const r = await run(['export', '--from', from, '--out', out, '--model', TINY]);
      expect(r.status, r.err).toBe(0);
      expect(r.out).toContain(`from kohya ${picked}`);
      expect(existsSync(out)).toBe(true);
    }
    // A training output folder's own lora.safetensors (the final one) wins over its checkpoint.
    writeFileSync(path.join(run1, 'lora.safetensors'), readFileSync(path.join(tmp, 'a.safetensors')));
    const r = await run(['export', '--from', run1, '--out', 'final.safetensors', '--model', TINY]);
    expect(r.out).toContain('from diffusers lora.safetensors');
  });

  it('refuses bad inputs with a clear message and a non-zero status', async () => {
    const truncated = path.join(tmp, 'truncated.safetensors');
    const golden = readFileSync(GOLDEN_LORA);
    writeFileSync(truncated, golden.subarray(0, golden.length - 100));
    const sdxl = path.join(tmp, 'sdxl.safetensors');
    writeFileSync(sdxl, writeSafetensors([{ name: 'lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight', dtype: 'F16', shape: [4, 640], data: new Uint8Array(2 * 4 * 640) }]));
    writeFileSync(path.join(tmp, 'not-a-lora.safetensors'), writeSafetensors([{ name: 'unet.conv_in.lora_A.weight', dtype: 'F32', shape: [1, 4, 3, 3], data: new Uint8Array(4 * 36) }]));
    mkdirSync(path.join(tmp, 'empty'), { recursive: true });
    const cases: [string[], number, RegExp][] = [
      [['--from', 'missing.safetensors', '--out', 'x.safetensors'], 2, /--from missing\.safetensors: no such file or folder/],
      [['--from', 'empty', '--out', 'x.safetensors'], 2, /a folder without a LoRA \(looked for lora\.safetensors, checkpoint\/lora\.safetensors/],
      [['--from', truncated, '--out', 'x.safetensors', '--model', TINY], 1, /truncated\.safetensors: .*truncated/],
      [['--from', sdxl, '--out', 'x.safetensors'], 1, /sdxl\.safetensors: not a LoRA for this Stable Diffusion 1\.x UNet: it is an SDXL LoRA/],
      [['--from', 'not-a-lora.safetensors', '--out', 'x.safetensors'], 1, /1 UNet layers this lab does not apply LoRA to \(conv_in/],
      // The tiny LoRA against SD1.5's UNet (no --model): the widths do not fit, and the message says what to do.
      [['--from', GOLDEN_LORA, '--out', 'x.safetensors'], 1, /128 of 128 LoRA modules do not fit .*It was checked against SD1\.5's UNet: .*pass --model/],
      [['--from', GOLDEN_LORA, '--out', GOLDEN_LORA, '--model', TINY], 2, /is the input file/],
      [['--from', GOLDEN_LORA, '--out', 'x.bin'], 2, /must end in \.safetensors/],
      [['--from', GOLDEN_LORA, '--out', 'x.safetensors', '--format', 'lycoris'], 2, /--format must be kohya or diffusers/],
      [['--from', GOLDEN_LORA, '--out', 'x.safetensors', '--dtype', 'bf16'], 2, /--dtype must be fp16 or fp32/],
      [['--out', 'x.safetensors'], 2, /--from FILE_OR_DIR is required/],
      [['--from', GOLDEN_LORA], 2, /--out FILE is required/],
      [['--from', GOLDEN_LORA, '--out', 'x.safetensors', '--model', '/no/such/model'], 2, /no such file or folder/],
    ];
    for (const [argv, status, message] of cases) {
      const r = await run(['export', ...argv]);
      expect(r.status, argv.join(' ')).toBe(status);
      expect(r.err, argv.join(' ')).toMatch(message);
      expect(r.err).toMatch(/^tpo-lab export: /);
    }
    expect(existsSync(path.join(tmp, 'x.safetensors'))).toBe(false);
  });
});
