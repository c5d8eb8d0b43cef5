// A training run from start to finish, on any platform: the checks before the GPU opens, feature
// preparation, the step loop with its checkpoint / score / preview cadence, metrics, the LoRA with its
// metadata. The CLI (`tpo-lab train`) and the browser's engine worker are two shells over this: they turn
// their inputs into a RunSetup and a RunEnvironment (where files live, how images are read and decoded,
// how the GPU opens) and show the events.
//
// A run's folder (a Storage): run.json (the settings), metrics.jsonl (a line per step), checkpoint/ (replaced
// as a whole), lora.safetensors (kohya format, at the end), scores.jsonl, samples/<base|step-N>/.

import { baseName } from '../data/source';
import type { RgbaImage } from '../data/pixels';
import { DEFAULT_SAMPLE_SETTINGS, type SampledImage, type SampleRecord, type SampleSettings, TextToImage, a1111Parameters, loadSchedulerConfig } from '../diffusion/pipeline';
import type { SamplerName } from '../diffusion/samplers';
import type { Gpu } from '../gpu/gpu';
import { encodeLora, loraToHost, type LoraTrainingInfo } from '../models/lora-io';
import { type UNet } from '../models/unet';
import { preferHalfWeights } from '../models/weights';
import { CHECKPOINT_FILES, checkCheckpointTensors, type CheckpointFiles, type CheckpointState, loadCheckpoint, parseCheckpointState, resumeCheck, saveCheckpoint } from '../tpo/checkpoint';
import { type NegativeFilter, splitExamples, type TrainExample } from '../tpo/examples';
import type { FeatureStore } from '../tpo/features';
import { DEFAULT_SCORE_SEED, implicitScores } from '../tpo/scores';
import { createTrainerLora, type StepReport, type TrainConfig, TrainControl, Trainer } from '../tpo/trainer';
import { InputError } from './errors';
import type { ModelHandle } from './model';
import { readText, type Storage } from './storage';
import { checkTrainingInputs, IMAGE_HEAD_BYTES, prepareTrainingFeatures, type TrainingData } from './training-data';

/** Settings of a run that are not training hyper-parameters, kept in run.json for resuming. */
export interface RunSettings {
  /** The model: a folder's path (CLI) or the name it was opened under (browser). */
  model: string;
  /** The data: a file's path (CLI) or a dataset's id (browser). */
  data: string;
  negatives: NegativeFilter;
  skipBadLines: boolean;
  holdout: number;
  /** The feature cache's folder (CLI); the browser keeps one cache per origin. */
  cache: string;
  precision: 'auto' | 'f16' | 'f32';
  scoreDraws: number;
  scoreEvery: number;
  scoreLimit: number;
  checkpointEvery: number;
  dtype: 'fp16' | 'fp32';
  title?: string;
  startedAt: number;
  allowSmallImages?: boolean;
  /** Preview samples (absent: none). */
  previews?: PreviewSettings;
}

export interface PreviewSettings {
  every: number;
  prompts: string[];
  steps: number;
  guidance: number;
  sampler: SamplerName;
  seed: number;
}

export const RUN_SETTINGS_FILE = 'run.json';
export const METRICS_FILE = 'metrics.jsonl';
export const SCORES_FILE = 'scores.jsonl';
export const LORA_FILE = 'lora.safetensors';
export const CHECKPOINT_FOLDER = 'checkpoint';

/** run.json as resuming reads it back: the fields it relies on, checked, so a damaged file is named. */
export function checkRunSettings(s: unknown, where: string): RunSettings {
  const bad = (what: string): never => {
    throw new InputError(`${where}: ${what}; the run's settings are damaged (restore run.json, or start a new run)`);
  };
  if (s === null || typeof s !== 'object' || Array.isArray(s)) bad('not a JSON object');
  const r = s as Record<string, unknown>;
  for (const k of ['model', 'data', 'cache'] as const) if (typeof r[k] !== 'string' || r[k] === '') bad(`${k} must be a path, got ${JSON.stringify(r[k])}`);
  if (r.negatives !== 'all' && r.negatives !== 'accepted') bad(`negatives must be "all" or "accepted", got ${JSON.stringify(r.negatives)}`);
  if (!['auto', 'f16', 'f32'].includes(r.precision as string)) bad(`precision must be auto, f16 or f32, got ${JSON.stringify(r.precision)}`);
  if (r.dtype !== 'fp16' && r.dtype !== 'fp32') bad(`dtype must be fp16 or fp32, got ${JSON.stringify(r.dtype)}`);
  if (typeof r.holdout !== 'number' || !(r.holdout >= 0 && r.holdout < 1)) bad(`holdout must be a number from 0 to below 1, got ${JSON.stringify(r.holdout)}`);
  for (const [k, min] of [['scoreDraws', 0], ['scoreEvery', 0], ['scoreLimit', 1], ['checkpointEvery', 1]] as const) {
    if (!Number.isInteger(r[k]) || (r[k] as number) < min) bad(`${k} must be a whole number >= ${min}, got ${JSON.stringify(r[k])}`);
  }
  return r as unknown as RunSettings;
}

/** A run's folder read back for resuming: its settings and its last checkpoint. */
export interface SavedRun {
  settings: RunSettings;
  checkpoint: CheckpointFiles;
  saved: CheckpointState;
}

/** Reads a run folder's settings and checkpoint; InputError naming what is missing or damaged. */
export async function readSavedRun(storage: Storage): Promise<SavedRun> {
  const files = await storage.readFolder(CHECKPOINT_FOLDER, CHECKPOINT_FILES);
  if (!files) {
    const missing = [];
    for (const name of CHECKPOINT_FILES) if (!(await storage.exists(`${CHECKPOINT_FOLDER}/${name}`))) missing.push(name);
    throw new InputError(`${storage.name}/${CHECKPOINT_FOLDER} has no ${missing[0] ?? CHECKPOINT_FILES[0]}: not a complete checkpoint`);
  }
  const checkpoint = files as CheckpointFiles;
  const saved = parseCheckpointState(new TextDecoder().decode(checkpoint['state.json']), `${storage.name}/${CHECKPOINT_FOLDER}/state.json`);
  let runJson: unknown;
  try {
    runJson = JSON.parse((await readText(storage, RUN_SETTINGS_FILE)) ?? '');
  } catch {
    throw new InputError(`${storage.name}/${RUN_SETTINGS_FILE} is missing or damaged: cannot tell which model and data the run used`);
  }
  return { settings: checkRunSettings(runJson, `${storage.name}/${RUN_SETTINGS_FILE}`), checkpoint, saved };
}

/** What a run reports as it goes; plain data, so the worker can pass it to the page as it is. */
export type RunEvent =
  | { type: 'log'; text: string }
  | { type: 'prepare'; done: number; total: number }
  | { type: 'start'; step: number; steps: number; train: number; heldOut: number }
  | { type: 'step'; report: StepReport; steps: number }
  | { type: 'checkpoint'; step: number }
  | { type: 'scores'; step: number; split: 'train' | 'held-out'; examples: number; accuracy: number; meanMargin: number }
  | { type: 'preview'; step: number; folder: string; files: string[] };

/** Encodes RGBA pixels as a PNG file with text chunks (the CLI: pngjs; a browser: a canvas). */
export type PngEncoder = (rgba: Uint8Array, width: number, height: number, text: Record<string, string>) => Uint8Array | Promise<Uint8Array>;

/** Where a run's inputs and outputs live, and how the platform does what differs between Node and a browser. */
export interface RunEnvironment {
  model: ModelHandle;
  /** The run's folder. */
  storage: Storage;
  features: FeatureStore;
  /** An image named by the examples: all its bytes, or its first `bytes` only (for header checks). */
  readImage(image: string, bytes?: number): Promise<Uint8Array>;
  decode(bytes: Uint8Array, name: string): Promise<RgbaImage>;
  /** Image formats `decode` reads. */
  formats?: readonly string[];
  encodePng: PngEncoder;
  /** Opens the GPU, after every input has been checked. */
  openGpu(): Promise<{ gpu: Gpu; release: () => void }>;
  onEvent(event: RunEvent): void | Promise<void>;
}

export interface RunSetup {
  config: TrainConfig;
  settings: RunSettings;
  data: TrainingData;
  /** Continuing a run: what readSavedRun read (config and settings then come from it). */
  resume?: SavedRun;
}

export interface RunResult {
  outcome: 'done' | 'cancelled';
  step: number;
  steps: number;
  /** Steps skipped this session for non-finite gradients. */
  skipped: number;
  loraModules: number;
}

/** The PNG of a sampled image with its parameters (A1111's text and the lab's JSON). */
export function samplePng(encode: PngEncoder, image: SampledImage, record: SampleRecord): Uint8Array | Promise<Uint8Array> {
  return encode(image.rgba, image.width, image.height, {
    parameters: a1111Parameters(record),
    'tpo-lab': JSON.stringify({ prompt: record.prompt, seed: record.seed, model: record.model, lora: record.lora ?? null, ...record.settings }),
  });
}

function metricsLine(r: StepReport): string {
  const round = (x: number) => (Number.isFinite(x) ? Number(x.toPrecision(7)) : String(x));
  const o: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r)) o[k] = typeof v === 'number' && k !== 'step' && k !== 'epoch' ? round(v) : v;
  return `${JSON.stringify(o)}\n`;
}

function trainingInfo(trainer: Trainer, settings: RunSettings, examples: readonly TrainExample[], principles: string[]): LoraTrainingInfo {
  const c = trainer.config;
  return {
    title: settings.title ?? `TPO Lab ${c.method} LoRA`,
    method: c.method,
    predictionType: trainer.schedule.prediction,
    beta: c.beta,
    kappa: c.kappa,
    principles,
    datasetSize: new Set(examples.flatMap((e) => [e.w.image, e.l.image])).size,
    pairs: examples.length,
    steps: trainer.state.step,
    epochs: trainer.state.epoch + 1,
    learningRate: c.lr,
    batchSize: c.batchSize,
    gradAccum: c.gradAccum,
    resolution: c.resolution,
    seed: c.seed,
    trainingStartedAt: settings.startedAt,
    trainingEndedAt: Math.floor(Date.now() / 1000),
    baseModelName: baseName(settings.model),
    targets: c.targets,
    lrScheduler: c.lrSchedule,
    warmupSteps: c.warmupSteps,
    optimizer: `AdamW(betas=(${c.adamBeta1}, ${c.adamBeta2}), eps=${c.adamEps}, weight_decay=${c.weightDecay})`,
  };
}

/**
 * Trains: checks every input before the GPU opens (data split, the checkpoint against the data and the
 * model, images and captions) and before anything is written, then prepares features, trains until the
 * configured step or until `control` stops it (a checkpoint is saved either way), and at the end writes the
 * LoRA and the scores. A stopped run continues with readSavedRun + trainRun exactly as if it never stopped.
 */
export async function trainRun(setup: RunSetup, env: RunEnvironment, control: TrainControl): Promise<RunResult> {
  const { config, settings, data, resume } = setup;
  const say = (text: string) => env.onEvent({ type: 'log', text });
  const { train, heldOut } = splitExamples(data.examples, settings.holdout, config.seed);
  if (train.length === 0) throw new InputError('no training examples are left after the held-out split; lower --holdout');
  if (resume) await resumeCheck(resume.saved, train);
  const model = await env.model.check({ resolution: config.resolution });
  if (resume) await checkCheckpointTensors(resume.saved, resume.checkpoint, model.unet);
  await checkTrainingInputs(
    [...train, ...heldOut],
    { resolution: config.resolution, tokenizer: await env.model.tokenizer(), allowSmallImages: settings.allowSmallImages ?? false, readHead: (image) => env.readImage(image, IMAGE_HEAD_BYTES), formats: env.formats },
    say,
  );
  await say(`${config.method}: ${train.length} training examples, ${heldOut.length} held out, from ${data.images} images in ${settings.data}`);
  if (!resume) await env.storage.write(RUN_SETTINGS_FILE, `${JSON.stringify(settings, null, 2)}\n`);

  const { gpu, release: releaseGpu } = await env.openGpu();
  let unet: UNet | null = null;
  let trainer: Trainer | null = null;
  let previews: TextToImage | null = null;
  try {
    const features = await prepareTrainingFeatures(gpu, env.model, [...train, ...heldOut], {
      resolution: config.resolution,
      store: env.features,
      readImage: (image) => env.readImage(image),
      decode: env.decode,
      onProgress: (done, total) => void env.onEvent({ type: 'prepare', done, total }),
    });
    const half = settings.precision === 'auto' ? preferHalfWeights(gpu) : settings.precision === 'f16';
    unet = await env.model.loadUNet(gpu, { halfWeights: half });
    // The model's own schedule: what its UNet predicts (epsilon, or v for the demo model) sets the loss target.
    const scheduler = await loadSchedulerConfig(env.model.files);
    if (settings.previews) {
      // The text encoder encodes the preview prompts once and is let go; the VAE stays for decoding.
      const text = await env.model.loadTextEncoder(gpu);
      try {
        const vae = await env.model.loadVae(gpu);
        previews = TextToImage.from({ unet, text, vae, tokenizer: await env.model.tokenizer(), scheduler });
      } catch (e) {
        text.release();
        throw e;
      }
      await previews.keepOnly([...settings.previews.prompts, '']);
    }
    if (resume) {
      const { saved, moments } = await loadCheckpoint(gpu, unet, resume.checkpoint);
      trainer = new Trainer(gpu, unet, train, features, config, saved.state, moments, scheduler);
      await say(`resuming at step ${saved.state.step} of ${config.steps}`);
    } else {
      unet.lora = createTrainerLora(gpu, unet, config);
      trainer = new Trainer(gpu, unet, train, features, config, undefined, undefined, scheduler);
    }
    return await stepLoop(trainer, { train, heldOut }, settings, env, control, previews);
  } finally {
    previews?.release();
    trainer?.release();
    unet?.lora?.release();
    unet?.release();
    releaseGpu();
  }
}

async function stepLoop(
  trainer: Trainer,
  split: { train: TrainExample[]; heldOut: TrainExample[] },
  settings: RunSettings,
  env: RunEnvironment,
  control: TrainControl,
  previews: TextToImage | null,
): Promise<RunResult> {
  const { storage } = env;
  const say = (text: string) => env.onEvent({ type: 'log', text });
  const c = trainer.config;
  const principles = [...new Set(split.train.map((e) => e.principle).filter((p): p is string => !!p))].sort();
  const info = () => trainingInfo(trainer, settings, split.train, principles);

  // Metrics past the checkpoint belong to steps that are about to be redone; they are dropped only once
  // the first new step has been taken, so a run that fails to start leaves the file as it was. A line
  // that is not JSON (a write cut short by a crash) is dropped too.
  const stepOf = (l: string) => {
    try {
      return (JSON.parse(l) as StepReport).step;
    } catch {
      return Infinity;
    }
  };
  const kept = ((await readText(storage, METRICS_FILE)) ?? '').split('\n').filter((l) => l.trim() && stepOf(l) <= trainer.state.step);
  let metricsStarted = false;

  const checkpoint = async () => {
    await storage.writeFolder(CHECKPOINT_FOLDER, await saveCheckpoint(trainer, info()));
    await env.onEvent({ type: 'checkpoint', step: trainer.state.step });
  };

  const score = async () => {
    if (settings.scoreDraws === 0) return;
    for (const [name, examples] of [['train', split.train], ['held-out', split.heldOut]] as const) {
      if (examples.length === 0) continue;
      const subset = examples.slice(0, settings.scoreLimit);
      const s = await implicitScores(trainer.gpu, trainer.unet, subset, trainer.features, { k: settings.scoreDraws, seed: DEFAULT_SCORE_SEED, beta: c.beta, batchSize: c.batchSize, schedule: trainer.schedule });
      const lines = s.scores.map((x) => JSON.stringify({ step: trainer.state.step, split: name, ...x }));
      lines.push(JSON.stringify({ step: trainer.state.step, split: name, summary: true, examples: subset.length, accuracy: s.accuracy, meanMargin: s.meanMargin }));
      await storage.append(SCORES_FILE, `${lines.join('\n')}\n`);
      await env.onEvent({ type: 'scores', step: trainer.state.step, split: name, examples: subset.length, accuracy: s.accuracy, meanMargin: s.meanMargin });
      await say(`step ${trainer.state.step} ${name}: implicit accuracy ${s.accuracy.toFixed(3)}, mean margin ${s.meanMargin.toPrecision(4)} (${subset.length} examples, K=${settings.scoreDraws})`);
    }
  };

  // Previews: fixed prompts and seed, so the images of different steps compare. Sampling draws nothing from
  // the trainer's random streams and restores the LoRA switch, so it leaves the run exactly as it was.
  const preview = async (folder: string, loraScale: number) => {
    const p = settings.previews;
    if (!previews || !p) return;
    const dir = `samples/${folder}`;
    const sampleSettings: SampleSettings = { ...DEFAULT_SAMPLE_SETTINGS, sampler: p.sampler, steps: p.steps, guidance: p.guidance, width: c.resolution, height: c.resolution, loraScale };
    const index = [];
    for (const [i, prompt] of p.prompts.entries()) {
      const [image] = await previews.sample([{ prompt, seed: p.seed }], sampleSettings);
      const file = `${String(i).padStart(3, '0')}-${p.seed}.png`;
      const record: SampleRecord = { prompt, seed: p.seed, settings: sampleSettings, model: baseName(settings.model), lora: loraScale ? `step-${trainer.state.step}` : undefined };
      await storage.write(`${dir}/${file}`, await samplePng(env.encodePng, image, record));
      index.push({ file, prompt, seed: p.seed });
    }
    await storage.write(`${dir}/index.json`, `${JSON.stringify({ step: trainer.state.step, lora: loraScale !== 0, ...sampleSettings, images: index }, null, 2)}\n`);
    await env.onEvent({ type: 'preview', step: trainer.state.step, folder: dir, files: index.map((x) => `${dir}/${x.file}`) });
    await say(`samples of ${loraScale ? `step ${trainer.state.step}` : 'the base model'} in ${storage.name}/${dir}`);
  };
  if (settings.previews && !(await storage.exists('samples/base/index.json'))) await preview('base', 0);

  await env.onEvent({ type: 'start', step: trainer.state.step, steps: c.steps, train: split.train.length, heldOut: split.heldOut.length });
  let skipped = 0;
  const outcome = await trainer.run(control, async (r) => {
    if (!metricsStarted) {
      await storage.write(METRICS_FILE, kept.map((l) => `${l}\n`).join(''));
      metricsStarted = true;
    }
    await storage.append(METRICS_FILE, metricsLine(r));
    if (r.skipped) {
      skipped++;
      await say(`step ${r.step}: gradients were not finite (loss ${r.loss}); the step was skipped, weights and optimizer state unchanged`);
    }
    await env.onEvent({ type: 'step', report: r, steps: c.steps });
    if (r.step % settings.checkpointEvery === 0 && r.step < c.steps) await checkpoint();
    if (settings.scoreEvery > 0 && r.step % settings.scoreEvery === 0 && r.step < c.steps) await score();
    if (settings.previews && r.step % settings.previews.every === 0) await preview(`step-${r.step}`, 1);
  });
  await checkpoint();
  const result: RunResult = { outcome, step: trainer.state.step, steps: c.steps, skipped, loraModules: trainer.lora.modules.size };
  if (outcome === 'cancelled') return result;
  await storage.write(LORA_FILE, await encodeLora(await loraToHost(trainer.lora), { format: 'kohya', dtype: settings.dtype, info: info() }));
  if (settings.previews && c.steps % settings.previews.every !== 0) await preview(`step-${c.steps}`, 1);
  await score();
  return result;
}

export { TrainControl };
