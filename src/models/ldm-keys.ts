// Single-file Stable Diffusion checkpoints keep the original LDM (CompVis) key layout. The engine's modules
// are named like diffusers' state dicts, so loading such a file means renaming every key. The renaming is
// structural, driven by the configs: `layers_per_block` decides how the UNet's flat input_blocks /
// output_blocks lists split into down / up blocks, and the VAE decoder's `up` list runs in reverse order.

export type Component = 'unet' | 'vae' | 'text_encoder';

export interface MappedKey {
  component: Component;
  key: string;
  /**
   * The VAE's mid-block attention stores q, k, v and proj_out as 1x1 convolutions [C, C, 1, 1] in LDM files
   * and as linear layers [C, C] in diffusers: same numbers, one shape to drop.
   */
  squeeze1x1?: boolean;
}

export interface LdmLayout {
  /** The UNet's layers_per_block (2 in SD1.5). */
  unetLayersPerBlock: number;
  /** Number of VAE decoder blocks (len(block_out_channels), 4 in SD1.5). */
  vaeBlocks: number;
}

const UNET = 'model.diffusion_model.';
const VAE = 'first_stage_model.';
const TEXT = 'cond_stage_model.transformer.';

/**
 * Keys single-file checkpoints carry that are not weights of the three networks: EMA copies, schedule
 * buffers, CLIP's position_ids buffer. Skipped without complaint.
 */
export function isIgnorableLdmKey(key: string): boolean {
  return (
    key.startsWith('model_ema.') ||
    ['betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_alphas_cumprod', 'sqrt_one_minus_alphas_cumprod',
      'log_one_minus_alphas_cumprod', 'sqrt_recip_alphas_cumprod', 'sqrt_recipm1_alphas_cumprod', 'posterior_variance',
      'posterior_log_variance_clipped', 'posterior_mean_coef1', 'posterior_mean_coef2', 'logvar'].includes(key) ||
    key.endsWith('embeddings.position_ids')
  );
}

function renameResnet(rest: string): string {
  return rest
    .replace(/^in_layers\.0\./, 'norm1.')
    .replace(/^in_layers\.2\./, 'conv1.')
    .replace(/^emb_layers\.1\./, 'time_emb_proj.')
    .replace(/^out_layers\.0\./, 'norm2.')
    .replace(/^out_layers\.3\./, 'conv2.')
    .replace(/^skip_connection\./, 'conv_shortcut.');
}

/** A transformer (attention) block: LDM's SpatialTransformer has the same inner names as diffusers'. */
function isTransformerKey(rest: string): boolean {
  return /^(norm|proj_in|proj_out|transformer_blocks)\./.test(rest);
}

function mapUnet(key: string, layers: number): string | null {
  const fixed: [RegExp, string][] = [
    [/^time_embed\.0\./, 'time_embedding.linear_1.'],
    [/^time_embed\.2\./, 'time_embedding.linear_2.'],
    [/^input_blocks\.0\.0\./, 'conv_in.'],
    [/^out\.0\./, 'conv_norm_out.'],
    [/^out\.2\./, 'conv_out.'],
  ];
  for (const [pattern, replacement] of fixed) if (pattern.test(key)) return key.replace(pattern, replacement);

  let m = /^input_blocks\.(\d+)\.(\d+)\.(.*)$/.exec(key);
  if (m) {
    const i = Number(m[1]) - 1;
    const [block, layer, part, rest] = [Math.floor(i / (layers + 1)), i % (layers + 1), Number(m[2]), m[3]];
    if (layer === layers) {
      // The last entry of each level is its downsampler, a lone conv called `op`.
      return part === 0 && rest.startsWith('op.') ? `down_blocks.${block}.downsamplers.0.conv.${rest.slice(3)}` : null;
    }
    if (part === 0) return `down_blocks.${block}.resnets.${layer}.${renameResnet(rest)}`;
    if (part === 1 && isTransformerKey(rest)) return `down_blocks.${block}.attentions.${layer}.${rest}`;
    return null;
  }
  m = /^middle_block\.(\d+)\.(.*)$/.exec(key);
  if (m) {
    const [part, rest] = [Number(m[1]), m[2]];
    if (part === 0 || part === 2) return `mid_block.resnets.${part / 2}.${renameResnet(rest)}`;
    if (part === 1 && isTransformerKey(rest)) return `mid_block.attentions.0.${rest}`;
    return null;
  }
  m = /^output_blocks\.(\d+)\.(\d+)\.(.*)$/.exec(key);
  if (m) {
    const i = Number(m[1]);
    const [block, layer, part, rest] = [Math.floor(i / (layers + 1)), i % (layers + 1), Number(m[2]), m[3]];
    if (part === 0) return `up_blocks.${block}.resnets.${layer}.${renameResnet(rest)}`;
    if (part === 1 && isTransformerKey(rest)) return `up_blocks.${block}.attentions.${layer}.${rest}`;
    // The upsampler follows the resnet (index 1) or the resnet and its attention (index 2).
    if ((part === 1 || part === 2) && rest.startsWith('conv.')) return `up_blocks.${block}.upsamplers.0.${rest}`;
    return null;
  }
  return null;
}

function mapVae(key: string, blocks: number): { key: string; squeeze1x1?: boolean } | null {
  if (/^(quant_conv|post_quant_conv)\./.test(key)) return { key };
  const m = /^(encoder|decoder)\.(.*)$/.exec(key);
  if (!m) return null;
  const [coder, rest] = [m[1], m[2]];
  const resnet = (r: string) => r.replace(/^nin_shortcut\./, 'conv_shortcut.');
  let r: RegExpExecArray | null;
  if ((r = /^(conv_in|conv_out)\.(.*)$/.exec(rest))) return { key: `${coder}.${rest}` };
  if ((r = /^norm_out\.(.*)$/.exec(rest))) return { key: `${coder}.conv_norm_out.${r[1]}` };
  if ((r = /^mid\.block_([12])\.(.*)$/.exec(rest))) return { key: `${coder}.mid_block.resnets.${Number(r[1]) - 1}.${resnet(r[2])}` };
  if ((r = /^mid\.attn_1\.(norm|q|k|v|proj_out)\.(.*)$/.exec(rest))) {
    const name = { norm: 'group_norm', q: 'to_q', k: 'to_k', v: 'to_v', proj_out: 'to_out.0' }[r[1]]!;
    return { key: `${coder}.mid_block.attentions.0.${name}.${r[2]}`, squeeze1x1: r[1] !== 'norm' };
  }
  if (coder === 'encoder') {
    if ((r = /^down\.(\d+)\.block\.(\d+)\.(.*)$/.exec(rest))) return { key: `encoder.down_blocks.${r[1]}.resnets.${r[2]}.${resnet(r[3])}` };
    if ((r = /^down\.(\d+)\.downsample\.conv\.(.*)$/.exec(rest))) return { key: `encoder.down_blocks.${r[1]}.downsamplers.0.conv.${r[2]}` };
  } else {
    // LDM's decoder.up[i] works at resolution level i, so it runs last-to-first; diffusers' up_blocks run
    // in execution order.
    const flip = (i: string) => blocks - 1 - Number(i);
    if ((r = /^up\.(\d+)\.block\.(\d+)\.(.*)$/.exec(rest))) return { key: `decoder.up_blocks.${flip(r[1])}.resnets.${r[2]}.${resnet(r[3])}` };
    if ((r = /^up\.(\d+)\.upsample\.conv\.(.*)$/.exec(rest))) return { key: `decoder.up_blocks.${flip(r[1])}.upsamplers.0.conv.${r[2]}` };
  }
  return null;
}

/** Maps one LDM key to its diffusers component and key; null for a key this mapping does not know. */
export function mapLdmKey(key: string, layout: LdmLayout): MappedKey | null {
  if (key.startsWith(UNET)) {
    const k = mapUnet(key.slice(UNET.length), layout.unetLayersPerBlock);
    return k === null ? null : { component: 'unet', key: k };
  }
  if (key.startsWith(VAE)) {
    const k = mapVae(key.slice(VAE.length), layout.vaeBlocks);
    return k === null ? null : { component: 'vae', ...k };
  }
  if (key.startsWith(TEXT)) {
    const rest = key.slice(TEXT.length);
    // Older checkpoints (transformers < 4.x) lack the `text_model.` level.
    return { component: 'text_encoder', key: rest.startsWith('text_model.') ? rest : `text_model.${rest}` };
  }
  return null;
}
