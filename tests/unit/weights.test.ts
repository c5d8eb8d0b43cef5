import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dirModelFiles } from '../../src/models/model-files-node';
import { fromFloat32, SafetensorsFile, memorySource, writeSafetensors, type Dtype } from '../../src/models/safetensors';
import { loadFolderComponent, loadSingleFileComponent, ModelLoadError, type ParamShapes } from '../../src/models/weights';
import { testGpu } from '../helpers/gpu';

function tensorFile(tensors: [string, number[], number[], Dtype?][]): Uint8Array {
  return writeSafetensors(
    tensors.map(([name, shape, values, dtype = 'F32']) => ({
      name,
      shape,
      dtype,
      data: fromFloat32(Float32Array.from(values), dtype as 'F32' | 'F16'),
    })),
  );
}

function folder(files: Record<string, Uint8Array>): string {
  const dir = mkdtempSync(join(tmpdir(), 'model-'));
  for (const [path, bytes] of Object.entries(files)) {
    mkdirSync(join(dir, path, '..'), { recursive: true });
    writeFileSync(join(dir, path), bytes);
  }
  return dir;
}

describe('loading a component from a diffusers folder', () => {
  it('renames the legacy VAE attention names and skips CLIP position_ids', async () => {
    const gpu = await testGpu();
    const dir = folder({
      'vae/diffusion_pytorch_model.safetensors': tensorFile([
        ['decoder.mid_block.attentions.0.query.weight', [2, 2], [1, 2, 3, 4]],
        ['decoder.mid_block.attentions.0.proj_attn.bias', [2], [5, 6]],
      ]),
      'text_encoder/model.safetensors': tensorFile([
        ['text_model.embeddings.position_ids', [1, 3], [0, 1, 2]],
        ['text_model.final_layer_norm.weight', [3], [7, 8, 9]],
      ]),
    });
    const vae = await loadFolderComponent(gpu, dirModelFiles(dir), 'vae', new Map([
      ['decoder.mid_block.attentions.0.to_q.weight', [2, 2]],
      ['decoder.mid_block.attentions.0.to_out.0.bias', [2]],
    ]));
    expect(Array.from(await vae.get('decoder.mid_block.attentions.0.to_q.weight')!.read())).toEqual([1, 2, 3, 4]);
    expect(Array.from(await vae.get('decoder.mid_block.attentions.0.to_out.0.bias')!.read())).toEqual([5, 6]);
    const text = await loadFolderComponent(gpu, dirModelFiles(dir), 'text_encoder', new Map([['text_model.final_layer_norm.weight', [3]]]));
    expect(text.size).toBe(1);
  });

  it('prefers the fp16 variant when asked, converting it to float32', async () => {
    const gpu = await testGpu();
    const dir = folder({
      'unet/diffusion_pytorch_model.safetensors': tensorFile([['w', [2], [1, 1]]]),
      'unet/diffusion_pytorch_model.fp16.safetensors': tensorFile([['w', [2], [0.5, -2], 'F16']]),
    });
    const expected: ParamShapes = new Map([['w', [2]]]);
    expect(Array.from(await (await loadFolderComponent(gpu, dirModelFiles(dir), 'unet', expected)).get('w')!.read())).toEqual([1, 1]);
    const fp16 = await loadFolderComponent(gpu, dirModelFiles(dir), 'unet', expected, { variant: 'fp16' });
    expect(Array.from(await fp16.get('w')!.read())).toEqual([0.5, -2]);
  });

  it('lists every missing, mis-shaped and unexpected tensor in one error, uploading nothing', async () => {
    const gpu = await testGpu();
    const dir = folder({
      'unet/diffusion_pytorch_model.safetensors': tensorFile([
        ['a', [2], [1, 2]],
        ['b', [3], [1, 2, 3]],
        ['extra', [1], [0]],
      ]),
    });
    const before = gpu.pool.bytesInUse;
    const load = loadFolderComponent(gpu, dirModelFiles(dir), 'unet', new Map([['a', [2]], ['b', [2]], ['c', [4]]]));
    await expect(load).rejects.toThrow(ModelLoadError);
    await expect(load).rejects.toThrow(/missing \(1\): c[\s\S]*mis-shaped \(1\): b: file has \[3\], the config needs \[2\][\s\S]*unexpected \(1\): extra/);
    expect(gpu.pool.bytesInUse).toBe(before);
  });

  it('says which file is missing', async () => {
    const gpu = await testGpu();
    const dir = folder({ 'unet/config.json': new TextEncoder().encode('{}') });
    await expect(loadFolderComponent(gpu, dirModelFiles(dir), 'unet', new Map())).rejects.toThrow(/no weights for unet/);
  });
});

describe('loading from a single-file checkpoint', () => {
  it('refuses keys of other architectures with a hint', async () => {
    const gpu = await testGpu();
    const bytes = tensorFile([['conditioner.embedders.0.transformer.text_model.final_layer_norm.weight', [1], [1]]]);
    const file = await SafetensorsFile.open(memorySource(bytes, 'sdxl.safetensors'));
    await expect(loadSingleFileComponent(gpu, file, 'unet', new Map(), { unetLayersPerBlock: 2, vaeBlocks: 4 })).rejects.toThrow(
      /sdxl\.safetensors: 1 tensors belong to no Stable Diffusion 1\.x component.*SDXL/,
    );
  });
});

describe('float16 weight storage on load', () => {
  it('keeps matrices float16 (as asked, or as stored) and vectors float32', async () => {
    const gpu = await testGpu();
    const dir = folder({
      'unet/diffusion_pytorch_model.safetensors': tensorFile([
        ['m', [2, 2], [1, 0.5, -2, 0.1]],
        ['v', [2], [3, 4]],
      ]),
      'unet/diffusion_pytorch_model.fp16.safetensors': tensorFile([
        ['m', [2, 2], [1, 0.5, -2, 0.25], 'F16'],
        ['v', [2], [3, 4], 'F16'],
      ]),
    });
    const expected: ParamShapes = new Map([['m', [2, 2]], ['v', [2]]]);
    const asked = await loadFolderComponent(gpu, dirModelFiles(dir), 'unet', expected, { halfWeights: true });
    expect(asked.get('m')!.dtype).toBe('f16');
    expect(asked.get('v')!.dtype).toBe('f32');
    expect(Array.from(await asked.get('m')!.read())).toEqual([1, 0.5, -2, Math.fround(0.0999755859375)]);
    const stored32 = await loadFolderComponent(gpu, dirModelFiles(dir), 'unet', expected, { halfWeights: 'as-stored' });
    expect(stored32.get('m')!.dtype).toBe('f32');
    const stored16 = await loadFolderComponent(gpu, dirModelFiles(dir), 'unet', expected, { halfWeights: 'as-stored', variant: 'fp16' });
    expect(stored16.get('m')!.dtype).toBe('f16');
    expect(Array.from(await stored16.get('m')!.read())).toEqual([1, 0.5, -2, 0.25]);
  });
});
