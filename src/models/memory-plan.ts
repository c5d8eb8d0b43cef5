// How much GPU memory one training step of this engine takes, worked out without a GPU: `tpo-lab plan` prints
// it, and the app's "will it fit" message uses the same numbers. No GPU, no Node APIs.
//
// Method: the trainer's own step (Trainer.step: every method, gradient accumulation, the reference forward,
// checkpointing, the backward, AdamW) runs on a counting device (gpu/counting.ts) that allocates nothing and
// runs no kernel, over placeholder weights and zero-valued inputs of the real shapes. The buffer pool counts
// every buffer as the real run would, so the plan is the engine's allocation by construction. The trainer marks
// its phases on the pool (pool.phase: batch inputs, reference forward, policy forward, backward), gradient
// checkpointing (nn/checkpoint.ts) tags a block's recompute, and the trainer tags parameter gradients: the pool reports what each tag has
// live at the step's peak (the lines) and each phase's own high-water mark. tests/unit/memory-plan.test.ts checks
// the plan against a run of the same step on a real device, to the byte, for every method.
// Not counted: uniform blocks, readback staging buffers and pipelines (not pooled; a few MiB at most).

import { countingGpu } from '../gpu/counting';
import type { PoolAccount } from '../gpu/pool';
import type { FeatureStore } from '../tpo/features';
import type { Features } from '../tpo/batch';
import type { TrainExample } from '../tpo/examples';
import { LOSS_METHODS, type LossMethod } from '../tpo/methods';
import { createTrainerLora, defaultTrainConfig, type TrainConfig, Trainer } from '../tpo/trainer';
import { formatBytes } from '../util/format';
import { clipTextParamShapes, type ClipTextConfig } from './clip-text';
import { DEFAULT_TARGETS, loraTargets } from './lora';
import { UNet, unetParamShapes, type UNetConfig } from './unet';
import { vaeParamShapes, type VaeConfig } from './vae';
import { placeholderWeights, type ParamShapes } from './weights';

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
  /** Examples per micro-batch (B). */
  batch: number;
  /** Micro-batches per step (their gradients are summed before the update). Default 1. */
  gradAccum?: number;
  /** Default 'tdpo'. */
  method?: LossMethod;
  /** Bytes per frozen weight value: 4 (f32) or 2 (f16 storage of the matrices, the loader's halfWeights). */
  weightBytes: 2 | 4;
  checkpointing: boolean;
  /** Text tokens per prompt (77 for SD1.5, the text encoder's max_position_embeddings). */
  tokens?: number;
}

/** The lines of a plan; all but poolRounding are the tags the trainer and the model mark on the pool. */
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
    unetParamShapes: number;
    loraModules: number;
    loraParams: number;
    /** All LoRA gradients (float32), live together once the backward ends. */
    loraGrads: number;
    adamMoments: number;
    /** Pooled bytes of one micro-batch's inputs. */
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

const LINE_TEXT: Record<Exclude<MemoryLineKey, 'poolRounding'>, [string, string]> = {
  unetWeights: ['frozen UNet weights', 'every UNet parameter, shared by the policy and the reference (LoRA off); no gradients'],
  loraParams: ['LoRA parameters', 'A [rank, in] and B [out, rank] of each targeted layer, float32'],
  adamMoments: ['AdamW moments', 'm and v for every LoRA matrix, float32, plus the gradient-norm accumulator'],
  batchInputs: [
    'batch inputs',
    "x_t, the regression target, timesteps and text states of every row the UNet sees (each example's matched and mismatched row)",
  ],
  activationsKept: [
    'activations kept for the backward',
    "what the policy forward leaves for the backward (the tape holds it until the micro-batch ends): every intermediate, norm statistics and attention log-sum-exps, or with checkpointing only each block's inputs and outputs, the skip connections and eps",
  ],
  loraGrads: ['LoRA gradients', 'gradients of the LoRA matrices that exist at the peak (float32; all of them once the backward ends, and across micro-batches)'],
  backwardGradients: [
    'gradients in flight',
    "the backward's working set at the peak: gradients of activations not yet consumed (skip connections' wait for the down path), the loss and its gradient, each op's temporaries",
  ],
  recompute: ['checkpoint recompute', "with checkpointing: the activations of the one block being recomputed, held by its own tape during that block's backward"],
  referenceForward: [
    'reference forward (no tape)',
    'the reference forward (LoRA off) frees as it goes and ends before the policy forward; its output eps_ref stays for the loss',
  ],
};

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

const sumBytes = (shapes: ParamShapes, bytesPerValue: number) => {
  let n = 0;
  for (const s of shapes.values()) n += numel(s) * bytesPerValue;
  return n;
};

const countParams = (shapes: ParamShapes) => sumBytes(shapes, 1);

function normalise(input: MemoryPlanInput) {
  const { resolution, rank, batch } = input;
  if (!Number.isInteger(resolution) || resolution < 1) throw new Error(`resolution must be a positive whole number of pixels, got ${resolution}`);
  if (!Number.isInteger(rank) || rank < 1) throw new Error(`rank must be a positive whole number, got ${rank}`);
  if (!Number.isInteger(batch) || batch < 1) throw new Error(`batch must be a positive whole number, got ${batch}`);
  const gradAccum = input.gradAccum ?? 1;
  if (!Number.isInteger(gradAccum) || gradAccum < 1) throw new Error(`gradAccum must be a positive whole number, got ${gradAccum}`);
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
    gradAccum,
    method,
    weightBytes: input.weightBytes,
    checkpointing: input.checkpointing,
    tokens,
    latent: resolution / vaeFactor,
  };
}

/**
 * B examples whose inputs are all zeros of the step's shapes (latents [C, latent, latent], text states
 * [tokens, cross_attention_dim]): what a step allocates does not depend on the values. The test runs the real
 * device on the same data.
 */
export function planningData(unet: UNetConfig, latent: number, tokens: number, batch: number): { examples: TrainExample[]; features: Features } {
  const examples = Array.from({ length: batch }, (_, i): TrainExample => ({ id: `${i}`, group: `${i}`, w: { image: `w${i}`, caption: `w${i}` }, l: { image: `l${i}`, caption: `l${i}` } }));
  const latentShape = [unet.in_channels, latent, latent];
  const textShape = [tokens, unet.cross_attention_dim];
  const names = examples.flatMap((e) => [e.w.image, e.l.image]);
  const store: FeatureStore = {
    get: async (key) => new Float32Array(numel(key === 'latent' ? latentShape : textShape)),
    put: async () => {},
  };
  return {
    examples,
    features: { store, keys: { latent: new Map(names.map((n) => [n, 'latent'])), text: new Map(names.map((n) => [n, 'text'])), latentShape, textShape } },
  };
}

/** The training config a plan's step runs with (one step; the rest are the method's defaults, which cost no memory). */
export function planningConfig(input: MemoryPlanInput): TrainConfig {
  const n = normalise(input);
  return {
    ...defaultTrainConfig(n.method),
    steps: 1,
    batchSize: n.batch,
    gradAccum: n.gradAccum,
    rank: n.rank,
    alpha: n.alpha,
    targets: n.targets,
    resolution: n.resolution,
    gradientCheckpointing: n.checkpointing,
  };
}

/** One step on a counting device: the pool's account, its peak and what it held. */
async function dryRun(input: MemoryPlanInput) {
  const n = normalise(input);
  const unetConfig = input.unet;
  const gpu = countingGpu();
  const pool = gpu.pool;
  pool.startAccount();
  // Persistent buffers in the order the app makes them: the weights, the LoRA, then the trainer's AdamW.
  pool.phase('unetWeights');
  const unet = new UNet(gpu, unetConfig, placeholderWeights(gpu, unetParamShapes(unetConfig), n.weightBytes === 2));
  const config = planningConfig(input);
  pool.phase('loraParams');
  unet.lora = createTrainerLora(gpu, unet, config);
  pool.phase('adamMoments');
  const { examples, features } = planningData(unetConfig, n.latent, n.tokens, n.batch);
  await new Trainer(gpu, unet, examples, features, config).step();
  return { account: pool.accounted(), peak: pool.peakBytesInUse, reserved: pool.peakBytesAllocated };
}

const phaseOf = (account: PoolAccount, name: string) => account.phases.get(name) ?? { high: 0, left: 0 };

/** The GPU memory one training step takes in this engine, by kind, without touching a GPU. */
export async function planMemory(input: MemoryPlanInput): Promise<MemoryPlan> {
  const n = normalise(input);
  const params = unetParamShapes(input.unet);
  const targets = loraTargets(input.unet, n.targets);
  if (targets.size === 0) throw new Error(`no UNet layer matches the LoRA targets ${n.targets.join(', ')}`);
  const step = await dryRun(input);
  const other = await dryRun({ ...input, checkpointing: !n.checkpointing });
  const { atPeak } = step.account;

  const exact = (key: string) => atPeak.get(key)?.exact ?? 0;
  const lines: MemoryLine[] = Object.entries(LINE_TEXT).map(([key, [label, note]]) => ({ key: key as MemoryLineKey, label, bytes: exact(key), note }));
  const all = [...atPeak.values()];
  lines.push({
    key: 'poolRounding',
    label: 'pool size-class rounding',
    bytes: step.peak - all.reduce((a, v) => a + v.exact, 0),
    note: 'the buffer pool rounds every buffer up to its size class (at most 1/8 above 2 KiB, 256 B below): the extra bytes at the peak',
  });
  const phases = {
    referenceForward: phaseOf(step.account, 'referenceForward').high,
    policyForward: phaseOf(step.account, 'activationsKept').high,
    backward: phaseOf(step.account, 'backwardGradients').high,
  };
  const ref = lines.find((l) => l.key === 'referenceForward')!;
  ref.note += phases.referenceForward > Math.max(phases.policyForward, phases.backward)
    ? `; its own peak is ${formatBytes(phases.referenceForward)} above the persistent buffers, the largest of the step`
    : `; its own peak is ${formatBytes(phases.referenceForward)} above the persistent buffers, below the policy's`;

  const loraParamCount = [...targets.values()].reduce((a, t) => a + n.rank * (t.in + t.out), 0);
  const keptBy = (run: typeof step) => phaseOf(run.account, 'activationsKept').left;
  const activationsKept = n.checkpointing
    ? { checkpointing: keptBy(step), noCheckpointing: keptBy(other) }
    : { checkpointing: keptBy(other), noCheckpointing: keptBy(step) };
  const notResident: MemoryPlan['notResident'] = [];
  // The loader stores only the UNet's matrices as float16: the text encoder and the VAE stay float32.
  if (input.textEncoder) {
    const shapes = clipTextParamShapes(input.textEncoder);
    notResident.push({
      key: 'textEncoderWeights',
      label: 'text encoder weights',
      bytes: sumBytes(shapes, 4),
      params: countParams(shapes),
      note: 'used once to cache the text states of every caption before training; released before the first step',
    });
  }
  if (input.vae) {
    const shapes = vaeParamShapes(input.vae);
    notResident.push({
      key: 'vaeWeights',
      label: 'VAE weights',
      bytes: sumBytes(shapes, 4),
      params: countParams(shapes),
      note: 'used once to cache the latents of every image (and to decode sample previews), not during a step',
    });
  }

  return {
    // Every LoRA method batches each example's matched and mismatched rows and runs the reference forward.
    input: { ...n, rows: 2 * n.batch, reference: true },
    lines,
    peakBytes: step.peak,
    reservedBytes: step.reserved,
    sizes: {
      unetWeights: step.account.atPeak.get('unetWeights')?.exact ?? 0,
      unetParamShapes: countParams(params),
      loraModules: targets.size,
      loraParams: loraParamCount,
      loraGrads: loraParamCount * 4,
      adamMoments: 2 * loraParamCount * 4,
      batchInputs: phaseOf(step.account, 'batchInputs').left,
      activationsKept,
      largestBuffer: step.account.largest,
    },
    phases,
    notResident,
  };
}

/** Whether a plan fits a memory budget: judged on what the pool holds after a step (peak plus size-class reuse). */
export function fitsIn(plan: MemoryPlan, budgetBytes: number): boolean {
  return plan.reservedBytes <= budgetBytes;
}
