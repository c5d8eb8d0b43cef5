// tpo-lab score: implicit preference scores of a data file's examples under a LoRA (or the base model,
// whose margins are zero by construction), averaged over K fixed draws so checkpoints are comparable.

import { existsSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadSchedulerConfig } from '../diffusion/pipeline';
import { noiseSchedule } from '../diffusion/schedule';
import { decodeLora, readLora } from '../models/lora-io';
import { dirModelFiles } from '../models/model-files-node';
import { openSafetensorsFile } from '../models/safetensors-node';
import { loadUNet, type UNet } from '../models/unet';
import { preferHalfWeights } from '../models/weights';
import type { NegativeFilter } from '../tpo/examples';
import { defaultLossConfig } from '../tpo/losses';
import { LOSS_METHODS, type LossMethod } from '../tpo/methods';
import { DEFAULT_SCORE_DRAWS, DEFAULT_SCORE_SEED, implicitScores } from '../tpo/scores';
import { formatHelp, intOpt, numberOpt, type OptionTable, parseOptions, stringOpt, UsageError } from './args';
import type { Command } from './command';
import { resolveModelArg } from './demo-model';
import { type CliIO, commandGpu, ProgressBar } from './io';
import { checkModelDir, checkTrainingInputs, loadTrainingData, prepareTrainingFeatures } from './training-data';

const OPTIONS: OptionTable = {
  model: { type: 'string', value: 'PATH', description: 'diffusers model folder (SD1.x layout), or demo: the built-in demo model' },
  lora: { type: 'string', value: 'FILE', description: 'LoRA to score (kohya or diffusers format); without it: the base model' },
  data: { type: 'string', value: 'FILE.jsonl', description: 'examples to score (TPO records; DPO records with --method dpo)' },
  out: { type: 'string', value: 'FILE.jsonl', description: 'one line per example, then a summary line' },
  method: { type: 'string', value: 'NAME', description: 'which data kind and default beta', default: 'tdpo' },
  beta: { type: 'string', value: 'B', description: 'reward scale (default: the method\'s)' },
  draws: { type: 'string', value: 'K', description: 'draws of (t, eps) per example', default: String(DEFAULT_SCORE_DRAWS) },
  seed: { type: 'string', value: 'N', description: 'seed of the draws (keep it fixed to compare checkpoints)', default: String(DEFAULT_SCORE_SEED) },
  resolution: { type: 'string', value: 'PX', description: 'image side (multiple of 8)', default: '512' },
  batch: { type: 'string', value: 'B', description: 'examples x draws per forward', default: '4' },
  negatives: { type: 'string', value: 'all|accepted', description: 'which negatives to score', default: 'all' },
  'skip-bad-lines': { type: 'boolean', description: 'leave out data lines with problems instead of stopping' },
  cache: { type: 'string', value: 'DIR', description: 'feature cache shared with train (default: none, features kept in memory)' },
  precision: { type: 'string', value: 'auto|f16|f32', description: 'storage of the frozen UNet weights', default: 'auto' },
  quiet: { type: 'boolean', short: 'q', description: 'no progress bar' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const USAGE = 'tpo-lab score --model PATH [--lora FILE] --data FILE.jsonl --out FILE.jsonl [--draws 8] [--seed 1234]';

const DESCRIPTION = `For each example: r(x, c_w) and r(x, c_l), the implicit rewards -beta * (e_policy - e_ref) averaged
over K draws of (t, eps), and the margin r_w - r_l; then the implicit accuracy (share of positive margins,
ties counting half) and the mean margin. Draw j of an example depends only on --seed, the example and j.`;

export const scoreCommand: Command = {
  name: 'score',
  summary: 'implicit preference scores (rewards, margins, accuracy) of data under a LoRA',
  help: () => formatHelp(USAGE, DESCRIPTION, OPTIONS),
  run: runScore,
};

async function runScore(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseOptions(argv, OPTIONS);
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const model = stringOpt(values, 'model');
  const dataArg = stringOpt(values, 'data');
  const outArg = stringOpt(values, 'out');
  if (!model) throw new UsageError('--model is required');
  if (!dataArg) throw new UsageError('--data is required');
  if (!outArg) throw new UsageError('--out is required');
  const method = (stringOpt(values, 'method') ?? 'tdpo') as LossMethod;
  if (!LOSS_METHODS.includes(method)) throw new UsageError(`--method must be one of ${LOSS_METHODS.join(', ')}`);
  if (method === 'kto') throw new UsageError('Diffusion-KTO data has no pairs to compare; score its images with a TPO or DPO file');
  const negatives = (stringOpt(values, 'negatives') ?? 'all') as NegativeFilter;
  if (negatives !== 'all' && negatives !== 'accepted') throw new UsageError('--negatives must be all or accepted');
  const precision = stringOpt(values, 'precision') ?? 'auto';
  if (!['auto', 'f16', 'f32'].includes(precision)) throw new UsageError('--precision must be auto, f16 or f32');
  const beta = numberOpt(values, 'beta', Number.MIN_VALUE, defaultLossConfig(method).beta);
  const k = intOpt(values, 'draws', 1, DEFAULT_SCORE_DRAWS);
  const seed = intOpt(values, 'seed', 0, DEFAULT_SCORE_SEED);
  const resolution = intOpt(values, 'resolution', 8, 512);
  const batchSize = intOpt(values, 'batch', 1, 4);
  const quiet = values.quiet === true;
  const cacheArg = stringOpt(values, 'cache');
  const modelDir = resolveModelArg(model, io);
  const out = path.resolve(io.cwd, outArg);

  if (existsSync(out) && statSync(out).isDirectory()) throw new UsageError(`--out ${outArg} is a folder; name a file to write the scores to`);
  const data = await loadTrainingData(path.resolve(io.cwd, dataArg), method, { skipBadLines: values['skip-bad-lines'] === true, negatives });
  for (const p of data.problems) io.stderr.write(`skipped ${p.file ?? ''}${p.line ? `:${p.line}` : ''}: ${p.message}\n`);
  // Inputs are checked before the GPU opens: model folder and resolution, the LoRA against the UNet, images.
  const checked = await checkModelDir(modelDir, resolution);
  const loraArg = stringOpt(values, 'lora');
  if (loraArg) {
    const { file, close } = await openSafetensorsFile(path.resolve(io.cwd, loraArg));
    try {
      await decodeLora(file, checked.unet);
    } finally {
      await close();
    }
  }
  await checkTrainingInputs(data.examples, { resolution, modelDir, allowSmallImages: true }, (t) => io.stderr.write(`${t}\n`));
  const { gpu, release: releaseGpu } = await commandGpu(io);
  let unet: UNet | null = null;
  try {
    const features = await prepareTrainingFeatures(gpu, modelDir, data.examples, { resolution, cacheDir: cacheArg ? path.resolve(io.cwd, cacheArg) : null, quiet }, io);
    const half = precision === 'auto' ? preferHalfWeights(gpu) : precision === 'f16';
    const files = dirModelFiles(modelDir);
    const schedule = noiseSchedule(await loadSchedulerConfig(files));
    unet = await loadUNet(gpu, files, { halfWeights: half }).finally(() => files.close?.());
    if (loraArg) {
      const { file, close } = await openSafetensorsFile(path.resolve(io.cwd, loraArg));
      try {
        unet.lora = await readLora(gpu, file, unet.config);
      } finally {
        await close();
      }
    }
    const bar = new ProgressBar(io.stderr, data.examples.length * k, 'score', !quiet);
    let last = 0;
    const s = await implicitScores(gpu, unet, data.examples, features, {
      k,
      seed,
      beta,
      batchSize,
      schedule,
      onProgress: (done) => {
        bar.tick(done - last);
        last = done;
      },
    });
    bar.finish();
    const byId = new Map(data.examples.map((e) => [e.id, e]));
    const lines = s.scores.map((x) => {
      const e = byId.get(x.id)!;
      return JSON.stringify({
        image_w: path.relative(path.dirname(out), e.w.image).split(path.sep).join('/'),
        caption_w: e.w.caption,
        ...(e.l.image !== e.w.image ? { image_l: path.relative(path.dirname(out), e.l.image).split(path.sep).join('/') } : {}),
        caption_l: e.l.caption,
        ...(x.principle ? { principle: x.principle } : {}),
        reward_w: x.rewardW,
        reward_l: x.rewardL,
        margin: x.margin,
      });
    });
    const summary = { summary: true, examples: s.scores.length, accuracy: s.accuracy, mean_margin: s.meanMargin, draws: k, seed, beta, lora: loraArg ?? null };
    lines.push(JSON.stringify(summary));
    await writeFile(out, `${lines.join('\n')}\n`);
    io.stdout.write(`implicit accuracy ${s.accuracy.toFixed(3)}, mean margin ${s.meanMargin.toPrecision(4)} over ${s.scores.length} examples (K=${k}); wrote ${out}\n`);
    return 0;
  } finally {
    unet?.lora?.release();
    unet?.release();
    releaseGpu();
  }
}
