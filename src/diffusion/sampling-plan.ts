// How much GPU memory text to image takes: the real sampling code (TextToImage.sample: text encoder,
// the sampler's loop over the UNet with guidance, the VAE decoder) run on a counting stand-in device that
// allocates nothing, so the number is what the engine allocates, by construction. `tpo-lab plan` prints it
// as its inference line, and a test checks it to the byte against a real run on the tiny model.

import { countingGpu } from '../gpu/counting';
import { ClipTextModel, clipTextParamShapes, type ClipTextConfig } from '../models/clip-text';
import { ModelWeights } from '../models/model-weights';
import { createClipTokenizer } from '../models/tokenizer';
import { UNet, unetParamShapes, type UNetConfig } from '../models/unet';
import { AutoencoderKL, vaeParamShapes, type VaeConfig } from '../models/vae';
import { placeholderWeights } from '../models/weights';
import { DEFAULT_SAMPLE_SETTINGS, type SampleSettings, TextToImage } from './pipeline';
import { SD15_SCHEDULER } from './schedule';

export interface SamplingPlanInput {
  unet: UNetConfig;
  textEncoder: ClipTextConfig;
  vae: VaeConfig;
  width: number;
  height: number;
  /** Images drawn together. */
  batch: number;
  guidance?: number;
  sampler?: SampleSettings['sampler'];
  /** Bytes per frozen UNet matrix value: 2 stores them as float16 (the text encoder and VAE stay float32). */
  unetWeightBytes: 2 | 4;
}

export interface SamplingPlan {
  /** The three networks' weights as the pool holds them. */
  weightBytes: number;
  /** The most in use at once while sampling, weights included. */
  peakBytes: number;
  /** The most the pool ever held (buffers in use and idle ones kept for reuse), weights included: the device's cost. */
  reservedBytes: number;
}

/**
 * Memory of one `TextToImage.sample` call. Two sampler steps stand for any number: each step frees what it
 * made, and the multistep sampler's kept prediction is live from the second on.
 */
export async function planSampling(input: SamplingPlanInput): Promise<SamplingPlan> {
  const gpu = countingGpu();
  const unet = new UNet(gpu, input.unet, placeholderWeights(gpu, unetParamShapes(input.unet), input.unetWeightBytes === 2));
  const text = new ClipTextModel(input.textEncoder, new ModelWeights('text encoder', placeholderWeights(gpu, clipTextParamShapes(input.textEncoder), false)));
  const vae = new AutoencoderKL(input.vae, new ModelWeights('VAE', placeholderWeights(gpu, vaeParamShapes(input.vae), false)));
  const weightBytes = gpu.pool.bytesInUse;
  // Only the empty prompt is tokenized: its ids are BOS and EOS, which every CLIP vocabulary has.
  const tokenizer = createClipTokenizer({ vocab: JSON.stringify({ '<|startoftext|>': 49406, '<|endoftext|>': 49407 }), merges: '#version: 0.2\n' }, { maxLength: input.textEncoder.max_position_embeddings });
  const t2i = TextToImage.from({ unet, text, vae, tokenizer, scheduler: SD15_SCHEDULER });
  const settings: SampleSettings = {
    ...DEFAULT_SAMPLE_SETTINGS,
    sampler: input.sampler ?? 'dpmpp-2m',
    steps: 2,
    guidance: input.guidance ?? DEFAULT_SAMPLE_SETTINGS.guidance,
    width: input.width,
    height: input.height,
  };
  await t2i.sample(Array.from({ length: input.batch }, (_, i) => ({ prompt: '', seed: i })), settings);
  return { weightBytes, peakBytes: gpu.pool.peakBytesInUse, reservedBytes: gpu.pool.peakBytesAllocated };
}
