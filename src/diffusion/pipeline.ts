// Text to image, as diffusers' StableDiffusionPipeline runs it: prompts and the negative (or empty) prompt
// through the text encoder, seeded starting latents, the sampler's loop with classifier-free guidance
// (eps_u + g (eps_c - eps_u), both halves in one UNet batch; the conditional half alone when g = 1), then the
// VAE decoder on latents / scaling_factor and PIL's conversion to bytes. A v_prediction model's output is read
// as eps before each step (after guidance), as diffusers' schedulers read it. The LoRA applies at a multiplier
// on the same loaded weights (0 = the base model). No tape: every step's activations are freed as it goes.
// Shared by `tpo-lab sample`, the trainer's previews, the golden check and the app.

import type { Gpu } from '../gpu/gpu';
import { clipTextForward, type ClipTextModel, loadClipTextModel } from '../models/clip-text';
import { createClipTokenizer, type ClipTokenizer } from '../models/tokenizer';
import type { UNet } from '../models/unet';
import { type AutoencoderKL, loadVae, vaeDecode } from '../models/vae';
import { readConfig, type ModelFiles } from '../models/weights';
import { scale } from '../nn/ops/elementwise';
import { Ctx } from '../nn/tape';
import { Tensor } from '../nn/tensor';
import { drawRandom, normals } from '../tpo/random';
import { createSampler, SAMPLER_LABELS, type SamplerName, SAMPLERS } from './samplers';
import { epsilonFromVelocity, linearCombination, predictionType, roundHalfEven, SD15_SCHEDULER, type SchedulerConfig } from './schedule';

export interface SampleSettings {
  sampler: SamplerName;
  steps: number;
  /** Classifier-free guidance scale; 1 runs the conditional branch alone. */
  guidance: number;
  /** DDIM's eta (0: deterministic). */
  eta: number;
  width: number;
  height: number;
  /** The unconditional branch's prompt ('' as diffusers does when none is given). */
  negativePrompt: string;
  /** LoRA multiplier; 0 samples the base model. */
  loraScale: number;
}

export const DEFAULT_SAMPLE_SETTINGS: SampleSettings = {
  sampler: 'ddim',
  steps: 20,
  guidance: 7.5,
  eta: 0,
  width: 512,
  height: 512,
  negativePrompt: '',
  loraScale: 1,
};

/** Checks settings (against a model's VAE factor when given); says what is wrong. */
export function validateSampleSettings(s: SampleSettings, model?: { unet: UNet; vae: AutoencoderKL }): void {
  const bad = (m: string) => {
    throw new Error(`sampling: ${m}`);
  };
  if (!SAMPLERS.includes(s.sampler)) bad(`unknown sampler ${s.sampler} (use ${SAMPLERS.join(', ')})`);
  if (!Number.isInteger(s.steps) || s.steps < 1 || s.steps > 1000) bad(`steps must be a whole number from 1 to 1000, got ${s.steps}`);
  if (!Number.isFinite(s.guidance) || s.guidance < 0) bad(`guidance must be a number >= 0, got ${s.guidance}`);
  if (!Number.isFinite(s.eta) || s.eta < 0) bad(`eta must be a number >= 0, got ${s.eta}`);
  if (!Number.isFinite(s.loraScale)) bad(`the LoRA scale must be a number, got ${s.loraScale}`);
  // Any multiple of the VAE's factor works: the UNet meets odd latent sizes as diffusers does.
  const factor = model ? latentFactor(model.vae) : 8;
  for (const [name, v] of [['width', s.width], ['height', s.height]] as const) {
    if (!Number.isInteger(v) || v < factor || v % factor !== 0 || v > 4096) bad(`${name} ${v} must be a multiple of ${factor} from ${factor} to 4096`);
  }
}

/** Pixels per latent along a side: 2^(VAE blocks - 1), 8 for SD1.5. */
export function latentFactor(vae: AutoencoderKL): number {
  return 2 ** (vae.config.block_out_channels.length - 1);
}

/**
 * Starting latents [B, C, h, w]: image b is standard normal noise from its own seed (mulberry32 over
 * FNV-1a of (seed, "latents"), Box-Muller), so one seed gives one image whatever the batch around it.
 */
export function startLatents(seeds: readonly number[], latentShape: readonly [number, number, number]): Float32Array {
  const n = latentShape[0] * latentShape[1] * latentShape[2];
  const out = new Float32Array(seeds.length * n);
  seeds.forEach((seed, b) => out.set(normals(drawRandom(seed, 'latents'), n), b * n));
  return out;
}

/** Stacks [B, ...] tensors along the batch: a copy, the inputs stay the caller's. */
export function concatBatch(gpu: Gpu, parts: readonly Tensor[]): Tensor {
  const rest = parts[0].shape.slice(1);
  const out = Tensor.empty(gpu, [parts.reduce((a, t) => a + t.shape[0], 0), ...rest]);
  let offset = 0;
  for (const t of parts) {
    if (t.shape.slice(1).join() !== rest.join()) throw new Error(`concatBatch: [${t.shape}] does not stack with [${parts[0].shape}]`);
    gpu.copy(t.buffer, out.buffer, t.size * 4, 0, offset);
    offset += t.size * 4;
  }
  return out;
}

/** Rows [start, start + count) of a [B, ...] tensor, as a new tensor. */
export function sliceBatch(gpu: Gpu, t: Tensor, start: number, count: number): Tensor {
  const row = t.size / t.shape[0];
  const out = Tensor.empty(gpu, [count, ...t.shape.slice(1)]);
  gpu.copy(t.buffer, out.buffer, count * row * 4, start * row * 4, 0);
  return out;
}

export interface DenoiseInput {
  /** Starting latents [B, C, h, w], standard normal (scaled by the sampler's initNoiseSigma here). */
  latents: Tensor;
  /** Text states of the prompts [B, N, D]. */
  cond: Tensor;
  /** Text states of the negative prompt [B, N, D]; needed when guidance is not 1. */
  uncond: Tensor | null;
  /** Per-image seeds for DDIM's eta noise. */
  seeds?: readonly number[];
}

export interface DenoiseOptions {
  sampler: SamplerName;
  steps: number;
  guidance: number;
  eta?: number;
  scheduler?: SchedulerConfig;
  /** After step i (0-based) with the latents then; may read them. */
  onStep?: (i: number, latents: Tensor) => void | Promise<void>;
}

/** The sampler's loop over the UNet. Returns the final latents [B, C, h, w] (the caller owns them). */
export async function denoise(unet: UNet, input: DenoiseInput, o: DenoiseOptions): Promise<Tensor> {
  const gpu = unet.gpu;
  const b = input.latents.shape[0];
  const guided = o.guidance !== 1;
  if (guided && !input.uncond) throw new Error('denoise: guidance other than 1 needs the unconditional text states');
  const scheduler = o.scheduler ?? SD15_SCHEDULER;
  const sampler = createSampler(o.sampler, o.steps, scheduler, { eta: o.eta });
  const velocityModel = predictionType(scheduler) === 'v_prediction';
  // Both halves in one batch, unconditional first as diffusers orders them.
  const context = guided ? concatBatch(gpu, [input.uncond!, input.cond]) : input.cond;
  let latents = scale(input.latents, sampler.initNoiseSigma);
  const noise = (i: number) => () => {
    const seeds = input.seeds ?? Array.from({ length: b }, (_, j) => j);
    const shape = input.latents.shape.slice(1) as [number, number, number];
    const values = new Float32Array(input.latents.size);
    const n = values.length / b;
    seeds.forEach((seed, j) => values.set(normals(drawRandom(seed, 'eta-noise', i), n), j * n));
    return Tensor.from(gpu, values, [b, ...shape]);
  };
  try {
    for (let i = 0; i < sampler.timesteps.length; i++) {
      const t = sampler.timesteps[i];
      const scaled = scale(latents, sampler.inputScale(i));
      const x = guided ? concatBatch(gpu, [scaled, scaled]) : scaled;
      const timesteps = Tensor.from(gpu, new Float32Array(x.shape[0]).fill(t), [x.shape[0]]);
      const out = await unet.forward(new Ctx(gpu), x, timesteps, context);
      timesteps.release();
      if (x !== scaled) x.release();
      let eps = out;
      if (guided) {
        const u = sliceBatch(gpu, out, 0, b);
        const c = sliceBatch(gpu, out, b, b);
        out.release();
        // eps_u + g (eps_c - eps_u), in PyTorch's order of operations.
        const diff = linearCombination([[c, 1], [u, -1]]);
        eps = linearCombination([[u, 1], [diff, o.guidance]]);
        for (const z of [u, c, diff]) z.release();
      }
      if (velocityModel) {
        const v = eps;
        eps = epsilonFromVelocity(v, scaled, sampler.alphaBar(i));
        v.release();
      }
      scaled.release();
      const next = sampler.step(latents, eps, i, noise(i));
      eps.release();
      latents.release();
      latents = next;
      if (o.onStep) await o.onStep(i, latents);
    }
    return latents;
  } catch (e) {
    latents.release();
    throw e;
  } finally {
    sampler.release();
    if (context !== input.cond) context.release();
  }
}

/** The VAE decoder on latents / scaling_factor: images [B, 3, H, W], roughly in [-1, 1]. */
export function decodeLatents(vae: AutoencoderKL, latents: Tensor, options: { trimBetweenLevels?: boolean } = {}): Tensor {
  const z = scale(latents, 1 / vae.config.scaling_factor);
  const image = vaeDecode(vae, z, options);
  z.release();
  return image;
}

/**
 * Decoded images [B, 3, H, W] -> bytes: round(clamp(x / 2 + 0.5, 0, 1) * 255) per channel, as diffusers
 * hands images to PIL. Returns B RGBA images (alpha 255), row-major.
 */
export function imagesToRgba(values: Float32Array, shape: readonly number[]): Uint8Array[] {
  const [b, c, h, w] = shape;
  if (c !== 3) throw new Error(`imagesToRgba: expected 3 channels, got ${c}`);
  const plane = h * w;
  return Array.from({ length: b }, (_, i) => {
    const rgba = new Uint8Array(plane * 4);
    for (let p = 0; p < plane; p++) {
      for (let ch = 0; ch < 3; ch++) {
        // diffusers computes x / 2 + 0.5 in float32 before clamping.
        const x = Math.fround(Math.fround(values[(i * 3 + ch) * plane + p] / 2) + 0.5);
        rgba[p * 4 + ch] = roundHalfEven(Math.fround(Math.min(1, Math.max(0, x)) * 255));
      }
      rgba[p * 4 + 3] = 255;
    }
    return rgba;
  });
}

/** One image of a request: its prompt and its seed. */
export interface SampleItem {
  prompt: string;
  seed: number;
}

export interface SampledImage extends SampleItem {
  width: number;
  height: number;
  /** RGBA, row-major. */
  rgba: Uint8Array;
}

/**
 * The three networks and the tokenizer of a text-to-image model, with the scheduler config. The UNet (and
 * its LoRA) belongs to the caller; the text encoder and VAE are loaded here (or given) and released by
 * release() when this object owns them.
 */
export class TextToImage {
  private constructor(
    readonly unet: UNet,
    readonly text: ClipTextModel,
    readonly vae: AutoencoderKL,
    readonly tokenizer: ClipTokenizer,
    readonly scheduler: SchedulerConfig,
    private readonly owned: boolean,
  ) {}

  /** Loads the text encoder, VAE, tokenizer and scheduler config of a diffusers folder beside `unet`. */
  static async load(unet: UNet, files: ModelFiles): Promise<TextToImage> {
    const scheduler = await loadSchedulerConfig(files);
    const tokenizer = createClipTokenizer({ vocab: await files.readText('tokenizer/vocab.json'), merges: await files.readText('tokenizer/merges.txt') });
    const text = await loadClipTextModel(unet.gpu, files);
    try {
      const vae = await loadVae(unet.gpu, files);
      return new TextToImage(unet, text, vae, tokenizer, scheduler, true);
    } catch (e) {
      text.release();
      throw e;
    }
  }

  static from(parts: { unet: UNet; text: ClipTextModel; vae: AutoencoderKL; tokenizer: ClipTokenizer; scheduler: SchedulerConfig }): TextToImage {
    return new TextToImage(parts.unet, parts.text, parts.vae, parts.tokenizer, parts.scheduler, false);
  }

  get gpu(): Gpu {
    return this.unet.gpu;
  }

  /** Wall-clock milliseconds of the last sample() call's phases (encoding, each UNet evaluation, decoding). */
  lastTiming: { encodeMs: number; unetMsPerStep: number; decodeMs: number; totalMs: number } | null = null;

  /** Text states of prompts encoded before the text encoder was let go (see keepOnly). */
  private readonly cached = new Map<string, Float32Array>();
  private textReleased = false;

  /** Text states [B, 77, D] of prompts. */
  encode(prompts: readonly string[]): Tensor {
    if (prompts.every((p) => this.cached.has(p))) {
      const rows = prompts.map((p) => this.cached.get(p)!);
      const n = rows[0].length;
      const values = new Float32Array(rows.length * n);
      rows.forEach((r, i) => values.set(r, i * n));
      return Tensor.from(this.gpu, values, [rows.length, this.tokenizer.maxLength, n / this.tokenizer.maxLength]);
    }
    if (this.textReleased) throw new Error(`the text encoder was released; only these prompts can be drawn: ${[...this.cached.keys()].join(' | ')}`);
    return clipTextForward(this.text, prompts.map((p) => this.tokenizer.encodeForModel(p)));
  }

  /**
   * Encodes `prompts` once, keeps their states on the host and releases the text encoder: a trainer's
   * previews draw the same prompts for the whole run, and the encoder's memory is better spent on training.
   */
  async keepOnly(prompts: readonly string[]): Promise<void> {
    for (const p of new Set(prompts)) {
      if (this.cached.has(p)) continue;
      const states = this.encode([p]);
      this.cached.set(p, await states.read());
      states.release();
    }
    if (this.owned && !this.textReleased) this.text.release();
    this.textReleased = true;
  }

  /**
   * Samples one image per item, all in one batch (two UNet rows per image with guidance). Settings are
   * checked first; the UNet's LoRA switch and multiplier are restored afterwards.
   */
  async sample(items: readonly SampleItem[], settings: SampleSettings, onStep?: (i: number, steps: number) => void): Promise<SampledImage[]> {
    validateSampleSettings(settings, this);
    if (items.length === 0) return [];
    const { gpu, unet } = this;
    const factor = latentFactor(this.vae);
    const channels = unet.config.in_channels;
    const latentShape: [number, number, number] = [channels, settings.height / factor, settings.width / factor];
    const t0 = performance.now();
    const latents = Tensor.from(gpu, startLatents(items.map((x) => x.seed), latentShape), [items.length, ...latentShape]);
    const cond = this.encode(items.map((x) => x.prompt));
    const uncond = settings.guidance !== 1 ? this.encode(items.map(() => settings.negativePrompt)) : null;
    // Timing waits for the GPU between phases: three syncs per image, nothing next to the sampling itself.
    await gpu.sync();
    const t1 = performance.now();
    const saved = { enabled: unet.loraEnabled, scale: unet.loraScale };
    unet.loraEnabled = settings.loraScale !== 0;
    unet.loraScale = settings.loraScale;
    let final: Tensor | null = null;
    try {
      final = await denoise(
        unet,
        { latents, cond, uncond, seeds: items.map((x) => x.seed) },
        { sampler: settings.sampler, steps: settings.steps, guidance: settings.guidance, eta: settings.eta, scheduler: this.scheduler, onStep: onStep && ((i) => onStep(i + 1, settings.steps)) },
      );
      await gpu.sync();
      const t2 = performance.now();
      // The decoder's activations come in other sizes than the UNet's: hand the UNet's idle buffers back
      // first, so the pool never holds both sets.
      gpu.trimPool();
      const image = decodeLatents(this.vae, final, { trimBetweenLevels: true });
      const values = await image.read();
      const t3 = performance.now();
      this.lastTiming = { encodeMs: t1 - t0, unetMsPerStep: (t2 - t1) / settings.steps, decodeMs: t3 - t2, totalMs: t3 - t0 };
      const shape = image.shape;
      image.release();
      return imagesToRgba(values, shape).map((rgba, i) => ({ ...items[i], width: shape[3], height: shape[2], rgba }));
    } finally {
      unet.loraEnabled = saved.enabled;
      unet.loraScale = saved.scale;
      for (const t of [latents, cond, uncond, final]) t?.release();
    }
  }

  release(): void {
    if (!this.owned) return;
    if (!this.textReleased) this.text.release();
    this.textReleased = true;
    this.vae.release();
  }
}

/** scheduler/scheduler_config.json of a folder over SD1.5's defaults (SD1.5's when the folder has none). */
export async function loadSchedulerConfig(files: ModelFiles): Promise<SchedulerConfig> {
  // Without a timestep_spacing of its own, each sampler spaces its steps as its diffusers scheduler does by
  // default (DDIM "leading", Euler and DPM-Solver++ "linspace").
  const defaults = { ...SD15_SCHEDULER, timestep_spacing: undefined };
  if (!files.list().includes('scheduler/scheduler_config.json')) return defaults;
  const raw = await readConfig<Partial<SchedulerConfig>>(files, 'scheduler');
  return { ...defaults, ...raw };
}

/** What a sampled image was made with, for its PNG text and the run's index. */
export interface SampleRecord {
  prompt: string;
  seed: number;
  settings: SampleSettings;
  model: string;
  /** The LoRA's name (file stem); absent, or loraScale 0, for the base model. */
  lora?: string;
}

/**
 * Automatic1111's "parameters" text: the prompt (with `<lora:name:scale>` as A1111 applies a LoRA), the
 * negative prompt, then "Steps: ..., Sampler: ..., CFG scale: ..., Seed: ..., Size: WxH, Model: ...".
 */
export function a1111Parameters(r: SampleRecord): string {
  const s = r.settings;
  const lora = r.lora && s.loraScale !== 0 ? ` <lora:${r.lora}:${s.loraScale}>` : '';
  const fields = [
    `Steps: ${s.steps}`,
    `Sampler: ${SAMPLER_LABELS[s.sampler]}`,
    `CFG scale: ${s.guidance}`,
    `Seed: ${r.seed}`,
    `Size: ${s.width}x${s.height}`,
    `Model: ${r.model}`,
    ...(s.sampler === 'ddim' && s.eta !== 0 ? [`Eta DDIM: ${s.eta}`] : []),
  ];
  return `${r.prompt}${lora}\n${s.negativePrompt ? `Negative prompt: ${s.negativePrompt}\n` : ''}${fields.join(', ')}`;
}

/**
 * RGBA images of one size laid out in a grid (rows of columns), `gap` pixels of white between them: the
 * base-beside-LoRA comparison.
 */
export function imageGrid(rows: readonly (readonly Uint8Array[])[], width: number, height: number, gap = 4): { rgba: Uint8Array; width: number; height: number } {
  const cols = Math.max(...rows.map((r) => r.length));
  const gw = cols * width + (cols - 1) * gap;
  const gh = rows.length * height + (rows.length - 1) * gap;
  const out = new Uint8Array(gw * gh * 4).fill(255);
  rows.forEach((row, r) =>
    row.forEach((img, c) => {
      for (let y = 0; y < height; y++) {
        const dst = ((r * (height + gap) + y) * gw + c * (width + gap)) * 4;
        out.set(img.subarray(y * width * 4, (y + 1) * width * 4), dst);
      }
    }),
  );
  return { rgba: out, width: gw, height: gh };
}
