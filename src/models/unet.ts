// UNet2DConditionModel (Stable Diffusion 1.x), built from its diffusers config.json as a tree of layers
// (nn/layers) whose paths are diffusers' state-dict keys: the weight list, loading and the forward all walk
// UNetLayers, so every key is written once. The forward is differentiable through the tape (training
// backpropagates into the LoRA matrices, or with trainAllWeights() into every weight); the same frozen weights
// with the LoRA switched off serve as the reference model.
// Inside differentiable code, activations change shape through F.reshape (a recorded op), never view():
// an alias is invisible to the tape and would cut the gradient's path.

import type { Gpu } from '../gpu/gpu';
import { checkpointed } from '../nn/checkpoint';
import * as F from '../nn/functional';
import { Transformer2DModel } from '../nn/layers/attention';
import { Conv2d, GroupNorm, Layer, type LayerWeights, Linear, paramsOf } from '../nn/layers/layer';
import { ResnetBlock2D } from '../nn/layers/resnet';
import { timestepEmbedding } from '../nn/ops/timestep';
import type { Ctx } from '../nn/tape';
import type { Tensor } from '../nn/tensor';
import type { LdmLayout } from './ldm-keys';
import type { Lora } from './lora';
import type { SafetensorsFile } from './safetensors';
import { loadFolderComponent, loadSingleFileComponent, ModelLoadError, preferHalfWeights, readConfig, type ModelFiles, type ParamShapes, type UploadOptions } from './weights';

export interface UNetConfig {
  in_channels: number;
  out_channels: number;
  block_out_channels: number[];
  layers_per_block: number;
  down_block_types: string[];
  up_block_types: string[];
  mid_block_type?: string;
  norm_num_groups: number;
  norm_eps: number;
  cross_attention_dim: number;
  /** In SD1.x configs this is the number of heads, not their width (a diffusers naming accident). */
  attention_head_dim: number | number[];
  num_attention_heads?: number | number[] | null;
  use_linear_projection?: boolean;
  flip_sin_to_cos?: boolean;
  freq_shift?: number;
  mid_block_scale_factor?: number;
  downsample_padding?: number;
  act_fn?: string;
  transformer_layers_per_block?: number | number[];
  sample_size?: number;
}

const DOWN_TYPES = ['CrossAttnDownBlock2D', 'DownBlock2D'];
const UP_TYPES = ['CrossAttnUpBlock2D', 'UpBlock2D'];

/**
 * Bounds of every numeric config value. SD1.5 itself uses 4 blocks of up to 1280 channels, 2 layers per
 * block and 8 heads; the bounds leave room for experiments but refuse values that could only be typos or
 * damage (a layers_per_block of 1e9 would otherwise build a billion-entry parameter map before failing).
 */
export const UNET_LIMITS = {
  blocks: [1, 8],
  channels: [1, 8192],
  layers_per_block: [1, 16],
  in_channels: [1, 64],
  out_channels: [1, 64],
  norm_num_groups: [1, 1024],
  cross_attention_dim: [1, 8192],
  heads: [1, 256],
  sample_size: [1, 4096],
} as const;

/** Checks that a config describes an SD1.x-style UNet this engine can run; throws a clear error if not. */
export function validateUNetConfig(c: UNetConfig): void {
  const problems: string[] = [];
  const raw = (c ?? {}) as unknown as Record<string, unknown>;
  if (c === null || typeof c !== 'object' || Array.isArray(c)) {
    throw new Error('unet/config.json is not a JSON object');
  }
  const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);
  // An integer field within its bounds; `optional` fields may be absent.
  const int = (key: keyof typeof UNET_LIMITS & keyof UNetConfig, optional = false) => {
    const v = raw[key];
    if (v === undefined && optional) return;
    const [lo, hi] = UNET_LIMITS[key];
    if (!isInt(v) || v < lo || v > hi) problems.push(`${key} must be a whole number from ${lo} to ${hi}, got ${JSON.stringify(v)}`);
  };
  const boc = raw.block_out_channels;
  const [bLo, bHi] = UNET_LIMITS.blocks;
  const [cLo, cHi] = UNET_LIMITS.channels;
  const channelsOk = Array.isArray(boc) && boc.length >= bLo && boc.length <= bHi && boc.every((ch) => isInt(ch) && ch >= cLo && ch <= cHi);
  if (!channelsOk) problems.push(`block_out_channels must be a list of ${bLo} to ${bHi} whole numbers from ${cLo} to ${cHi}, got ${JSON.stringify(boc)}`);
  const n = channelsOk ? (boc as number[]).length : 0;
  int('in_channels');
  int('out_channels');
  int('layers_per_block');
  int('norm_num_groups');
  int('cross_attention_dim');
  int('sample_size', true);
  if (typeof raw.norm_eps !== 'number' || !(raw.norm_eps > 0 && raw.norm_eps < 1)) problems.push(`norm_eps must be a number between 0 and 1, got ${JSON.stringify(raw.norm_eps)}`);
  for (const key of ['down_block_types', 'up_block_types'] as const) {
    const list = raw[key];
    if (!Array.isArray(list) || (channelsOk && list.length !== n)) problems.push(`${key} must be a list as long as block_out_channels (${n || '?'}), got ${JSON.stringify(list)}`);
  }
  for (const t of Array.isArray(c.down_block_types) ? c.down_block_types : []) if (!DOWN_TYPES.includes(t)) problems.push(`down block type ${JSON.stringify(t)} is not supported (${DOWN_TYPES.join(', ')})`);
  for (const t of Array.isArray(c.up_block_types) ? c.up_block_types : []) if (!UP_TYPES.includes(t)) problems.push(`up block type ${JSON.stringify(t)} is not supported (${UP_TYPES.join(', ')})`);
  if (c.mid_block_type && c.mid_block_type !== 'UNetMidBlock2DCrossAttn') problems.push(`mid block type ${c.mid_block_type} is not supported`);
  if (c.act_fn && c.act_fn !== 'silu') problems.push(`act_fn ${c.act_fn} is not supported`);
  const tl = c.transformer_layers_per_block;
  if (tl !== undefined && (Array.isArray(tl) ? tl.some((v) => v !== 1) : tl !== 1)) problems.push('transformer_layers_per_block other than 1 (SDXL) is not supported');
  for (const key of ['use_linear_projection', 'flip_sin_to_cos'] as const) {
    if (raw[key] !== undefined && typeof raw[key] !== 'boolean') problems.push(`${key} must be true or false, got ${JSON.stringify(raw[key])}`);
  }
  if (raw.freq_shift !== undefined && !(typeof raw.freq_shift === 'number' && Number.isFinite(raw.freq_shift) && Math.abs(raw.freq_shift) <= 1e4)) {
    problems.push(`freq_shift must be a number from -10000 to 10000, got ${JSON.stringify(raw.freq_shift)}`);
  }
  if (raw.mid_block_scale_factor !== undefined && !(typeof raw.mid_block_scale_factor === 'number' && raw.mid_block_scale_factor > 0 && raw.mid_block_scale_factor <= 1e4)) {
    problems.push(`mid_block_scale_factor must be a number above 0 and at most 10000, got ${JSON.stringify(raw.mid_block_scale_factor)}`);
  }
  if (raw.downsample_padding !== undefined && raw.downsample_padding !== 0 && raw.downsample_padding !== 1) {
    problems.push(`downsample_padding must be 0 or 1, got ${JSON.stringify(raw.downsample_padding)}`);
  }
  if (channelsOk && isInt(raw.norm_num_groups)) {
    for (const ch of boc as number[]) if (ch % c.norm_num_groups !== 0) problems.push(`${ch} channels do not split into norm_num_groups ${c.norm_num_groups}`);
  }
  // Heads: num_attention_heads, else attention_head_dim (which SD1.x configs use for the head count).
  const headsKey = c.num_attention_heads !== undefined && c.num_attention_heads !== null ? 'num_attention_heads' : 'attention_head_dim';
  const h = raw[headsKey];
  const [hLo, hHi] = UNET_LIMITS.heads;
  const headOk = (v: unknown) => isInt(v) && v >= hLo && v <= hHi;
  if (!(headOk(h) || (Array.isArray(h) && (!channelsOk || h.length === n) && h.every(headOk)))) {
    problems.push(`${headsKey} must be a whole number from ${hLo} to ${hHi}, or a list of them as long as block_out_channels, got ${JSON.stringify(h)}`);
  } else if (channelsOk) {
    (boc as number[]).forEach((ch, i) => {
      const heads = Array.isArray(h) ? (h[i] as number) : (h as number);
      if (ch % heads !== 0) problems.push(`${headsKey} ${heads} does not divide the ${ch} channels of block ${i} into equal heads`);
    });
  }
  if (problems.length) throw new Error(`unet/config.json is not a Stable Diffusion 1.x UNet this lab can train: ${[...new Set(problems)].join('; ')}`);
}

/**
 * The training resolutions a model takes must be multiples of this: the VAE halves the image at each of its
 * blocks but the first, and the UNet halves the latent at each downsampler (one per block but the last),
 * and its up path joins each upsampled map to the skip of the same size, so every halving must be exact.
 */
export function resolutionStep(unet: Pick<UNetConfig, 'block_out_channels'>, vaeBlocks: number): number {
  return 2 ** (vaeBlocks - 1) * 2 ** (unet.block_out_channels.length - 1);
}

/** Throws unless `px` suits this model (see resolutionStep), listing sizes that do. */
export function checkModelResolution(px: number, unet: Pick<UNetConfig, 'block_out_channels'>, vaeBlocks: number): void {
  const step = resolutionStep(unet, vaeBlocks);
  if (Number.isInteger(px) && px > 0 && px % step === 0) return;
  const below = Math.floor(px / step) * step;
  const sizes = [below, below + step, below + 2 * step].filter((s) => s > 0).slice(0, 3);
  throw new Error(
    `resolution ${px} does not fit this model: its VAE (${vaeBlocks} blocks) and UNet (${unet.block_out_channels.length} blocks) halve the image ` +
      `${Math.log2(step)} times, so the side must be a multiple of ${step} pixels (for example ${sizes.join(', ')})`,
  );
}

/** Heads of each level's attention (down order). */
function headsPerLevel(c: UNetConfig): number[] {
  const h = c.num_attention_heads ?? c.attention_head_dim;
  return Array.isArray(h) ? h : c.block_out_channels.map(() => h);
}

/** A down or up block of the UNet: its resnets, the transformer after each (cross-attention blocks), and the resampler. */
export interface UNetBlock {
  resnets: ResnetBlock2D[];
  attentions: Transformer2DModel[];
  /** down_blocks.i.downsamplers.0.conv (stride 2) or up_blocks.i.upsamplers.0.conv (after nearest 2x); none at the end. */
  sampler: Conv2d | null;
}

/** UNet2DConditionModel's modules, as diffusers nests them (the paths are the state-dict keys). */
export class UNetLayers extends Layer {
  readonly conv_in: Conv2d;
  readonly time_embedding: { linear_1: Linear; linear_2: Linear };
  readonly down_blocks: UNetBlock[];
  readonly mid_block: { resnets: [ResnetBlock2D, ResnetBlock2D]; attentions: [Transformer2DModel] };
  readonly up_blocks: UNetBlock[];
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(readonly config: UNetConfig) {
    super('');
    const c = config;
    validateUNetConfig(c);
    const c0 = c.block_out_channels[0];
    const tembDim = 4 * c0;
    const n = c.block_out_channels.length;
    const heads = headsPerLevel(c);
    const resnet = (path: string, cin: number, cout: number) => new ResnetBlock2D(path, cin, cout, { tembDim, groups: c.norm_num_groups, eps: c.norm_eps });
    const transformer = (path: string, ch: number, h: number) =>
      new Transformer2DModel(path, ch, c.cross_attention_dim, h, { groups: c.norm_num_groups, linearProjection: c.use_linear_projection ?? false });

    this.conv_in = new Conv2d('conv_in', c.in_channels, c0, 3);
    this.time_embedding = { linear_1: new Linear('time_embedding.linear_1', c0, tembDim), linear_2: new Linear('time_embedding.linear_2', tembDim, tembDim) };
    let out = c0;
    this.down_blocks = c.down_block_types.map((type, i) => {
      const cin = out;
      out = c.block_out_channels[i];
      const p = `down_blocks.${i}`;
      const block: UNetBlock = { resnets: [], attentions: [], sampler: null };
      for (let j = 0; j < c.layers_per_block; j++) {
        block.resnets.push(resnet(`${p}.resnets.${j}`, j === 0 ? cin : out, out));
        if (type === 'CrossAttnDownBlock2D') block.attentions.push(transformer(`${p}.attentions.${j}`, out, heads[i]));
      }
      if (i < n - 1) block.sampler = new Conv2d(`${p}.downsamplers.0.conv`, out, out, 3, { stride: 2, padding: c.downsample_padding ?? 1 });
      return block;
    });
    const top = c.block_out_channels[n - 1];
    this.mid_block = {
      resnets: [resnet('mid_block.resnets.0', top, top), resnet('mid_block.resnets.1', top, top)],
      attentions: [transformer('mid_block.attentions.0', top, heads[n - 1])],
    };
    const rev = [...c.block_out_channels].reverse();
    const headsUp = [...heads].reverse();
    out = rev[0];
    this.up_blocks = c.up_block_types.map((type, i) => {
      const prev = out;
      out = rev[i];
      const skipIn = rev[Math.min(i + 1, n - 1)];
      const p = `up_blocks.${i}`;
      const block: UNetBlock = { resnets: [], attentions: [], sampler: null };
      for (let j = 0; j <= c.layers_per_block; j++) {
        const skip = j === c.layers_per_block ? skipIn : out;
        block.resnets.push(resnet(`${p}.resnets.${j}`, (j === 0 ? prev : out) + skip, out));
        if (type === 'CrossAttnUpBlock2D') block.attentions.push(transformer(`${p}.attentions.${j}`, out, headsUp[i]));
      }
      if (i < n - 1) block.sampler = new Conv2d(`${p}.upsamplers.0.conv`, out, out, 3);
      return block;
    });
    this.conv_norm_out = new GroupNorm('conv_norm_out', c0, c.norm_num_groups, c.norm_eps);
    this.conv_out = new Conv2d('conv_out', c0, c.out_channels, 3);
  }

  override children() {
    // Each resnet, then the transformer after it; then the block's resampler.
    const block = (b: UNetBlock) => [...b.resnets.flatMap((r, j) => [r, b.attentions[j] ?? null]), b.sampler];
    const [r0, r1] = this.mid_block.resnets;
    return [
      this.conv_in, this.time_embedding.linear_1, this.time_embedding.linear_2,
      ...this.down_blocks.flatMap(block), r0, this.mid_block.attentions[0], r1, ...this.up_blocks.flatMap(block),
      this.conv_norm_out, this.conv_out,
    ];
  }
}

/** Every parameter the config implies, name -> shape, as diffusers names them. */
export function unetParamShapes(c: UNetConfig): ParamShapes {
  return paramsOf(new UNetLayers(c));
}

export interface UNetForwardOptions {
  /** Called with the output of conv_in, time_embedding, each down/up block, mid_block and conv_norm_out. */
  onActivation?: (name: string, t: Tensor) => void | Promise<void>;
  /** Recompute each ResNet / transformer block in the backward instead of keeping its activations. */
  checkpoint?: boolean;
}

export class UNet {
  readonly layers: UNetLayers;
  /** The LoRA applied in forward; null or `loraEnabled = false` gives the reference (base) model. */
  lora: Lora | null = null;
  loraEnabled = true;
  /** LoRA multiplier (A1111's `<lora:name:X>`): scales every module's alpha / rank; 1 as trained. */
  loraScale = 1;
  /** What the layers read: the weights by state-dict name, and the LoRA module on a layer while it applies. */
  private readonly ws: LayerWeights;

  constructor(
    readonly gpu: Gpu,
    readonly config: UNetConfig,
    readonly weights: Map<string, Tensor>,
  ) {
    this.layers = new UNetLayers(config);
    this.ws = {
      get: (name) => {
        const t = this.weights.get(name);
        if (!t) throw new Error(`UNet: weight ${name} is not loaded`);
        return t;
      },
      lora: (path) => {
        const m = this.activeLora()?.modules.get(path);
        return m && { down: m.down, up: m.up, scale: m.scale * this.loraScale };
      },
    };
  }

  release(): void {
    for (const t of this.weights.values()) t.release();
    this.weights.clear();
  }

  /**
   * Every weight as a trainable leaf, by state-dict name, for full-weight training: the same tape then
   * gives each its gradient. They must be float32 (load with halfWeights: false).
   */
  trainAllWeights(): Map<string, Tensor> {
    for (const [name, t] of this.weights) {
      if (t.dtype !== 'f32') throw new Error(`UNet: weight ${name} is float16; load the UNet with float32 weights to train it`);
      t.requiresGrad = true;
    }
    return this.weights;
  }

  /** The trained tensors inside the layer at `prefix` (LoRA matrices, or weights), for gradient checkpointing. */
  private trainedUnder(prefix: string): Tensor[] {
    const weights = [...this.weights.entries()].filter(([k, t]) => t.requiresGrad && k.startsWith(`${prefix}.`)).map(([, t]) => t);
    return [...(this.activeLora()?.paramsUnder(prefix) ?? []), ...weights];
  }

  private activeLora() {
    return this.loraEnabled && this.loraScale !== 0 ? this.lora : null;
  }

  /**
   * eps prediction: sample [B, C, H, W], timesteps [B] (float32 values), encoder hidden states [B, S, D].
   * Intermediates are freed as it goes (or held by ctx.tape for the backward); the caller owns the output.
   */
  async forward(ctx: Ctx, sample: Tensor, timesteps: Tensor, context: Tensor, opts: UNetForwardOptions = {}): Promise<Tensor> {
    const c = this.config;
    const { gpu, ws, layers } = this;
    const ckpt = opts.checkpoint ?? false;
    const report = async (name: string, t: Tensor) => {
      if (opts.onActivation) await opts.onActivation(name, t);
    };

    const tproj = timestepEmbedding(gpu, timesteps, { dim: c.block_out_channels[0], flipSinToCos: c.flip_sin_to_cos ?? true, freqShift: c.freq_shift ?? 0 });
    const t1 = layers.time_embedding.linear_1.forward(ctx, ws, tproj);
    const t2 = F.activation(ctx, t1, 'silu');
    const temb = layers.time_embedding.linear_2.forward(ctx, ws, t2);
    ctx.free(tproj, t1, t2);
    await report('time_embedding', temb);
    // Every resnet applies SiLU to the time embedding before its own projection: once is enough.
    const tembAct = F.activation(ctx, temb, 'silu');
    ctx.free(temb);

    let h = layers.conv_in.forward(ctx, ws, sample);
    await report('conv_in', h);
    const skips: Tensor[] = [h];
    // Each ResNet and transformer block runs checkpointed when asked (recomputed in the backward).
    const resnet = (r: ResnetBlock2D, x: Tensor, scale = 1) => checkpointed(ctx, ckpt, [x, tembAct], () => this.trainedUnder(r.path), (cc) => r.forward(cc, ws, x, tembAct, scale));
    const transformer = (t: Transformer2DModel, x: Tensor) => checkpointed(ctx, ckpt, [x, context], () => this.trainedUnder(t.path), (cc) => t.forward(cc, ws, x, context));

    for (const [i, block] of layers.down_blocks.entries()) {
      for (const [j, r] of block.resnets.entries()) {
        h = resnet(r, h);
        const attention = block.attentions[j];
        if (attention) {
          const x = h;
          h = transformer(attention, x);
          ctx.free(x);
        }
        skips.push(h);
      }
      if (block.sampler) {
        h = block.sampler.forward(ctx, ws, h);
        skips.push(h);
      }
      await report(`down_blocks.${i}`, h);
    }

    const midScale = c.mid_block_scale_factor ?? 1;
    const [r0, r1] = layers.mid_block.resnets;
    const m0 = resnet(r0, h, midScale);
    const m1 = transformer(layers.mid_block.attentions[0], m0);
    h = resnet(r1, m1, midScale);
    ctx.free(m0, m1);
    await report('mid_block', h);
    // The last skip is the bottom of the down path, which `h` came from: the up path starts from mid.
    for (const [i, block] of layers.up_blocks.entries()) {
      for (const [j, r] of block.resnets.entries()) {
        const skip = skips.pop()!;
        const cat = F.concatChannels(ctx, h, skip);
        ctx.free(h, skip);
        h = resnet(r, cat);
        ctx.free(cat);
        const attention = block.attentions[j];
        if (attention) {
          const x = h;
          h = transformer(attention, x);
          ctx.free(x);
        }
      }
      if (block.sampler) {
        // To the next skip's size: twice this one, unless the latent did not halve evenly on the way down
        // (diffusers' forward_upsample_size).
        const [sh, sw] = skips[skips.length - 1].shape.slice(2);
        const up = F.upsampleNearest(ctx, h, sh, sw);
        ctx.free(h);
        h = block.sampler.forward(ctx, ws, up);
        ctx.free(up);
      }
      await report(`up_blocks.${i}`, h);
    }
    const no = layers.conv_norm_out.forward(ctx, ws, h);
    await report('conv_norm_out', no);
    const act = F.activation(ctx, no, 'silu');
    const out = layers.conv_out.forward(ctx, ws, act);
    ctx.free(h, no, act, tembAct);
    return out;
  }
}

/**
 * Loads unet/ of a diffusers folder. Frozen matrices are stored as float16 where the adapter has
 * 'shader-f16' (preferHalfWeights), float32 elsewhere, unless `halfWeights` says otherwise.
 */
export async function loadUNet(gpu: Gpu, files: ModelFiles, options: UploadOptions & { variant?: 'fp16' } = {}): Promise<UNet> {
  const config = await readConfig<UNetConfig>(files, 'unet');
  try {
    validateUNetConfig(config);
  } catch (e) {
    throw new ModelLoadError(`${files.name}/${(e as Error).message}`); // name the folder, not just unet/config.json
  }
  const weights = await loadFolderComponent(gpu, files, 'unet', unetParamShapes(config), { ...options, halfWeights: options.halfWeights ?? preferHalfWeights(gpu) });
  return new UNet(gpu, config, weights);
}

/** Loads the UNet of a single-file (LDM keys) checkpoint, with its config given; precision as loadUNet. */
export async function loadUNetFromSingleFile(gpu: Gpu, file: SafetensorsFile, config: UNetConfig, layout: LdmLayout, options: UploadOptions = {}): Promise<UNet> {
  const weights = await loadSingleFileComponent(gpu, file, 'unet', unetParamShapes(config), layout, { ...options, halfWeights: options.halfWeights ?? preferHalfWeights(gpu) });
  return new UNet(gpu, config, weights);
}
