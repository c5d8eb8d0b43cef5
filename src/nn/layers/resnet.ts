// ResnetBlock2D as diffusers builds it for the UNet (with a time-embedding projection) and the VAE (without):
// norm1, SiLU, conv1, (+ time_emb_proj(SiLU(temb)) per channel), norm2, SiLU, conv2, plus the input, through a
// 1x1 conv_shortcut when the channel count changes; the sum divided by output_scale_factor.

import * as F from '../functional';
import type { Ctx } from '../tape';
import type { Tensor } from '../tensor';
import { Conv2d, GroupNorm, Layer, Linear, type LayerWeights } from './layer';

export class ResnetBlock2D extends Layer {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly time_emb_proj: Linear | null;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly conv_shortcut: Conv2d | null;

  /** `tembDim` null: no time embedding (the VAE's blocks). */
  constructor(path: string, inChannels: number, outChannels: number, o: { tembDim: number | null; groups: number; eps: number }) {
    super(path);
    this.norm1 = new GroupNorm(this.key('norm1'), inChannels, o.groups, o.eps);
    this.conv1 = new Conv2d(this.key('conv1'), inChannels, outChannels, 3);
    this.time_emb_proj = o.tembDim === null ? null : new Linear(this.key('time_emb_proj'), o.tembDim, outChannels);
    this.norm2 = new GroupNorm(this.key('norm2'), outChannels, o.groups, o.eps);
    this.conv2 = new Conv2d(this.key('conv2'), outChannels, outChannels, 3);
    this.conv_shortcut = inChannels === outChannels ? null : new Conv2d(this.key('conv_shortcut'), inChannels, outChannels, 1);
  }

  override children() {
    return [this.norm1, this.conv1, this.time_emb_proj, this.norm2, this.conv2, this.conv_shortcut];
  }

  /**
   * x [B, C, H, W] -> [B, C', H, W]; `tembAct` [B, tembDim] is the time embedding after SiLU (the UNet applies
   * it once for every block). Does not free x; frees its own intermediates as soon as they are used.
   */
  forward(ctx: Ctx, ws: LayerWeights, x: Tensor, tembAct?: Tensor, outputScale = 1): Tensor {
    const a1 = this.norm1.forwardSilu(ctx, ws, x);
    let h = this.conv1.forward(ctx, ws, a1);
    ctx.free(a1);
    if (this.time_emb_proj) {
      if (!tembAct) throw new Error(`${this.path}: needs the time embedding`);
      const t = this.time_emb_proj.forward(ctx, ws, tembAct);
      const ht = F.add(ctx, h, t, 1); // [B, C] added to every position of [B, C, H, W]
      ctx.free(h, t);
      h = ht;
    }
    const a2 = this.norm2.forwardSilu(ctx, ws, h);
    ctx.free(h);
    const c2 = this.conv2.forward(ctx, ws, a2); // dropout would sit here in training; diffusers has it at 0
    ctx.free(a2);
    const shortcut = this.conv_shortcut ? this.conv_shortcut.forward(ctx, ws, x) : x;
    let out = F.add(ctx, shortcut, c2);
    ctx.free(c2);
    if (shortcut !== x) ctx.free(shortcut);
    if (outputScale !== 1) {
      const scaled = F.scale(ctx, out, 1 / outputScale);
      ctx.free(out);
      out = scaled;
    }
    return out;
  }
}
