// Layers as a tree named by state-dict paths, as diffusers nests its modules: a layer knows its own path
// ("down_blocks.0.resnets.1.conv1"), declares its parameters under it and runs its forward from them, so a
// model's weight list (the shapes the loader expects), its loading and its forward walk the same tree and each
// key is written once. Layers hold structure only; the weights (and a LoRA, for the UNet) come from the model.

import * as F from '../functional';
import type { Conv2dOptions } from '../ops/conv2d';
import type { Ctx } from '../tape';
import type { Tensor } from '../tensor';

/** Parameter name -> shape, in declaration order (the order models load and train them in). */
export type ParamShapes = Map<string, number[]>;

/** Where a layer's tensors come from. */
export interface LayerWeights {
  /** The tensor of a parameter (throws naming it when it is not loaded). */
  get(name: string): Tensor;
  /** The LoRA on the linear layer at `path`, with its effective scale, while one applies. */
  lora?(path: string): { down: Tensor; up: Tensor; scale: number } | undefined;
}

export abstract class Layer {
  constructor(readonly path: string) {}

  /** A child's path, or one of this layer's parameter names. */
  protected key(local: string): string {
    return this.path ? `${this.path}.${local}` : local;
  }

  /** One of this layer's own parameters ('weight' by default) from the model's weights. */
  param(ws: LayerWeights, local = 'weight'): Tensor {
    return ws.get(this.key(local));
  }

  /** The layers inside this one, in declaration order (absent ones as null). */
  children(): (Layer | null)[] {
    return [];
  }

  /** Adds this layer's parameters (its children's, in order) to `out`. */
  params(out: ParamShapes): void {
    for (const c of this.children()) c?.params(out);
  }

  /** This layer and every layer inside it, depth first in declaration order. */
  *walk(): Generator<Layer> {
    yield this;
    for (const c of this.children()) if (c) yield* c.walk();
  }
}

/** A tree's parameters in declaration order. */
export function paramsOf(...layers: Layer[]): ParamShapes {
  const out: ParamShapes = new Map();
  for (const l of layers) l.params(out);
  return out;
}

/** y = x W^T + b over the last axis, plus the LoRA delta scale * (x A^T) B^T when one targets this layer. */
export class Linear extends Layer {
  constructor(
    path: string,
    readonly inFeatures: number,
    readonly outFeatures: number,
    readonly bias = true,
  ) {
    super(path);
  }

  override params(out: ParamShapes): void {
    out.set(this.key('weight'), [this.outFeatures, this.inFeatures]);
    if (this.bias) out.set(this.key('bias'), [this.outFeatures]);
  }

  forward(ctx: Ctx, ws: LayerWeights, x: Tensor): Tensor {
    const y = F.linear(ctx, x, ws.get(this.key('weight')), this.bias ? ws.get(this.key('bias')) : undefined);
    const m = ws.lora?.(this.path);
    if (!m) return y;
    const h = F.linear(ctx, x, m.down);
    const hu = F.linear(ctx, h, m.up);
    const delta = F.scale(ctx, hu, m.scale);
    const out = F.add(ctx, y, delta);
    ctx.free(y, h, hu, delta);
    return out;
  }
}

export class Conv2d extends Layer {
  private readonly opts: Required<Conv2dOptions>;

  /** `padding` defaults to "same" for odd kernels ((k - 1) / 2). */
  constructor(
    path: string,
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernel: number,
    opts: Conv2dOptions = {},
  ) {
    super(path);
    this.opts = { stride: opts.stride ?? 1, padding: opts.padding ?? (kernel - 1) / 2 };
  }

  override params(out: ParamShapes): void {
    out.set(this.key('weight'), [this.outChannels, this.inChannels, this.kernel, this.kernel]);
    out.set(this.key('bias'), [this.outChannels]);
  }

  forward(ctx: Ctx, ws: LayerWeights, x: Tensor): Tensor {
    return F.conv2d(ctx, x, ws.get(this.key('weight')), ws.get(this.key('bias')), this.opts);
  }
}

export class GroupNorm extends Layer {
  constructor(
    path: string,
    readonly channels: number,
    readonly groups: number,
    readonly eps: number,
  ) {
    super(path);
  }

  override params(out: ParamShapes): void {
    out.set(this.key('weight'), [this.channels]);
    out.set(this.key('bias'), [this.channels]);
  }

  forward(ctx: Ctx, ws: LayerWeights, x: Tensor): Tensor {
    return F.groupNorm(ctx, x, ws.get(this.key('weight')), ws.get(this.key('bias')), this.groups, this.eps);
  }

  /** The norm followed by SiLU (the intermediate freed). */
  forwardSilu(ctx: Ctx, ws: LayerWeights, x: Tensor): Tensor {
    const n = this.forward(ctx, ws, x);
    const a = F.activation(ctx, n, 'silu');
    ctx.free(n);
    return a;
  }
}

export class LayerNorm extends Layer {
  constructor(
    path: string,
    readonly channels: number,
    readonly eps: number,
  ) {
    super(path);
  }

  override params(out: ParamShapes): void {
    out.set(this.key('weight'), [this.channels]);
    out.set(this.key('bias'), [this.channels]);
  }

  forward(ctx: Ctx, ws: LayerWeights, x: Tensor): Tensor {
    return F.layerNorm(ctx, x, ws.get(this.key('weight')), ws.get(this.key('bias')), this.eps);
  }
}

/** A lookup table [rows, dim] (token or position embeddings); its rows are gathered by the model. */
export class Embedding extends Layer {
  constructor(
    path: string,
    readonly rows: number,
    readonly dim: number,
  ) {
    super(path);
  }

  override params(out: ParamShapes): void {
    out.set(this.key('weight'), [this.rows, this.dim]);
  }
}
