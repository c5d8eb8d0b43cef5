// UNet2DConditionModel (Stable Diffusion 1.x), built from its diffusers config.json. Parameter names are
// diffusers' state-dict keys, so loading is a lookup and every tensor has an obvious home. The forward is
// differentiable through the tape (training backpropagates into the LoRA matrices, or with
// trainAllWeights() into every weight); the same frozen
// weights with the LoRA switched off serve as the reference model.
// Inside differentiable code, activations change shape through F.reshape (a recorded op), never view():
// an alias is invisible to the tape and would cut the gradient's path.

import type { Gpu } from '../gpu/gpu';
import * as F from '../nn/functional';
import { timestepEmbedding } from '../nn/ops/timestep';
import { Ctx, Tape } from '../nn/tape';
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
/** diffusers builds every Transformer2DModel's GroupNorm with eps 1e-6 and each LayerNorm with 1e-5. */
const TRANSFORMER_NORM_EPS = 1e-6;
const LAYER_NORM_EPS = 1e-5;

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

/** Every parameter the config implies, name -> shape, as diffusers names them. */
export function unetParams(c: UNetConfig): ParamShapes {
  validateUNetConfig(c);
  const p: ParamShapes = new Map();
  const add = (name: string, shape: number[]) => p.set(name, shape);
  const c0 = c.block_out_channels[0];
  const tembDim = 4 * c0;
  const linearProj = c.use_linear_projection ?? false;
  const conv = (name: string, cin: number, cout: number, k: number) => {
    add(`${name}.weight`, [cout, cin, k, k]);
    add(`${name}.bias`, [cout]);
  };
  const lin = (name: string, cin: number, cout: number, bias = true) => {
    add(`${name}.weight`, [cout, cin]);
    if (bias) add(`${name}.bias`, [cout]);
  };
  const norm = (name: string, ch: number) => {
    add(`${name}.weight`, [ch]);
    add(`${name}.bias`, [ch]);
  };
  const resnet = (name: string, cin: number, cout: number) => {
    norm(`${name}.norm1`, cin);
    conv(`${name}.conv1`, cin, cout, 3);
    lin(`${name}.time_emb_proj`, tembDim, cout);
    norm(`${name}.norm2`, cout);
    conv(`${name}.conv2`, cout, cout, 3);
    if (cin !== cout) conv(`${name}.conv_shortcut`, cin, cout, 1);
  };
  const transformer = (name: string, ch: number) => {
    norm(`${name}.norm`, ch);
    const proj = (n: string, cin: number, cout: number) => (linearProj ? lin(n, cin, cout) : conv(n, cin, cout, 1));
    proj(`${name}.proj_in`, ch, ch);
    const b = `${name}.transformer_blocks.0`;
    norm(`${b}.norm1`, ch);
    for (const [attn, kvDim] of [['attn1', ch], ['attn2', c.cross_attention_dim]] as const) {
      lin(`${b}.${attn}.to_q`, ch, ch, false);
      lin(`${b}.${attn}.to_k`, kvDim, ch, false);
      lin(`${b}.${attn}.to_v`, kvDim, ch, false);
      lin(`${b}.${attn}.to_out.0`, ch, ch);
    }
    norm(`${b}.norm2`, ch);
    norm(`${b}.norm3`, ch);
    lin(`${b}.ff.net.0.proj`, ch, 8 * ch);
    lin(`${b}.ff.net.2`, 4 * ch, ch);
    proj(`${name}.proj_out`, ch, ch);
  };

  conv('conv_in', c.in_channels, c0, 3);
  lin('time_embedding.linear_1', c0, tembDim);
  lin('time_embedding.linear_2', tembDim, tembDim);
  const n = c.block_out_channels.length;
  let out = c0;
  c.down_block_types.forEach((type, i) => {
    const cin = out;
    out = c.block_out_channels[i];
    for (let j = 0; j < c.layers_per_block; j++) {
      resnet(`down_blocks.${i}.resnets.${j}`, j === 0 ? cin : out, out);
      if (type === 'CrossAttnDownBlock2D') transformer(`down_blocks.${i}.attentions.${j}`, out);
    }
    if (i < n - 1) conv(`down_blocks.${i}.downsamplers.0.conv`, out, out, 3);
  });
  const top = c.block_out_channels[n - 1];
  resnet('mid_block.resnets.0', top, top);
  transformer('mid_block.attentions.0', top);
  resnet('mid_block.resnets.1', top, top);
  const rev = [...c.block_out_channels].reverse();
  out = rev[0];
  c.up_block_types.forEach((type, i) => {
    const prev = out;
    out = rev[i];
    const skipIn = rev[Math.min(i + 1, n - 1)];
    for (let j = 0; j <= c.layers_per_block; j++) {
      const skip = j === c.layers_per_block ? skipIn : out;
      resnet(`up_blocks.${i}.resnets.${j}`, (j === 0 ? prev : out) + skip, out);
      if (type === 'CrossAttnUpBlock2D') transformer(`up_blocks.${i}.attentions.${j}`, out);
    }
    if (i < n - 1) conv(`up_blocks.${i}.upsamplers.0.conv`, out, out, 3);
  });
  norm('conv_norm_out', c0);
  conv('conv_out', c0, c.out_channels, 3);
  return p;
}

export interface UNetForwardOptions {
  /** Called with the output of conv_in, time_embedding, each down/up block, mid_block and conv_norm_out. */
  onActivation?: (name: string, t: Tensor) => void | Promise<void>;
  /** Recompute each ResNet / transformer block in the backward instead of keeping its activations. */
  checkpoint?: boolean;
}

export class UNet {
  readonly heads: number[];
  /** The LoRA applied in forward; null or `loraEnabled = false` gives the reference (base) model. */
  lora: Lora | null = null;
  loraEnabled = true;
  /** LoRA multiplier (A1111's `<lora:name:X>`): scales every module's alpha / rank; 1 as trained. */
  loraScale = 1;

  constructor(
    readonly gpu: Gpu,
    readonly config: UNetConfig,
    readonly weights: Map<string, Tensor>,
  ) {
    validateUNetConfig(config);
    this.heads = headsPerLevel(config);
  }

  release(): void {
    for (const t of this.weights.values()) t.release();
    this.weights.clear();
  }

  private w(name: string): Tensor {
    const t = this.weights.get(name);
    if (!t) throw new Error(`UNet: weight ${name} is not loaded`);
    return t;
  }

  private opt(name: string): Tensor | undefined {
    return this.weights.get(name);
  }

  /**
   * The weight of a 1x1 conv or linear layer as a [out, in] matrix, released by the caller (ctx.free). A
   * frozen weight is simply aliased; a trained one is reshaped through the tape, since an alias is
   * invisible to it and its gradient would never reach the weight.
   */
  private matrix(ctx: Ctx, name: string): Tensor {
    const w = this.w(`${name}.weight`);
    return w.requiresGrad ? F.reshape(ctx, w, [w.shape[0], w.shape[1]]) : w.view([w.shape[0], w.shape[1]]);
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

  /** The trained weights inside `prefix` (a block's path), for gradient checkpointing. */
  private trainedWeightsUnder(prefix: string): Tensor[] {
    return [...this.weights.entries()].filter(([k, t]) => t.requiresGrad && k.startsWith(`${prefix}.`)).map(([, t]) => t);
  }

  private activeLora() {
    return this.loraEnabled && this.loraScale !== 0 ? this.lora : null;
  }

  /** Linear layer `name` on x [..., in], plus its LoRA delta when one targets it. */
  private linear(ctx: Ctx, name: string, x: Tensor): Tensor {
    const y = F.linear(ctx, x, this.w(`${name}.weight`), this.opt(`${name}.bias`));
    const m = this.activeLora()?.modules.get(name);
    if (!m) return y;
    const h = F.linear(ctx, x, m.down);
    const hu = F.linear(ctx, h, m.up);
    const delta = F.scale(ctx, hu, m.scale * this.loraScale);
    const out = F.add(ctx, y, delta);
    ctx.free(y, h, hu, delta);
    return out;
  }

  /** proj_in: NCHW [B, C, HW] -> tokens [B, HW, C'], a 1x1 conv (or linear) applied per position. */
  private projIn(ctx: Ctx, name: string, x: Tensor): Tensor {
    const w = this.matrix(ctx, name);
    const y = F.matmul(ctx, x, w, { transA: true, transB: true });
    const yb = F.add(ctx, y, this.w(`${name}.bias`));
    ctx.free(w, y);
    const m = this.activeLora()?.modules.get(name);
    if (!m) return yb;
    const h = F.matmul(ctx, x, m.down, { transA: true, transB: true });
    const hu = F.matmul(ctx, h, m.up, { transB: true, alpha: m.scale * this.loraScale });
    const out = F.add(ctx, yb, hu);
    ctx.free(yb, h, hu);
    return out;
  }

  /** proj_out: tokens [B, HW, C'] -> NCHW [B, C, HW]. */
  private projOut(ctx: Ctx, name: string, x: Tensor): Tensor {
    const w = this.matrix(ctx, name);
    const y = F.matmul(ctx, w, x, { transB: true });
    const yb = F.add(ctx, y, this.w(`${name}.bias`), 1);
    ctx.free(w, y);
    const m = this.activeLora()?.modules.get(name);
    if (!m) return yb;
    const h = F.matmul(ctx, m.down, x, { transB: true });
    const hu = F.matmul(ctx, m.up, h, { alpha: m.scale * this.loraScale });
    const out = F.add(ctx, yb, hu);
    ctx.free(yb, h, hu);
    return out;
  }

  private resnet(ctx: Ctx, name: string, x: Tensor, tembAct: Tensor, outputScale = 1): Tensor {
    const { norm_num_groups: groups, norm_eps: eps } = this.config;
    const n1 = F.groupNorm(ctx, x, this.w(`${name}.norm1.weight`), this.w(`${name}.norm1.bias`), groups, eps);
    const a1 = F.activation(ctx, n1, 'silu');
    const c1 = F.conv2d(ctx, a1, this.w(`${name}.conv1.weight`), this.w(`${name}.conv1.bias`), { padding: 1 });
    const t = this.linear(ctx, `${name}.time_emb_proj`, tembAct);
    const h = F.add(ctx, c1, t, 1); // [B, C] added to every position of [B, C, H, W]
    const n2 = F.groupNorm(ctx, h, this.w(`${name}.norm2.weight`), this.w(`${name}.norm2.bias`), groups, eps);
    const a2 = F.activation(ctx, n2, 'silu');
    const c2 = F.conv2d(ctx, a2, this.w(`${name}.conv2.weight`), this.w(`${name}.conv2.bias`), { padding: 1 });
    const shortcut = this.opt(`${name}.conv_shortcut.weight`)
      ? F.conv2d(ctx, x, this.w(`${name}.conv_shortcut.weight`), this.w(`${name}.conv_shortcut.bias`))
      : null;
    let out = F.add(ctx, shortcut ?? x, c2);
    ctx.free(n1, a1, c1, t, h, n2, a2, c2);
    if (shortcut) ctx.free(shortcut);
    if (outputScale !== 1) {
      const scaled = F.scale(ctx, out, 1 / outputScale);
      ctx.free(out);
      out = scaled;
    }
    return out;
  }

  private attention(ctx: Ctx, name: string, x: Tensor, context: Tensor, heads: number): Tensor {
    const q = this.linear(ctx, `${name}.to_q`, x);
    const k = this.linear(ctx, `${name}.to_k`, context);
    const v = this.linear(ctx, `${name}.to_v`, context);
    const o = F.attention(ctx, q, k, v, { heads });
    const out = this.linear(ctx, `${name}.to_out.0`, o);
    ctx.free(q, k, v, o);
    return out;
  }

  /** Transformer2DModel with one BasicTransformerBlock: x [B, C, H, W] -> same shape. */
  private transformer(ctx: Ctx, name: string, x: Tensor, context: Tensor, heads: number): Tensor {
    const [b, ch, hh, ww] = x.shape;
    const n = F.groupNorm(ctx, x, this.w(`${name}.norm.weight`), this.w(`${name}.norm.bias`), this.config.norm_num_groups, TRANSFORMER_NORM_EPS);
    const n3 = F.reshape(ctx, n, [b, ch, hh * ww]);
    let h = this.projIn(ctx, `${name}.proj_in`, n3);
    ctx.free(n, n3);
    const blk = `${name}.transformer_blocks.0`;
    const ln = (i: number, t: Tensor) => F.layerNorm(ctx, t, this.w(`${blk}.norm${i}.weight`), this.w(`${blk}.norm${i}.bias`), LAYER_NORM_EPS);
    const residual = (next: Tensor, ...temps: Tensor[]) => {
      const sum = F.add(ctx, h, next);
      ctx.free(h, next, ...temps);
      h = sum;
    };
    const l1 = ln(1, h);
    residual(this.attention(ctx, `${blk}.attn1`, l1, l1, heads), l1);
    const l2 = ln(2, h);
    residual(this.attention(ctx, `${blk}.attn2`, l2, context, heads), l2);
    const l3 = ln(3, h);
    const f1 = this.linear(ctx, `${blk}.ff.net.0.proj`, l3);
    const g = F.geglu(ctx, f1);
    residual(this.linear(ctx, `${blk}.ff.net.2`, g), l3, f1, g);
    const o = this.projOut(ctx, `${name}.proj_out`, h);
    ctx.free(h);
    const o4 = F.reshape(ctx, o, x.shape);
    const out = F.add(ctx, o4, x);
    ctx.free(o, o4);
    return out;
  }

  /**
   * Runs `block` on `inputs`. With checkpointing and a tape, the block runs without recording (its
   * activations are freed at once) and is recomputed, recorded, in the backward.
   */
  private block(ctx: Ctx, checkpoint: boolean, prefix: string, inputs: Tensor[], block: (c: Ctx) => Tensor): Tensor {
    if (!checkpoint || !ctx.tape) return block(ctx);
    const params = [...(this.activeLora()?.paramsUnder(prefix) ?? []), ...this.trainedWeightsUnder(prefix)];
    const y = block(new Ctx(ctx.gpu, null));
    const recorded = [...inputs, ...params];
    ctx.tape.record(recorded, y, (dy) => {
      const sub = new Tape();
      const y2 = ctx.gpu.pool.tagged('recompute', () => block(new Ctx(ctx.gpu, sub)));
      const grads = sub.backward(y2, dy);
      y2.release();
      sub.dispose();
      return recorded.map((t) => grads.get(t));
    });
    return y;
  }

  /**
   * eps prediction: sample [B, C, H, W], timesteps [B] (float32 values), encoder hidden states [B, S, D].
   * Intermediates are freed as it goes (or held by ctx.tape for the backward); the caller owns the output.
   */
  async forward(ctx: Ctx, sample: Tensor, timesteps: Tensor, context: Tensor, opts: UNetForwardOptions = {}): Promise<Tensor> {
    const c = this.config;
    const gpu = this.gpu;
    const ckpt = opts.checkpoint ?? false;
    const report = async (name: string, t: Tensor) => {
      if (opts.onActivation) await opts.onActivation(name, t);
    };
    const n = c.block_out_channels.length;

    const tproj = timestepEmbedding(gpu, timesteps, { dim: c.block_out_channels[0], flipSinToCos: c.flip_sin_to_cos ?? true, freqShift: c.freq_shift ?? 0 });
    const t1 = this.linear(ctx, 'time_embedding.linear_1', tproj);
    const t2 = F.activation(ctx, t1, 'silu');
    const temb = this.linear(ctx, 'time_embedding.linear_2', t2);
    ctx.free(tproj, t1, t2);
    await report('time_embedding', temb);
    // Every resnet applies SiLU to the time embedding before its own projection: once is enough.
    const tembAct = F.activation(ctx, temb, 'silu');
    ctx.free(temb);

    let h = F.conv2d(ctx, sample, this.w('conv_in.weight'), this.w('conv_in.bias'), { padding: 1 });
    await report('conv_in', h);
    const skips: Tensor[] = [h];
    const resnet = (name: string, x: Tensor, scale = 1) => this.block(ctx, ckpt, name, [x, tembAct], (cc) => this.resnet(cc, name, x, tembAct, scale));
    const transformer = (name: string, x: Tensor, heads: number) =>
      this.block(ctx, ckpt, name, [x, context], (cc) => this.transformer(cc, name, x, context, heads));

    for (let i = 0; i < n; i++) {
      const cross = c.down_block_types[i] === 'CrossAttnDownBlock2D';
      for (let j = 0; j < c.layers_per_block; j++) {
        h = resnet(`down_blocks.${i}.resnets.${j}`, h);
        if (cross) {
          const r = h;
          h = transformer(`down_blocks.${i}.attentions.${j}`, r, this.heads[i]);
          ctx.free(r);
        }
        skips.push(h);
      }
      if (i < n - 1) {
        const pad = c.downsample_padding ?? 1;
        h = F.conv2d(ctx, h, this.w(`down_blocks.${i}.downsamplers.0.conv.weight`), this.w(`down_blocks.${i}.downsamplers.0.conv.bias`), { stride: 2, padding: pad });
        skips.push(h);
      }
      await report(`down_blocks.${i}`, h);
    }

    const midScale = c.mid_block_scale_factor ?? 1;
    const m0 = resnet('mid_block.resnets.0', h, midScale);
    const m1 = transformer('mid_block.attentions.0', m0, this.heads[n - 1]);
    h = resnet('mid_block.resnets.1', m1, midScale);
    ctx.free(m0, m1);
    await report('mid_block', h);
    // The last skip is the bottom of the down path, which `h` came from: the up path starts from mid.
    const headsUp = [...this.heads].reverse();
    for (let i = 0; i < n; i++) {
      const cross = c.up_block_types[i] === 'CrossAttnUpBlock2D';
      for (let j = 0; j <= c.layers_per_block; j++) {
        const skip = skips.pop()!;
        const cat = F.concatChannels(ctx, h, skip);
        ctx.free(h, skip);
        h = resnet(`up_blocks.${i}.resnets.${j}`, cat);
        ctx.free(cat);
        if (cross) {
          const r = h;
          h = transformer(`up_blocks.${i}.attentions.${j}`, r, headsUp[i]);
          ctx.free(r);
        }
      }
      if (i < n - 1) {
        // To the next skip's size: twice this one, unless the latent did not halve evenly on the way down
        // (diffusers' forward_upsample_size).
        const [sh, sw] = skips[skips.length - 1].shape.slice(2);
        const up = F.upsampleNearest(ctx, h, sh, sw);
        ctx.free(h);
        h = F.conv2d(ctx, up, this.w(`up_blocks.${i}.upsamplers.0.conv.weight`), this.w(`up_blocks.${i}.upsamplers.0.conv.bias`), { padding: 1 });
        ctx.free(up);
      }
      await report(`up_blocks.${i}`, h);
    }
    const no = F.groupNorm(ctx, h, this.w('conv_norm_out.weight'), this.w('conv_norm_out.bias'), c.norm_num_groups, c.norm_eps);
    await report('conv_norm_out', no);
    const act = F.activation(ctx, no, 'silu');
    const out = F.conv2d(ctx, act, this.w('conv_out.weight'), this.w('conv_out.bias'), { padding: 1 });
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
  const weights = await loadFolderComponent(gpu, files, 'unet', unetParams(config), { ...options, halfWeights: options.halfWeights ?? preferHalfWeights(gpu) });
  return new UNet(gpu, config, weights);
}

/** Loads the UNet of a single-file (LDM keys) checkpoint, with its config given; precision as loadUNet. */
export async function loadUNetFromSingleFile(gpu: Gpu, file: SafetensorsFile, config: UNetConfig, layout: LdmLayout, options: UploadOptions = {}): Promise<UNet> {
  const weights = await loadSingleFileComponent(gpu, file, 'unet', unetParams(config), layout, { ...options, halfWeights: options.halfWeights ?? preferHalfWeights(gpu) });
  return new UNet(gpu, config, weights);
}
