// Attention as diffusers' Attention module names it (to_q, to_k, to_v, to_out.0), and the UNet's
// Transformer2DModel around it: GroupNorm, proj_in, one BasicTransformerBlock (self-attention, cross-attention
// on the text states, GEGLU feed-forward, each after a LayerNorm and added back), proj_out, plus the input.

import * as F from '../functional';
import type { Ctx } from '../tape';
import type { Tensor } from '../tensor';
import { GroupNorm, Layer, LayerNorm, Linear, type LayerWeights, type ParamShapes } from './layer';

/** diffusers builds every Transformer2DModel's GroupNorm with eps 1e-6 and each LayerNorm with 1e-5. */
const TRANSFORMER_NORM_EPS = 1e-6;
const LAYER_NORM_EPS = 1e-5;

export class Attention extends Layer {
  readonly group_norm: GroupNorm | null;
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly to_out: [Linear];

  /**
   * `channels` wide queries over keys and values of `contextDim` (its own tokens when equal). The UNet's have
   * no q/k/v bias and several heads (the fused kernel); the VAE's mid-block attention has biases, a group norm
   * and one head as wide as the block (512 in SD1.5, above the fused kernel's limit: `materialised` scores).
   */
  constructor(
    path: string,
    channels: number,
    contextDim: number,
    readonly heads: number,
    o: { qkvBias: boolean; groupNorm?: { groups: number; eps: number }; materialised?: boolean },
  ) {
    super(path);
    this.group_norm = o.groupNorm ? new GroupNorm(this.key('group_norm'), channels, o.groupNorm.groups, o.groupNorm.eps) : null;
    this.to_q = new Linear(this.key('to_q'), channels, channels, o.qkvBias);
    this.to_k = new Linear(this.key('to_k'), contextDim, channels, o.qkvBias);
    this.to_v = new Linear(this.key('to_v'), contextDim, channels, o.qkvBias);
    this.to_out = [new Linear(this.key('to_out.0'), channels, channels)];
    this.materialised = o.materialised ?? false;
  }

  private readonly materialised: boolean;

  override children() {
    return [this.group_norm, this.to_q, this.to_k, this.to_v, this.to_out[0]];
  }

  /** Tokens x [B, N, C] attending to context [B, M, contextDim] -> [B, N, C]. Frees nothing it was given. */
  forward(ctx: Ctx, ws: LayerWeights, x: Tensor, context: Tensor): Tensor {
    const q = this.to_q.forward(ctx, ws, x);
    const k = this.to_k.forward(ctx, ws, context);
    const v = this.to_v.forward(ctx, ws, context);
    let o: Tensor;
    if (this.materialised) {
      // S = Q K^T / sqrt(C) [B, N, M], P = softmax(S), O = P V (one head).
      const scores = F.matmul(ctx, q, k, { transB: true, alpha: 1 / Math.sqrt(q.shape[2]) });
      ctx.free(q, k);
      const probs = F.softmax(ctx, scores);
      ctx.free(scores);
      o = F.matmul(ctx, probs, v);
      ctx.free(probs, v);
    } else {
      o = F.attention(ctx, q, k, v, { heads: this.heads });
      ctx.free(q, k, v);
    }
    const out = this.to_out[0].forward(ctx, ws, o);
    ctx.free(o);
    return out;
  }

  /** Self-attention over a feature map, as the VAE's mid block uses it: x + to_out(attention(group_norm(x))). Frees nothing it was given. */
  forwardSpatial(ctx: Ctx, ws: LayerWeights, x: Tensor): Tensor {
    if (!this.group_norm) throw new Error(`${this.path}: spatial attention needs a group norm`);
    const normed = this.group_norm.forward(ctx, ws, x);
    const tokens = F.channelsToTokens(ctx, normed); // [B, HW, C]
    ctx.free(normed);
    const o = this.forward(ctx, ws, tokens, tokens);
    ctx.free(tokens);
    const back = F.tokensToChannels(ctx, o, x.shape.slice(2));
    ctx.free(o);
    const out = F.add(ctx, back, x);
    ctx.free(back);
    return out;
  }
}

/**
 * proj_in / proj_out of a Transformer2DModel: a 1x1 conv (SD1.x) or a linear layer (use_linear_projection)
 * applied at every position, done as one GEMM between the feature map [B, C, HW] and the token layout
 * [B, HW, C'] so neither needs a transpose pass; with its LoRA delta when one targets it.
 */
export class PointwiseProjection extends Layer {
  constructor(
    path: string,
    readonly inChannels: number,
    readonly outChannels: number,
    readonly linear: boolean,
    /** 'in': NCHW [B, C, HW] -> tokens [B, HW, C']; 'out': tokens -> NCHW. */
    readonly direction: 'in' | 'out',
  ) {
    super(path);
  }

  override params(out: ParamShapes): void {
    out.set(this.key('weight'), this.linear ? [this.outChannels, this.inChannels] : [this.outChannels, this.inChannels, 1, 1]);
    out.set(this.key('bias'), [this.outChannels]);
  }

  /**
   * The weight as a [out, in] matrix, released by the caller (ctx.free). A frozen weight is simply aliased; a
   * trained one is reshaped through the tape, since an alias is invisible to it and its gradient would never
   * reach the weight.
   */
  private matrix(ctx: Ctx, ws: LayerWeights): Tensor {
    const w = ws.get(this.key('weight'));
    return w.requiresGrad ? F.reshape(ctx, w, [w.shape[0], w.shape[1]]) : w.view([w.shape[0], w.shape[1]]);
  }

  forward(ctx: Ctx, ws: LayerWeights, x: Tensor): Tensor {
    const into = this.direction === 'in';
    const w = this.matrix(ctx, ws);
    const y = into ? F.matmul(ctx, x, w, { transA: true, transB: true }) : F.matmul(ctx, w, x, { transB: true });
    const yb = F.add(ctx, y, ws.get(this.key('bias')), into ? undefined : 1);
    ctx.free(w, y);
    const m = ws.lora?.(this.path);
    if (!m) return yb;
    const h = into ? F.matmul(ctx, x, m.down, { transA: true, transB: true }) : F.matmul(ctx, m.down, x, { transB: true });
    const hu = into ? F.matmul(ctx, h, m.up, { transB: true, alpha: m.scale }) : F.matmul(ctx, m.up, h, { alpha: m.scale });
    const out = F.add(ctx, yb, hu);
    ctx.free(yb, h, hu);
    return out;
  }
}

/** One BasicTransformerBlock: h += attn1(norm1(h)); h += attn2(norm2(h), context); h += ff(norm3(h)). */
export class BasicTransformerBlock extends Layer {
  readonly norm1: LayerNorm;
  readonly attn1: Attention;
  readonly attn2: Attention;
  readonly norm2: LayerNorm;
  readonly norm3: LayerNorm;
  /** ff.net.0.proj (GEGLU's projection to twice the inner width) and ff.net.2. */
  readonly ff: { net: [Linear, null, Linear] };

  constructor(path: string, channels: number, contextDim: number, heads: number) {
    super(path);
    this.norm1 = new LayerNorm(this.key('norm1'), channels, LAYER_NORM_EPS);
    this.attn1 = new Attention(this.key('attn1'), channels, channels, heads, { qkvBias: false });
    this.attn2 = new Attention(this.key('attn2'), channels, contextDim, heads, { qkvBias: false });
    this.norm2 = new LayerNorm(this.key('norm2'), channels, LAYER_NORM_EPS);
    this.norm3 = new LayerNorm(this.key('norm3'), channels, LAYER_NORM_EPS);
    this.ff = { net: [new Linear(this.key('ff.net.0.proj'), channels, 8 * channels), null, new Linear(this.key('ff.net.2'), 4 * channels, channels)] };
  }

  override children() {
    return [this.norm1, this.attn1, this.attn2, this.norm2, this.norm3, this.ff.net[0], this.ff.net[2]];
  }

  /** Tokens [B, N, C]; consumes h (frees it) and returns the new residual stream. */
  forward(ctx: Ctx, ws: LayerWeights, h: Tensor, context: Tensor): Tensor {
    const residual = (next: Tensor, ...temps: Tensor[]) => {
      const sum = F.add(ctx, h, next);
      ctx.free(h, next, ...temps);
      h = sum;
    };
    const l1 = this.norm1.forward(ctx, ws, h);
    residual(this.attn1.forward(ctx, ws, l1, l1), l1);
    const l2 = this.norm2.forward(ctx, ws, h);
    residual(this.attn2.forward(ctx, ws, l2, context), l2);
    const l3 = this.norm3.forward(ctx, ws, h);
    const f1 = this.ff.net[0].forward(ctx, ws, l3);
    const g = F.geglu(ctx, f1);
    residual(this.ff.net[2].forward(ctx, ws, g), l3, f1, g);
    return h;
  }
}

/** Transformer2DModel with one BasicTransformerBlock: x [B, C, H, W] -> same shape. */
export class Transformer2DModel extends Layer {
  readonly norm: GroupNorm;
  readonly proj_in: PointwiseProjection;
  readonly transformer_blocks: [BasicTransformerBlock];
  readonly proj_out: PointwiseProjection;

  constructor(path: string, channels: number, contextDim: number, heads: number, o: { groups: number; linearProjection: boolean }) {
    super(path);
    this.norm = new GroupNorm(this.key('norm'), channels, o.groups, TRANSFORMER_NORM_EPS);
    this.proj_in = new PointwiseProjection(this.key('proj_in'), channels, channels, o.linearProjection, 'in');
    this.transformer_blocks = [new BasicTransformerBlock(this.key('transformer_blocks.0'), channels, contextDim, heads)];
    this.proj_out = new PointwiseProjection(this.key('proj_out'), channels, channels, o.linearProjection, 'out');
  }

  override children() {
    return [this.norm, this.proj_in, this.transformer_blocks[0], this.proj_out];
  }

  /** Does not free x. */
  forward(ctx: Ctx, ws: LayerWeights, x: Tensor, context: Tensor): Tensor {
    const [b, ch, hh, ww] = x.shape;
    const n = this.norm.forward(ctx, ws, x);
    const n3 = F.reshape(ctx, n, [b, ch, hh * ww]);
    const tokens = this.proj_in.forward(ctx, ws, n3);
    ctx.free(n, n3);
    const h = this.transformer_blocks[0].forward(ctx, ws, tokens, context);
    const o = this.proj_out.forward(ctx, ws, h);
    ctx.free(h);
    const o4 = F.reshape(ctx, o, x.shape);
    const out = F.add(ctx, o4, x);
    ctx.free(o, o4);
    return out;
  }
}
