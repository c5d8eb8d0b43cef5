// How much GPU memory one training step of this engine takes, worked out without a GPU: `tpo-lab plan` prints
// it, and the app's "will it fit" message uses the same numbers. Plain arithmetic: no GPU, no Node APIs.
//
// Method. Rather than a closed formula that would drift from the code, the plan replays the step's buffer
// traffic on a model of the engine: a shadow of Tensor (shared storage with reference counts, views, owning
// reshapes), of Tape (what it holds, the backward's gradient map, accumulation, release order), of each
// differentiable op in nn/functional.ts (its output, what it saves for the backward: norm statistics, the
// attention log-sum-exp; which gradients its backward allocates, in which order, and its temporaries), and of
// UNet.forward in models/unet.ts (the same block structure walked from the config, the same frees, the skip
// connections, the `checkpoint` option's no-tape forward and per-block recompute with a sub-tape in the
// backward). Every allocation goes through a model of gpu/pool.ts: the size classes of sizeClass(), bytes in
// use, the peak, and per size class the most buffers live at once, which is what the pool keeps allocated
// after a step (it never gives idle buffers back unless trimmed). tests/unit/memory-plan.test.ts runs the
// real step on the tiny golden model and checks the prediction against gpu.pool.peakBytesInUse.
//
// What the shadow assumes of a step (as DESIGN.md "One TDPO step" and TPO_SPEC.md describe it; Trainer.step may drift from it, issue #13):
//   - Persistent: frozen UNet weights (weightBytes per value: f32, or f16 as the loader's halfWeights stores
//     matrices and conv kernels; its few f32 vectors, biases and norms, are counted at the same width), LoRA A and B (f32, created module by module as createLora does), AdamW's m and v (f32, one
//     pair per LoRA matrix) and a 1-float gradient-norm accumulator.
//   - Inputs of the batch, cached beforehand (text-encoder states and VAE latents are computed once, before
//     training; the text encoder and VAE are not resident during the step): the latents x0 and the noise eps
//     of each image, then for the P rows the UNet sees (P = 2B for TDPO / TKTO / Diffusion-DPO, whose two
//     prompts or two images are batched together, else B): x_t, the noise target, the timesteps and the
//     text states [P, tokens, cross_attention_dim].
//   - Methods with a reference (all but SFT) run the reference forward first (LoRA off, no tape) on the same
//     P rows, keep only its per-row errors [P], and free everything else before the policy forward.
//   - Policy forward with the tape; per-row errors [P]; the loss kernel's gradient w.r.t. them [P]; the
//     gradient of eps; tape.backward; AdamW (allocates nothing); then everything of the step is released.
//   - Command encoders' uniform blocks, readback staging buffers and pipelines are not pooled storage and are
//     not counted (a few MiB at most).
// What it is: an estimate of this engine's allocations, exact as long as the shadow mirrors the code; when
// unet.ts or an op's backward changes, the shadow here must change with it (the test will say so).

import { sizeClass } from '../gpu/pool';
import { LOSS_METHODS, type LossMethod } from '../tpo/methods';
import { formatBytes } from '../util/format';
import { clipTextParamShapes, type ClipTextConfig } from './clip-text';
import { DEFAULT_TARGETS, loraTargets } from './lora';
import { unetParams, type UNetConfig } from './unet';
import { vaeParamShapes, type VaeConfig } from './vae';
import type { ParamShapes } from './weights';


export interface MemoryPlanInput {
  unet: UNetConfig;
  /** Counted apart (not resident during training): the encoder is only needed to cache text states. */
  textEncoder?: ClipTextConfig;
  /** Counted apart (not resident during training); also sets the latent downsampling factor (default 8). */
  vae?: VaeConfig;
  /** Image side in pixels (square). */
  resolution: number;
  rank: number;
  /** LoRA alpha: scales the update, costs no memory. Default rank. */
  alpha?: number;
  /** LoRA target suffixes (lora.ts); default to_q, to_k, to_v, to_out.0. */
  targets?: readonly string[];
  /** Examples per step (B). */
  batch: number;
  /** Default 'tdpo'. */
  method?: LossMethod;
  /** Bytes per frozen weight value: 4 (f32) or 2 (f16 storage, the loader's halfWeights). */
  weightBytes: 2 | 4;
  checkpointing: boolean;
  /** Text tokens per prompt (77 for SD1.5, the text encoder's max_position_embeddings). */
  tokens?: number;
}

export type MemoryLineKey =
  | 'unetWeights'
  | 'loraParams'
  | 'adamMoments'
  | 'batchInputs'
  | 'activationsKept'
  | 'loraGrads'
  | 'backwardGradients'
  | 'recompute'
  | 'referenceForward'
  | 'poolRounding';

export interface MemoryLine {
  key: MemoryLineKey;
  label: string;
  /** Bytes asked for (element count times element size), live at the step's peak. */
  bytes: number;
  /** What it counts, in a sentence. */
  note: string;
}

export interface MemoryPlan {
  input: Required<Omit<MemoryPlanInput, 'unet' | 'textEncoder' | 'vae'>> & { latent: number; rows: number; reference: boolean };
  /** What is live at the step's peak, by kind; their sum is peakBytes. */
  lines: MemoryLine[];
  /** The most pooled bytes in use at once during a step: what gpu.pool.peakBytesInUse reaches. */
  peakBytes: number;
  /** What the pool holds from the device after a step: per size class, the most buffers ever live at once. */
  reservedBytes: number;
  /** Component sizes, whatever is live at the peak. */
  sizes: {
    unetWeights: number;
    unetParams: number;
    loraModules: number;
    loraParams: number;
    /** All LoRA gradients (float32), live together once the backward ends. */
    loraGrads: number;
    adamMoments: number;
    batchInputs: number;
    /** Pooled bytes the policy forward leaves held for the backward (tape plus eps), each setting. */
    activationsKept: { checkpointing: number; noCheckpointing: number };
    /** Largest single buffer (pooled bytes): must fit the adapter's maxBufferSize. */
    largestBuffer: number;
  };
  /** Each phase's own peak: most pooled bytes it had in use at once beyond what was live when it began. */
  phases: { referenceForward: number; policyForward: number; backward: number };
  /** Weights loaded only to cache inputs or decode previews; not part of the training step. */
  notResident: { key: 'textEncoderWeights' | 'vaeWeights'; label: string; bytes: number; params: number; note: string }[];
}

// ---------------------------------------------------------------------------------------------------------
// The pool and Tensor, shadowed.

type Category =
  | 'weights'
  | 'lora'
  | 'adam'
  | 'inputs'
  | 'reference'
  | 'activations'
  | 'loraGrads'
  | 'backward'
  | 'recompute';

interface Storage {
  refs: number;
  bytes: number;
  pooled: number;
  category: Category;
}

/** BufferPool's accounting: every acquire rounded by sizeClass(), the peak, and the most buffers live per class. */
class SimPool {
  inUse = 0;
  peak = 0;
  largest = 0;
  private exact = new Map<Category, number>();
  private pooled = new Map<Category, number>();
  atPeak = { exact: new Map<Category, number>(), pooled: new Map<Category, number>() };
  private liveByClass = new Map<number, number>();
  private maxByClass = new Map<number, number>();
  category: Category = 'weights';
  /** Highest inUse seen since the current phase began. */
  phaseHigh = 0;

  acquire(bytes: number, category: Category = this.category): Storage {
    const pooled = sizeClass(bytes);
    this.inUse += pooled;
    this.largest = Math.max(this.largest, pooled);
    this.exact.set(category, (this.exact.get(category) ?? 0) + bytes);
    this.pooled.set(category, (this.pooled.get(category) ?? 0) + pooled);
    const live = (this.liveByClass.get(pooled) ?? 0) + 1;
    this.liveByClass.set(pooled, live);
    if (live > (this.maxByClass.get(pooled) ?? 0)) this.maxByClass.set(pooled, live);
    this.phaseHigh = Math.max(this.phaseHigh, this.inUse);
    if (this.inUse > this.peak) {
      this.peak = this.inUse;
      this.atPeak = { exact: new Map(this.exact), pooled: new Map(this.pooled) };
    }
    return { refs: 1, bytes, pooled, category };
  }

  release(s: Storage): void {
    this.inUse -= s.pooled;
    this.exact.set(s.category, this.exact.get(s.category)! - s.bytes);
    this.pooled.set(s.category, this.pooled.get(s.category)! - s.pooled);
    this.liveByClass.set(s.pooled, this.liveByClass.get(s.pooled)! - 1);
  }

  /** BufferPool.bytesAllocated after the work so far, starting from an empty pool. */
  get reserved(): number {
    let n = 0;
    for (const [size, count] of this.maxByClass) n += size * count;
    return n;
  }
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** nn/tensor.ts's Tensor without the buffer: shape, ownership, shared storage. */
class T {
  requiresGrad = false;
  /** A trainable leaf (a LoRA matrix): its gradient is a LoRA gradient. */
  isParam = false;
  private released = false;

  constructor(
    readonly pool: SimPool,
    readonly storage: Storage,
    readonly shape: readonly number[],
    private readonly owning = true,
  ) {}

  get size(): number {
    return numel(this.shape);
  }

  static empty(pool: SimPool, shape: readonly number[], category?: Category, bytesPerValue = 4): T {
    return new T(pool, pool.acquire(numel(shape) * bytesPerValue, category), shape);
  }

  view(shape: readonly number[] = this.shape): T {
    return new T(this.pool, this.storage, shape, false);
  }

  reshape(shape: readonly number[]): T {
    if (!this.owning) return this.view(shape);
    this.released = true;
    return new T(this.pool, this.storage, shape, true);
  }

  ref(shape: readonly number[] = this.shape): T {
    this.storage.refs++;
    return new T(this.pool, this.storage, shape, true);
  }

  release(): void {
    if (this.released || !this.owning) return;
    this.released = true;
    if (--this.storage.refs === 0) this.pool.release(this.storage);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The tape, shadowed (nn/tape.ts).

interface Node {
  inputs: T[];
  output: T;
  backward(dy: T): (T | undefined)[];
}

class SimTape {
  private nodes: Node[] = [];
  private held = new Set<T>();

  record(inputs: T[], output: T, backward: Node['backward']): void {
    if (!inputs.some((t) => t.requiresGrad)) return;
    output.requiresGrad = true;
    this.nodes.push({ inputs, output, backward });
  }

  hold(t: T): void {
    this.held.add(t);
  }

  backward(output: T, dOutput: T): Map<T, T> {
    const grads = new Map<T, T>([[output, dOutput.ref()]]);
    const produced = new Set(this.nodes.map((n) => n.output));
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const node = this.nodes[i];
      const g = grads.get(node.output);
      if (!g) continue;
      grads.delete(node.output);
      const inputGrads = node.backward(g);
      const seen = new Set<T>();
      node.inputs.forEach((input, j) => {
        let gi = inputGrads[j];
        if (!gi) return;
        if (gi === g || seen.has(gi)) gi = gi.ref();
        seen.add(gi);
        if (input.requiresGrad) accumulate(grads, input, gi);
        else gi.release();
      });
      g.release();
    }
    for (const [t, g] of grads) {
      if (produced.has(t)) {
        grads.delete(t);
        g.release();
      }
    }
    return grads;
  }

  dispose(): void {
    for (const t of this.held) t.release();
    this.held.clear();
    this.nodes.length = 0;
  }
}

function accumulate(grads: Map<T, T>, t: T, g: T): void {
  const prev = grads.get(t);
  if (!prev) {
    grads.set(t, g);
    return;
  }
  const sum = T.empty(g.pool, prev.shape, t.isParam ? 'loraGrads' : undefined);
  prev.release();
  g.release();
  grads.set(t, sum);
}

class SimCtx {
  constructor(
    readonly pool: SimPool,
    readonly tape: SimTape | null = null,
  ) {}

  free(...tensors: T[]): void {
    for (const t of tensors) {
      if (this.tape) this.tape.hold(t);
      else t.release();
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// The differentiable ops, shadowed (nn/functional.ts and the kernels' wrappers in nn/ops): outputs, saved
// tensors, and the gradients and temporaries each backward allocates, in the same order.

/** A gradient for `input`, shaped like it: a LoRA gradient when the input is a LoRA matrix. */
const gradFor = (input: T, shape: readonly number[] = input.shape) => T.empty(input.pool, shape, input.isParam ? 'loraGrads' : undefined);

function linear(ctx: SimCtx, x: T, weight: T, bias?: T): T {
  const y = T.empty(ctx.pool, [...x.shape.slice(0, -1), weight.shape[0]]);
  ctx.tape?.record(bias ? [x, weight, bias] : [x, weight], y, () => [
    x.requiresGrad ? gradFor(x) : undefined,
    weight.requiresGrad ? gradFor(weight) : undefined,
    bias?.requiresGrad ? gradFor(bias) : undefined,
  ]);
  return y;
}

/** ops/matmul.ts geometry(): the output shape of op(A) @ op(B) over leading batch dimensions. */
function matmulShape(a: T, b: T, transA: boolean, transB: boolean): number[] {
  const [ar, ac] = a.shape.slice(-2);
  const [br, bc] = b.shape.slice(-2);
  const m = transA ? ac : ar;
  const n = transB ? br : bc;
  const aLead = a.shape.slice(0, -2);
  const bLead = b.shape.slice(0, -2);
  const na = numel(aLead);
  const nb = numel(bLead);
  const lead = na > 1 ? aLead : nb > 1 ? bLead : aLead.length >= bLead.length ? aLead : bLead;
  return [...lead, m, n];
}

function matmul(ctx: SimCtx, a: T, b: T, opts: { transA?: boolean; transB?: boolean } = {}): T {
  const y = T.empty(ctx.pool, matmulShape(a, b, opts.transA ?? false, opts.transB ?? false));
  ctx.tape?.record([a, b], y, () => [a.requiresGrad ? gradFor(a) : undefined, b.requiresGrad ? gradFor(b) : undefined]);
  return y;
}

function conv2d(ctx: SimCtx, x: T, weight: T, bias: T | undefined, opts: { stride?: number; padding?: number } = {}): T {
  const [n, , h, w] = x.shape;
  const [cOut, , kh, kw] = weight.shape;
  const stride = opts.stride ?? 1;
  const pad = opts.padding ?? 0;
  const y = T.empty(ctx.pool, [n, cOut, Math.floor((h + 2 * pad - kh) / stride) + 1, Math.floor((w + 2 * pad - kw) / stride) + 1]);
  ctx.tape?.record(bias ? [x, weight, bias] : [x, weight], y, () => [
    x.requiresGrad ? gradFor(x) : undefined,
    weight.requiresGrad ? gradFor(weight) : undefined,
    bias?.requiresGrad ? gradFor(bias) : undefined,
  ]);
  return y;
}

/** Group / layer norm: y, then the [segments, 2] mean / rstd statistics, held only when a gradient is needed. */
function norm(ctx: SimCtx, x: T, gamma: T, beta: T, segments: number): T {
  const y = T.empty(ctx.pool, x.shape);
  const stats = T.empty(ctx.pool, [segments, 2]);
  if (ctx.tape && [x, gamma, beta].some((t) => t.requiresGrad)) {
    ctx.tape.hold(stats);
    ctx.tape.record([x, gamma, beta], y, () => [
      x.requiresGrad ? gradFor(x) : undefined,
      gamma.requiresGrad || beta.requiresGrad ? gradFor(gamma) : undefined,
      gamma.requiresGrad || beta.requiresGrad ? gradFor(beta) : undefined,
    ]);
  } else {
    stats.release();
  }
  return y;
}

const groupNorm = (ctx: SimCtx, x: T, gamma: T, beta: T, groups: number) => norm(ctx, x, gamma, beta, x.shape[0] * groups);
const layerNorm = (ctx: SimCtx, x: T, gamma: T, beta: T) => norm(ctx, x, gamma, beta, x.size / x.shape[x.shape.length - 1]);

function unary(ctx: SimCtx, x: T, outShape: readonly number[] = x.shape): T {
  const y = T.empty(ctx.pool, outShape);
  ctx.tape?.record([x], y, () => [gradFor(x)]);
  return y;
}

const activation = (ctx: SimCtx, x: T) => unary(ctx, x);
const geglu = (ctx: SimCtx, x: T) => unary(ctx, x, [...x.shape.slice(0, -1), x.shape[x.shape.length - 1] / 2]);
const scale = (ctx: SimCtx, x: T) => unary(ctx, x);
const upsampleNearest2x = (ctx: SimCtx, x: T) => unary(ctx, x, [x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3]]);

/** a + b: the backward passes dy itself to a and, only when b needs one, sums dy over b's broadcast. */
function add(ctx: SimCtx, a: T, b: T): T {
  const y = T.empty(ctx.pool, a.shape);
  ctx.tape?.record([a, b], y, (dy) => [dy, b.requiresGrad ? gradFor(b) : undefined]);
  return y;
}

/** Channel concat: the backward always allocates both halves. */
function concatChannels(ctx: SimCtx, a: T, b: T): T {
  const y = T.empty(ctx.pool, [a.shape[0], a.shape[1] + b.shape[1], ...a.shape.slice(2)]);
  ctx.tape?.record([a, b], y, () => [gradFor(a), gradFor(b)]);
  return y;
}

/** Fused attention: out and the [B, H, Nq] log-sum-exp; the backward's delta is a temporary, dk, dv, dq always made. */
function attention(ctx: SimCtx, q: T, k: T, v: T, heads: number): T {
  const [b, nq] = q.shape;
  const out = T.empty(ctx.pool, q.shape);
  const lse = T.empty(ctx.pool, [b, heads, nq]);
  if (ctx.tape && [q, k, v].some((t) => t.requiresGrad)) {
    ctx.tape.hold(lse);
    ctx.tape.record([q, k, v], out, () => {
      const delta = T.empty(q.pool, [b, heads, nq]);
      const dk = gradFor(k);
      const dv = gradFor(v);
      const dq = gradFor(q);
      delta.release();
      return [dq, dk, dv];
    });
  } else {
    lse.release();
  }
  return out;
}

function reshape(ctx: SimCtx, x: T, shape: readonly number[]): T {
  const y = x.ref(shape);
  ctx.tape?.record([x], y, (dy) => [dy.ref(x.shape)]);
  return y;
}

// ---------------------------------------------------------------------------------------------------------
// UNet.forward, shadowed block for block (models/unet.ts).

interface SimLoraModule {
  down: T;
  up: T;
}

class SimUNet {
  lora: Map<string, SimLoraModule> | null = null;
  loraEnabled = true;
  private readonly heads: number[];

  constructor(
    readonly pool: SimPool,
    readonly config: UNetConfig,
    readonly weights: Map<string, T>,
  ) {
    const h = config.num_attention_heads ?? config.attention_head_dim;
    this.heads = Array.isArray(h) ? h : config.block_out_channels.map(() => h);
  }

  private w(name: string): T {
    const t = this.weights.get(name);
    if (!t) throw new Error(`memory plan: the UNet has no weight ${name}`);
    return t;
  }

  private module(name: string): SimLoraModule | undefined {
    return this.loraEnabled ? this.lora?.get(name) : undefined;
  }

  private linear(ctx: SimCtx, name: string, x: T): T {
    const y = linear(ctx, x, this.w(`${name}.weight`), this.weights.get(`${name}.bias`));
    const m = this.module(name);
    if (!m) return y;
    const h = linear(ctx, x, m.down);
    const hu = linear(ctx, h, m.up);
    const delta = scale(ctx, hu);
    const out = add(ctx, y, delta);
    ctx.free(y, h, hu, delta);
    return out;
  }

  /** 1x1 weights used as [C', C] matrices (a view: no allocation). */
  private w2(name: string): T {
    const w = this.w(name);
    return w.view([w.shape[0], w.shape[1]]);
  }

  private projIn(ctx: SimCtx, name: string, x: T): T {
    const y = matmul(ctx, x, this.w2(`${name}.weight`), { transA: true, transB: true });
    const yb = add(ctx, y, this.w(`${name}.bias`));
    ctx.free(y);
    const m = this.module(name);
    if (!m) return yb;
    const h = matmul(ctx, x, m.down, { transA: true, transB: true });
    const hu = matmul(ctx, h, m.up, { transB: true });
    const out = add(ctx, yb, hu);
    ctx.free(yb, h, hu);
    return out;
  }

  private projOut(ctx: SimCtx, name: string, x: T): T {
    const y = matmul(ctx, this.w2(`${name}.weight`), x, { transB: true });
    const yb = add(ctx, y, this.w(`${name}.bias`));
    ctx.free(y);
    const m = this.module(name);
    if (!m) return yb;
    const h = matmul(ctx, m.down, x, { transB: true });
    const hu = matmul(ctx, m.up, h);
    const out = add(ctx, yb, hu);
    ctx.free(yb, h, hu);
    return out;
  }

  private resnet(ctx: SimCtx, name: string, x: T, tembAct: T, outputScale: number): T {
    const groups = this.config.norm_num_groups;
    const n1 = groupNorm(ctx, x, this.w(`${name}.norm1.weight`), this.w(`${name}.norm1.bias`), groups);
    const a1 = activation(ctx, n1);
    const c1 = conv2d(ctx, a1, this.w(`${name}.conv1.weight`), this.w(`${name}.conv1.bias`), { padding: 1 });
    const t = this.linear(ctx, `${name}.time_emb_proj`, tembAct);
    const h = add(ctx, c1, t);
    const n2 = groupNorm(ctx, h, this.w(`${name}.norm2.weight`), this.w(`${name}.norm2.bias`), groups);
    const a2 = activation(ctx, n2);
    const c2 = conv2d(ctx, a2, this.w(`${name}.conv2.weight`), this.w(`${name}.conv2.bias`), { padding: 1 });
    const shortcut = this.weights.has(`${name}.conv_shortcut.weight`)
      ? conv2d(ctx, x, this.w(`${name}.conv_shortcut.weight`), this.w(`${name}.conv_shortcut.bias`))
      : null;
    let out = add(ctx, shortcut ?? x, c2);
    ctx.free(n1, a1, c1, t, h, n2, a2, c2);
    if (shortcut) ctx.free(shortcut);
    if (outputScale !== 1) {
      const scaled = scale(ctx, out);
      ctx.free(out);
      out = scaled;
    }
    return out;
  }

  private attention(ctx: SimCtx, name: string, x: T, context: T, heads: number): T {
    const q = this.linear(ctx, `${name}.to_q`, x);
    const k = this.linear(ctx, `${name}.to_k`, context);
    const v = this.linear(ctx, `${name}.to_v`, context);
    const o = attention(ctx, q, k, v, heads);
    const out = this.linear(ctx, `${name}.to_out.0`, o);
    ctx.free(q, k, v, o);
    return out;
  }

  private transformer(ctx: SimCtx, name: string, x: T, context: T, heads: number): T {
    const [b, ch, hh, ww] = x.shape;
    const n = groupNorm(ctx, x, this.w(`${name}.norm.weight`), this.w(`${name}.norm.bias`), this.config.norm_num_groups);
    const n3 = reshape(ctx, n, [b, ch, hh * ww]);
    let h = this.projIn(ctx, `${name}.proj_in`, n3);
    ctx.free(n, n3);
    const blk = `${name}.transformer_blocks.0`;
    const ln = (i: number, t: T) => layerNorm(ctx, t, this.w(`${blk}.norm${i}.weight`), this.w(`${blk}.norm${i}.bias`));
    const residual = (next: T, ...temps: T[]) => {
      const sum = add(ctx, h, next);
      ctx.free(h, next, ...temps);
      h = sum;
    };
    const l1 = ln(1, h);
    residual(this.attention(ctx, `${blk}.attn1`, l1, l1, heads), l1);
    const l2 = ln(2, h);
    residual(this.attention(ctx, `${blk}.attn2`, l2, context, heads), l2);
    const l3 = ln(3, h);
    const f1 = this.linear(ctx, `${blk}.ff.net.0.proj`, l3);
    const g = geglu(ctx, f1);
    residual(this.linear(ctx, `${blk}.ff.net.2`, g), l3, f1, g);
    const o = this.projOut(ctx, `${name}.proj_out`, h);
    ctx.free(h);
    const o4 = reshape(ctx, o, x.shape);
    const out = add(ctx, o4, x);
    ctx.free(o, o4);
    return out;
  }

  /** UNet.block: with checkpointing and a tape, a no-tape forward now and a recorded recompute in the backward. */
  private block(ctx: SimCtx, checkpoint: boolean, prefix: string, inputs: T[], block: (c: SimCtx) => T): T {
    if (!checkpoint || !ctx.tape) return block(ctx);
    const loraParams = this.loraEnabled && this.lora ? [...this.lora].filter(([k]) => k.startsWith(`${prefix}.`)).flatMap(([, m]) => [m.down, m.up]) : [];
    const y = block(new SimCtx(ctx.pool, null));
    const recorded = [...inputs, ...loraParams];
    ctx.tape.record(recorded, y, (dy) => {
      const pool = ctx.pool;
      const outer = pool.category;
      pool.category = 'recompute';
      const sub = new SimTape();
      const y2 = block(new SimCtx(pool, sub));
      pool.category = outer;
      const grads = sub.backward(y2, dy);
      y2.release();
      sub.dispose();
      return recorded.map((t) => grads.get(t));
    });
    return y;
  }

  forward(ctx: SimCtx, sample: T, timesteps: T, context: T, checkpoint: boolean): T {
    const c = this.config;
    const pool = this.pool;
    const n = c.block_out_channels.length;
    const batch = timesteps.size;

    // timestepEmbedding(): its frequency table is uploaded, used and released.
    const half = Math.floor(c.block_out_channels[0] / 2);
    const table = T.empty(pool, [half, 2]);
    const tproj = T.empty(pool, [batch, c.block_out_channels[0]]);
    table.release();
    const t1 = this.linear(ctx, 'time_embedding.linear_1', tproj);
    const t2 = activation(ctx, t1);
    const temb = this.linear(ctx, 'time_embedding.linear_2', t2);
    ctx.free(tproj, t1, t2);
    const tembAct = activation(ctx, temb);
    ctx.free(temb);

    let h = conv2d(ctx, sample, this.w('conv_in.weight'), this.w('conv_in.bias'), { padding: 1 });
    const skips: T[] = [h];
    const resnet = (name: string, x: T, s = 1) => this.block(ctx, checkpoint, name, [x, tembAct], (cc) => this.resnet(cc, name, x, tembAct, s));
    const transformer = (name: string, x: T, heads: number) =>
      this.block(ctx, checkpoint, name, [x, context], (cc) => this.transformer(cc, name, x, context, heads));

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
        h = conv2d(ctx, h, this.w(`down_blocks.${i}.downsamplers.0.conv.weight`), this.w(`down_blocks.${i}.downsamplers.0.conv.bias`), { stride: 2, padding: pad });
        skips.push(h);
      }
    }

    const midScale = c.mid_block_scale_factor ?? 1;
    const m0 = resnet('mid_block.resnets.0', h, midScale);
    const m1 = transformer('mid_block.attentions.0', m0, this.heads[n - 1]);
    h = resnet('mid_block.resnets.1', m1, midScale);
    ctx.free(m0, m1);
    const headsUp = [...this.heads].reverse();
    for (let i = 0; i < n; i++) {
      const cross = c.up_block_types[i] === 'CrossAttnUpBlock2D';
      for (let j = 0; j <= c.layers_per_block; j++) {
        const skip = skips.pop()!;
        const cat = concatChannels(ctx, h, skip);
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
        const up = upsampleNearest2x(ctx, h);
        ctx.free(h);
        h = conv2d(ctx, up, this.w(`up_blocks.${i}.upsamplers.0.conv.weight`), this.w(`up_blocks.${i}.upsamplers.0.conv.bias`), { padding: 1 });
        ctx.free(up);
      }
    }
    const no = groupNorm(ctx, h, this.w('conv_norm_out.weight'), this.w('conv_norm_out.bias'), c.norm_num_groups);
    const act = activation(ctx, no);
    const out = conv2d(ctx, act, this.w('conv_out.weight'), this.w('conv_out.bias'), { padding: 1 });
    ctx.free(h, no, act, tembAct);
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------------
// One training step, replayed.

/** Rows the UNet sees per step for B examples, and whether the method needs the reference model. */
export function methodShape(method: LossMethod, batch: number): { rows: number; images: number; reference: boolean } {
  switch (method) {
    case 'tdpo':
    case 'tkto':
      return { rows: 2 * batch, images: batch, reference: true }; // c_w and c_l of each image, batched
    case 'dpo':
      return { rows: 2 * batch, images: 2 * batch, reference: true }; // x^w and x^l under one prompt
    case 'kto':
      return { rows: batch, images: batch, reference: true };
    case 'sft':
      return { rows: batch, images: batch, reference: false };
  }
}

interface StepResult {
  pool: SimPool;
  phases: MemoryPlan['phases'];
  /** Pooled bytes live when the policy forward returns beyond what was live before it. */
  kept: number;
}

interface StepSpec {
  unet: UNetConfig;
  params: ParamShapes;
  targets: Map<string, { in: number; out: number }>;
  rank: number;
  weightBytes: number;
  rows: number;
  images: number;
  latent: number;
  tokens: number;
  reference: boolean;
  checkpointing: boolean;
}

function simulateStep(s: StepSpec): StepResult {
  const pool = new SimPool();
  const c = s.unet;
  // Persistent: weights in declaration order (as loadFolderComponent uploads them), then the LoRA as
  // createLora makes it (sorted modules, A then B), then AdamW's moments.
  pool.category = 'weights';
  const weights = new Map<string, T>();
  for (const [name, shape] of s.params) weights.set(name, T.empty(pool, shape, 'weights', s.weightBytes));
  pool.category = 'lora';
  const lora = new Map<string, SimLoraModule>();
  for (const [name, t] of [...s.targets].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const down = T.empty(pool, [s.rank, t.in]);
    const up = T.empty(pool, [t.out, s.rank]);
    for (const p of [down, up]) p.requiresGrad = p.isParam = true;
    lora.set(name, { down, up });
  }
  pool.category = 'adam';
  for (const m of lora.values()) {
    for (const p of [m.down, m.up]) {
      T.empty(pool, p.shape);
      T.empty(pool, p.shape);
    }
  }
  T.empty(pool, [1]); // the squared gradient norm

  pool.category = 'inputs';
  const lat = [c.in_channels, s.latent, s.latent];
  T.empty(pool, [s.images, ...lat]); // x0, the cached latents
  T.empty(pool, [s.images, ...lat]); // eps
  const xt = T.empty(pool, [s.rows, ...lat]);
  const target = T.empty(pool, [s.rows, c.out_channels, s.latent, s.latent]);
  const timesteps = T.empty(pool, [s.rows]);
  const context = T.empty(pool, [s.rows, s.tokens, c.cross_attention_dim]);

  const unet = new SimUNet(pool, c, weights);
  unet.lora = lora;
  const phase = (category: Category) => {
    pool.category = category;
    pool.phaseHigh = pool.inUse;
    return pool.inUse;
  };

  let referenceForward = 0;
  if (s.reference) {
    const start = phase('reference');
    unet.loraEnabled = false;
    const epsRef = unet.forward(new SimCtx(pool, null), xt, timesteps, context, false);
    T.empty(pool, [s.rows]); // e_ref, kept for the loss
    epsRef.release();
    unet.loraEnabled = true;
    referenceForward = pool.phaseHigh - start;
  }

  const start = phase('activations');
  const tape = new SimTape();
  const eps = unet.forward(new SimCtx(pool, tape), xt, timesteps, context, s.checkpointing);
  const policyForward = pool.phaseHigh - start;
  const kept = pool.inUse - start;

  const bStart = phase('backward');
  const err = T.empty(pool, [s.rows]);
  const derr = T.empty(pool, [s.rows]);
  const deps = T.empty(pool, eps.shape);
  const grads = tape.backward(eps, deps);
  const backward = pool.phaseHigh - bStart;
  // AdamW reads the gradients in place; then the step lets everything go.
  for (const g of grads.values()) g.release();
  tape.dispose();
  for (const t of [eps, err, derr, deps]) t.release();
  return { pool, phases: { referenceForward, policyForward, backward }, kept };
}

// ---------------------------------------------------------------------------------------------------------
// The plan.

const sumBytes = (shapes: ParamShapes, bytesPerValue: number) => {
  let n = 0;
  for (const s of shapes.values()) n += numel(s) * bytesPerValue;
  return n;
};

const countParams = (shapes: ParamShapes) => {
  let n = 0;
  for (const s of shapes.values()) n += numel(s);
  return n;
};

const LINE_TEXT: Record<Exclude<MemoryLineKey, 'poolRounding'>, [Category[], string, string]> = {
  unetWeights: [['weights'], 'frozen UNet weights', 'every UNet parameter, shared by the policy and the reference (LoRA off); no gradients'],
  loraParams: [['lora'], 'LoRA parameters', 'A [rank, in] and B [out, rank] of each targeted layer, float32'],
  adamMoments: [['adam'], 'AdamW moments', "m and v for every LoRA matrix, float32, plus the gradient-norm accumulator"],
  batchInputs: [
    ['inputs'],
    'batch inputs',
    "cached latents x0 and noise of the batch's images; x_t, noise target, timesteps and text states of every row the UNet sees",
  ],
  activationsKept: [
    ['activations'],
    'activations kept for the backward',
    'what the policy forward leaves for the backward (the tape holds it until the step ends): every intermediate, norm statistics and attention log-sum-exps, or with checkpointing only each block\'s inputs and outputs, the skip connections and eps',
  ],
  loraGrads: [['loraGrads'], 'LoRA gradients', 'gradients of the LoRA matrices that exist at the peak (float32; all of them once the backward ends)'],
  backwardGradients: [
    ['backward'],
    'gradients in flight',
    "the backward's working set at the peak: gradients of activations not yet consumed (skip connections' wait for the down path), the loss gradient, each op's temporaries",
  ],
  recompute: [
    ['recompute'],
    'checkpoint recompute',
    "with checkpointing: the activations of the one block being recomputed, held by its own tape during that block's backward",
  ],
  referenceForward: [
    ['reference'],
    'reference forward (no tape)',
    'the reference forward (LoRA off) frees as it goes and ends before the policy forward; what remains are its per-row errors',
  ],
};

function normalise(input: MemoryPlanInput) {
  const { resolution, rank, batch } = input;
  if (!Number.isInteger(resolution) || resolution < 1) throw new Error(`resolution must be a positive whole number of pixels, got ${resolution}`);
  if (!Number.isInteger(rank) || rank < 1) throw new Error(`rank must be a positive whole number, got ${rank}`);
  if (!Number.isInteger(batch) || batch < 1) throw new Error(`batch must be a positive whole number, got ${batch}`);
  const method = input.method ?? 'tdpo';
  if (!LOSS_METHODS.includes(method)) throw new Error(`method must be one of ${LOSS_METHODS.join(', ')}, got ${method}`);
  if (input.weightBytes !== 2 && input.weightBytes !== 4) throw new Error(`weightBytes must be 2 (f16) or 4 (f32), got ${input.weightBytes}`);
  const vaeFactor = 2 ** ((input.vae?.block_out_channels.length ?? 4) - 1);
  const unetFactor = 2 ** (input.unet.block_out_channels.length - 1);
  if (resolution % (vaeFactor * unetFactor) !== 0) {
    throw new Error(`resolution ${resolution} must be a multiple of ${vaeFactor * unetFactor} (the VAE's ${vaeFactor}x times the UNet's ${unetFactor}x downsampling)`);
  }
  const tokens = input.tokens ?? input.textEncoder?.max_position_embeddings ?? 77;
  if (!Number.isInteger(tokens) || tokens < 1) throw new Error(`tokens must be a positive whole number, got ${tokens}`);
  return {
    resolution,
    rank,
    alpha: input.alpha ?? rank,
    targets: [...(input.targets ?? DEFAULT_TARGETS)],
    batch,
    method,
    weightBytes: input.weightBytes,
    checkpointing: input.checkpointing,
    tokens,
    latent: resolution / vaeFactor,
  };
}

/** The GPU memory one training step takes in this engine, by kind, without touching a GPU. */
export function planMemory(input: MemoryPlanInput): MemoryPlan {
  const n = normalise(input);
  const params = unetParams(input.unet);
  const targets = loraTargets(params, n.targets);
  if (targets.size === 0) throw new Error(`no UNet layer matches the LoRA targets ${n.targets.join(', ')}`);
  const shape = methodShape(n.method, n.batch);
  const spec = (checkpointing: boolean): StepSpec => ({
    unet: input.unet,
    params,
    targets,
    rank: n.rank,
    weightBytes: n.weightBytes,
    rows: shape.rows,
    images: shape.images,
    latent: n.latent,
    tokens: n.tokens,
    reference: shape.reference,
    checkpointing,
  });
  const step = simulateStep(spec(n.checkpointing));
  const other = simulateStep(spec(!n.checkpointing));
  const { pool } = step;

  const exactAt = (cats: Category[]) => cats.reduce((a, k) => a + (pool.atPeak.exact.get(k) ?? 0), 0);
  const pooledAt = (cats: Category[]) => cats.reduce((a, k) => a + (pool.atPeak.pooled.get(k) ?? 0), 0);
  const lines: MemoryLine[] = Object.entries(LINE_TEXT).map(([key, [cats, label, note]]) => ({
    key: key as MemoryLineKey,
    label,
    bytes: exactAt(cats),
    note,
  }));
  const allCats = Object.values(LINE_TEXT).flatMap(([cats]) => cats);
  lines.push({
    key: 'poolRounding',
    label: 'pool size-class rounding',
    bytes: pooledAt(allCats) - exactAt(allCats),
    note: 'the buffer pool rounds every buffer up to its size class (at most 1/8 above 2 KiB, 256 B below): the extra bytes at the peak',
  });
  const ref = lines.find((l) => l.key === 'referenceForward')!;
  ref.note += shape.reference
    ? `; its own peak is ${formatBytes(step.phases.referenceForward)} above the persistent buffers, below the policy's`
    : '; this method needs no reference model';
  if (shape.reference && step.phases.referenceForward > Math.max(step.phases.policyForward, step.phases.backward)) {
    ref.note = ref.note.replace(", below the policy's", ', the largest of the step');
  }

  const loraParamCount = [...targets.values()].reduce((a, t) => a + n.rank * (t.in + t.out), 0);
  const kept = { [n.checkpointing ? 'checkpointing' : 'noCheckpointing']: step.kept, [n.checkpointing ? 'noCheckpointing' : 'checkpointing']: other.kept } as {
    checkpointing: number;
    noCheckpointing: number;
  };
  const notResident: MemoryPlan['notResident'] = [];
  if (input.textEncoder) {
    const shapes = clipTextParamShapes(input.textEncoder);
    notResident.push({
      key: 'textEncoderWeights',
      label: 'text encoder weights',
      bytes: sumBytes(shapes, n.weightBytes),
      params: countParams(shapes),
      note: 'used once to cache the text states of every caption before training; released before the first step',
    });
  }
  if (input.vae) {
    const shapes = vaeParamShapes(input.vae);
    notResident.push({
      key: 'vaeWeights',
      label: 'VAE weights',
      bytes: sumBytes(shapes, n.weightBytes),
      params: countParams(shapes),
      note: 'used once to cache the latents of every image (and to decode sample previews), not during a step',
    });
  }

  return {
    input: { ...n, rows: shape.rows, reference: shape.reference },
    lines,
    peakBytes: pool.peak,
    reservedBytes: pool.reserved,
    sizes: {
      unetWeights: sumBytes(params, n.weightBytes),
      unetParams: countParams(params),
      loraModules: targets.size,
      loraParams: loraParamCount,
      loraGrads: loraParamCount * 4,
      adamMoments: 2 * loraParamCount * 4,
      batchInputs: (2 * shape.images + 2 * shape.rows) * input.unet.in_channels * n.latent ** 2 * 4 + shape.rows * 4 + shape.rows * n.tokens * input.unet.cross_attention_dim * 4,
      activationsKept: kept,
      largestBuffer: pool.largest,
    },
    phases: step.phases,
    notResident,
  };
}

/** Whether a plan fits a memory budget: judged on what the pool holds after a step (peak plus size-class reuse). */
export function fitsIn(plan: MemoryPlan, budgetBytes: number): boolean {
  return plan.reservedBytes <= budgetBytes;
}
