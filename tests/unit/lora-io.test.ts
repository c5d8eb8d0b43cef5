// LoRA files: kohya and diffusers formats written and read back, their metadata and kohya's hashes checked
// independently (node:crypto over the byte ranges kohya hashes), the key spellings the other tools use
// (diffusers' kohya converter and PEFT loader, ComfyUI's key map) replayed on our files, every refusal, and
// on the GPU: exact upload / read-back and the golden LoRA reproducing the reference UNet output.

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { relativeError } from '../../src/cli/golden';
import { dirModelFiles } from '../../src/models/model-files-node';
import { kohyaName } from '../../src/models/lora';
import {
  decodeLora,
  encodeLora,
  type HostLora,
  type HostLoraModule,
  LoraFileError,
  loraFromHost,
  loraToHost,
  pythonFloat,
  readLora,
} from '../../src/models/lora-io';
import { sha256HexSync } from '../../src/util/hash';
import { f16ToF32, f32ToF16, fromFloat32, memorySource, SafetensorsFile, type TensorToWrite, writeSafetensors } from '../../src/models/safetensors';
import { openSafetensorsFile } from '../../src/models/safetensors-node';
import { SD15_UNET_CONFIG } from '../../src/models/sd15-configs';
import { UNet, unetParamShapes, type UNetConfig } from '../../src/models/unet';
import { loadFolderComponent, type ParamShapes } from '../../src/models/weights';
import { Ctx } from '../../src/nn/tape';
import { Tensor } from '../../src/nn/tensor';
import { rng } from '../helpers/check';
import { GOLDENS } from '../helpers/goldens';
import { testGpu } from '../helpers/gpu';

const TINY = join(GOLDENS, 'tiny-sd15');
const tinyConfig = JSON.parse(readFileSync(join(TINY, 'unet/config.json'), 'utf8')) as UNetConfig;
const TINY_PARAMS = unetParamShapes(tinyConfig);
const SD15_PARAMS = unetParamShapes(SD15_UNET_CONFIG);

const ATTN = 'down_blocks.0.attentions.0.transformer_blocks.0';
/** A 1x1 conv (proj_in), self- and cross-attention projections, the output projection and a feed-forward. */
const MODULES = [
  'down_blocks.0.attentions.0.proj_in',
  `${ATTN}.attn1.to_q`,
  `${ATTN}.attn2.to_k`,
  `${ATTN}.attn2.to_out.0`,
  'up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj',
  'mid_block.attentions.0.proj_out',
];

function module(params: ParamShapes, path: string, rank: number, alpha: number, seed: number): HostLoraModule {
  const shape = params.get(`${path}.weight`)!;
  const r = rng(seed);
  const values = (n: number) => Float32Array.from({ length: n }, () => (r() * 2 - 1) * 0.5);
  return { down: values(rank * shape[1]), up: values(shape[0] * rank), rank, alpha, in: shape[1], out: shape[0], conv1x1: shape.length === 4 };
}

function tinyLora(alphas: number[] = [2], ranks: number[] = [4]): HostLora {
  return new Map(MODULES.map((m, i) => [m, module(TINY_PARAMS, m, ranks[i % ranks.length], alphas[i % alphas.length], 100 + i)]));
}

const open = (bytes: Uint8Array, name = 'test.safetensors') => SafetensorsFile.open(memorySource(bytes, name));

function header(bytes: Uint8Array): Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }> & { __metadata__?: Record<string, string> } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
}

const tensorNames = (bytes: Uint8Array) => Object.keys(header(bytes)).filter((k) => k !== '__metadata__').sort();
const half = (v: Float32Array) => v.map((x) => f16ToF32(f32ToF16(x)));
const nodeSha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('kohya format', () => {
  for (const dtype of ['fp32', 'fp16'] as const) {
    it(`round-trips ${dtype}: exact key set, 4-D 1x1 convs, 0-d alpha, values`, async () => {
      const lora = tinyLora([2, 1.5]);
      const bytes = encodeLora(lora, { format: 'kohya', dtype });
      const want = MODULES.flatMap((m) => ['lora_down.weight', 'lora_up.weight', 'alpha'].map((p) => `${kohyaName(m)}.${p}`)).sort();
      expect(tensorNames(bytes)).toEqual(want);
      const h = header(bytes);
      const st = dtype === 'fp16' ? 'F16' : 'F32';
      for (const name of want) expect(h[name].dtype, name).toBe(st);
      expect(h['lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight'].shape).toEqual([4, 32, 1, 1]);
      expect(h['lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight'].shape).toEqual([32, 4, 1, 1]);
      expect(h[`${kohyaName(`${ATTN}.attn2.to_k`)}.lora_down.weight`].shape).toEqual([4, 48]);
      expect(h[`${kohyaName(`${ATTN}.attn2.to_k`)}.lora_up.weight`].shape).toEqual([32, 4]);
      expect(h[`${kohyaName(`${ATTN}.attn1.to_q`)}.alpha`].shape).toEqual([]);

      const decoded = await decodeLora(await open(bytes), tinyConfig);
      expect(decoded.format).toBe('kohya');
      expect([...decoded.lora.keys()]).toEqual([...MODULES].sort());
      for (const [path, m] of lora) {
        const d = decoded.lora.get(path)!;
        expect({ rank: d.rank, alpha: d.alpha, in: d.in, out: d.out, conv1x1: d.conv1x1 }).toEqual({ rank: m.rank, alpha: m.alpha, in: m.in, out: m.out, conv1x1: m.conv1x1 });
        expect(Array.from(d.down)).toEqual(Array.from(dtype === 'fp16' ? half(m.down) : m.down));
        expect(Array.from(d.up)).toEqual(Array.from(dtype === 'fp16' ? half(m.up) : m.up));
      }
    });
  }

  it('writes kohya\'s ss_* fields, ours, ModelSpec and the hashes', async () => {
    const bytes = encodeLora(tinyLora(), {
      format: 'kohya',
      info: {
        title: 'cats',
        method: 'tdpo',
        beta: 2500,
        kappa: null,
        principles: ['content', 'attribute'],
        datasetSize: 40,
        pairs: 80,
        steps: 500,
        epochs: 3,
        learningRate: 1e-5,
        batchSize: 2,
        gradAccum: 4,
        resolution: 512,
        seed: 7,
        trainingStartedAt: 1_700_000_000,
        trainingEndedAt: 1_700_003_600.5,
        baseModelName: 'stable-diffusion-v1-5',
        targets: ['to_q', 'to_k', 'to_v', 'to_out.0'],
        lrScheduler: 'cosine',
        warmupSteps: 50,
        optimizer: 'AdamW',
      },
    });
    const md = (await open(bytes)).metadata;
    expect(md).toMatchObject({
      ss_network_module: 'networks.lora',
      ss_network_dim: '4',
      ss_network_alpha: '2.0',
      ss_base_model_version: 'sd_v1',
      ss_v2: 'False',
      ss_output_name: 'cats',
      ss_sd_model_name: 'stable-diffusion-v1-5',
      ss_steps: '500',
      ss_num_epochs: '3',
      ss_learning_rate: '1e-05',
      ss_resolution: '(512, 512)',
      ss_batch_size_per_device: '2',
      ss_gradient_accumulation_steps: '4',
      ss_total_batch_size: '8',
      ss_seed: '7',
      ss_num_train_images: '40',
      ss_training_started_at: '1700000000.0',
      ss_training_finished_at: '1700003600.5',
      ss_lr_scheduler: 'cosine',
      ss_lr_warmup_steps: '50',
      ss_optimizer: 'AdamW',
      tpo_method: 'tdpo',
      tpo_beta: '2500',
      tpo_kappa: 'null',
      tpo_principles: '["content","attribute"]',
      tpo_dataset_size: '40',
      tpo_pairs: '80',
      tpo_targets: '["to_q","to_k","to_v","to_out.0"]',
      'modelspec.sai_model_spec': '1.0.1',
      'modelspec.architecture': 'stable-diffusion-v1/lora',
      'modelspec.implementation': 'diffusers',
      'modelspec.title': 'cats',
      'modelspec.resolution': '512x512',
      'modelspec.prediction_type': 'epsilon',
      'modelspec.date': '2023-11-14T23:13:20+00:00',
    });
    expect(md.sshs_model_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(md.sshs_legacy_hash).toMatch(/^[0-9a-f]{8}$/);
    expect(Object.keys(md).some((k) => k === 'format' || k === 'lora_adapter_metadata')).toBe(false);
  });

  it('computes sshs_model_hash / sshs_legacy_hash as kohya does, checked with node:crypto', async () => {
    // Big enough (SD1.5, rank 8, 128 modules, ~3 MB) that the legacy hash's 64 KiB at 1 MiB is real data.
    const lora: HostLora = new Map();
    let seed = 1;
    for (const [name, shape] of SD15_PARAMS) {
      if (!/\.attn[12]\.(to_q|to_k|to_v|to_out\.0)\.weight$/.test(name)) continue;
      lora.set(name.slice(0, -'.weight'.length), module(SD15_PARAMS, name.slice(0, -'.weight'.length), 8, 4, seed++));
      expect(shape.length).toBe(2);
    }
    expect(lora.size).toBe(128);
    const bytes = encodeLora(lora, { format: 'kohya', dtype: 'fp16', info: { title: 'big', steps: 10 }, metadata: { 'modelspec.author': 'me' } });
    const h = header(bytes);
    const md = h.__metadata__!;
    // kohya: train_util.precalculate_safetensors_hashes serialises the same tensors with only the ss_*
    // metadata, then hashes the bytes after the header (model hash) and bytes [0x100000, 0x110000) (legacy).
    // Rebuild that serialisation here from the final file: same tensors and offsets, ss_* metadata only.
    const ss = Object.fromEntries(Object.entries(md).filter(([k]) => k.startsWith('ss_')));
    const entries = Object.entries(h).filter(([k]) => k !== '__metadata__');
    const json = JSON.stringify({ __metadata__: ss, ...Object.fromEntries(entries) });
    const padded = json + ' '.repeat((8 - (json.length % 8)) % 8);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const data = bytes.subarray(8 + n);
    const ssFile = new Uint8Array(8 + padded.length + data.length);
    new DataView(ssFile.buffer).setBigUint64(0, BigInt(padded.length), true);
    ssFile.set(new TextEncoder().encode(padded), 8);
    ssFile.set(data, 8 + padded.length);
    expect(ssFile.length).toBeGreaterThan(0x110000);
    expect(md.sshs_model_hash).toBe(nodeSha256(ssFile.subarray(8 + padded.length)));
    expect(md.sshs_legacy_hash).toBe(nodeSha256(ssFile.subarray(0x100000, 0x110000)).slice(0, 8));
    // The final file's header is longer (more metadata), so its own bytes at 1 MiB differ: kohya's
    // legacy hash is of the ss_-only serialisation, not of the file.
    expect(md.sshs_legacy_hash).not.toBe(nodeSha256(bytes.subarray(0x100000, 0x110000)).slice(0, 8));
    // Metadata outside ss_* does not change the hashes (kohya keeps them valid under user edits).
    const retitled = (await open(encodeLora(lora, { format: 'kohya', dtype: 'fp16', info: { title: 'big', steps: 10 }, metadata: { 'modelspec.author': 'someone else' } }))).metadata;
    expect([retitled.sshs_model_hash, retitled.sshs_legacy_hash]).toEqual([md.sshs_model_hash, md.sshs_legacy_hash]);
  });

  it('writes what the reference safetensors writer writes: the golden LoRA (Python-written) byte for byte', async () => {
    // The hashes rest on our serialisation equalling Python safetensors'; the golden file was written by it.
    const golden = new Uint8Array(readFileSync(join(TINY, 'lora.safetensors')));
    const file = await open(golden);
    const h = header(golden);
    const tensors: TensorToWrite[] = [];
    for (const name of file.names) tensors.push({ name, dtype: file.info(name).dtype, shape: file.info(name).shape, data: await file.readBytes(name) });
    expect(writeSafetensors(tensors, h.__metadata__)).toEqual(golden);
  });

  it('carries source metadata over, recomputing ours and dropping stale hashes', async () => {
    const bytes = encodeLora(tinyLora(), {
      format: 'kohya',
      metadata: { ss_network_dim: '99', ss_seed: '3', sshs_model_hash: 'stale', 'modelspec.title': 'kept', tpo_method: 'tkto', custom: 'x', format: 'pt', lora_adapter_metadata: '{}' },
    });
    const md = (await open(bytes)).metadata;
    expect(md).toMatchObject({ ss_network_dim: '4', ss_seed: '3', 'modelspec.title': 'kept', tpo_method: 'tkto', custom: 'x' });
    expect(md.sshs_model_hash).not.toBe('stale');
    expect(md.format).toBeUndefined();
    expect(md.lora_adapter_metadata).toBeUndefined();
  });

  it('writes "Dynamic" for ranks or alphas that differ between modules', async () => {
    const md = (await open(encodeLora(tinyLora([1, 2], [2, 4]), { format: 'kohya' }))).metadata;
    expect([md.ss_network_dim, md.ss_network_alpha]).toEqual(['Dynamic', 'Dynamic']);
  });
});

describe('diffusers format', () => {
  for (const dtype of ['fp32', 'fp16'] as const) {
    it(`round-trips ${dtype}: unet.<path>.lora_A/lora_B only, rank and alpha in lora_adapter_metadata`, async () => {
      const lora = tinyLora([2, 2, 2, 8], [4, 4, 4, 2]);
      const bytes = encodeLora(lora, { format: 'diffusers', dtype });
      expect(tensorNames(bytes)).toEqual(MODULES.flatMap((m) => [`unet.${m}.lora_A.weight`, `unet.${m}.lora_B.weight`]).sort());
      const h = header(bytes);
      expect(h['unet.down_blocks.0.attentions.0.proj_in.lora_A.weight']).toMatchObject({ dtype: dtype === 'fp16' ? 'F16' : 'F32', shape: [4, 32, 1, 1] });
      expect(h['unet.down_blocks.0.attentions.0.proj_in.lora_B.weight'].shape).toEqual([32, 4, 1, 1]);
      const md = h.__metadata__!;
      expect(md.format).toBe('pt');
      const config = JSON.parse(md.lora_adapter_metadata);
      expect(config['unet.r']).toBe(4);
      expect(config['unet.lora_alpha']).toBe(2);
      expect(config['unet.target_modules']).toEqual([...MODULES].sort());
      expect(config['unet.rank_pattern']).toEqual({ [MODULES[3]]: 2 });
      expect(config['unet.alpha_pattern']).toEqual({ [MODULES[3]]: 8 });
      expect(md.sshs_model_hash).toMatch(/^[0-9a-f]{64}$/);

      const decoded = await decodeLora(await open(bytes), tinyConfig);
      expect(decoded.format).toBe('diffusers');
      for (const [path, m] of lora) {
        const d = decoded.lora.get(path)!;
        expect([d.rank, d.alpha, d.conv1x1]).toEqual([m.rank, m.alpha, m.conv1x1]);
        expect(Array.from(d.down)).toEqual(Array.from(dtype === 'fp16' ? half(m.down) : m.down));
        expect(Array.from(d.up)).toEqual(Array.from(dtype === 'fp16' ? half(m.up) : m.up));
      }
      // And back to kohya: the same LoRA.
      const again = await decodeLora(await open(encodeLora(decoded.lora, { format: 'kohya', dtype: 'fp32', metadata: decoded.metadata })), tinyConfig);
      expect(again.lora).toEqual(decoded.lora);
    });
  }
});

describe('what the other tools do with our files (their key logic replayed)', () => {
  // diffusers (loaders/lora_conversion_utils.py _convert_unet_lora_key, then utils/state_dict_utils.py
  // convert_unet_state_dict_to_peft): a kohya key's module, as diffusers names it. The SD1-relevant steps.
  function diffusersNameOfKohya(key: string): string {
    let n = key.replace('lora_unet_', '').replace(/_/g, '.');
    for (const [a, b] of [
      ['input.blocks', 'down_blocks'],
      ['down.blocks', 'down_blocks'],
      ['middle.block', 'mid_block'],
      ['mid.block', 'mid_block'],
      ['output.blocks', 'up_blocks'],
      ['up.blocks', 'up_blocks'],
      ['transformer.blocks', 'transformer_blocks'],
      ['to.q.lora', 'to_q_lora'],
      ['to.k.lora', 'to_k_lora'],
      ['to.v.lora', 'to_v_lora'],
      ['to.out.0.lora', 'to_out_lora'],
      ['proj.in', 'proj_in'],
      ['proj.out', 'proj_out'],
    ]) n = n.split(a).join(b);
    if (n.includes('transformer_blocks') && (n.includes('attn1') || n.includes('attn2'))) n = n.replace('attn1', 'attn1.processor').replace('attn2', 'attn2.processor');
    // To PEFT names: ".processor." always goes, then the first pattern of UNET_TO_DIFFUSERS that matches.
    n = n.split('.processor.').join('.');
    const first = [
      ['.to_out_lora.up', '.to_out.0.lora_B'],
      ['.to_out_lora.down', '.to_out.0.lora_A'],
      ['.to_q_lora.down', '.to_q.lora_A'],
      ['.to_q_lora.up', '.to_q.lora_B'],
      ['.to_k_lora.down', '.to_k.lora_A'],
      ['.to_k_lora.up', '.to_k.lora_B'],
      ['.to_v_lora.down', '.to_v.lora_A'],
      ['.to_v_lora.up', '.to_v.lora_B'],
      ['.lora.up', '.lora_B'],
      ['.lora.down', '.lora_A'],
    ].find(([a]) => n.includes(a));
    if (first) n = n.split(first[0]).join(first[1]);
    expect(n, key).toMatch(/\.lora_A\.weight$/);
    return n.slice(0, -'.lora_A.weight'.length);
  }

  it('diffusers reads our kohya file: every key converts to one of the UNet\'s modules, alphas as network_alphas', async () => {
    const bytes = encodeLora(tinyLora(), { format: 'kohya', dtype: 'fp16' });
    const names = tensorNames(bytes);
    // lora_state_dict takes the kohya path only when every key starts with lora_unet_ / lora_te*_.
    expect(names.every((k) => k.startsWith('lora_unet_'))).toBe(true);
    const downs = names.filter((k) => k.endsWith('.lora_down.weight'));
    expect(downs.length).toBe(MODULES.length);
    const h = header(bytes);
    for (const key of downs) {
      const module = diffusersNameOfKohya(key);
      expect(MODULES, key).toContain(module);
      const weight = TINY_PARAMS.get(`${module}.weight`)!;
      // PEFT's LoRA for a Conv2d has conv lora_A/lora_B: 4-D with the base's 1x1 kernel.
      expect(h[key].shape.length).toBe(weight.length);
      // The rest of the kohya keys must be the up matrix and the alpha, or diffusers raises on leftovers.
      const base = key.slice(0, -'.lora_down.weight'.length);
      expect(names).toContain(`${base}.lora_up.weight`);
      expect(names).toContain(`${base}.alpha`);
    }
    expect(names.length).toBe(3 * downs.length);
  });

  it('diffusers reads our PEFT file: every key has "lora", unet. prefix, LoraConfig from the metadata', async () => {
    const lora = tinyLora([2], [4]);
    const bytes = encodeLora(lora, { format: 'diffusers' });
    const names = tensorNames(bytes);
    // load_lora_weights: "Invalid LoRA checkpoint" unless every key contains "lora".
    expect(names.every((k) => k.includes('lora'))).toBe(true);
    // load_lora_adapter(prefix="unet") keeps only "unet." keys; the metadata, stripped of "unet.", is the
    // LoraConfig; target_modules must name the modules the keys load into.
    expect(names.every((k) => k.startsWith('unet.'))).toBe(true);
    const config = Object.fromEntries(
      Object.entries(JSON.parse(header(bytes).__metadata__!.lora_adapter_metadata) as Record<string, unknown>)
        .filter(([k]) => k.startsWith('unet.'))
        .map(([k, v]) => [k.slice(5), v]),
    );
    const modules = [...new Set(names.map((k) => k.slice(5).split('.lora')[0]))].sort();
    expect(config.target_modules).toEqual(modules);
    for (const m of modules) expect(TINY_PARAMS.has(`${m}.weight`), m).toBe(true);
    // PEFT scales by lora_alpha / r: ours.
    expect((config.lora_alpha as number) / (config.r as number)).toBe(2 / 4);
  });

  // ComfyUI (comfy/lora.py model_lora_keys_unet + comfy/weight_adapter/lora.py LoRAAdapter.load): for an
  // SD1.x UNet it maps "lora_unet_" + the diffusers path with "_", and "unet." + the diffusers path with
  // ".to_" -> ".processor.to_" and "to_out.0" -> "to_out"; for each it looks for .lora_up/.lora_down,
  // .lora_B/.lora_A, .lora.up/.lora.down (and "_lora.up") with an optional .alpha.
  function comfyLoaded(names: string[], params: ParamShapes): Set<string> {
    const keyMap: string[] = [];
    for (const k of params.keys()) {
      if (!k.endsWith('.weight')) continue;
      const path = k.slice(0, -'.weight'.length);
      keyMap.push(`lora_unet_${path.replace(/\./g, '_')}`);
      let d = `unet.${path.replace(/\.to_/g, '.processor.to_')}`;
      if (d.endsWith('.to_out.0')) d = d.slice(0, -2);
      keyMap.push(d);
    }
    const have = new Set(names);
    const loaded = new Set<string>();
    for (const x of keyMap) {
      for (const [up, down] of [['.lora_up.weight', '.lora_down.weight'], ['_lora.up.weight', '_lora.down.weight'], ['.lora_B.weight', '.lora_A.weight'], ['.lora.up.weight', '.lora.down.weight']]) {
        if (have.has(`${x}${up}`)) {
          for (const k of [`${x}${up}`, `${x}${down}`]) loaded.add(k);
          if (have.has(`${x}.alpha`)) loaded.add(`${x}.alpha`);
          break;
        }
      }
    }
    return loaded;
  }

  it('ComfyUI loads every key of our kohya file, and the diffusers file only outside attention (documented)', () => {
    const kohya = tensorNames(encodeLora(tinyLora(), { format: 'kohya' }));
    expect([...comfyLoaded(kohya, TINY_PARAMS)].sort()).toEqual(kohya);
    // ComfyUI expects SD1.x attention projections as "unet.<...>.processor.to_q"; diffusers' PEFT files
    // spell them "unet.<...>.to_q". So ComfyUI users take the kohya file (README says so).
    const peft = tensorNames(encodeLora(tinyLora(), { format: 'diffusers' }));
    const loaded = comfyLoaded(peft, TINY_PARAMS);
    expect(peft.filter((k) => !loaded.has(k)).every((k) => /\.(to_q|to_k|to_v|to_out\.0)\.lora_[AB]\.weight$/.test(k))).toBe(true);
    expect(loaded.has('unet.down_blocks.0.attentions.0.proj_in.lora_A.weight')).toBe(true);
  });
});

describe('reading other spellings', () => {
  const m = (path: string, rank = 2) => module(TINY_PARAMS, path, rank, rank, 7);
  const t = (name: string, shape: number[], values: Float32Array): TensorToWrite => ({ name, dtype: 'F32', shape, data: fromFloat32(values, 'F32') });

  it('reads the older diffusers spellings: .lora.down / .lora.up, processor.to_q_lora, with or without unet.', async () => {
    const proj = m('down_blocks.0.attentions.0.proj_in');
    const q = m(`${ATTN}.attn1.to_q`);
    const out = m(`${ATTN}.attn2.to_out.0`);
    const k = m(`${ATTN}.attn2.to_k`);
    const bytes = writeSafetensors([
      t('unet.down_blocks.0.attentions.0.proj_in.lora.down.weight', [2, 32, 1, 1], proj.down),
      t('unet.down_blocks.0.attentions.0.proj_in.lora.up.weight', [32, 2, 1, 1], proj.up),
      t(`unet.${ATTN}.attn1.processor.to_q_lora.down.weight`, [2, 32], q.down),
      t(`unet.${ATTN}.attn1.processor.to_q_lora.up.weight`, [32, 2], q.up),
      t(`${ATTN}.attn2.processor.to_out_lora.down.weight`, [2, 32], out.down),
      t(`${ATTN}.attn2.processor.to_out_lora.up.weight`, [32, 2], out.up),
      t(`unet.${ATTN}.attn2.to_k.lora_linear_layer.down.weight`, [2, 48], k.down),
      t(`unet.${ATTN}.attn2.to_k.lora_linear_layer.up.weight`, [32, 2], k.up),
    ]);
    const decoded = await decodeLora(await open(bytes), tinyConfig);
    expect(decoded.format).toBe('diffusers-old');
    expect([...decoded.lora.keys()]).toEqual(['down_blocks.0.attentions.0.proj_in', `${ATTN}.attn1.to_q`, `${ATTN}.attn2.to_k`, `${ATTN}.attn2.to_out.0`]);
    const got = decoded.lora.get(`${ATTN}.attn2.to_out.0`)!;
    expect(Array.from(got.down)).toEqual(Array.from(out.down));
    // No metadata: diffusers' convention, lora_alpha = r (scale 1).
    for (const d of decoded.lora.values()) expect(d.alpha).toBe(d.rank);
    expect(decoded.lora.get('down_blocks.0.attentions.0.proj_in')!.conv1x1).toBe(true);
  });

  it('takes alpha from a model-level lora_adapter_metadata (no unet. prefix) and rsLoRA', async () => {
    const q = m(`${ATTN}.attn1.to_q`, 4);
    const tensors = [t(`${ATTN}.attn1.to_q.lora_A.weight`, [4, 32], q.down), t(`${ATTN}.attn1.to_q.lora_B.weight`, [32, 4], q.up)];
    let d = await decodeLora(await open(writeSafetensors(tensors, { lora_adapter_metadata: JSON.stringify({ r: 4, lora_alpha: 8 }) })), tinyConfig);
    expect(d.lora.get(`${ATTN}.attn1.to_q`)!.alpha).toBe(8);
    d = await decodeLora(await open(writeSafetensors(tensors, { lora_adapter_metadata: JSON.stringify({ r: 4, lora_alpha: 8, use_rslora: true }) })), tinyConfig);
    expect(d.lora.get(`${ATTN}.attn1.to_q`)!.alpha).toBe(16); // 8 / sqrt(4) = 16 / 4
  });

  it('reads the golden kohya LoRA (alpha stored as [1])', async () => {
    const { file, close } = await openSafetensorsFile(join(TINY, 'lora.safetensors'));
    try {
      const d = await decodeLora(file, tinyConfig);
      expect(d.lora.size).toBe(128);
      expect(d.metadata.ss_network_dim).toBe('4');
      for (const x of d.lora.values()) expect([x.rank, x.alpha]).toEqual([4, 2]);
    } finally {
      await close();
    }
  });
});

describe('refusals, each naming the file, the keys and what the file looks like', () => {
  const q = `${kohyaName(`${ATTN}.attn1.to_q`)}`;
  const z = (name: string, shape: number[]): TensorToWrite => ({ name, dtype: 'F16', shape, data: new Uint8Array(2 * shape.reduce((a, b) => a * b, 1)) });
  const good = [z(`${q}.lora_down.weight`, [4, 32]), z(`${q}.lora_up.weight`, [32, 4]), z(`${q}.alpha`, [])];
  const refuse = async (tensors: TensorToWrite[], message: RegExp, unet: UNetConfig = tinyConfig, metadata?: Record<string, string>) => {
    const p = decodeLora(await open(writeSafetensors(tensors, metadata), 'other.safetensors'), unet);
    await expect(p).rejects.toThrow(message);
    await expect(p).rejects.toThrow(/^other\.safetensors: /);
    await expect(p).rejects.toBeInstanceOf(LoraFileError);
  };

  it('an SDXL kohya LoRA', () =>
    refuse(
      [z('lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_down.weight', [4, 640]), z('lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight', [4, 1280])],
      /SDXL LoRA .*lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q\.lora_down\.weight.*its metadata says ss_base_model_version=sdxl_base_v1-0.*The file holds 2 tensors: 1 lora_[a-z0-9]+_\*, 1 lora_[a-z0-9]+_\*/,
      tinyConfig,
      { ss_base_model_version: 'sdxl_base_v1-0' },
    ));

  it('an SDXL diffusers LoRA', () => refuse([z('unet.down_blocks.2.attentions.0.transformer_blocks.9.attn1.to_q.lora_A.weight', [4, 1280])], /SDXL LoRA.*transformer_blocks\.9/));

  it('an SD2 LoRA by its 1024-wide cross-attention', () => {
    const k = kohyaName('down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k');
    return refuse([z(`${k}.lora_down.weight`, [4, 1024]), z(`${k}.lora_up.weight`, [320, 4])], /do not fit .*SD2\.x LoRA: its cross-attention takes 1024-wide text states .* this UNet's 768/, SD15_UNET_CONFIG);
  });

  it('an SD2 LoRA by its text-encoder depth', () =>
    refuse([...good, z('lora_te_text_model_encoder_layers_22_mlp_fc1.lora_down.weight', [4, 1024])], /SD2\.x LoRA: its text-encoder keys reach layer 12 or deeper \(lora_te_text_model_encoder_layers_22/));

  it('a text-encoder LoRA', () =>
    refuse([...good, z('lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight', [4, 768])], /1 text-encoder keys \(lora_te_text_model_encoder_layers_0_self_attn_q_proj\.lora_down\.weight\): text-encoder LoRAs are not supported/));

  it('unknown keys', () => refuse([...good, z(`${q}.hada_w1_a`, [4, 4]), z('something.else', [1])], /2 keys are not LoRA weights of this SD1\.x UNet's layers \(.*hada_w1_a, something\.else/));

  it('LoRA on layers outside the attention blocks', () =>
    refuse([...good, z('lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight', [4, 32, 3, 3])], /1 UNet layers this lab does not apply LoRA to \(down_blocks\.0\.resnets\.0\.conv1/));

  it('a shape that does not fit the UNet', async () => {
    const bad = [z(`${q}.lora_down.weight`, [4, 33]), z(`${q}.lora_up.weight`, [32, 4])];
    await refuse(bad, /1 of 1 LoRA modules do not fit .*attn1\.to_q: down \[4, 33\], up \[32, 4\]; the UNet's layer is 32x32/);
    const err = await decodeLora(await open(writeSafetensors(bad)), tinyConfig).catch((e) => e);
    expect(err.shapeMismatch).toBe(true);
    // The golden tiny LoRA is not SD1.5's either.
    const { file, close } = await openSafetensorsFile(join(TINY, 'lora.safetensors'));
    await expect(decodeLora(file, SD15_UNET_CONFIG)).rejects.toThrow(/128 of 128 LoRA modules do not fit/);
    await close();
  });

  it('a linear module stored 4-D, a rank that disagrees between down and up', () =>
    refuse([z(`${q}.lora_down.weight`, [4, 32, 1, 1]), z(`${q}.lora_up.weight`, [32, 3])], /do not fit/));

  it('an incomplete module, mixed spellings, an empty file', async () => {
    await refuse([z(`${q}.lora_down.weight`, [4, 32])], /is incomplete: it has .*lora_down\.weight but no up matrix/);
    await refuse([...good, z('unet.down_blocks.0.attentions.0.proj_in.lora_A.weight', [4, 32, 1, 1]), z('unet.down_blocks.0.attentions.0.proj_in.lora_B.weight', [32, 4, 1, 1])], /mixes kohya .* and diffusers/);
    await refuse([], /holds no tensors/);
  });

  it('refuses to write values float16 cannot hold, or NaN', () => {
    const lora = tinyLora();
    lora.get(MODULES[1])!.up[3] = 1e6;
    expect(() => encodeLora(lora, { format: 'kohya', dtype: 'fp16' })).toThrow(/beyond float16's range; export with --dtype fp32/);
    expect(() => encodeLora(lora, { format: 'kohya', dtype: 'fp32' })).not.toThrow();
    lora.get(MODULES[1])!.up[3] = NaN;
    expect(() => encodeLora(lora, { format: 'kohya', dtype: 'fp32' })).toThrow(/holds NaN/);
  });
});

describe('helpers', () => {
  it('sha256HexSync equals node:crypto at every block boundary and on a megabyte', () => {
    const r = rng(5);
    for (const n of [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 1000, (1 << 20) + 17]) {
      const b = Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
      expect(sha256HexSync(b), `${n} bytes`).toBe(nodeSha256(b));
    }
  });

  it('pythonFloat writes numbers as Python\'s str(float) does', () => {
    expect([2, 0.5, 1e-5, 0.0001, 1.5e-7, 1e16, 1700000000.25, 0, 3e-4].map(pythonFloat)).toEqual(['2.0', '0.5', '1e-05', '0.0001', '1.5e-07', '1e+16', '1700000000.25', '0.0', '0.0003']);
  });
});

describe('on the GPU', () => {
  it('loraFromHost / loraToHost round-trip exactly, trainable, scale = alpha / rank', async () => {
    const gpu = await testGpu();
    const host = tinyLora([2, 3]);
    const lora = loraFromHost(gpu, host);
    try {
      for (const [path, m] of lora.modules) {
        expect(m.down.requiresGrad && m.up.requiresGrad).toBe(true);
        expect(m.scale).toBe(host.get(path)!.alpha / host.get(path)!.rank);
        expect(m.down.shape).toEqual([host.get(path)!.rank, host.get(path)!.in]);
      }
      expect(await loraToHost(lora)).toEqual(host);
    } finally {
      lora.release();
    }
  });

  it('the golden LoRA, read with readLora, reproduces out.eps_lora (and survives an export round trip)', { timeout: 900_000 }, async () => {
    const gpu = await testGpu();
    const { file: loraFile, close: closeLora } = await openSafetensorsFile(join(TINY, 'lora.safetensors'));
    const { file: golden, close } = await openSafetensorsFile(join(TINY, 'case.safetensors'));
    const unet = new UNet(gpu, tinyConfig, await loadFolderComponent(gpu, dirModelFiles(TINY), 'unet', TINY_PARAMS));
    const held: Tensor[] = [];
    try {
      // Exported as diffusers fp32 and read back: the very same matrices and alphas as the golden file.
      const direct = await decodeLora(loraFile, tinyConfig);
      const viaDiffusers = await decodeLora(await open(encodeLora(direct.lora, { format: 'diffusers', dtype: 'fp32' })), tinyConfig);
      expect(viaDiffusers.lora).toEqual(direct.lora);

      unet.lora = await readLora(gpu, loraFile, tinyConfig);
      // The first example of the golden batch only: half the work on SwiftShader, the same check.
      const first = async (name: string) => {
        const shape = [1, ...golden.info(name).shape.slice(1)];
        const t = Tensor.from(gpu, (await golden.readF32(name)).subarray(0, shape.reduce((a, b) => a * b, 1)), shape);
        held.push(t);
        return t;
      };
      const eps = await unet.forward(new Ctx(gpu), await first('in.sample'), await first('in.timesteps'), await first('in.ctx_w'));
      held.push(eps);
      const want = await golden.readF64('out.eps_lora');
      const err = relativeError(await eps.read(), want.subarray(0, want.length / 2));
      console.log(`eps_lora through readLora: relative error ${err.toExponential(2)}`);
      expect(err).toBeLessThanOrEqual(1e-4);
    } finally {
      for (const t of held) t.release();
      unet.lora?.release();
      unet.release();
      await close();
      await closeLora();
    }
  });
});
