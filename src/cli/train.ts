// tpo-lab train: a LoRA trained with TDPO / TKTO / SFT / Diffusion-DPO / Diffusion-KTO, headless. Writes
// OUT/metrics.jsonl (one object per step), OUT/checkpoint/ (every --checkpoint-every steps, at the end and
// on Ctrl-C), OUT/lora.safetensors (kohya format) and OUT/scores.jsonl (implicit preference scores on the
// train and held-out splits). `--resume OUT` continues a run exactly where its checkpoint left it.

import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { type PreviewSettings, readSavedRun, type RunEvent, type RunSettings, type SavedRun, trainRun } from '../app/training-run';
import { decodeImageNode } from '../data/decode-node';
import { SAMPLERS, type SamplerName } from '../diffusion/samplers';
import { DEFAULT_TARGETS, OPTIONAL_TARGETS } from '../models/lora';
import type { NegativeFilter } from '../tpo/examples';
import { dirFeatureStore } from '../tpo/feature-store-node';
import { LR_SCHEDULES, type LrSchedule } from '../tpo/lr-schedule';
import { LOSS_METHODS } from '../tpo/methods';
import { DEFAULT_SCORE_DRAWS } from '../tpo/scores';
import { defaultTrainConfig, TrainControl, type TrainConfig, validateTrainConfig } from '../tpo/trainer';
import { formatHelp, intOpt, numberOpt, type OptionTable, parseOptions, type ParsedValues, stringOpt, UsageError } from './args';
import type { Command } from './command';
import { resolveModelArg } from './demo-model';
import { folderStorage } from './folder-storage';
import { type CliIO, commandGpu, ProgressBar } from './io';
import { encodePng } from './sample';
import { loadTrainingData, openModelDir, readImageFile } from './training-data';

const OPTIONS: OptionTable = {
  model: { type: 'string', value: 'PATH', description: 'diffusers model folder (SD1.x layout), or demo: the built-in demo model' },
  data: { type: 'string', value: 'FILE.jsonl', description: 'training data: TPO records (tdpo/tkto/sft), Diffusion-DPO records (dpo) or Diffusion-KTO records (kto)' },
  method: { type: 'string', value: 'NAME', description: LOSS_METHODS.join(', '), default: 'tdpo' },
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

function choice<T extends string>(values: ParsedValues, name: string, allowed: readonly T[], fallback: T): T {
  const v = stringOpt(values, name) ?? fallback;
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, not ${JSON.stringify(v)}`);
  return v as T;
}

function configFromOptions(values: ParsedValues): TrainConfig {
  const method = choice(values, 'method', LOSS_METHODS, 'tdpo');
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
  let resume: SavedRun | undefined;
  if (resumeArg) {
    out = path.resolve(io.cwd, resumeArg);
    const outArg = stringOpt(values, 'out');
    if (outArg && path.resolve(io.cwd, outArg) !== out) throw new UsageError('--resume continues in its own folder; leave out --out');
    resume = await readSavedRun(folderStorage(out));
    const { saved } = resume;
    settings = resume.settings;
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
      model: resolveModelArg(model, io),
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

  // Every input is checked before the GPU opens (slow on a CPU driver) and before anything is written;
  // the shared layer (src/app/training-run.ts) does the checks and the run, this shell shows its events.
  const data = await loadTrainingData(settings.data, config.method, { skipBadLines: settings.skipBadLines, negatives: settings.negatives });
  for (const p of data.problems) say(`skipped ${p.file ?? ''}${p.line ? `:${p.line}` : ''}: ${p.message}`);
  const model = openModelDir(settings.model);
  const control = new TrainControl();
  const onAbort = () => control.cancel();
  io.signal?.addEventListener('abort', onAbort);
  if (io.signal?.aborted) control.cancel();
  let prepareBar = null as ProgressBar | null;
  let trainBar = null as ProgressBar | null;
  const onEvent = (e: RunEvent) => {
    if (e.type === 'log') say(e.text);
    else if (e.type === 'prepare') {
      prepareBar ??= new ProgressBar(io.stderr, e.total, 'prepare', !quiet);
      prepareBar.tick();
      if (e.done === e.total) prepareBar.finish();
    } else if (e.type === 'start') trainBar = new ProgressBar(io.stderr, e.steps - e.step, 'train', !quiet);
    else if (e.type === 'step') {
      trainBar?.tick(1, `loss ${e.report.loss.toPrecision(4)} acc ${e.report.accuracy.toFixed(2)} |g| ${e.report.gradNorm.toPrecision(3)}`);
      if (e.report.step >= e.steps) trainBar?.finish(); // before the final checkpoint's and scores' messages
    }
  };
  let result;
  try {
    result = await trainRun(
      { config, settings, data, resume },
      {
        model,
        storage: folderStorage(out),
        features: dirFeatureStore(settings.cache),
        readImage: readImageFile,
        decode: decodeImageNode,
        encodePng,
        openGpu: () => commandGpu(io),
        onEvent,
      },
      control,
    );
  } finally {
    io.signal?.removeEventListener('abort', onAbort);
    trainBar?.finish();
    await model.close();
  }
  if (result.outcome === 'cancelled') {
    say(`stopped at step ${result.step} of ${result.steps}; checkpoint saved. Continue with: tpo-lab train --resume ${out}`);
    return 130;
  }
  if (!io.stderr.isTTY) say(`trained ${result.steps} steps${result.skipped ? ` (${result.skipped} skipped for non-finite gradients)` : ''}`);
  io.stdout.write(`wrote ${path.join(out, 'lora.safetensors')} (${result.loraModules} modules, rank ${config.rank}, ${settings.dtype}), metrics.jsonl, checkpoint/${settings.scoreDraws ? ', scores.jsonl' : ''}\n`);
  return 0;
}
