// Building the demo model (issue #16, item 3): a small Stable Diffusion 1.5-layout model of the shapes
// world, made only by the lab's own code from one seed, written as a diffusers folder:
//
//   tokenizer/      CLIP BPE files whose merges make each shapes-world word one token (tokenizer-files.ts)
//   text_encoder/   a CLIPTextModel fixed from the seed (not trained: see TEXT ENCODER below)
//   vae/            an AutoencoderKL (/4: 64 px -> 16x16x4 latents) constructed, not trained (vae-weights.ts)
//   unet/           a UNet2DConditionModel trained from the seed by Trainer ('all' weights, denoising loss)
//                   on the VAE latents and text states of shapes images and their captions
//   scheduler/      SD1.5's schedule rescaled to zero terminal SNR, a v-predicting UNet (see DEMO_SCHEDULER)
//   model_index.json  SD1.5's
//   README.md       the settings, the seed and the time of each stage
//
// TEXT ENCODER: a CLIP with random weights still maps different captions to different states (each word's
// embedding, mixed causally with the words before it), and that is all the UNet's cross-attention needs to
// tell captions apart; training it with the UNet would need text-encoder gradients, which the engine does
// not have (it runs CLIP forward only). Its embeddings are drawn at a scale where they, not the random
// biases, decide each state (see TEXT_INIT).
//
// Each network goes through the file it is written to before the next stage uses it (written, then loaded
// back by the lab's own loaders from those bytes), so the UNet learns on exactly the latents and text
// states that the finished folder gives. Training runs keep checkpoints in a work store, so a long build
// that stops continues from its last checkpoint with the same result. Platform-free: the caller passes
// the GPU and where files go (a folder in Node).

import type { Gpu } from '../gpu/gpu';
import { imageToCHW, type RgbaImage } from '../data/pixels';
import { ClipTextModel, clipTextParamShapes, type ClipTextConfig, loadClipTextModel } from '../models/clip-text';
import { ModelWeights } from '../models/model-weights';
import { SD15_SCHEDULER_FILE } from '../models/sd15-configs';
import { ClipTokenizer } from '../models/tokenizer';
import { UNet, unetParamShapes, type UNetConfig } from '../models/unet';
import { AutoencoderKL, loadVae, type VaeConfig, vaeConfig, vaeDecode, vaeEncode, vaeParamShapes } from '../models/vae';
import { browserModelFiles, encodeStateDict, type ModelFiles } from '../models/weights';
import { Tensor } from '../nn/tensor';
import { loadWeightsCheckpoint, resumeCheck, saveWeightsCheckpoint, WEIGHTS_CHECKPOINT_FILES, type WeightsCheckpointFiles } from '../tpo/checkpoint';
import type { TrainExample } from '../tpo/examples';
import { MemoryFeatureStore, prepareFeatures } from '../tpo/features';
import { defaultTrainConfig, Trainer, type TrainConfig } from '../tpo/trainer';
import { initWeights } from './init';
import { SHAPES_IMAGE_SIZE, shapesDataset } from './shapes';
import { demoTokenizerFiles, mergesText } from './tokenizer-files';
import { constructedVaeWeights } from './vae-weights';

/** The diffusers version the configs name: the one whose files the lab's goldens were written by. */
const DIFFUSERS_VERSION = '0.27.2';

export interface DemoSettings {
  seed: number;
  /** Training images (the shapes world's train split, items 0 .. images-1). */
  images: number;
  text: { hidden: number; layers: number; heads: number; intermediate: number };
  /** The constructed VAE's architecture (vae-weights.ts: equal channels, one norm group). */
  vae: { channels: number[]; layersPerBlock: number; groups: number };
  /** `crossAttention`: per level, whether its blocks hold a Transformer2DModel (SD1.5: every level but the deepest). */
  unet: {
    channels: number[];
    crossAttention: boolean[];
    layersPerBlock: number;
    groups: number;
    heads: number;
    steps: number;
    batch: number;
    /** Peak learning rate: reached by a linear warm-up of `warmup` steps, then cosine decay to 0 at the last step. */
    lr: number;
    warmup: number;
    /**
     * Every `unconditionalEvery`-th training image is also an example with the empty caption (0: none), so
     * the UNet learns the unconditional branch that classifier-free guidance subtracts.
     */
    unconditionalEvery: number;
  };
  /** Steps between checkpoints of each training run (and at its end). */
  checkpointEvery: number;
  /** Storage of the written weights: F16 halves the folder. */
  dtype: 'F16' | 'F32';
}

/**
 * The settings of a build. `quick`: the smallest networks, 4 images and a step or two of each training, to test the
 * whole path in seconds (the model draws nothing useful). The others are the full build's.
 */
export function demoSettings(options: { quick?: boolean; seed?: number; images?: number; unetSteps?: number; unetBatch?: number; checkpointEvery?: number } = {}): DemoSettings {
  const base: DemoSettings = options.quick
    ? {
        seed: 0,
        images: 4,
        text: { hidden: 16, layers: 1, heads: 2, intermediate: 32 },
        vae: { channels: [8, 8, 8], layersPerBlock: 1, groups: 1 },
        unet: { channels: [8, 16], crossAttention: [true, false], layersPerBlock: 1, groups: 4, heads: 2, steps: 2, batch: 1, lr: 1e-3, warmup: 0, unconditionalEvery: 2 },
        checkpointEvery: 1,
        dtype: 'F16',
      }
    : // Sized to about an hour on a 2-core machine without a GPU (SwiftShader), as measured there with the CPU
      // adapter's kernels (2026-12-03): 36 s for the VAE, 2.5 min to prepare the 256 images' (and 26 empty
      // captions') latents and text states, 3.4-3.8 s per UNet step of 8 at 16 x 16 latents. Cross-attention
      // only at the 8 x 8 level: at 16 x 16 it cost more than the rest of the step. A network of 16 / 32 / 32
      // channels takes 2.5x less per row than 32 / 64 / 64, so the same time buys 2.5x the steps. Built at
      // these settings (62 min), the UNet gets every background right but does not yet draw the shapes (README,
      // "The committed demo model, and what it does not do yet").
      {
        seed: 0,
        images: 256,
        text: { hidden: 64, layers: 2, heads: 2, intermediate: 256 },
        vae: { channels: [8, 8, 8], layersPerBlock: 1, groups: 1 },
        unet: { channels: [16, 32, 32], crossAttention: [false, true, false], layersPerBlock: 1, groups: 8, heads: 2, steps: 1000, batch: 8, lr: 1e-3, warmup: 50, unconditionalEvery: 10 },
        checkpointEvery: 25,
        dtype: 'F16',
      };
  return {
    ...base,
    seed: options.seed ?? base.seed,
    images: options.images ?? base.images,
    checkpointEvery: options.checkpointEvery ?? base.checkpointEvery,
    unet: { ...base.unet, steps: options.unetSteps ?? base.unet.steps, batch: options.unetBatch ?? base.unet.batch },
  };
}

/** Where the build's files go: `out` receives the model folder, `work` the training checkpoints. */
export interface DemoBuildStorage {
  writeOut(path: string, bytes: Uint8Array): Promise<void>;
  readWork(path: string): Promise<Uint8Array | null>;
  writeWork(path: string, bytes: Uint8Array): Promise<void>;
}

export interface DemoBuildResult {
  settings: DemoSettings;
  /** Seconds per stage. */
  times: Record<string, number>;
  /** Bytes per written file. */
  files: Record<string, number>;
  vae: { reconstruction: number; scalingFactor: number };
  unet: { loss: number; meanStepSeconds: number };
}

// ---- configs, with the keys diffusers and transformers write ----

export function demoTextConfig(s: DemoSettings, vocabSize: number): ClipTextConfig & Record<string, unknown> {
  return {
    architectures: ['CLIPTextModel'],
    model_type: 'clip_text_model',
    hidden_size: s.text.hidden,
    intermediate_size: s.text.intermediate,
    num_attention_heads: s.text.heads,
    num_hidden_layers: s.text.layers,
    max_position_embeddings: 77,
    vocab_size: vocabSize,
    hidden_act: 'quick_gelu',
    layer_norm_eps: 1e-5,
    // CLIP's special tokens are the last two of the vocabulary; pad_token_id 1 as CLIP's own config says.
    bos_token_id: vocabSize - 2,
    eos_token_id: vocabSize - 1,
    pad_token_id: 1,
    projection_dim: s.text.hidden,
    torch_dtype: s.dtype === 'F16' ? 'float16' : 'float32',
  };
}

export function demoVaeConfig(s: DemoSettings, scalingFactor: number): VaeConfig & Record<string, unknown> {
  const n = s.vae.channels.length;
  return {
    _class_name: 'AutoencoderKL',
    _diffusers_version: DIFFUSERS_VERSION,
    in_channels: 3,
    out_channels: 3,
    down_block_types: Array(n).fill('DownEncoderBlock2D'),
    up_block_types: Array(n).fill('UpDecoderBlock2D'),
    block_out_channels: s.vae.channels,
    layers_per_block: s.vae.layersPerBlock,
    act_fn: 'silu',
    latent_channels: 4,
    norm_num_groups: s.vae.groups,
    sample_size: SHAPES_IMAGE_SIZE,
    scaling_factor: scalingFactor,
    mid_block_add_attention: true,
    use_quant_conv: true,
    use_post_quant_conv: true,
  };
}

export function demoUNetConfig(s: DemoSettings): UNetConfig & Record<string, unknown> {
  const vaeFactor = 2 ** (s.vae.channels.length - 1);
  return {
    _class_name: 'UNet2DConditionModel',
    _diffusers_version: DIFFUSERS_VERSION,
    sample_size: SHAPES_IMAGE_SIZE / vaeFactor,
    in_channels: 4,
    out_channels: 4,
    flip_sin_to_cos: true,
    freq_shift: 0,
    down_block_types: s.unet.crossAttention.map((a) => (a ? 'CrossAttnDownBlock2D' : 'DownBlock2D')),
    mid_block_type: 'UNetMidBlock2DCrossAttn',
    up_block_types: [...s.unet.crossAttention].reverse().map((a) => (a ? 'CrossAttnUpBlock2D' : 'UpBlock2D')),
    block_out_channels: s.unet.channels,
    layers_per_block: s.unet.layersPerBlock,
    downsample_padding: 1,
    mid_block_scale_factor: 1,
    act_fn: 'silu',
    norm_num_groups: s.unet.groups,
    norm_eps: 1e-5,
    cross_attention_dim: s.text.hidden,
    attention_head_dim: s.unet.heads,
    use_linear_projection: false,
  };
}

export const DEMO_MODEL_INDEX = {
  _class_name: 'StableDiffusionPipeline',
  _diffusers_version: DIFFUSERS_VERSION,
  feature_extractor: [null, null],
  requires_safety_checker: false,
  safety_checker: [null, null],
  scheduler: ['diffusers', 'DDIMScheduler'], // DEMO_SCHEDULER's class
  text_encoder: ['transformers', 'CLIPTextModel'],
  tokenizer: ['transformers', 'CLIPTokenizer'],
  unet: ['diffusers', 'UNet2DConditionModel'],
  vae: ['diffusers', 'AutoencoderKL'],
};

const SPECIAL_TOKENS = { bos_token: '<|startoftext|>', eos_token: '<|endoftext|>', pad_token: '<|endoftext|>', unk_token: '<|endoftext|>' };

/**
 * TEXT_INIT: the text encoder's embeddings. Its linear layers start as PyTorch's do (outputs of the order
 * of their inputs, biases up to 1/sqrt(fan-in)); token embeddings of std 1 keep each word's identity above
 * those biases, and positions at half that add the word order without drowning the words.
 */
const TEXT_INIT = { embeddingStd: { token_embedding: 1, position_embedding: 0.5 } };

/**
 * SD1.5's scheduler with three changes, the recipe of Lin et al. 2024 for a schedule that ends in pure noise:
 * - the UNet predicts v = sqrt(abar) eps - sqrt(1 - abar) x0 (v_prediction, as SD2's 768-v models do) instead
 *   of the noise. Measured on this world: a UNet of this size trained for minutes keeps an error of about
 *   0.045 (mean square, per latent value) in its output at every timestep above 300; read as a noise
 *   prediction at t = 999 that error is multiplied by (1 - abar) / abar = 212 in the x0 it implies (x0 error
 *   9.2 against latents of variance 1: samples of coloured noise), read as a velocity by 1 - abar < 1.
 * - rescale_betas_zero_snr: x_999 holds no image. With SD1.5's schedule it holds 0.068 x0, and the v model
 *   learned to read each image's background from it (x0 error at t = 999 of 0.35 with the caption and 0.47
 *   without, against a variance of 0.91), then drew the background of whatever the starting noise's mean
 *   was: 3 of 8 training prompts sampled with the right background (README, "The committed demo model").
 * - timestep_spacing trailing: sampling starts at t = 999, the pure noise it starts from.
 */
const { _class_name: _pndmScheduler, skip_prk_steps: _pndmOnly, ...SD15_SCHEDULE } = SD15_SCHEDULER_FILE;
export const DEMO_SCHEDULER = {
  // DDIMScheduler, not SD1.5's PNDMScheduler: diffusers' PNDMScheduler has no rescale_betas_zero_snr.
  _class_name: 'DDIMScheduler',
  ...SD15_SCHEDULE,
  prediction_type: 'v_prediction',
  rescale_betas_zero_snr: true,
  timestep_spacing: 'trailing',
};

const json = (value: unknown) => new TextEncoder().encode(`${JSON.stringify(value, null, 2)}\n`);

/** Builds the demo model; `log` receives one line per stage and progress report. */
export async function buildDemo(gpu: Gpu, settings: DemoSettings, storage: DemoBuildStorage, log: (line: string) => void = () => {}): Promise<DemoBuildResult> {
  const times: Record<string, number> = {};
  const written = new Map<string, Uint8Array>();
  const write = async (path: string, bytes: Uint8Array) => {
    written.set(path, bytes);
    await storage.writeOut(path, bytes);
  };
  // The folder as written so far, read through the same ModelFiles interface as any model folder.
  const folder = (): ModelFiles => browserModelFiles('demo', [...written].map(([path, bytes]) => ({ path, file: new Blob([bytes as Uint8Array<ArrayBuffer>]) })));
  const stage = async <T>(name: string, run: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    log(`${name}: started`);
    const result = await run();
    times[name] = (performance.now() - started) / 1000;
    log(`${name}: done in ${times[name].toFixed(1)} s`);
    return result;
  };
  const s = settings;
  const total = performance.now();

  // (a) tokenizer
  const tokenizer = await stage('tokenizer', async () => {
    const files = demoTokenizerFiles();
    await write('tokenizer/vocab.json', new TextEncoder().encode(JSON.stringify(files.vocab)));
    await write('tokenizer/merges.txt', new TextEncoder().encode(mergesText(files.merges)));
    await write('tokenizer/tokenizer_config.json', json({ tokenizer_class: 'CLIPTokenizer', model_max_length: 77, do_lower_case: true, ...SPECIAL_TOKENS }));
    await write('tokenizer/special_tokens_map.json', json(SPECIAL_TOKENS));
    log(`tokenizer: ${Object.keys(files.vocab).length} tokens, ${files.merges.length} merges`);
    return new ClipTokenizer({ vocab: files.vocab, merges: files.merges });
  });
  const vocabSize = tokenizer.eosId + 1;

  // (b) text encoder, fixed from the seed
  const text = await stage('text encoder', async () => {
    const config = demoTextConfig(s, vocabSize);
    const weights = new ModelWeights('text encoder', initWeights(gpu, s.seed, 'text_encoder', clipTextParamShapes(config), TEXT_INIT));
    await write('text_encoder/config.json', json(config));
    await write('text_encoder/model.safetensors', await encodeStateDict(weights.tensors, s.dtype));
    weights.release();
    return loadClipTextModel(gpu, folder());
  });

  // The training images, in [-1, 1], and their captions.
  const items = shapesDataset({ seed: s.seed, count: s.images, split: 'train' });

  // (c) VAE
  let vaeReport = { reconstruction: NaN, scalingFactor: NaN };
  const vae = await stage('vae', async () => {
    // Constructed with scaling_factor 1: the factor only scales the latents the UNet sees, and is measured after.
    const architecture = vaeConfig(demoVaeConfig(s, 1));
    const shapes = vaeParamShapes(architecture);
    const weights = new Map<string, Tensor>();
    for (const [name, values] of constructedVaeWeights(architecture)) weights.set(name, Tensor.from(gpu, values, shapes.get(name)!));
    const built = new AutoencoderKL(architecture, new ModelWeights('vae', weights));
    // SD's convention: latents times scaling_factor have unit variance. Measured on the latent means of
    // the first images, as the factor 0.18215 was measured for SD's own VAE.
    const stats = await vaeStats(built, items.slice(0, 32).map((it) => imageToCHW(it.image)));
    vaeReport = { reconstruction: stats.reconstruction, scalingFactor: 1 / stats.latentStd };
    await write('vae/config.json', json(demoVaeConfig(s, Number(vaeReport.scalingFactor.toPrecision(6)))));
    await write('vae/diffusion_pytorch_model.safetensors', await encodeStateDict(built.weights.tensors, s.dtype));
    built.release();
    log(`vae: reconstruction MSE ${stats.reconstruction.toFixed(4)}, scaling_factor ${vaeReport.scalingFactor.toPrecision(6)}`);
    return loadVae(gpu, folder());
  });

  // (d) UNet
  let unetReport = { loss: NaN, meanStepSeconds: NaN };
  await stage('unet', async () => {
    const images = new Map<string, RgbaImage>(items.map((it, i) => [`train/${i}`, it.image]));
    const example = (i: number, caption: string, id: string): TrainExample => {
      const term = { image: `train/${i}`, caption };
      return { id, group: `train/${i}`, w: term, l: term };
    };
    const every = s.unet.unconditionalEvery;
    const examples: TrainExample[] = [
      ...items.map((it, i) => example(i, it.caption, `train/${i}`)),
      ...(every > 0 ? items.flatMap((_, i) => (i % every === 0 ? [example(i, '', `train/${i}/unconditional`)] : [])) : []),
    ];
    // The images are handed over as their raw pixels: the feature cache keys each latent by a hash of
    // these bytes, and decode() turns a name back into its image.
    const store = new MemoryFeatureStore();
    const keys = await prepareFeatures(
      { gpu, vae, text, tokenizer, vaeFingerprint: `demo-vae-${s.seed}`, textFingerprint: `demo-text-${s.seed}` },
      examples.map((e) => e.w),
      { resolution: SHAPES_IMAGE_SIZE, store, readImage: async (name) => images.get(name)!.data, decode: async (_bytes, name) => images.get(name)!, textBatch: 32 },
    );
    vae.release();
    text.release();
    const unetConfig = demoUNetConfig(s);
    const unet = new UNet(gpu, unetConfig, initWeights(gpu, s.seed, 'unet', unetParamShapes(unetConfig)));
    const config: TrainConfig = {
      ...defaultTrainConfig('sft'),
      trainable: 'all',
      steps: s.unet.steps,
      batchSize: s.unet.batch,
      lr: s.unet.lr,
      lrSchedule: 'cosine',
      warmupSteps: Math.min(s.unet.warmup, s.unet.steps),
      weightDecay: 0,
      maxGradNorm: 1,
      seed: s.seed,
      resolution: SHAPES_IMAGE_SIZE,
      gradientCheckpointing: false,
    };
    const saved = await readCheckpoint(storage, 'unet', WEIGHTS_CHECKPOINT_FILES);
    let trainer: Trainer;
    if (saved) {
      const { saved: state, moments } = await loadWeightsCheckpoint(gpu, unet, saved);
      sameRun('UNet', state.config, config);
      await resumeCheck(state, examples);
      trainer = new Trainer(gpu, unet, examples, { store, keys }, config, state.state, moments, DEMO_SCHEDULER);
      log(`unet: resumed at step ${trainer.state.step} of ${config.steps}`);
    } else {
      trainer = new Trainer(gpu, unet, examples, { store, keys }, config, undefined, undefined, DEMO_SCHEDULER);
    }
    try {
      let started = performance.now();
      let losses: number[] = [];
      let stepSeconds = 0;
      let stepsRun = 0;
      while (!trainer.done) {
        const r = await trainer.step();
        losses.push(r.loss);
        stepSeconds += r.stepTime;
        stepsRun++;
        if (r.step % s.checkpointEvery === 0 || trainer.done) {
          await writeCheckpoint(storage, 'unet', await saveWeightsCheckpoint(trainer));
          const mean = losses.reduce((a, v) => a + v, 0) / losses.length;
          unetReport = { loss: mean, meanStepSeconds: stepSeconds / stepsRun };
          log(`unet: step ${r.step}/${config.steps} loss ${mean.toFixed(4)} (mean of the last ${losses.length}; ${((performance.now() - started) / 1000 / losses.length).toFixed(2)} s/step)`);
          losses = [];
          started = performance.now();
        }
      }
    } finally {
      trainer.release();
    }
    await write('unet/config.json', json(unetConfig));
    await write('unet/diffusion_pytorch_model.safetensors', await encodeStateDict(unet.weights, s.dtype));
    unet.release();
  });

  // (e) scheduler and model index
  await write('scheduler/scheduler_config.json', json({ ...DEMO_SCHEDULER, _diffusers_version: DIFFUSERS_VERSION }));
  await write('model_index.json', json(DEMO_MODEL_INDEX));
  times.total = (performance.now() - total) / 1000;

  const files: Record<string, number> = {};
  for (const [path, bytes] of written) files[path] = bytes.length;
  const result: DemoBuildResult = { settings: s, times, files, vae: vaeReport, unet: unetReport };
  await write('README.md', new TextEncoder().encode(demoReadme(result)));
  return result;
}

/**
 * The standard deviation of the VAE's latent means over `images` (each [3, H, W]), and the mean squared error
 * of decoding those means (pixels in [-1, 1]).
 */
async function vaeStats(vae: AutoencoderKL, images: readonly Float32Array[]): Promise<{ latentStd: number; reconstruction: number }> {
  let sum = 0;
  let sumSq = 0;
  let n = 0;
  let squaredError = 0;
  const side = SHAPES_IMAGE_SIZE;
  for (const pixels of images) {
    const image = Tensor.from(vae.gpu, pixels, [1, 3, side, side]);
    const moments = vaeEncode(vae, image);
    image.release();
    const [, channels, h, w] = moments.shape;
    const m = await moments.read();
    moments.release();
    const mean = m.subarray(0, m.length / 2);
    for (const v of mean) {
      sum += v;
      sumSq += v * v;
    }
    n += mean.length;
    const latent = Tensor.from(vae.gpu, mean, [1, channels / 2, h, w]);
    const decoded = vaeDecode(vae, latent);
    latent.release();
    const y = await decoded.read();
    decoded.release();
    for (let i = 0; i < y.length; i++) squaredError += (y[i] - pixels[i]) ** 2 / y.length;
  }
  const variance = sumSq / n - (sum / n) ** 2;
  return { latentStd: Math.sqrt(Math.max(variance, 1e-12)), reconstruction: squaredError / images.length };
}

/** A checkpoint resumes only the run it belongs to: the same settings, apart from the number of steps. */
function sameRun(what: string, saved: object, now: object): void {
  const strip = (c: object) => JSON.stringify({ ...c, steps: 0 });
  if (strip(saved) !== strip(now)) {
    throw new Error(`the work folder holds a ${what} checkpoint of other settings (${strip(saved)}); remove it to start again, or build with its settings`);
  }
}

async function readCheckpoint<K extends string>(storage: DemoBuildStorage, run: string, names: readonly K[]): Promise<Record<K, Uint8Array> | null> {
  const out = {} as Record<K, Uint8Array>;
  for (const name of names) {
    const bytes = await storage.readWork(`${run}/${name}`);
    if (!bytes) return null;
    out[name] = bytes;
  }
  return out;
}

async function writeCheckpoint(storage: DemoBuildStorage, run: string, files: WeightsCheckpointFiles): Promise<void> {
  // state.json last: a checkpoint whose state.json is there was written whole.
  const entries = Object.entries(files).sort(([a], [b]) => Number(a === 'state.json') - Number(b === 'state.json'));
  for (const [name, bytes] of entries) await storage.writeWork(`${run}/${name}`, bytes);
}

/** public/demo/README.md: what the folder is, how it was made, and how long each stage took. */
export function demoReadme(r: DemoBuildResult): string {
  const s = r.settings;
  const mb = (n: number) => (n / 1e6).toFixed(2);
  const totalBytes = Object.values(r.files).reduce((a, v) => a + v, 0);
  const time = (k: string) => `${(r.times[k] ?? 0).toFixed(1)} s`;
  return `# TPO Lab demo model

A small Stable Diffusion 1.5-layout model of the shapes world (src/demo/shapes.ts), in the diffusers folder
layout, made only by the lab's own code: \`npm run build:demo\` (\`tpo-lab build-demo\`, src/demo/build.ts).
The same settings and seed give the same files.

- tokenizer/: CLIP byte-level BPE files; the merges make each shapes-world word one token.
- text_encoder/: a CLIPTextModel (${s.text.layers} layers, width ${s.text.hidden}, ${s.text.heads} heads) **fixed from the seed,
  not trained**: a random CLIP still gives different captions different states, which is all the UNet's
  cross-attention needs, and training it would need text-encoder gradients the engine does not have.
- vae/: an AutoencoderKL (channels ${s.vae.channels.join(', ')}; 64 px to ${64 / 2 ** (s.vae.channels.length - 1)}x${64 / 2 ** (s.vae.channels.length - 1)}x4 latents) **constructed, not trained**
  (src/demo/vae-weights.ts): its encoder averages each patch's colour into the latent, its decoder paints
  the patch back; training this VAE on a CPU did not get past the mean image within the build's budget.
- unet/: a UNet2DConditionModel (channels ${s.unet.channels.join(', ')}, ${s.unet.layersPerBlock} ${s.unet.layersPerBlock === 1 ? 'layer' : 'layers'} per block, ${s.unet.heads} heads) trained
  from the seed on the denoising loss of every weight. It predicts v = sqrt(abar) eps - sqrt(1 - abar) x0,
  whose errors do not grow into the x0 they imply at high noise as a noise prediction's do.
- scheduler/: a DDIMScheduler with SD1.5's betas rescaled to zero terminal SNR (rescale_betas_zero_snr: the
  last timestep holds no image, as sampling from noise assumes), prediction_type v_prediction and trailing
  timestep spacing.

## Settings

| | |
|---|---|
| seed | ${s.seed} |
| training images | ${s.images} (shapes train split, 64 px) |
| UNet training | ${s.unet.steps} steps, batch ${s.unet.batch}, lr ${s.unet.lr} (linear warm-up over ${s.unet.warmup} steps, cosine decay to 0), AdamW, grad-norm clip 1 |
| unconditional examples | ${s.unet.unconditionalEvery > 0 ? `1 image in ${s.unet.unconditionalEvery} also with the empty caption (for classifier-free guidance)` : 'none'} |
| weights stored as | ${s.dtype} |

## Build

| stage | time |
|---|---|
| tokenizer | ${time('tokenizer')} |
| text encoder | ${time('text encoder')} |
| VAE | ${time('vae')} (reconstruction MSE ${r.vae.reconstruction.toFixed(4)} on the first 32 images, pixels in [-1, 1]; scaling_factor ${r.vae.scalingFactor.toPrecision(6)}) |
| UNet | ${time('unet')} (last loss ${r.unet.loss.toFixed(4)}; ${r.unet.meanStepSeconds.toFixed(2)} s per step) |
| total | ${time('total')} |

Folder size: ${mb(totalBytes)} MB.
`;
}
