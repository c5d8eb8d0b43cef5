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
import { Attention } from '../nn/layers/attention';
import { Conv2d, GroupNorm, Layer, paramsOf } from '../nn/layers/layer';
import { ResnetBlock2D } from '../nn/layers/resnet';
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

/** The encoder's or decoder's mid block: a resnet, the attention (unless the config drops it), a resnet. */
interface VaeMidBlock {
  resnets: [ResnetBlock2D, ResnetBlock2D];
  attentions: Attention[];
}

interface VaeLevel {
  resnets: ResnetBlock2D[];
  /** downsamplers.0.conv (stride 2, padded below and right) or upsamplers.0.conv (after nearest 2x); none at the last level. */
  sampler: Conv2d | null;
}

/** AutoencoderKL's modules, as diffusers nests them (the paths are the state-dict keys). */
export class VaeLayers extends Layer {
  readonly encoder: { conv_in: Conv2d; down_blocks: VaeLevel[]; mid_block: VaeMidBlock; conv_norm_out: GroupNorm; conv_out: Conv2d };
  readonly decoder: { conv_in: Conv2d; mid_block: VaeMidBlock; up_blocks: VaeLevel[]; conv_norm_out: GroupNorm; conv_out: Conv2d };
  readonly quant_conv: Conv2d | null;
  readonly post_quant_conv: Conv2d | null;

  constructor(readonly config: VaeConfig) {
    super('');
    const boc = config.block_out_channels;
    const top = boc[boc.length - 1];
    const latent = config.latent_channels;
    const last = boc.length - 1;
    const groups = config.norm_num_groups;
    const resnet = (path: string, cin: number, cout: number) => new ResnetBlock2D(path, cin, cout, { tembDim: null, groups, eps: VAE_NORM_EPS });
    const norm = (path: string, ch: number) => new GroupNorm(path, ch, groups, VAE_NORM_EPS);
    const mid = (path: string): VaeMidBlock => ({
      resnets: [resnet(`${path}.resnets.0`, top, top), resnet(`${path}.resnets.1`, top, top)],
      attentions: config.mid_block_add_attention
        ? [new Attention(`${path}.attentions.0`, top, top, 1, { qkvBias: true, groupNorm: { groups, eps: VAE_NORM_EPS }, materialised: true })]
        : [],
    });

    this.encoder = {
      conv_in: new Conv2d('encoder.conv_in', config.in_channels, boc[0], 3),
      down_blocks: boc.map((out, i) => {
        const inC = i === 0 ? boc[0] : boc[i - 1];
        const p = `encoder.down_blocks.${i}`;
        return {
          resnets: Array.from({ length: config.layers_per_block }, (_, j) => resnet(`${p}.resnets.${j}`, j === 0 ? inC : out, out)),
          // Downsample2D with padding 0: pad one row below and one column right, then stride 2 (odd sizes
          // round down, as in diffusers).
          sampler: i < last ? new Conv2d(`${p}.downsamplers.0.conv`, out, out, 3, { stride: 2, padding: [0, 0, 1, 1] }) : null,
        };
      }),
      mid_block: mid('encoder.mid_block'),
      conv_norm_out: norm('encoder.conv_norm_out', top),
      conv_out: new Conv2d('encoder.conv_out', top, 2 * latent, 3),
    };
    const reversed = [...boc].reverse();
    this.decoder = {
      conv_in: new Conv2d('decoder.conv_in', latent, top, 3),
      mid_block: mid('decoder.mid_block'),
      up_blocks: reversed.map((out, i) => {
        const prev = i === 0 ? reversed[0] : reversed[i - 1];
        const p = `decoder.up_blocks.${i}`;
        return {
          resnets: Array.from({ length: config.layers_per_block + 1 }, (_, j) => resnet(`${p}.resnets.${j}`, j === 0 ? prev : out, out)),
          sampler: i < last ? new Conv2d(`${p}.upsamplers.0.conv`, out, out, 3) : null,
        };
      }),
      conv_norm_out: norm('decoder.conv_norm_out', boc[0]),
      conv_out: new Conv2d('decoder.conv_out', boc[0], config.out_channels, 3),
    };
    this.quant_conv = config.use_quant_conv ? new Conv2d('quant_conv', 2 * latent, 2 * latent, 1) : null;
    this.post_quant_conv = config.use_post_quant_conv ? new Conv2d('post_quant_conv', latent, latent, 1) : null;
  }

  override children() {
    const mid = (m: VaeMidBlock) => [m.resnets[0], ...m.attentions, m.resnets[1]];
    const level = (l: VaeLevel) => [...l.resnets, l.sampler];
    const { encoder: e, decoder: d } = this;
    return [
      e.conv_in, ...e.down_blocks.flatMap(level), ...mid(e.mid_block), e.conv_norm_out, e.conv_out,
      d.conv_in, ...mid(d.mid_block), ...d.up_blocks.flatMap(level), d.conv_norm_out, d.conv_out,
      this.quant_conv, this.post_quant_conv,
    ];
  }
}

/** Every parameter the config implies, by state-dict name. */
export function vaeParamShapes(config: VaeConfig): ParamShapes {
  return paramsOf(new VaeLayers(config));
}

/** A loaded VAE: its config and GPU weights. release() frees the weights. */
export class AutoencoderKL {
  readonly layers: VaeLayers;

  constructor(
    readonly config: VaeConfig,
    readonly weights: ModelWeights,
  ) {
    this.layers = new VaeLayers(config);
  }

  get gpu(): Gpu {
    return this.layers.decoder.conv_out.param(this.weights).gpu;
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

/** Runs one resnet and frees its input. */
function resnet(ctx: Ctx, vae: AutoencoderKL, r: ResnetBlock2D, x: Tensor): Tensor {
  const y = r.forward(ctx, vae.weights, x);
  ctx.free(x);
  return y;
}

/** Runs a layer and frees its input. */
function step(ctx: Ctx, x: Tensor, f: (x: Tensor) => Tensor): Tensor {
  const y = f(x);
  ctx.free(x);
  return y;
}

/** The mid block; consumes x. */
function midBlock(ctx: Ctx, vae: AutoencoderKL, m: VaeMidBlock, x: Tensor): Tensor {
  let h = resnet(ctx, vae, m.resnets[0], x);
  for (const a of m.attentions) h = step(ctx, h, (t) => a.forwardSpatial(ctx, vae.weights, t));
  return resnet(ctx, vae, m.resnets[1], h);
}

/** conv_norm_out, SiLU, conv_out; consumes x. */
function head(ctx: Ctx, vae: AutoencoderKL, coder: { conv_norm_out: GroupNorm; conv_out: Conv2d }, x: Tensor): Tensor {
  const h = step(ctx, x, (t) => coder.conv_norm_out.forwardSilu(ctx, vae.weights, t));
  return step(ctx, h, (t) => coder.conv_out.forward(ctx, vae.weights, t));
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
  const { config, weights: ws } = vae;
  const e = vae.layers.encoder;
  checkInput('vaeEncode', image, config.in_channels);
  let x = e.conv_in.forward(ctx, ws, image);
  for (const level of e.down_blocks) {
    for (const r of level.resnets) x = resnet(ctx, vae, r, x);
    const sampler = level.sampler;
    if (sampler) x = step(ctx, x, (t) => sampler.forward(ctx, ws, t));
  }
  x = midBlock(ctx, vae, e.mid_block, x);
  x = head(ctx, vae, e, x);
  const quant = vae.layers.quant_conv;
  return quant ? step(ctx, x, (t) => quant.forward(ctx, ws, t)) : x;
}

/**
 * latent [B, latent_channels, h, w] (already divided by scaling_factor) -> image [B, out_channels,
 * h * 2^(blocks-1), w * 2^(blocks-1)]: decoder(post_quant_conv(latent)). The latent stays the caller's.
 * With a tape in `ctx`, differentiable.
 */
export function vaeDecode(vae: AutoencoderKL, latent: Tensor, options: { trimBetweenLevels?: boolean } = {}, ctx: Ctx = new Ctx(vae.gpu)): Tensor {
  const { config, weights: ws } = vae;
  const d = vae.layers.decoder;
  checkInput('vaeDecode', latent, config.latent_channels);
  const z = vae.layers.post_quant_conv?.forward(ctx, ws, latent) ?? latent;
  let x = d.conv_in.forward(ctx, ws, z);
  if (z !== latent) ctx.free(z);
  x = midBlock(ctx, vae, d.mid_block, x);
  for (const level of d.up_blocks) {
    for (const r of level.resnets) x = resnet(ctx, vae, r, x);
    const sampler = level.sampler;
    if (sampler) {
      const up = step(ctx, x, (t) => F.upsampleNearest2x(ctx, t));
      x = step(ctx, up, (t) => sampler.forward(ctx, ws, t));
    }
    // Each level's activations have their own sizes, which later levels never reuse: giving the idle ones
    // back keeps the pool near the working set (SD1.5 at 512 px: a 256-channel 512x512 map is 256 MiB).
    if (options.trimBetweenLevels) x.gpu.trimPool();
  }
  return head(ctx, vae, d, x);
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
