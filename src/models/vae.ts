// SD1.5's VAE: diffusers' AutoencoderKL, built from vae/config.json; differentiable through the tape when
// its weights are trained (trainAllWeights, src/tpo/vae-trainer.ts). Module names are the
// state-dict keys (encoder.down_blocks.i.resnets.j.norm1, decoder.mid_block.attentions.0.to_q, ...).
//
//   encode: conv_in -> down_blocks (resnets, then a stride-2 downsampler on all but the last)
//           -> mid_block (resnet, attention, resnet) -> conv_norm_out, SiLU -> conv_out -> quant_conv
//           = moments [B, 2 * latent, H/f, W/f]: mean = first `latent` channels, logvar = the rest
//   decode: post_quant_conv -> conv_in -> mid_block -> up_blocks (layers_per_block + 1 resnets, then a
//           nearest-2x upsample and conv on all but the last) -> conv_norm_out, SiLU -> conv_out
//
// Semantics relied on, checked against the goldens. This code matches vae.moments to 9.7e-7 and
// vae.decoded to 2.2e-6 relative L2 (tests/unit/vae.test.ts); with one rule changed at a time the errors
// were (moments / decoded):
//   - ResnetBlock2D: out = (shortcut(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x))))))) / output_scale_factor,
//     shortcut a 1x1 conv_shortcut when channels change, else x, and output_scale_factor 1.
//     Without the residual: 1.0 / 1.0; with the sum halved (factor 2): 0.98 / 1.16.
//   - Mid-block attention: one head of width C (attention_head_dim = block_out_channels[-1]), group_norm on
//     its input, scores scaled by 1/sqrt(C), to_out.0, then the residual: (x + attention(x)) / 1, i.e.
//     residual_connection on and rescale_output_factor 1. Without the residual: 0.86 / 1.06; without
//     the 1/sqrt(C) scale: 0.20 / 0.60.
//   - Downsample2D (padding 0): pad one column right and one row below, then a 3x3 conv with stride 2.
//     Padding top/left instead: 0.92 on moments.
//   - Every group norm (resnets, attention, conv_norm_out) uses norm_num_groups and eps 1e-6 (diffusers
//     hard-codes it for the VAE). PyTorch's default 1e-5 moves the results by only 5.6e-5 / 1.1e-4 here
//     (random weights keep the variances far above eps), so the goldens barely tell; the value is
//     diffusers' code, and it matters for real weights with small-variance groups.
//   - Upsample2D: nearest-neighbour 2x, then a 3x3 conv with padding 1.
// No time embedding anywhere (temb is None in the VAE), and no scaling_factor inside encode/decode: SD's
// 0.18215 is applied by the caller.
//
// Memory: each block consumes its input and releases every intermediate once used, so at any time only
// the block's input, the tensor being read and the one being written are alive (plus the small norm
// statistics); the attention's score matrix [B, HW, HW] lives only between its two products.

import type { Gpu } from '../gpu/gpu';
import * as F from '../nn/functional';
import type { Conv2dOptions } from '../nn/ops/conv2d';
import { Ctx } from '../nn/tape';
import type { Tensor } from '../nn/tensor';
import type { LdmLayout } from './ldm-keys';
import { ldmLayoutFromConfigs, ModelWeights, positiveInt, positiveNumber } from './model-weights';
import type { SafetensorsFile } from './safetensors';
import { loadFolderComponent, loadSingleFileComponent, ModelLoadError, readConfig, type ModelFiles, type ParamShapes } from './weights';

/** diffusers hard-codes this eps for every group norm of the VAE's encoder and decoder. */
export const VAE_NORM_EPS = 1e-6;

export interface VaeConfig {
  in_channels: number;
  out_channels: number;
  block_out_channels: number[];
  layers_per_block: number;
  norm_num_groups: number;
  latent_channels: number;
  /** false drops the mid-block attention (newer diffusers configs); default true. */
  mid_block_add_attention: boolean;
  use_quant_conv: boolean;
  use_post_quant_conv: boolean;
  scaling_factor: number;
}

/** Validates a vae/config.json, filling absent fields with diffusers' AutoencoderKL defaults. */
export function vaeConfig(raw: Record<string, unknown>, label = 'vae/config.json'): VaeConfig {
  const boc = raw.block_out_channels ?? [64];
  if (!Array.isArray(boc) || boc.length < 1 || boc.length > 8 || !boc.every((c) => Number.isInteger(c) && c > 0 && c <= 8192)) {
    throw new ModelLoadError(`${label}: block_out_channels must be a list of 1 to 8 whole numbers from 1 to 8192, got ${JSON.stringify(boc)}`);
  }
  const act = raw.act_fn ?? 'silu';
  if (act !== 'silu') throw new ModelLoadError(`${label}: act_fn ${JSON.stringify(act)} is not supported (silu)`);
  const checkTypes = (key: string, want: string) => {
    const types = raw[key];
    if (types === undefined) return;
    if (!Array.isArray(types) || types.length !== boc.length || types.some((t) => t !== want)) {
      throw new ModelLoadError(`${label}: ${key} must be ${boc.length} x ${want}, got ${JSON.stringify(types)}`);
    }
  };
  checkTypes('down_block_types', 'DownEncoderBlock2D');
  checkTypes('up_block_types', 'UpDecoderBlock2D');
  const flag = (key: string) => {
    const v = raw[key] ?? true;
    if (typeof v !== 'boolean') throw new ModelLoadError(`${label}: ${key} must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  const config: VaeConfig = {
    in_channels: positiveInt(label, raw, 'in_channels', 3, 64),
    out_channels: positiveInt(label, raw, 'out_channels', 3, 64),
    block_out_channels: boc as number[],
    layers_per_block: positiveInt(label, raw, 'layers_per_block', 1, 16),
    norm_num_groups: positiveInt(label, raw, 'norm_num_groups', 32, 1024),
    latent_channels: positiveInt(label, raw, 'latent_channels', 4, 64),
    mid_block_add_attention: flag('mid_block_add_attention'),
    use_quant_conv: flag('use_quant_conv'),
    use_post_quant_conv: flag('use_post_quant_conv'),
    scaling_factor: positiveNumber(label, raw, 'scaling_factor', 0.18215, 100),
  };
  const bad = config.block_out_channels.filter((c) => c % config.norm_num_groups !== 0);
  if (bad.length) throw new ModelLoadError(`${label}: ${config.norm_num_groups} groups do not divide block_out_channels ${bad.join(', ')}`);
  return config;
}

/** Every parameter the config implies, by state-dict name. */
export function vaeParamShapes(config: VaeConfig): ParamShapes {
  const shapes: ParamShapes = new Map();
  const conv = (name: string, out: number, inC: number, k: number) => {
    shapes.set(`${name}.weight`, [out, inC, k, k]);
    shapes.set(`${name}.bias`, [out]);
  };
  const norm = (name: string, c: number) => {
    shapes.set(`${name}.weight`, [c]);
    shapes.set(`${name}.bias`, [c]);
  };
  const resnet = (name: string, inC: number, out: number) => {
    norm(`${name}.norm1`, inC);
    conv(`${name}.conv1`, out, inC, 3);
    norm(`${name}.norm2`, out);
    conv(`${name}.conv2`, out, out, 3);
    if (inC !== out) conv(`${name}.conv_shortcut`, out, inC, 1);
  };
  const mid = (name: string, c: number) => {
    resnet(`${name}.resnets.0`, c, c);
    if (config.mid_block_add_attention) {
      const a = `${name}.attentions.0`;
      norm(`${a}.group_norm`, c);
      for (const proj of ['to_q', 'to_k', 'to_v', 'to_out.0']) {
        shapes.set(`${a}.${proj}.weight`, [c, c]);
        shapes.set(`${a}.${proj}.bias`, [c]);
      }
    }
    resnet(`${name}.resnets.1`, c, c);
  };
  const boc = config.block_out_channels;
  const top = boc[boc.length - 1];
  const latent = config.latent_channels;
  const last = boc.length - 1;

  conv('encoder.conv_in', boc[0], config.in_channels, 3);
  boc.forEach((out, i) => {
    const inC = i === 0 ? boc[0] : boc[i - 1];
    for (let j = 0; j < config.layers_per_block; j++) resnet(`encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? inC : out, out);
    if (i < last) conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, out, out, 3);
  });
  mid('encoder.mid_block', top);
  norm('encoder.conv_norm_out', top);
  conv('encoder.conv_out', 2 * latent, top, 3);

  conv('decoder.conv_in', top, latent, 3);
  mid('decoder.mid_block', top);
  const reversed = [...boc].reverse();
  let prev = reversed[0];
  reversed.forEach((out, i) => {
    for (let j = 0; j <= config.layers_per_block; j++) resnet(`decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? prev : out, out);
    if (i < last) conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, out, out, 3);
    prev = out;
  });
  norm('decoder.conv_norm_out', boc[0]);
  conv('decoder.conv_out', config.out_channels, boc[0], 3);

  if (config.use_quant_conv) conv('quant_conv', 2 * latent, 2 * latent, 1);
  if (config.use_post_quant_conv) conv('post_quant_conv', latent, latent, 1);
  return shapes;
}

/** A loaded VAE: its config and GPU weights. release() frees the weights. */
export class AutoencoderKL {
  constructor(
    readonly config: VaeConfig,
    readonly weights: ModelWeights,
  ) {}

  get gpu(): Gpu {
    return this.weights.get('decoder.conv_out.weight').gpu;
  }

  release(): void {
    this.weights.release();
  }

  /** Every weight as a trainable leaf of the tape, by state-dict name (float32, as loadVae stores them). */
  trainAllWeights(): Map<string, Tensor> {
    for (const [name, t] of this.weights.tensors) {
      if (t.dtype !== 'f32') throw new Error(`VAE: weight ${name} is float16; load it as float32 to train it`);
      t.requiresGrad = true;
    }
    return this.weights.tensors;
  }
}

// ---- layers, on the tape-aware ops (F): without a tape they run as plain inference, releasing each
// intermediate as soon as it is used (ctx.free); with one, the same code trains (the tape keeps what the
// backward reads). A layer that "consumes" its input frees it with ctx.free. ----

function convLayer(ctx: Ctx, vae: AutoencoderKL, name: string, x: Tensor, opts: Conv2dOptions = {}): Tensor {
  const w = vae.weights.get(`${name}.weight`);
  const pad = (w.shape[2] - 1) / 2; // 3x3 "same" convs pad 1, 1x1 convs pad 0
  return F.conv2d(ctx, x, w, vae.weights.get(`${name}.bias`), { padding: pad, ...opts });
}

/** GroupNorm(norm_num_groups, eps 1e-6), optionally followed by SiLU. Does not free x. */
function normLayer(ctx: Ctx, vae: AutoencoderKL, name: string, x: Tensor, silu: boolean): Tensor {
  const y = F.groupNorm(ctx, x, vae.weights.get(`${name}.weight`), vae.weights.get(`${name}.bias`), vae.config.norm_num_groups, VAE_NORM_EPS);
  if (!silu) return y;
  const a = F.activation(ctx, y, 'silu');
  ctx.free(y);
  return a;
}

/** ResnetBlock2D without time embedding; consumes x. */
function resnet(ctx: Ctx, vae: AutoencoderKL, name: string, x: Tensor): Tensor {
  const h1 = normLayer(ctx, vae, `${name}.norm1`, x, true);
  const c1 = convLayer(ctx, vae, `${name}.conv1`, h1);
  ctx.free(h1);
  const h2 = normLayer(ctx, vae, `${name}.norm2`, c1, true);
  ctx.free(c1);
  const c2 = convLayer(ctx, vae, `${name}.conv2`, h2); // dropout sits here in training; diffusers' VAE has it at 0
  ctx.free(h2);
  // Residual with output_scale_factor 1: (shortcut + h) / 1.
  const shortcut = vae.weights.has(`${name}.conv_shortcut.weight`) ? convLayer(ctx, vae, `${name}.conv_shortcut`, x) : x;
  const out = F.add(ctx, shortcut, c2);
  ctx.free(c2);
  if (shortcut !== x) ctx.free(shortcut);
  ctx.free(x);
  return out;
}

/**
 * The mid-block attention, one head of width C: the head is wider than the fused kernel's limit in SD1.5
 * (512), so the scores are materialised: S = Q K^T / sqrt(C) [B, HW, HW], P = softmax(S), O = P V.
 * Consumes x; returns x + to_out(O) (residual, rescale_output_factor 1).
 */
function midAttention(ctx: Ctx, vae: AutoencoderKL, name: string, x: Tensor): Tensor {
  const [, c, ...spatial] = x.shape;
  const w = (p: string) => vae.weights.get(`${name}.${p}`);
  const normed = normLayer(ctx, vae, `${name}.group_norm`, x, false);
  const tokens = F.channelsToTokens(ctx, normed); // [B, HW, C]
  ctx.free(normed);
  const q = F.linear(ctx, tokens, w('to_q.weight'), w('to_q.bias'));
  const k = F.linear(ctx, tokens, w('to_k.weight'), w('to_k.bias'));
  const v = F.linear(ctx, tokens, w('to_v.weight'), w('to_v.bias'));
  ctx.free(tokens);
  const scores = F.matmul(ctx, q, k, { transB: true, alpha: 1 / Math.sqrt(c) });
  ctx.free(q, k);
  const probs = F.softmax(ctx, scores);
  ctx.free(scores);
  const o = F.matmul(ctx, probs, v);
  ctx.free(probs, v);
  const projected = F.linear(ctx, o, w('to_out.0.weight'), w('to_out.0.bias'));
  ctx.free(o);
  const back = F.tokensToChannels(ctx, projected, spatial);
  ctx.free(projected);
  // Residual: diffusers' Attention(residual_connection=True) returns (attn(x) + x) / rescale_output_factor, 1.
  const out = F.add(ctx, back, x);
  ctx.free(back, x);
  return out;
}

function midBlock(ctx: Ctx, vae: AutoencoderKL, name: string, x: Tensor): Tensor {
  let h = resnet(ctx, vae, `${name}.resnets.0`, x);
  if (vae.config.mid_block_add_attention) h = midAttention(ctx, vae, `${name}.attentions.0`, h);
  return resnet(ctx, vae, `${name}.resnets.1`, h);
}

/** conv_norm_out, SiLU, conv_out; consumes x. */
function head(ctx: Ctx, vae: AutoencoderKL, coder: string, x: Tensor): Tensor {
  const h = normLayer(ctx, vae, `${coder}.conv_norm_out`, x, true);
  ctx.free(x);
  const y = convLayer(ctx, vae, `${coder}.conv_out`, h);
  ctx.free(h);
  return y;
}

function checkInput(what: string, x: Tensor, channels: number): void {
  if (x.shape.length !== 4 || x.shape[1] !== channels) {
    throw new Error(`${what}: expected [B, ${channels}, H, W], got [${x.shape.join(', ')}]`);
  }
}

/**
 * image [B, in_channels, H, W] (values in [-1, 1]) -> moments [B, 2 * latent_channels, H / 2^(blocks-1),
 * W / 2^(blocks-1)]: quant_conv(encoder(image)). Mean = first latent_channels channels, logvar = the rest.
 * The image stays the caller's; the caller owns the result. With a tape in `ctx`, differentiable.
 */
export function vaeEncode(vae: AutoencoderKL, image: Tensor, ctx: Ctx = new Ctx(vae.gpu)): Tensor {
  const { config } = vae;
  checkInput('vaeEncode', image, config.in_channels);
  const last = config.block_out_channels.length - 1;
  let x = convLayer(ctx, vae, 'encoder.conv_in', image);
  for (let i = 0; i <= last; i++) {
    for (let j = 0; j < config.layers_per_block; j++) x = resnet(ctx, vae, `encoder.down_blocks.${i}.resnets.${j}`, x);
    if (i < last) {
      // Downsample2D with padding 0: pad one row below and one column right, then stride 2 (odd sizes
      // round down, as in diffusers).
      const y = convLayer(ctx, vae, `encoder.down_blocks.${i}.downsamplers.0.conv`, x, { stride: 2, padding: [0, 0, 1, 1] });
      ctx.free(x);
      x = y;
    }
  }
  x = midBlock(ctx, vae, 'encoder.mid_block', x);
  x = head(ctx, vae, 'encoder', x);
  if (!config.use_quant_conv) return x;
  const moments = convLayer(ctx, vae, 'quant_conv', x);
  ctx.free(x);
  return moments;
}

/**
 * latent [B, latent_channels, h, w] (already divided by scaling_factor) -> image [B, out_channels,
 * h * 2^(blocks-1), w * 2^(blocks-1)]: decoder(post_quant_conv(latent)). The latent stays the caller's.
 * With a tape in `ctx`, differentiable.
 */
export function vaeDecode(vae: AutoencoderKL, latent: Tensor, options: { trimBetweenLevels?: boolean } = {}, ctx: Ctx = new Ctx(vae.gpu)): Tensor {
  const { config } = vae;
  checkInput('vaeDecode', latent, config.latent_channels);
  const last = config.block_out_channels.length - 1;
  let z = latent;
  if (config.use_post_quant_conv) z = convLayer(ctx, vae, 'post_quant_conv', latent);
  let x = convLayer(ctx, vae, 'decoder.conv_in', z);
  if (z !== latent) ctx.free(z);
  x = midBlock(ctx, vae, 'decoder.mid_block', x);
  for (let i = 0; i <= last; i++) {
    for (let j = 0; j <= config.layers_per_block; j++) x = resnet(ctx, vae, `decoder.up_blocks.${i}.resnets.${j}`, x);
    if (i < last) {
      const up = F.upsampleNearest2x(ctx, x);
      ctx.free(x);
      x = convLayer(ctx, vae, `decoder.up_blocks.${i}.upsamplers.0.conv`, up);
      ctx.free(up);
    }
    // Each level's activations have their own sizes, which later levels never reuse: giving the idle ones
    // back keeps the pool near the working set (SD1.5 at 512 px: a 256-channel 512x512 map is 256 MiB).
    if (options.trimBetweenLevels) x.gpu.trimPool();
  }
  return head(ctx, vae, 'decoder', x);
}

export interface LoadOptions {
  onProgress?: (done: number, total: number) => void;
}

/** Loads vae/ of a diffusers folder. */
export async function loadVae(gpu: Gpu, files: ModelFiles, options: LoadOptions & { variant?: 'fp16' } = {}): Promise<AutoencoderKL> {
  const config = vaeConfig(await readConfig(files, 'vae'), `${files.name}/vae/config.json`);
  const tensors = await loadFolderComponent(gpu, files, 'vae', vaeParamShapes(config), options);
  return new AutoencoderKL(config, new ModelWeights('VAE', tensors));
}

/**
 * Loads the VAE of a single-file (LDM layout) checkpoint. `configs` is a diffusers folder that supplies
 * vae/config.json, and the unet/ config for the key layout (unless `layout` is given).
 */
export async function loadVaeFromSingleFile(
  gpu: Gpu,
  file: SafetensorsFile,
  configs: ModelFiles,
  options: LoadOptions & { layout?: LdmLayout } = {},
): Promise<AutoencoderKL> {
  const config = vaeConfig(await readConfig(configs, 'vae'), `${configs.name}/vae/config.json`);
  const layout = options.layout ?? (await ldmLayoutFromConfigs(configs));
  const tensors = await loadSingleFileComponent(gpu, file, 'vae', vaeParamShapes(config), layout, options.onProgress);
  return new AutoencoderKL(config, new ModelWeights('VAE', tensors));
}
