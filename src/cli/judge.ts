// tpo-lab judge: an independent judge (a CLIP model, or a CLIP-shaped reward model, run with ONNX Runtime)
// scores every pair of a TPO data file, S(x, c_w) and S(x, c_l); with a run's implicit scores it reports
// how well the judge's margins and the implicit margins agree (Pearson, Spearman), overall and per
// principle. With --samples it scores `tpo-lab sample --compare` images instead: base against LoRA.

import { existsSync, statSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { decodeImageNode } from '../data/decode-node';
import type { NegativeFilter } from '../tpo/examples';
import { parseImplicitScores, type Correlation } from '../judges/agreement';
import { compareWithImplicit, embedAll, judgeCaptionPairs, type JudgeProgress, judgeSummary } from '../judges/judge-pairs';
import type { ClipJudge, JudgeKind } from '../judges/clip-judge';
import { loadJudgeFolder } from '../judges/clip-judge-node';
import { formatHelp, intOpt, type OptionTable, parseOptions, stringOpt, UsageError } from './args';
import type { Command } from './command';
import { sampleCommand } from './sample';
import { type CliIO, ProgressBar } from './io';
import { loadTrainingData, readImageFile } from './training-data';

const OPTIONS: OptionTable = {
  clip: { type: 'string', value: 'DIR', description: 'CLIP ONNX export: text_model.onnx, vision_model.onnx (or under onnx/), preprocessor_config.json, tokenizer' },
  reward: { type: 'string', value: 'DIR', description: 'a reward model in the same layout, plus reward.json {"logit_scale": x}: score exp(x) * cosine' },
  data: { type: 'string', value: 'FILE.jsonl', description: "the lab's TPO data (images relative to the file): every pair is judged" },
  samples: { type: 'string', value: 'DIR', description: 'instead of --data: the folder `tpo-lab sample --compare` wrote; base against LoRA' },
  model: { type: 'string', value: 'PATH', description: 'instead of --data: draw base and LoRA images of --prompts with this SD1.x model (or demo), then judge them' },
  lora: { type: 'string', value: 'FILE', description: 'with --model: the LoRA to compare with the base model' },
  prompts: { type: 'string', value: 'FILE.txt', description: 'with --model: prompts, one per line' },
  'samples-out': { type: 'string', value: 'DIR', description: 'with --model: where the images go (default: the --out file\'s name without .jsonl, plus -samples)' },
  images: { type: 'string', value: 'N', description: 'with --model: images per prompt (seeds S, S+1, ...)', default: '4' },
  seed: { type: 'string', value: 'S', description: 'with --model: seed of the first image of each prompt', default: '0' },
  steps: { type: 'string', value: 'N', description: 'with --model: sampling steps', default: '20' },
  size: { type: 'string', value: 'PX', description: "with --model: image side, a multiple of 8 (default: the model's sample size)" },
  scores: { type: 'string', value: 'FILE.jsonl', description: "implicit scores to compare with: a run's scores.jsonl or tpo-lab score's output" },
  out: { type: 'string', value: 'FILE.jsonl', description: 'one line per pair (or sample pair), then a summary line' },
  batch: { type: 'string', value: 'B', description: 'images or captions per forward pass', default: '8' },
  negatives: { type: 'string', value: 'all|accepted', description: 'which negatives to judge', default: 'all' },
  'skip-bad-lines': { type: 'boolean', description: 'leave out data lines with problems instead of stopping' },
  quiet: { type: 'boolean', short: 'q', description: 'no progress bar' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const USAGE =
  'tpo-lab judge --clip DIR (--data FILE.jsonl [--scores FILE.jsonl] | --samples DIR | --model PATH --lora FILE --prompts FILE.txt)\n' +
  '       --out FILE.jsonl';

const DESCRIPTION = `Scores images against captions with a model independent of the one trained. --clip gives the CLIP
score as torchmetrics defines it, 100 * max(cos(image_embeds, text_embeds), 0); --reward a two-tower reward
model's exp(logit_scale) * cos (PickScore, HPS). For each pair of --data: score_w = S(x, c_w), score_l =
S(x, c_l), margin = score_w - score_l. With --scores: Pearson and Spearman correlation of the judge's
margins and the implicit margins (the run's last step), overall and per principle. With --samples: each
prompt and seed's base and LoRA images scored against the prompt; --model, --lora and --prompts draw those
images first (as tpo-lab sample --compare does, with its default sampler and guidance). Runs on ONNX
Runtime's wasm backend.`;

export const judgeCommand: Command = {
  name: 'judge',
  summary: 'CLIP score (or an ONNX reward model) of pairs or samples, and its agreement with implicit scores',
  help: () => formatHelp(USAGE, DESCRIPTION, OPTIONS),
  run: runJudge,
};

/** Relative, forward-slash path of `file` as seen from the output file's folder. */
function relativeTo(out: string, file: string): string {
  return path.relative(path.dirname(out), file).split(path.sep).join('/');
}

async function decodeFile(file: string) {
  return decodeImageNode(await readImageFile(file), file);
}

/** Progress bars for the judge's stages: one for the captions, one for the images. */
function progressBars(io: CliIO, quiet: boolean): { onProgress: JudgeProgress; finish(): void } {
  let bar: ProgressBar | null = null;
  let shown = 0;
  return {
    // The judge reports running totals; the bar takes increments.
    onProgress(stage, done, total) {
      if (done === 0) {
        bar?.finish();
        bar = new ProgressBar(io.stderr, total, stage, !quiet);
        shown = 0;
        return;
      }
      bar?.tick(done - shown);
      shown = done;
    },
    finish: () => bar?.finish(),
  };
}

function formatCorrelation(c: Correlation): string {
  const f = (v: number | null) => (v === null ? 'n/a' : v.toFixed(3));
  return `Pearson ${f(c.pearson)}, Spearman ${f(c.spearman)} (${c.pairs} pair${c.pairs === 1 ? '' : 's'})`;
}

async function runJudge(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseOptions(argv, OPTIONS);
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const clipArg = stringOpt(values, 'clip');
  const rewardArg = stringOpt(values, 'reward');
  if (clipArg && rewardArg) throw new UsageError('give one judge: --clip DIR or --reward DIR');
  if (!clipArg && !rewardArg) throw new UsageError('--clip DIR (a CLIP ONNX export) or --reward DIR is required');
  const kind: JudgeKind = clipArg ? 'clip' : 'reward';
  const dataArg = stringOpt(values, 'data');
  let samplesArg = stringOpt(values, 'samples');
  const modelArg = stringOpt(values, 'model');
  if ([dataArg, samplesArg, modelArg].filter(Boolean).length > 1) {
    throw new UsageError('give one of --data FILE.jsonl (pairs), --samples DIR or --model PATH (base against LoRA)');
  }
  if (!dataArg && !samplesArg && !modelArg) throw new UsageError('--data FILE.jsonl, --samples DIR or --model PATH is required');
  for (const name of ['lora', 'prompts', 'samples-out', 'size']) {
    if (!modelArg && stringOpt(values, name) !== undefined) throw new UsageError(`--${name} goes with --model (drawing the samples to judge)`);
  }
  if (modelArg && !stringOpt(values, 'lora')) throw new UsageError('--model draws base and LoRA images to compare: give --lora FILE');
  if (modelArg && !stringOpt(values, 'prompts')) throw new UsageError('--model needs --prompts FILE.txt (the prompts to draw)');
  const scoresArg = stringOpt(values, 'scores');
  if (scoresArg && !dataArg) throw new UsageError('--scores compares pair margins: it goes with --data');
  const outArg = stringOpt(values, 'out');
  if (!outArg) throw new UsageError('--out is required');
  const out = path.resolve(io.cwd, outArg);
  if (existsSync(out) && statSync(out).isDirectory()) throw new UsageError(`--out ${outArg} is a folder; name a file to write the scores to`);
  const negatives = (stringOpt(values, 'negatives') ?? 'all') as NegativeFilter;
  if (negatives !== 'all' && negatives !== 'accepted') throw new UsageError('--negatives must be all or accepted');
  const batchSize = intOpt(values, 'batch', 1, 8);
  const quiet = values.quiet === true;
  const judgeDir = path.resolve(io.cwd, (clipArg ?? rewardArg)!);

  // Inputs are read before the model loads, so a bad data or scores file fails fast.
  const dataPath = dataArg ? path.resolve(io.cwd, dataArg) : null;
  const data = dataPath ? await loadTrainingData(dataPath, 'tdpo', { skipBadLines: values['skip-bad-lines'] === true, negatives }) : null;
  if (data) {
    for (const p of data.problems) io.stderr.write(`skipped ${p.file ?? ''}${p.line ? `:${p.line}` : ''}: ${p.message}\n`);
    if (data.examples.length === 0) throw new UsageError(`--data ${dataArg}: no pairs to judge (no image has a negative caption)`);
  }
  let implicit = null;
  if (scoresArg) {
    const scoresPath = path.resolve(io.cwd, scoresArg);
    let text: string;
    try {
      text = await readFile(scoresPath, 'utf8');
    } catch (e) {
      throw new UsageError(`--scores ${scoresArg}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
    // A run stores image paths as the data file names them (relative to it); tpo-lab score relative to its output.
    implicit = parseImplicitScores(text, scoresPath, {
      runImage: (p) => path.resolve(path.dirname(dataPath!), p),
      scoreImage: (p) => path.resolve(path.dirname(scoresPath), p),
    });
  }
  // The judge is loaded (and its inputs and outputs checked) before any sampling, so a bad folder fails fast.
  const judge = await loadJudgeFolder(judgeDir, kind, { batchSize, onNotice: (t) => io.stderr.write(`${t}\n`) });
  try {
    if (modelArg) {
      samplesArg = stringOpt(values, 'samples-out') ?? path.join(path.dirname(outArg), `${path.basename(outArg).replace(/\.jsonl$/, '')}-samples`);
      const size = stringOpt(values, 'size');
      const sampleArgs = ['--model', modelArg, '--lora', stringOpt(values, 'lora')!, '--prompts', stringOpt(values, 'prompts')!, '--compare'];
      sampleArgs.push('--batch', String(intOpt(values, 'images', 1, 4)), '--seed', String(intOpt(values, 'seed', 0, 0)), '--steps', String(intOpt(values, 'steps', 1, 20)));
      if (size) sampleArgs.push('--width', size, '--height', size);
      sampleArgs.push('--out', samplesArg, ...(quiet ? ['--quiet'] : []));
      const status = await sampleCommand.run(sampleArgs, io);
      if (status !== 0) return status;
    }
    const samples = samplesArg ? await readSamples(path.resolve(io.cwd, samplesArg), samplesArg) : null;
    if (samples) return await judgeSamples(judge, samples, out, io, quiet);
    const bars = progressBars(io, quiet);
    const judged = await judgeCaptionPairs(
      judge,
      data!.examples.map((e) => ({ image: e.w.image, caption: e.w.caption, negative: e.l.caption, principle: e.principle ?? null })),
      decodeFile,
      bars.onProgress,
    );
    bars.finish();
    // Image paths are resolved on both sides (the data's and the scores'), so they match as they are.
    const compared = implicit ? compareWithImplicit(judged, implicit) : null;
    const rows = compared?.rows ?? judged.map((r) => ({ ...r, implicitMargin: undefined }));
    const lines = rows.map((r) =>
      JSON.stringify({
        image: relativeTo(out, r.image),
        caption: r.caption,
        negative: r.negative,
        principle: r.principle,
        score_w: r.scoreW,
        score_l: r.scoreL,
        margin: r.margin,
        ...(implicit ? { implicit_margin: r.implicitMargin ?? null } : {}),
      }),
    );
    const { accuracy, meanMargin } = judgeSummary(rows);
    const summary = {
      summary: true,
      judge: kind,
      model: judgeDir,
      pairs: rows.length,
      accuracy,
      mean_margin: meanMargin,
      ...(compared ? { implicit_scores: path.resolve(io.cwd, scoresArg!), implicit_step: implicit!.step, matched: compared.matched, correlation: compared.overall, correlation_by_principle: compared.byPrinciple } : {}),
    };
    lines.push(JSON.stringify(summary));
    await writeFile(out, `${lines.join('\n')}\n`);
    const label = kind === 'clip' ? 'CLIP score' : 'reward';
    io.stdout.write(`${label}: judge accuracy ${accuracy.toFixed(3)} (share of pairs with score_w > score_l), mean margin ${meanMargin.toPrecision(4)} over ${rows.length} pairs; wrote ${out}\n`);
    if (compared) {
      const unmatched = rows.length - compared.matched;
      io.stdout.write(`agreement with the implicit margins${implicit!.step !== null ? ` at step ${implicit!.step}` : ''}: ${formatCorrelation(compared.overall)}\n`);
      for (const [p, c] of Object.entries(compared.byPrinciple)) io.stdout.write(`  ${p}: ${formatCorrelation(c)}\n`);
      if (unmatched) io.stderr.write(`${unmatched} of ${rows.length} pairs have no implicit score in ${scoresArg} (left out of the correlations)\n`);
    }
    return 0;
  } finally {
    await judge.release();
  }
}

interface SampleImage {
  file: string;
  prompt: string;
  promptIndex: number;
  seed: number;
  variant: 'base' | 'lora';
}

/** The base and LoRA images of a `tpo-lab sample --compare` folder, from its index.json. */
async function readSamples(dir: string, arg: string): Promise<SampleImage[]> {
  const indexPath = path.join(dir, 'index.json');
  let index: unknown;
  try {
    index = JSON.parse(await readFile(indexPath, 'utf8'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`--samples ${arg}: ${code === 'ENOENT' ? 'no index.json (expected the folder tpo-lab sample --compare writes)' : `index.json: ${(e as Error).message}`}`);
  }
  const images = (index as { images?: unknown }).images;
  if (!Array.isArray(images)) throw new UsageError(`--samples ${arg}: index.json has no "images" list`);
  const out: SampleImage[] = [];
  for (const im of images as Record<string, unknown>[]) {
    if (typeof im.file !== 'string' || typeof im.prompt !== 'string' || typeof im.seed !== 'number' || typeof im.promptIndex !== 'number') {
      throw new UsageError(`--samples ${arg}: index.json has an image entry without file, prompt, promptIndex and seed`);
    }
    if (im.variant !== 'base' && im.variant !== 'lora') continue;
    out.push({ file: path.join(dir, im.file), prompt: im.prompt, promptIndex: im.promptIndex, seed: im.seed, variant: im.variant });
  }
  if (!out.some((s) => s.variant === 'base') || !out.some((s) => s.variant === 'lora')) {
    throw new UsageError(`--samples ${arg}: no base and LoRA images to compare; draw them with tpo-lab sample --lora FILE --compare`);
  }
  return out;
}

async function judgeSamples(judge: ClipJudge, samples: readonly SampleImage[], out: string, io: CliIO, quiet: boolean): Promise<number> {
  const bars = progressBars(io, quiet);
  const embeds = await embedAll(
    judge,
    samples.map((s) => s.file),
    samples.map((s) => s.prompt),
    decodeFile,
    bars.onProgress,
  );
  bars.finish();
  const pairs = new Map<string, { base?: SampleImage; lora?: SampleImage }>();
  for (const s of samples) {
    const key = `${s.promptIndex}\u0000${s.seed}`;
    const p = pairs.get(key) ?? {};
    p[s.variant] = s;
    pairs.set(key, p);
  }
  const rows = [...pairs.values()]
    .filter((p): p is { base: SampleImage; lora: SampleImage } => p.base !== undefined && p.lora !== undefined)
    .map(({ base, lora }) => {
      const t = embeds.text(base.prompt);
      const scoreBase = judge.score(embeds.image(base.file), t);
      const scoreLora = judge.score(embeds.image(lora.file), t);
      return { base, lora, scoreBase, scoreLora, delta: scoreLora - scoreBase };
    });
  const lines = rows.map((r) =>
    JSON.stringify({ prompt: r.base.prompt, seed: r.base.seed, image_base: relativeTo(out, r.base.file), image_lora: relativeTo(out, r.lora.file), score_base: r.scoreBase, score_lora: r.scoreLora, delta: r.delta }),
  );
  const mean = (f: (r: (typeof rows)[number]) => number) => rows.reduce((a, r) => a + f(r), 0) / rows.length;
  const summary = { summary: true, judge: judge.kind, samples: rows.length, mean_base: mean((r) => r.scoreBase), mean_lora: mean((r) => r.scoreLora), mean_delta: mean((r) => r.delta), lora_better: mean((r) => (r.delta > 0 ? 1 : r.delta === 0 ? 0.5 : 0)) };
  lines.push(JSON.stringify(summary));
  await writeFile(out, `${lines.join('\n')}\n`);
  io.stdout.write(
    `${judge.kind === 'clip' ? 'CLIP score' : 'reward'} of ${rows.length} prompt and seed pairs: base ${summary.mean_base.toPrecision(4)}, LoRA ${summary.mean_lora.toPrecision(4)} (LoRA higher on ${(summary.lora_better * 100).toFixed(0)}%); wrote ${out}\n`,
  );
  return 0;
}
