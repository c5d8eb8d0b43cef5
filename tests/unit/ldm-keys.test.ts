import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { isIgnorableLdmKey, mapLdmKey, type Component } from '../../src/models/ldm-keys';
import type { SafetensorsFile } from '../../src/models/safetensors';
import { openSafetensorsFile } from '../../src/models/safetensors-node';
import { GOLDENS } from '../helpers/goldens';

const FOLDER = join(GOLDENS, 'tiny-sd15');
const COMPONENT_FILES: Record<Component, string> = {
  unet: 'unet/diffusion_pytorch_model.safetensors',
  vae: 'vae/diffusion_pytorch_model.safetensors',
  text_encoder: 'text_encoder/model.safetensors',
};

describe('LDM single-file keys map onto the diffusers folder', () => {
  it('every tensor of the single file lands on the identical tensor of the folder, each exactly once', async () => {
    const unetConfig = JSON.parse(readFileSync(join(FOLDER, 'unet/config.json'), 'utf8'));
    const vaeConfig = JSON.parse(readFileSync(join(FOLDER, 'vae/config.json'), 'utf8'));
    const layout = { unetLayersPerBlock: unetConfig.layers_per_block, vaeBlocks: vaeConfig.block_out_channels.length };
    const single = await openSafetensorsFile(join(GOLDENS, 'tiny-sd15-single.safetensors'));
    const folder = {} as Record<Component, SafetensorsFile>;
    const closers = [single.close];
    for (const [c, path] of Object.entries(COMPONENT_FILES) as [Component, string][]) {
      const f = await openSafetensorsFile(join(FOLDER, path));
      folder[c] = f.file;
      closers.push(f.close);
    }
    try {
      const hit = new Set<string>();
      const unmapped: string[] = [];
      for (const name of single.file.names) {
        if (isIgnorableLdmKey(name)) continue;
        const m = mapLdmKey(name, layout);
        if (!m) {
          unmapped.push(name);
          continue;
        }
        const target = folder[m.component].info(m.key); // throws, naming the key, if absent
        const id = `${m.component}:${m.key}`;
        expect(hit.has(id), `${name} maps onto ${id} a second time`).toBe(false);
        hit.add(id);
        const source = single.file.info(name);
        const shape = m.squeeze1x1 ? source.shape.slice(0, 2) : source.shape;
        expect(shape, `${name} -> ${m.key}`).toEqual(target.shape);
        const [a, b] = [await single.file.readF32(name), await folder[m.component].readF32(m.key)];
        expect(a.every((v, i) => v === b[i]), `${name} -> ${m.key}: values differ`).toBe(true);
      }
      expect(unmapped).toEqual([]);
      const total = Object.values(folder).reduce((n, f) => n + f.names.length, 0);
      expect(hit.size, 'every folder tensor is covered').toBe(total);
    } finally {
      for (const close of closers) await close();
    }
  });

  it('maps SD1.5-layout keys for other depths, and refuses what it does not know', () => {
    const layout = { unetLayersPerBlock: 1, vaeBlocks: 3 };
    const m = (k: string) => mapLdmKey(k, layout)?.key ?? null;
    // One layer per block: input_blocks 1 = level 0 resnet, 2 = level 0 downsampler, 3 = level 1 resnet.
    expect(m('model.diffusion_model.input_blocks.2.0.op.weight')).toBe('down_blocks.0.downsamplers.0.conv.weight');
    expect(m('model.diffusion_model.input_blocks.3.1.proj_in.weight')).toBe('down_blocks.1.attentions.0.proj_in.weight');
    expect(m('model.diffusion_model.output_blocks.3.0.skip_connection.bias')).toBe('up_blocks.1.resnets.1.conv_shortcut.bias');
    expect(m('model.diffusion_model.output_blocks.1.2.conv.weight')).toBe('up_blocks.0.upsamplers.0.conv.weight');
    expect(m('first_stage_model.decoder.up.0.block.1.conv2.weight')).toBe('decoder.up_blocks.2.resnets.1.conv2.weight');
    expect(m('cond_stage_model.transformer.embeddings.token_embedding.weight')).toBe('text_model.embeddings.token_embedding.weight');
    expect(m('model.diffusion_model.label_emb.0.0.weight')).toBeNull();
    expect(m('something_else.weight')).toBeNull();
    expect(isIgnorableLdmKey('model_ema.decay')).toBe(true);
    expect(isIgnorableLdmKey('cond_stage_model.transformer.text_model.embeddings.position_ids')).toBe(true);
  });
});
