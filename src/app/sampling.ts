// Sampling for the lab's Samples screen: the open model's networks on the GPU, kept between calls (loading
// the UNet, text encoder and VAE takes longer than drawing a few small images), with a run's LoRA applied
// at a chosen scale. One image at a time, so a long list of prompts and seeds needs no more memory than one.
// The lab owns one ModelSampler per open model and releases it when the model changes or a run starts.

import type { ClipTextModel } from '../models/clip-text';
import { DEFAULT_SAMPLE_SETTINGS, loadSchedulerConfig, type SampleRecord, type SampleSettings, TextToImage, validateSampleSettings } from '../diffusion/pipeline';
import { SAMPLERS, type SamplerName } from '../diffusion/samplers';
import type { Gpu } from '../gpu/gpu';
import type { Lora } from '../models/lora';
import type { UNet } from '../models/unet';
import type { AutoencoderKL } from '../models/vae';
import { preferHalfWeights } from '../models/weights';
import { InputError } from './errors';
import type { ModelHandle } from './model';
import { type PngEncoder, samplePng } from './training-run';

export interface SampleRequest {
  /** One image per prompt and seed. */
  prompts: string[];
  seeds: number[];
  /** A run whose LoRA is drawn beside the base model (its final LoRA, or its last checkpoint's). */
  run?: string;
  /** The LoRA's multiplier (0: the same as the base model). */
  loraScale: number;
  steps: number;
  guidance: number;
  sampler: SamplerName;
  width: number;
  height: number;
  negativePrompt?: string;
}

/** One prompt and seed: the base model's PNG and, when a run was given, the LoRA's; both carry their parameters. */
export interface SamplePair {
  prompt: string;
  seed: number;
  base: Uint8Array;
  lora: Uint8Array | null;
}

export interface SampleResult {
  images: SamplePair[];
  /** The LoRA's name as its PNG text and an exported file name spell it, and the step it is from. */
  lora: { name: string; step: number } | null;
  settings: SampleSettings;
  /** Prompt-and-seed pairs asked for (blank prompts and repeated seeds dropped). */
  asked: number;
  /** Stopped by the caller before every image was drawn: `images` holds those drawn by then. */
  stopped: boolean;
}

/** Enough for a comparison sheet; more is better done with the CLI than by holding a page busy. */
export const MAX_SAMPLE_IMAGES = 64;

/** Checks a request as the user typed it; says what to change. */
export function checkSampleRequest(r: SampleRequest): { prompts: string[]; seeds: number[]; settings: SampleSettings } {
  const prompts = r.prompts.map((p) => p.trim()).filter((p) => p !== '');
  if (prompts.length === 0) throw new InputError('give at least one prompt (one per line)');
  if (r.seeds.length === 0) throw new InputError('give at least one seed');
  for (const s of r.seeds) {
    if (!Number.isInteger(s) || s < 0 || s > 0xffffffff) throw new InputError(`seed ${s} must be a whole number from 0 to 4294967295`);
  }
  const seeds = [...new Set(r.seeds)];
  const count = prompts.length * seeds.length * (r.run ? 2 : 1);
  if (count > MAX_SAMPLE_IMAGES) throw new InputError(`${count} images asked for; at most ${MAX_SAMPLE_IMAGES} at a time: use fewer prompts or seeds`);
  if (!(SAMPLERS as readonly string[]).includes(r.sampler)) throw new InputError(`unknown sampler ${JSON.stringify(r.sampler)}: use ${SAMPLERS.join(', ')}`);
  const settings: SampleSettings = {
    ...DEFAULT_SAMPLE_SETTINGS,
    sampler: r.sampler,
    steps: r.steps,
    guidance: r.guidance,
    width: r.width,
    height: r.height,
    negativePrompt: r.negativePrompt ?? '',
    loraScale: r.run ? r.loraScale : 0,
  };
  try {
    validateSampleSettings(settings);
  } catch (e) {
    throw new InputError((e as Error).message.replace(/^sampling: /, ''));
  }
  return { prompts, seeds, settings };
}

/** The networks of one model on one device. */
interface Loaded {
  gpu: Gpu;
  unet: UNet;
  text: ClipTextModel;
  vae: AutoencoderKL;
  t2i: TextToImage;
}

/**
 * The open model ready to draw, loaded on first use and kept; a lost device is noticed on the next call and
 * everything is loaded again on the new one. The LoRA last applied is kept too, by the key the caller gives.
 */
export class ModelSampler {
  private loaded: Loaded | null = null;
  private lora: { key: string; lora: Lora } | null = null;

  constructor(
    private readonly model: ModelHandle,
    private readonly openGpu: () => Promise<Gpu>,
  ) {}

  /** The pipeline on the current device (loading it when there is none yet, or the device changed). */
  async pipeline(): Promise<TextToImage> {
    const gpu = await this.openGpu();
    if (this.loaded && this.loaded.gpu === gpu && !gpu.isLost) return this.loaded.t2i;
    this.release();
    const unet = await this.model.loadUNet(gpu, { halfWeights: preferHalfWeights(gpu) });
    let text: ClipTextModel | null = null;
    try {
      text = await this.model.loadTextEncoder(gpu);
      const vae = await this.model.loadVae(gpu);
      const t2i = TextToImage.from({ unet, text, vae, tokenizer: await this.model.tokenizer(), scheduler: await loadSchedulerConfig(this.model.files) });
      this.loaded = { gpu, unet, text, vae, t2i };
      return t2i;
    } catch (e) {
      text?.release();
      unet.release();
      throw e;
    }
  }

  /**
   * Puts a LoRA on the UNet (loaded by `load` unless the one with this key is on already). The UNet's
   * multiplier is set per image by TextToImage.sample (0: the LoRA is switched off).
   */
  async useLora(key: string, load: (gpu: Gpu) => Promise<Lora>): Promise<void> {
    const t2i = await this.pipeline();
    if (this.lora?.key === key) {
      t2i.unet.lora = this.lora.lora;
      return;
    }
    this.lora?.lora.release();
    this.lora = null;
    t2i.unet.lora = null;
    const lora = await load(t2i.gpu);
    this.lora = { key, lora };
    t2i.unet.lora = lora;
  }

  /**
   * Draws every prompt with every seed: the base model, then (with `loraName`) the LoRA at the settings'
   * scale, each as a PNG with its parameters. `onStep` counts UNet steps over the whole request. Once `signal`
   * is aborted it stops after the image in flight and returns the pairs finished by then.
   */
  async draw(
    items: { prompts: string[]; seeds: number[]; settings: SampleSettings; loraName: string | null },
    encodePng: PngEncoder,
    onStep?: (done: number, total: number) => void,
    signal?: AbortSignal,
  ): Promise<SamplePair[]> {
    const t2i = await this.pipeline();
    const { prompts, seeds, settings, loraName } = items;
    try {
      validateSampleSettings(settings, t2i); // against this model's VAE factor
    } catch (e) {
      throw new InputError((e as Error).message.replace(/^sampling: /, ''));
    }
    const variants = loraName ? 2 : 1;
    const total = prompts.length * seeds.length * variants * settings.steps;
    let done = 0;
    const one = async (prompt: string, seed: number, loraScale: number): Promise<Uint8Array> => {
      const s = { ...settings, loraScale };
      const [image] = await t2i.sample([{ prompt, seed }], s, () => onStep?.(++done, total));
      const record: SampleRecord = { prompt, seed, settings: s, model: this.model.name, lora: loraScale !== 0 && loraName ? loraName : undefined };
      return samplePng(encodePng, image, record);
    };
    const out: SamplePair[] = [];
    for (const prompt of prompts) {
      for (const seed of seeds) {
        if (signal?.aborted) return out;
        const base = await one(prompt, seed, 0);
        // A pair is kept whole: a stop between its two images still draws the LoRA's.
        const lora = loraName ? await one(prompt, seed, settings.loraScale) : null;
        out.push({ prompt, seed, base, lora });
      }
    }
    return out;
  }

  /** Lets go of everything on the GPU. */
  release(): void {
    this.lora?.lora.release();
    this.lora = null;
    if (this.loaded) {
      const { unet, text, vae } = this.loaded;
      unet.lora = null;
      text.release();
      vae.release();
      unet.release();
    }
    this.loaded = null;
  }
}
