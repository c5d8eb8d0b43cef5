// LoRA on the UNet's linear (and 1x1-conv) layers: y = W x + b + (alpha / r) * B (A x), with A = lora_down
// [r, in] and B = lora_up [out, r]. Modules are keyed by their diffusers path ("down_blocks.0.attentions.0
// .transformer_blocks.0.attn1.to_q"); A and B are kept 2-D on the GPU even for 1x1 convs (kohya stores
// those as [r, in, 1, 1] / [out, r, 1, 1]; the file formats live in lora-io).

import type { Gpu } from '../gpu/gpu';
import { Tensor } from '../nn/tensor';
import { PointwiseProjection } from '../nn/layers/attention';
import { Linear } from '../nn/layers/layer';
import { type UNetConfig, UNetLayers } from './unet';

export interface LoraModule {
  /** A, [rank, in], trainable. */
  down: Tensor;
  /** B, [out, rank], trainable. */
  up: Tensor;
  rank: number;
  alpha: number;
  /** alpha / rank */
  scale: number;
  /** The base layer is a 1x1 conv (kohya writes 4-D matrices for it). */
  conv1x1: boolean;
}

/** Attention projections of every attn1 / attn2: the default (128 modules in SD1.5). */
export const DEFAULT_TARGETS = ['to_q', 'to_k', 'to_v', 'to_out.0'] as const;
/** kohya's wider default adds the transformer's projections and feed-forward. */
export const OPTIONAL_TARGETS = ['proj_in', 'proj_out', 'ff.net.0.proj', 'ff.net.2'] as const;

export class Lora {
  constructor(readonly modules: Map<string, LoraModule>) {}

  /** Trainable tensors, in a stable order (module path, then down before up). */
  params(): Tensor[] {
    return [...this.modules.keys()].sort().flatMap((k) => [this.modules.get(k)!.down, this.modules.get(k)!.up]);
  }

  /** Trainable tensors of the modules inside `prefix` (a block's path). */
  paramsUnder(prefix: string): Tensor[] {
    return [...this.modules.entries()].filter(([k]) => k.startsWith(`${prefix}.`)).flatMap(([, m]) => [m.down, m.up]);
  }

  release(): void {
    for (const m of this.modules.values()) {
      m.down.release();
      m.up.release();
    }
    this.modules.clear();
  }
}

/**
 * The UNet modules a target list selects: every linear layer or 1x1-conv projection inside a transformer
 * (attentions.*) whose path ends in one of the targets, found by walking the UNet's layer tree.
 */
export function loraTargets(unet: UNetConfig, targets: readonly string[] = DEFAULT_TARGETS): Map<string, { in: number; out: number; conv1x1: boolean }> {
  const out = new Map<string, { in: number; out: number; conv1x1: boolean }>();
  for (const layer of new UNetLayers(unet).walk()) {
    if (!layer.path.includes('.attentions.') || !targets.some((t) => layer.path.endsWith(`.${t}`))) continue;
    if (layer instanceof Linear) out.set(layer.path, { in: layer.inFeatures, out: layer.outFeatures, conv1x1: false });
    else if (layer instanceof PointwiseProjection) out.set(layer.path, { in: layer.inChannels, out: layer.outChannels, conv1x1: !layer.linear });
  }
  return out;
}

/** kohya's module name: "lora_unet_" + the diffusers path with dots as underscores. */
export function kohyaName(module: string): string {
  return `lora_unet_${module.replace(/\./g, '_')}`;
}

/**
 * A fresh LoRA: A Kaiming-uniform as PyTorch initialises a Linear (bound 1/sqrt(in)), B zero, so the policy
 * equals the reference at step 0. `random` returns uniform values in [0, 1).
 */
export function createLora(
  gpu: Gpu,
  targets: Map<string, { in: number; out: number; conv1x1: boolean }>,
  rank: number,
  alpha: number,
  random: () => number,
): Lora {
  const modules = new Map<string, LoraModule>();
  for (const [name, t] of [...targets].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const bound = 1 / Math.sqrt(t.in);
    const a = new Float32Array(rank * t.in);
    for (let i = 0; i < a.length; i++) a[i] = (2 * random() - 1) * bound;
    const down = Tensor.from(gpu, a, [rank, t.in]);
    const up = Tensor.zeros(gpu, [t.out, rank]);
    down.requiresGrad = true;
    up.requiresGrad = true;
    modules.set(name, { down, up, rank, alpha, scale: alpha / rank, conv1x1: t.conv1x1 });
  }
  return new Lora(modules);
}
