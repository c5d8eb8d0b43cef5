// tpo-lab train: a LoRA trained with TDPO / TKTO / SFT / Diffusion-DPO / Diffusion-KTO, headless. Writes
// OUT/metrics.jsonl (one object per step), OUT/checkpoint/ (every --checkpoint-every steps, at the end and
// on Ctrl-C), OUT/lora.safetensors (kohya format) and OUT/scores.jsonl (implicit preference scores on the
// train and held-out splits). `--resume OUT` continues a run exactly where its checkpoint left it.

import { existsSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { DEFAULT_SAMPLE_SETTINGS, type SampleRecord, type SampleSettings, TextToImage } from '../diffusion/pipeline';
import { SAMPLERS, type SamplerName } from '../diffusion/samplers';
import type { Gpu } from '../gpu/gpu';
import { DEFAULT_TARGETS, OPTIONAL_TARGETS } from '../models/lora';
import { encodeLora, loraToHost, type LoraTrainingInfo } from '../models/lora-io';
import { dirModelFiles } from '../models/model-files-node';
import { loadUNet, type UNet, unetParams } from '../models/unet';
import { preferHalfWeights } from '../models/weights';
import type { Features } from '../tpo/batch';
import { CHECKPOINT_FILES, checkCheckpointTensors, type CheckpointFiles, type CheckpointState, loadCheckpoint, parseCheckpointState, resumeCheck, saveCheckpoint } from '../tpo/checkpoint';
import { type NegativeFilter, splitExamples, type TrainExample } from '../tpo/examples';
import { LR_SCHEDULES, type LrSchedule } from '../tpo/lr-schedule';
import type { LossMethod } from '../tpo/losses';
import { DEFAULT_SCORE_DRAWS, DEFAULT_SCORE_SEED, implicitScores } from '../tpo/scores';
import { createTrainerLora, defaultTrainConfig, type StepReport, TrainControl, type TrainConfig, Trainer, validateTrainConfig } from '../tpo/trainer';
import { formatHelp, intOpt, numberOpt, type OptionTable, parseOptions, type ParsedValues, stringOpt, UsageError } from './args';
import type { Command } from './command';
import { type CliIO, commandGpu, ProgressBar } from './io';
import { samplePng } from './sample';
import { checkModelDir, checkTrainingInputs, loadTrainingData, prepareTrainingFeatures } from './training-data';

export const METHODS: readonly LossMethod[] = ['tdpo', 'tkto', 'sft', 'dpo', 'kto'];

const OPTIONS: OptionTable = {
  model: { type: 'string', value: 'PATH', description: 'diffusers model folder (SD1.x layout)' },
  data: { type: 'string', value: 'FILE.jsonl', description: 'training data: TPO records (tdpo/tkto/sft), Diffusion-DPO records (dpo) or Diffusion-KTO records (kto)' },
  method: { type: 'string', value: 'NAME', description: METHODS.join(', '), default: 'tdpo' },
  steps: { type: 'string', value: 'N', description: 'optimizer steps (default 1000; with --resume: the new total, default the run\'s own)' },
  out: { type: 'string', value: 'DIR', description: 'output folder (metrics.jsonl, lora.safetensors, checkpoint/, scores.jsonl)' },
  resume: { type: 'string', value: 'DIR', description: 'continue the run in DIR from its checkpoint (model, data and settings come from it)' },
  lr: { type: 'string', value: 'LR', description: 'peak learning rate', default: '1e-4' },
  'lr-schedule': { type: 'string', value: 'NAME', description: LR_SCHEDULES.join(' or '), default: 'constant' },
  warmup: { type: 'string', value: 'N', description: 'linear warm-up steps', default: '0' },
  rank: { type: 'string', value: 'R', description: 'LoRA rank', default: '8' },
  alpha: { type: 'string', value: 'A', description: 'LoRA alpha (default: rank)' },
  targets: { type: 'string', value: 'LIST', description: `LoRA targets: ${[...DEFAULT_TARGETS, ...OPTIONAL_TARGETS].join(', ')}`, default: DEFAULT_TARGETS.join(',') },
  beta: { type: 'string', value: 'B', description: 'preference strength (default: 2500 for tdpo/dpo, 1000 for tkto/kto)' },
  kappa: { type: 'string', value: 'K|none', description: 'negative-term clip in logit units; none turns it off', default: '5' },
  'lambda-d': { type: 'string', value: 'X', description: 'TKTO / KTO weight of the desirable term', default: '1' },
  'lambda-u': { type: 'string', value: 'X', description: 'TKTO / KTO weight of the undesirable term', default: '1' },
  batch: { type: 'string', value: 'B', description: 'examples per micro-batch', default: '1' },
  'grad-accum': { type: 'string', value: 'N', description: 'micro-batches per optimizer step', default: '1' },
  resolution: { type: 'string', value: 'PX', description: 'training image side (multiple of 8); images are centre-cropped and resized', default: '512' },
  seed: { type: 'string', value: 'N', description: 'seed of the LoRA initialisation, data order, timesteps and noise', default: '0' },
  't-min': { type: 'string', value: 'T', description: 'smallest training timestep', default: '0' },
  't-max': { type: 'string', value: 'T', description: 'largest training timestep', default: '999' },
  'weight-decay': { type: 'string', value: 'X', description: 'AdamW decoupled weight decay', default: '0.01' },
  'max-grad-norm': { type: 'string', value: 'X', description: 'global gradient-norm clip (0: off)', default: '1' },
  'no-grad-checkpointing': { type: 'boolean', description: 'keep every activation for the backward (faster, much more memory)' },
  precision: { type: 'string', value: 'auto|f16|f32', description: 'storage of the frozen UNet weights (auto: f16 where the GPU has shader-f16)', default: 'auto' },
  negatives: { type: 'string', value: 'all|accepted', description: 'which negatives train: all but rejected ones, or only accepted ones', default: 'all' },
  'skip-bad-lines': { type: 'boolean', description: 'leave out data lines with problems (reported) instead of stopping' },
  'allow-small-images': { type: 'boolean', description: 'train on images far smaller than --resolution (warned about instead of refused)' },
  holdout: { type: 'string', value: 'FRACTION', description: 'share of images held out for the held-out implicit scores', default: '0.1' },
  'score-draws': { type: 'string', value: 'K', description: 'implicit-score draws of (t, eps) per example (0: no scores)', default: String(DEFAULT_SCORE_DRAWS) },
  'score-every': { type: 'string', value: 'N', description: 'also score every N steps (0: only at the end)', default: '0' },
  'score-limit': { type: 'string', value: 'N', description: 'examples scored per split at most', default: '256' },
  'checkpoint-every': { type: 'string', value: 'N', description: 'steps between checkpoints', default: '100' },
  cache: { type: 'string', value: 'DIR', description: 'feature cache (latents, text states) (default: OUT/cache)' },
  dtype: { type: 'string', value: 'fp16|fp32', description: 'precision of OUT/lora.safetensors', default: 'fp16' },
  title: { type: 'string', value: 'TEXT', description: 'title written into the LoRA metadata' },
  'sample-every': { type: 'string', value: 'N', description: 'draw preview samples every N steps into OUT/samples/step-N/ (0: never; the base model once at the start into OUT/samples/base/)', default: '0' },
  'sample-prompts': { type: 'string', value: 'FILE.txt', description: 'preview prompts, one per line (needed with --sample-every)' },
  'sample-steps': { type: 'string', value: 'N', description: 'sampling steps of a preview', default: '20' },
  'sample-guidance': { type: 'string', value: 'G', description: 'guidance scale of the previews', default: '7.5' },
  'sample-sampler': { type: 'string', value: 'NAME', description: `preview sampler: ${SAMPLERS.join(', ')}`, default: 'ddim' },
  'sample-seed': { type: 'string', value: 'S', description: 'seed of every preview image (the same at every step, so they compare)', default: '0' },
  quiet: { type: 'boolean', short: 'q', description: 'no progress bar' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const USAGE = 'tpo-lab train --model PATH --data FILE.jsonl --method tdpo|tkto|sft|dpo|kto --steps N --out DIR [options]\n       tpo-lab train --resume DIR [--steps N]';

const DESCRIPTION = `Trains a LoRA on the UNet with Text Preference Optimization (or a baseline), on the GPU through
WebGPU (Dawn). Images and captions are encoded once (VAE latents, text-encoder states) into a cache, then
only the UNet runs. Each step draws t and eps from the seed, runs the reference (LoRA off) and the policy
on the matched and mismatched rows, and takes one AdamW step. A step with non-finite gradients is skipped
and reported; the weights are never touched by it. Ctrl-C finishes the step in flight, saves a
checkpoint and exits; --resume continues exactly as if the run had never stopped.`;

export const trainCommand: Command = {
  name: 'train',
  summary: 'train a LoRA with TDPO, TKTO, SFT, Diffusion-DPO or Diffusion-KTO (metrics, checkpoints, scores)',
  help: () => formatHelp(USAGE, DESCRIPTION, OPTIONS),
  run: runTrain,
};

/** Settings of a run that are not training hyper-parameters, kept in OUT/run.json for --resume. */
interface RunSettings {
  model: string;
  data: string;
  negatives: NegativeFilter;
  skipBadLines: boolean;
  holdout: number;
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
  /** Preview samples (absent or every 0: none). */
  previews?: PreviewSettings;
}

interface PreviewSettings {
  every: number;
  prompts: string[];
  steps: number;
  guidance: number;
  sampler: SamplerName;
  seed: number;
}

/** run.json as --resume reads it back: the fields it relies on, checked, so a damaged file is named. */
function checkRunSettings(s: unknown, where: string): RunSettings {
  const bad = (what: string): never => {
    throw new UsageError(`${where}: ${what}; the run's settings are damaged (restore run.json, or start a new run)`);
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

function choice<T extends string>(values: ParsedValues, name: string, allowed: readonly T[], fallback: T): T {
  const v = stringOpt(values, name) ?? fallback;
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, not ${JSON.stringify(v)}`);
  return v as T;
}

function configFromOptions(values: ParsedValues): TrainConfig {
  const method = choice(values, 'method', METHODS, 'tdpo');
  const base = defaultTrainConfig(method);
  const rank = intOpt(values, 'rank', 1, base.rank);
  const kappaText = stringOpt(values, 'kappa') ?? '5';
  const kappa = kappaText === 'none' || kappaText === 'null' ? null : numberOpt(values, 'kappa', -Infinity, 5);
  const targets = (stringOpt(values, 'targets') ?? DEFAULT_TARGETS.join(','))
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  const known = [...DEFAULT_TARGETS, ...OPTIONAL_TARGETS] as string[];
  for (const t of targets) if (!known.includes(t)) throw new UsageError(`--targets: unknown target '${t}' (use ${known.join(', ')})`);
  const config: TrainConfig = {
    ...base,
    steps: intOpt(values, 'steps', 1, 1000),
    lr: numberOpt(values, 'lr', Number.MIN_VALUE, base.lr),
    lrSchedule: choice<LrSchedule>(values, 'lr-schedule', LR_SCHEDULES, 'constant'),
    warmupSteps: intOpt(values, 'warmup', 0, 0),
    rank,
    alpha: numberOpt(values, 'alpha', Number.MIN_VALUE, rank),
    targets,
    beta: numberOpt(values, 'beta', Number.MIN_VALUE, base.beta),
    kappa,
    lambdaD: numberOpt(values, 'lambda-d', 0, 1),
    lambdaU: numberOpt(values, 'lambda-u', 0, 1),
    batchSize: intOpt(values, 'batch', 1, 1),
    gradAccum: intOpt(values, 'grad-accum', 1, 1),
    resolution: intOpt(values, 'resolution', 8, 512),
    seed: intOpt(values, 'seed', 0, 0),
    tMin: intOpt(values, 't-min', 0, 0),
    tMax: intOpt(values, 't-max', 0, 999),
    weightDecay: numberOpt(values, 'weight-decay', 0, base.weightDecay),
    maxGradNorm: numberOpt(values, 'max-grad-norm', 0, base.maxGradNorm),
    gradientCheckpointing: values['no-grad-checkpointing'] !== true,
  };
  try {
    validateTrainConfig(config);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return config;
}

async function readCheckpointFiles(dir: string): Promise<CheckpointFiles> {
  const out: Partial<CheckpointFiles> = {};
  for (const name of CHECKPOINT_FILES) {
    try {
      out[name] = new Uint8Array(await readFile(path.join(dir, name)));
    } catch {
      throw new UsageError(`${dir} has no ${name}: not a complete checkpoint`);
    }
  }
  return out as CheckpointFiles;
}

/** Replaces OUT/checkpoint/ as a whole: a crash mid-write leaves the previous checkpoint intact. */
async function writeCheckpoint(out: string, files: CheckpointFiles): Promise<void> {
  const dir = path.join(out, 'checkpoint');
  const fresh = `${dir}.new`;
  const old = `${dir}.old`;
  await rm(fresh, { recursive: true, force: true });
  await mkdir(fresh, { recursive: true });
  for (const name of CHECKPOINT_FILES) await writeFile(path.join(fresh, name), files[name]);
  await rm(old, { recursive: true, force: true });
  if (existsSync(dir)) await rename(dir, old);
  await rename(fresh, dir);
  await rm(old, { recursive: true, force: true });
}

async function writeAtomic(file: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${file}.tmp`;
  await writeFile(tmp, data);
  await rename(tmp, file);
}

function metricsLine(r: StepReport): string {
  const round = (x: number) => (Number.isFinite(x) ? Number(x.toPrecision(7)) : String(x));
  const o: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(r)) o[k] = typeof v === 'number' && k !== 'step' && k !== 'epoch' ? round(v) : v;
  return `${JSON.stringify(o)}\n`;
}

async function previewSettings(values: ParsedValues, io: CliIO): Promise<PreviewSettings | undefined> {
  const every = intOpt(values, 'sample-every', 0, 0);
  const file = stringOpt(values, 'sample-prompts');
  if (every === 0) {
    if (file) throw new UsageError('--sample-prompts goes with --sample-every N');
    return undefined;
  }
  if (!file) throw new UsageError('--sample-every needs --sample-prompts FILE.txt (one prompt per line)');
  let text: string;
  try {
    text = await readFile(path.resolve(io.cwd, file), 'utf8');
  } catch (e) {
    throw new UsageError(`--sample-prompts ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  const prompts = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  if (prompts.length === 0) throw new UsageError(`--sample-prompts ${file} holds no prompts`);
  return {
    every,
    prompts,
    steps: intOpt(values, 'sample-steps', 1, 20),
    guidance: numberOpt(values, 'sample-guidance', 0, 7.5),
    sampler: choice<SamplerName>(values, 'sample-sampler', SAMPLERS, 'ddim'),
    seed: intOpt(values, 'sample-seed', 0, 0),
  };
}

async function runTrain(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseOptions(argv, OPTIONS);
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const say = (text: string) => io.stderr.write(`${text}\n`);
  const quiet = values.quiet === true;
  const resumeArg = stringOpt(values, 'resume');

  let out: string;
  let config: TrainConfig;
  let settings: RunSettings;
  let resumeFiles: CheckpointFiles | null = null;
  let saved: CheckpointState | null = null;
  if (resumeArg) {
    out = path.resolve(io.cwd, resumeArg);
    const outArg = stringOpt(values, 'out');
    if (outArg && path.resolve(io.cwd, outArg) !== out) throw new UsageError('--resume continues in its own folder; leave out --out');
    resumeFiles = await readCheckpointFiles(path.join(out, 'checkpoint'));
    saved = parseCheckpointState(new TextDecoder().decode(resumeFiles['state.json']), path.join(out, 'checkpoint/state.json'));
    let runJson: unknown;
    try {
      runJson = JSON.parse(await readFile(path.join(out, 'run.json'), 'utf8'));
    } catch {
      throw new UsageError(`${out}/run.json is missing or damaged: cannot tell which model and data the run used`);
    }
    settings = checkRunSettings(runJson, path.join(out, 'run.json'));
    config = { ...saved.config, steps: intOpt(values, 'steps', 1, saved.config.steps) };
    if (config.steps <= saved.state.step) {
      say(`the checkpoint is at step ${saved.state.step} of ${saved.config.steps}; pass --steps with a larger total to train on`);
      return 0;
    }
    const ignored = Object.keys(values).filter((k) => !['resume', 'steps', 'quiet', 'out', 'help'].includes(k) && values[k] !== OPTIONS[k]?.default);
    if (ignored.length) say(`note: --resume keeps the run's own settings; ignoring ${ignored.map((k) => `--${k}`).join(', ')}`);
  } else {
    const model = stringOpt(values, 'model');
    const data = stringOpt(values, 'data');
    const outArg = stringOpt(values, 'out');
    if (!model) throw new UsageError('--model is required');
    if (!data) throw new UsageError('--data is required');
    if (!outArg) throw new UsageError('--out is required');
    out = path.resolve(io.cwd, outArg);
    if (existsSync(out) && !statSync(out).isDirectory()) throw new UsageError(`--out ${outArg} is a file; the output must be a folder (new or holding a run)`);
    if (existsSync(path.join(out, 'checkpoint', 'state.json'))) {
      throw new UsageError(`${out} already holds a run; continue it with --resume ${outArg}, or choose another --out`);
    }
    config = configFromOptions(values);
    settings = {
      model: path.resolve(io.cwd, model),
      data: path.resolve(io.cwd, data),
      negatives: choice<NegativeFilter>(values, 'negatives', ['all', 'accepted'], 'all'),
      skipBadLines: values['skip-bad-lines'] === true,
      holdout: numberOpt(values, 'holdout', 0, 0.1),
      cache: path.resolve(io.cwd, stringOpt(values, 'cache') ?? path.join(outArg, 'cache')),
      precision: choice(values, 'precision', ['auto', 'f16', 'f32'] as const, 'auto'),
      scoreDraws: intOpt(values, 'score-draws', 0, DEFAULT_SCORE_DRAWS),
      scoreEvery: intOpt(values, 'score-every', 0, 0),
      scoreLimit: intOpt(values, 'score-limit', 1, 256),
      checkpointEvery: intOpt(values, 'checkpoint-every', 1, 100),
      dtype: choice(values, 'dtype', ['fp16', 'fp32'] as const, 'fp16'),
      title: stringOpt(values, 'title'),
      startedAt: Math.floor(Date.now() / 1000),
      allowSmallImages: values['allow-small-images'] === true,
    };
    if (settings.holdout >= 1) throw new UsageError('--holdout must be below 1');
    settings.previews = await previewSettings(values, io);
  }

  // Every input is checked before the GPU opens (slow on a CPU driver) and before anything is written:
  // data, model folder, resolution, images, the checkpoint against the data and the LoRA.
  const data = await loadTrainingData(settings.data, config.method, { skipBadLines: settings.skipBadLines, negatives: settings.negatives });
  for (const p of data.problems) say(`skipped ${p.file ?? ''}${p.line ? `:${p.line}` : ''}: ${p.message}`);
  const { train, heldOut } = splitExamples(data.examples, settings.holdout, config.seed);
  if (train.length === 0) throw new UsageError('no training examples are left after the held-out split; lower --holdout');
  if (saved) await resumeCheck(saved, train);
  const model = await checkModelDir(settings.model, config.resolution);
  if (saved && resumeFiles) await checkCheckpointTensors(saved, resumeFiles, unetParams(model.unet));
  await checkTrainingInputs([...train, ...heldOut], { resolution: config.resolution, modelDir: settings.model, allowSmallImages: settings.allowSmallImages ?? false }, say);
  say(`${config.method}: ${train.length} training examples, ${heldOut.length} held out, from ${data.images} images in ${settings.data}`);
  await mkdir(out, { recursive: true });
  if (!resumeFiles) await writeFile(path.join(out, 'run.json'), `${JSON.stringify(settings, null, 2)}\n`);

  const { gpu, release: releaseGpu } = await commandGpu(io);
  let unet: UNet | null = null;
  let trainer: Trainer | null = null;
  let previews: TextToImage | null = null;
  try {
    const features = await prepareTrainingFeatures(gpu, settings.model, [...train, ...heldOut], { resolution: config.resolution, cacheDir: settings.cache, quiet }, io);
    const half = settings.precision === 'auto' ? preferHalfWeights(gpu) : settings.precision === 'f16';
    const files = dirModelFiles(settings.model);
    try {
      unet = await loadUNet(gpu, files, { halfWeights: half });
      if (settings.previews) {
        // The text encoder encodes the preview prompts once and is let go; the VAE stays for decoding.
        previews = await TextToImage.load(unet, files);
        await previews.keepOnly([...settings.previews.prompts, '']);
      }
    } finally {
      await files.close?.();
    }
    if (resumeFiles) {
      const { saved, moments } = await loadCheckpoint(gpu, unet, resumeFiles);
      trainer = new Trainer(gpu, unet, train, features, config, saved.state, moments);
      say(`resuming at step ${saved.state.step} of ${config.steps}`);
    } else {
      unet.lora = createTrainerLora(gpu, unet, config);
      trainer = new Trainer(gpu, unet, train, features, config);
    }
    return await trainLoop(gpu, trainer, { train, heldOut }, features, settings, out, io, quiet, previews);
  } finally {
    previews?.release();
    trainer?.release();
    unet?.lora?.release();
    unet?.release();
    releaseGpu();
  }
}

function trainingInfo(trainer: Trainer, settings: RunSettings, examples: readonly TrainExample[], principles: string[]): LoraTrainingInfo {
  const c = trainer.config;
  return {
    title: settings.title ?? `TPO Lab ${c.method} LoRA`,
    method: c.method,
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
    baseModelName: path.basename(settings.model),
    targets: c.targets,
    lrScheduler: c.lrSchedule,
    warmupSteps: c.warmupSteps,
    optimizer: `AdamW(betas=(${c.adamBeta1}, ${c.adamBeta2}), eps=${c.adamEps}, weight_decay=${c.weightDecay})`,
  };
}

async function trainLoop(
  gpu: Gpu,
  trainer: Trainer,
  split: { train: TrainExample[]; heldOut: TrainExample[] },
  features: Features,
  settings: RunSettings,
  out: string,
  io: CliIO,
  quiet: boolean,
  previews: TextToImage | null,
): Promise<number> {
  const say = (text: string) => io.stderr.write(`${text}\n`);
  const c = trainer.config;
  const principles = [...new Set(split.train.map((e) => e.principle).filter((p): p is string => !!p))].sort();
  const info = () => trainingInfo(trainer, settings, split.train, principles);

  // Metrics past the checkpoint belong to steps that are about to be redone; they are dropped only once
  // the first new step has been taken, so a run that fails to start leaves the file as it was. A line
  // that is not JSON (a write cut short by a crash) is dropped too.
  const metricsFile = path.join(out, 'metrics.jsonl');
  const stepOf = (l: string) => {
    try {
      return (JSON.parse(l) as StepReport).step;
    } catch {
      return Infinity;
    }
  };
  const kept = existsSync(metricsFile)
    ? (await readFile(metricsFile, 'utf8')).split('\n').filter((l) => l.trim() && stepOf(l) <= trainer.state.step)
    : [];
  let metricsStarted = false;

  const scoresFile = path.join(out, 'scores.jsonl');
  const score = async () => {
    if (settings.scoreDraws === 0) return;
    for (const [name, examples] of [['train', split.train], ['held-out', split.heldOut]] as const) {
      if (examples.length === 0) continue;
      const subset = examples.slice(0, settings.scoreLimit);
      const s = await implicitScores(gpu, trainer.unet, subset, features, { k: settings.scoreDraws, seed: DEFAULT_SCORE_SEED, beta: c.beta, batchSize: c.batchSize });
      const lines = s.scores.map((x) => JSON.stringify({ step: trainer.state.step, split: name, ...x }));
      lines.push(JSON.stringify({ step: trainer.state.step, split: name, summary: true, examples: subset.length, accuracy: s.accuracy, meanMargin: s.meanMargin }));
      await writeFile(scoresFile, `${lines.join('\n')}\n`, { flag: 'a' });
      say(`step ${trainer.state.step} ${name}: implicit accuracy ${s.accuracy.toFixed(3)}, mean margin ${s.meanMargin.toPrecision(4)} (${subset.length} examples, K=${settings.scoreDraws})`);
    }
  };

  // Previews: fixed prompts and seed, so the images of different steps compare. Sampling draws nothing from
  // the trainer's random streams and restores the LoRA switch, so it leaves the run exactly as it was.
  const preview = async (folder: string, loraScale: number) => {
    const p = settings.previews;
    if (!previews || !p) return;
    const dir = path.join(out, 'samples', folder);
    const sampleSettings: SampleSettings = { ...DEFAULT_SAMPLE_SETTINGS, sampler: p.sampler, steps: p.steps, guidance: p.guidance, width: c.resolution, height: c.resolution, loraScale };
    await mkdir(dir, { recursive: true });
    const index = [];
    for (const [i, prompt] of p.prompts.entries()) {
      const [image] = await previews.sample([{ prompt, seed: p.seed }], sampleSettings);
      const file = `${String(i).padStart(3, '0')}-${p.seed}.png`;
      const record: SampleRecord = { prompt, seed: p.seed, settings: sampleSettings, model: path.basename(settings.model), lora: loraScale ? `step-${trainer.state.step}` : undefined };
      await writeAtomic(path.join(dir, file), samplePng(image, record));
      index.push({ file, prompt, seed: p.seed });
    }
    await writeAtomic(path.join(dir, 'index.json'), `${JSON.stringify({ step: trainer.state.step, lora: loraScale !== 0, ...sampleSettings, images: index }, null, 2)}\n`);
    say(`samples of ${loraScale ? `step ${trainer.state.step}` : 'the base model'} in ${dir}`);
  };
  if (settings.previews && !existsSync(path.join(out, 'samples', 'base', 'index.json'))) await preview('base', 0);

  const control = new TrainControl();
  const onAbort = () => control.cancel();
  io.signal?.addEventListener('abort', onAbort);
  if (io.signal?.aborted) control.cancel();
  const bar = new ProgressBar(io.stderr, c.steps - trainer.state.step, 'train', !quiet);
  let skipped = 0;
  let outcome: 'done' | 'cancelled';
  try {
    outcome = await trainer.run(control, async (r) => {
      if (!metricsStarted) {
        await writeAtomic(metricsFile, kept.map((l) => `${l}\n`).join(''));
        metricsStarted = true;
      }
      await writeFile(metricsFile, metricsLine(r), { flag: 'a' });
      if (r.skipped) {
        skipped++;
        say(`step ${r.step}: gradients were not finite (loss ${r.loss}); the step was skipped, weights and optimizer state unchanged`);
      }
      bar.tick(1, `loss ${r.loss.toPrecision(4)} acc ${r.accuracy.toFixed(2)} |g| ${r.gradNorm.toPrecision(3)}`);
      if (r.step % settings.checkpointEvery === 0 && r.step < c.steps) await writeCheckpoint(out, await saveCheckpoint(trainer, info()));
      if (settings.scoreEvery > 0 && r.step % settings.scoreEvery === 0 && r.step < c.steps) await score();
      if (settings.previews && r.step % settings.previews.every === 0) await preview(`step-${r.step}`, 1);
    });
  } finally {
    io.signal?.removeEventListener('abort', onAbort);
    bar.finish();
  }
  await writeCheckpoint(out, await saveCheckpoint(trainer, info()));
  if (outcome === 'cancelled') {
    say(`stopped at step ${trainer.state.step} of ${c.steps}; checkpoint saved. Continue with: tpo-lab train --resume ${out}`);
    return 130;
  }
  const lora = await encodeLora(await loraToHost(trainer.lora), { format: 'kohya', dtype: settings.dtype, info: info() });
  await writeAtomic(path.join(out, 'lora.safetensors'), lora);
  if (settings.previews && c.steps % settings.previews.every !== 0) await preview(`step-${c.steps}`, 1);
  await score();
  if (!io.stderr.isTTY) say(`trained ${c.steps} steps${skipped ? ` (${skipped} skipped for non-finite gradients)` : ''}`);
  io.stdout.write(`wrote ${path.join(out, 'lora.safetensors')} (${trainer.lora.modules.size} modules, rank ${c.rank}, ${settings.dtype}), metrics.jsonl, checkpoint/${settings.scoreDraws ? ', scores.jsonl' : ''}\n`);
  return 0;
}
