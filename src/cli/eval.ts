// tpo-lab eval: the alignment experiment on the demo world (src/demo/eval.ts says what it measures). Writes
// OUT/data/ (the training images, the pairs), OUT/runs/<run>/ (each LoRA's training run, as `tpo-lab train`
// writes it), OUT/samples/<model>/ (the held-out samples and their judgements), OUT/demo-eval.json,
// OUT/demo-eval.md and OUT/grid.png. A finished run or model's samples are kept, so running the same command
// again after a stop continues where it was. --docs also copies the results into docs/ and BENCHMARKS.md.

import { existsSync } from 'node:fs';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { InputError } from '../app/errors';
import { readText } from '../app/storage';
import { runPairsJob } from '../app/pairs-job';
import { prepareTrainingFeatures } from '../app/training-data';
import { LORA_FILE, type RunEnvironment, type RunSettings, trainRun } from '../app/training-run';
import { decodeImageNode } from '../data/decode-node';
import { exportTrainerJsonl } from '../data/export';
import { writeFileAtomic } from '../data/node-fs';
import type { DatasetItem } from '../data/types';
import { PRINCIPLES } from '../data/vocabulary';
import { EVAL_QUICK, EVAL_SETTINGS, type EvalResult, type EvalRun, evalMarkdown, evalRuns, type EvalSettings, groupBy, methodResult, type ModelOutcome, replaceMarkedSection } from '../demo/eval';
import { judgeShapes, summarizeJudgements, type Judgement } from '../demo/judge';
import { SHAPES_IMAGE_SIZE, shapesDataset, shapesFileName, shapesWords } from '../demo/shapes';
import { DEFAULT_SAMPLE_SETTINGS, imageGrid, loadSchedulerConfig, type SampledImage, type SampleSettings, TextToImage } from '../diffusion/pipeline';
import { noiseSchedule } from '../diffusion/schedule';
import type { Gpu } from '../gpu/gpu';
import { pearson, spearman } from '../judges/correlation';
import { RuleCaptionEditor } from '../llm/rules';
import { readLora } from '../models/lora-io';
import { dirModelFiles } from '../models/model-files-node';
import { openSafetensorsFile } from '../models/safetensors-node';
import { loadUNet, type UNet } from '../models/unet';
import { preferHalfWeights } from '../models/weights';
import { dirFeatureStore } from '../tpo/feature-store-node';
import { splitExamples, type TrainExample } from '../tpo/examples';
import { DEFAULT_SCORE_SEED, type ExampleScore, implicitScores, summarise } from '../tpo/scores';
import { defaultTrainConfig, TrainControl, type TrainConfig } from '../tpo/trainer';
import { formatHelp, intOpt, type OptionTable, parseOptions, type ParsedValues, stringOpt, UsageError } from './args';
import type { Command } from './command';
import { repoRoot, resolveModelArg } from './demo-model';
import { folderStorage } from './folder-storage';
import { type CliIO, commandGpu } from './io';
import { adapterName, encodePng, samplePng } from './sample';
import { writeShapesFolder } from './shapes';
import { loadTrainingData, openModelDir, readImageFile, type TrainingData } from './training-data';

const OPTIONS: OptionTable = {
  out: { type: 'string', value: 'DIR', description: 'output folder (data, runs, samples, demo-eval.json, demo-eval.md, grid.png)' },
  model: { type: 'string', value: 'PATH', description: 'the base model: demo, or another build of it', default: 'demo' },
  quick: { type: 'boolean', description: 'a tiny version of the whole experiment (minutes; its numbers mean nothing): what the tests run' },
  steps: { type: 'string', value: 'N', description: `training steps of every LoRA (default ${EVAL_SETTINGS.steps}; --quick ${EVAL_QUICK.steps})` },
  seeds: { type: 'string', value: 'LIST', description: `training seeds, comma-separated (default ${EVAL_SETTINGS.trainSeeds.join(',')})` },
  'no-ablations': { type: 'boolean', description: 'leave out the ablations (TDPO without the clip; each principle alone)' },
  docs: { type: 'boolean', description: 'also write docs/demo-eval.json, docs/demo-eval-grid.png and the table in BENCHMARKS.md' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const USAGE = 'tpo-lab eval --out DIR [--quick] [--model demo] [--steps N] [--seeds 0,1,2] [--no-ablations] [--docs]';

const DESCRIPTION = `The alignment experiment on the built-in demo: does TDPO / TKTO, trained on the demo's images with
rule-editor negatives (content: the shape's kind; attribute: its colour or size; spatial: its position;
context: the background), draw held-out prompts more faithfully than the base model and than SFT on the
same images? Every method gets the same data, steps, batch and learning rate, from each training seed; the
base model and every LoRA draw the same held-out prompts from the same seeds, and the demo's judge scores
each image (overall and per kind of fact). Held-out implicit accuracy and margin come from each run's
scores on the images it held out. Ablations: TDPO without the negative-term clip, and each principle alone.
Prints the table; writes every number and setting to OUT/demo-eval.json. Stopped, the same command resumes.`;

export const evalCommand: Command = {
  name: 'eval',
  summary: 'the alignment experiment on the demo: base vs SFT vs TDPO vs TKTO, judged (demo-eval.json)',
  help: () => formatHelp(USAGE, DESCRIPTION, OPTIONS),
  run: runEval,
};

/** The settings the options ask for. */
function settingsFrom(values: ParsedValues): EvalSettings & { quick: boolean } {
  const quick = values.quick === true;
  const base = quick ? EVAL_QUICK : EVAL_SETTINGS;
  const seedsText = stringOpt(values, 'seeds');
  const trainSeeds = seedsText === undefined ? base.trainSeeds : seedsText.split(',').map((t) => Number(t.trim()));
  if (trainSeeds.length === 0 || trainSeeds.some((s) => !Number.isInteger(s) || s < 0)) throw new UsageError(`--seeds must be whole numbers >= 0, comma-separated, not ${JSON.stringify(seedsText)}`);
  return { ...base, quick, steps: intOpt(values, 'steps', 1, base.steps), trainSeeds: [...new Set(trainSeeds)], ablations: base.ablations && values['no-ablations'] !== true };
}

async function runEval(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseOptions(argv, OPTIONS);
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const outArg = stringOpt(values, 'out');
  if (!outArg) throw new UsageError('--out is required');
  const settings = settingsFrom(values);
  const modelDir = resolveModelArg(stringOpt(values, 'model') ?? 'demo', io);
  const out = path.resolve(io.cwd, outArg);
  const say = (text: string) => io.stderr.write(`${text}\n`);
  const started = performance.now();
  const size = SHAPES_IMAGE_SIZE;

  // The data: the training images, and one rule-editor negative per principle per caption, kept to the
  // world's words so that every negative is a caption the judge can read.
  const dataDir = path.join(out, 'data');
  const imagesDir = path.join(dataDir, 'train');
  const captions = await writeShapesFolder(imagesDir, { seed: settings.dataSeed, count: settings.trainImages, split: 'train', size, sizes: true });
  const items: DatasetItem[] = captions.map((caption, i) => ({ id: String(i), image: path.join(imagesDir, `${shapesFileName(i, settings.trainImages)}.png`), caption, negatives: [], failures: [], extra: {} }));
  let pairs: DatasetItem[] = [];
  const job = await runPairsJob({
    items,
    editor: new RuleCaptionEditor({ seed: settings.dataSeed, words: new Set(shapesWords()) }),
    principles: PRINCIPLES,
    perCaption: PRINCIPLES.length,
    concurrency: 1,
    save: async (all) => {
      pairs = all;
    },
  });
  const negatives = job.byPrinciple;
  say(`data: ${captions.length} training images, negatives ${Object.entries(negatives).map(([p, n]) => `${p} ${n}`).join(', ')} (${job.failures.length} not possible: a centred shape has no spatial edit)`);
  const pairsFile = async (principles: readonly string[]) => {
    const file = path.join(dataDir, `pairs-${principles.length === PRINCIPLES.length ? 'all' : principles.join('-')}.jsonl`);
    const kept = pairs.map((item) => ({ ...item, negatives: item.negatives.filter((n) => principles.includes(n.principle)), failures: [] }));
    await writeFileAtomic(file, exportTrainerJsonl(kept, { imagePath: (item) => path.relative(dataDir, item.image) }));
    return file;
  };

  const runs = evalRuns(settings);
  const { gpu, release } = await commandGpu(io);
  const model = openModelDir(modelDir);
  const cache = path.join(out, 'cache');
  const outcomes: ModelOutcome[] = [];
  const correlation: { implicit: number; judge: number }[] = [];
  const gridRows = new Map<string, Uint8Array[]>();
  const timing = { train_s: 0, score_s: 0, sample_s: 0 };
  try {
    // Training: every run, one after the other, sharing one feature cache.
    for (const [i, run] of runs.entries()) {
      const dir = path.join(out, 'runs', run.name);
      if (!existsSync(path.join(dir, LORA_FILE))) {
        await rm(dir, { recursive: true, force: true }); // a run stopped midway starts again
        const dataFile = await pairsFile(run.principles);
        const data = await loadTrainingData(dataFile, run.method, { skipBadLines: false, negatives: 'all' });
        say(`train ${i + 1}/${runs.length}: ${run.name} (${run.method}, ${run.principles.join(', ')}${run.kappa === null ? ', no clip' : ''})`);
        const t0 = performance.now();
        await trainOne(run, settings, data, { modelDir, dataFile, dir, cache, gpu, model, size }, io);
        await writeFile(path.join(dir, SECONDS_FILE), `${((performance.now() - t0) / 1000).toFixed(1)}\n`);
      }
      timing.train_s += await readSeconds(dir);
    }

    // Held-out implicit scores: every LoRA on the same pairs, the held-out images of its seed with their
    // negatives of every principle, so that methods and ablations compare on one footing.
    const all = await loadTrainingData(await pairsFile(PRINCIPLES), 'tdpo', { skipBadLines: false, negatives: 'all' });
    const heldOutOf = (seed: number) => splitExamples(all.examples, settings.holdout, seed).heldOut;
    const scores = await scoreRuns(runs, heldOutOf, { gpu, model, cache, out, settings, size }, say);
    for (const run of runs) timing.score_s += scores.get(run.name)!.seconds;
    // Implicit margin against the judge's margin on the TDPO runs' held-out pairs (image, c_w, c_l).
    for (const run of runs.filter((r) => r.key === 'tdpo')) {
      const byId = new Map(heldOutOf(run.seed).map((e) => [e.id, e]));
      for (const s of scores.get(run.name)!.scores) {
        const e = byId.get(s.id)!;
        const image = await decodeImageNode(new Uint8Array(await readFile(e.w.image)), e.w.image);
        correlation.push({ implicit: s.margin, judge: judgeShapes(image, e.w.caption).score - judgeShapes(image, e.l.caption).score });
      }
    }

    // Sampling: the base model and every LoRA draw the held-out prompts from the same seeds; the judge reads them.
    const prompts = shapesDataset({ seed: settings.dataSeed, count: settings.heldOutPrompts, split: 'heldout', size }).map((x) => x.caption);
    const files = dirModelFiles(modelDir);
    let unet: UNet | null = null;
    let t2i: TextToImage | null = null;
    try {
      unet = await loadUNet(gpu, files, { halfWeights: preferHalfWeights(gpu) });
      t2i = await TextToImage.load(unet, files);
      const sampleSettings: SampleSettings = { ...DEFAULT_SAMPLE_SETTINGS, sampler: 'ddim', steps: settings.sampleSteps, guidance: settings.guidance, width: size, height: size, loraScale: 0 };
      for (const name of ['base', ...runs.map((r) => r.name)]) {
        const run = runs.find((r) => r.name === name);
        const dir = path.join(out, 'samples', name);
        const judged = await sampleAndJudge(t2i, path.basename(modelDir), name === 'base' ? null : path.join(out, 'runs', name, LORA_FILE), prompts, settings.sampleSeeds, sampleSettings, dir, say);
        timing.sample_s += await readSeconds(dir);
        const heldOut = run ? scores.get(name)! : null;
        outcomes.push({ run: name, seed: run?.seed ?? null, judge: summarizeJudgements(judged.map((j) => j.judgement)), heldOut, trainSeconds: run ? await readSeconds(path.join(out, 'runs', name)) : null });
        const firstSeed = judged.filter((j) => j.seed === settings.sampleSeeds[0]).slice(0, 8);
        if (name === 'base' || (run && !run.ablation && run.seed === settings.trainSeeds[0])) gridRows.set(name, firstSeed.map((j) => j.rgba));
      }
    } finally {
      t2i?.release();
      unet?.lora?.release();
      unet?.release();
      await files.close?.();
    }
  } finally {
    await model.close();
    release();
  }

  // Results.
  const byKey = groupBy(outcomes, (o) => (o.run === 'base' ? 'base' : runs.find((r) => r.name === o.run)!.key));
  const ablationKeys = new Set(runs.filter((r) => r.ablation).map((r) => r.key));
  const result: EvalResult = {
    settings: { ...settings, model: modelDir, seconds: Math.round((performance.now() - started) / 1000), timing: roundTiming(timing), adapter: adapterName(gpu) || 'this GPU', negatives, scoreBeta: SCORE_BETA },
    methods: Object.fromEntries([...byKey].filter(([k]) => !ablationKeys.has(k)).map(([k, o]) => [k, methodResult(o)])),
    ablations: Object.fromEntries([...byKey].filter(([k]) => ablationKeys.has(k)).map(([k, o]) => [k, methodResult(o)])),
    margin_correlation: {
      pairs: correlation.length,
      pearson: pearson(correlation.map((c) => c.implicit), correlation.map((c) => c.judge)),
      spearman: spearman(correlation.map((c) => c.implicit), correlation.map((c) => c.judge)),
    },
  };
  const json = `${JSON.stringify(result, null, 2)}\n`;
  const markdown = evalMarkdown(result);
  await writeFileAtomic(path.join(out, 'demo-eval.json'), json);
  await writeFileAtomic(path.join(out, 'demo-eval.md'), markdown);
  const rows = [...gridRows.values()];
  const grid = imageGrid(rows, size, size);
  const legend = `rows: ${[...gridRows.keys()].join(', ')}; columns: the first ${rows[0]?.length ?? 0} held-out prompts, seed ${settings.sampleSeeds[0]}`;
  await writeFileAtomic(path.join(out, 'grid.png'), encodePng(grid.rgba, grid.width, grid.height, { Description: legend }));
  io.stdout.write(`${markdown}\ngrid: ${legend}\nwrote ${path.join(out, 'demo-eval.json')}, demo-eval.md, grid.png\n`);

  if (values.docs === true) {
    const root = repoRoot();
    if (!root) throw new InputError('--docs: cannot find the TPO Lab repository to write docs/ and BENCHMARKS.md into');
    await mkdir(path.join(root, 'docs'), { recursive: true });
    await writeFileAtomic(path.join(root, 'docs', 'demo-eval.json'), json);
    await copyFile(path.join(out, 'grid.png'), path.join(root, 'docs', 'demo-eval-grid.png'));
    const benchmarks = path.join(root, 'BENCHMARKS.md');
    const section = `${markdown}\nSample grid (${legend}): [docs/demo-eval-grid.png](docs/demo-eval-grid.png). Command: \`npm run demo:eval\`; run ${new Date().toISOString().slice(0, 10)}.\n`;
    await writeFileAtomic(benchmarks, replaceMarkedSection(existsSync(benchmarks) ? await readFile(benchmarks, 'utf8') : '# Benchmarks\n', section));
    io.stdout.write(`wrote docs/demo-eval.json, docs/demo-eval-grid.png and the table in BENCHMARKS.md\n`);
  }
  return 0;
}

/** One LoRA trained as `tpo-lab train` would, into `dir`. */
async function trainOne(
  run: EvalRun,
  s: EvalSettings,
  data: TrainingData,
  where: { modelDir: string; dataFile: string; dir: string; cache: string; gpu: Gpu; model: ReturnType<typeof openModelDir>; size: number },
  io: CliIO,
): Promise<void> {
  const base = defaultTrainConfig(run.method);
  const config: TrainConfig = { ...base, steps: s.steps, batchSize: s.batch, lr: s.lr, rank: s.rank, alpha: s.rank, seed: run.seed, resolution: where.size, kappa: run.kappa === undefined ? base.kappa : run.kappa };
  const settings: RunSettings = {
    model: where.modelDir,
    data: where.dataFile,
    negatives: 'all',
    skipBadLines: false,
    holdout: s.holdout,
    cache: where.cache,
    precision: 'auto',
    scoreDraws: 0, // scored afterwards, every run on the same pairs (scoreRuns)
    scoreEvery: 0,
    scoreLimit: 1,
    checkpointEvery: s.steps,
    dtype: 'fp32',
    title: `TPO Lab demo eval ${run.name}`,
    startedAt: Math.floor(Date.now() / 1000),
  };
  const env: RunEnvironment = {
    model: where.model,
    storage: folderStorage(where.dir),
    features: dirFeatureStore(where.cache),
    readImage: readImageFile,
    decode: decodeImageNode,
    encodePng,
    openGpu: async () => ({ gpu: where.gpu, release: () => {} }),
    onEvent: (e) => {
      if (e.type === 'log' && !e.text.startsWith('samples')) io.stderr.write(`  ${e.text}\n`);
    },
  };
  const control = new TrainControl();
  const onAbort = () => control.cancel();
  io.signal?.addEventListener('abort', onAbort);
  try {
    const result = await trainRun({ config, settings, data }, env, control);
    if (result.outcome === 'cancelled') throw new InputError(`stopped while training ${run.name}; run the same command again to continue`);
  } finally {
    io.signal?.removeEventListener('abort', onAbort);
  }
}

const SECONDS_FILE = 'seconds.txt';
const HELD_OUT_FILE = 'heldout-scores.json';

/** One model's held-out implicit scores, as scoreRuns writes them. */
type HeldOutScores = NonNullable<ModelOutcome['heldOut']> & { seconds: number; scores: ExampleScore[] };

/** All implicit margins are on TDPO's beta, whatever the method, so they compare (accuracy does not depend on it). */
const SCORE_BETA = defaultTrainConfig('tdpo').beta;

async function readSeconds(dir: string): Promise<number> {
  const text = (await readText(folderStorage(dir), SECONDS_FILE)) ?? '';
  return Number(text) || 0;
}

function roundTiming(t: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, Math.round(v)]));
}

/** Puts a LoRA file on the UNet (in place of any other). */
async function loadLoraFile(gpu: Gpu, unet: UNet, file: string): Promise<void> {
  const { file: st, close } = await openSafetensorsFile(file);
  try {
    unet.lora?.release();
    unet.lora = await readLora(gpu, st, unet.config);
  } finally {
    await close();
  }
}

/**
 * Each run's implicit scores on the held-out pairs of its seed (`heldOutOf`), K draws each, written to the
 * run's heldout-scores.json (read back when it is there).
 */
async function scoreRuns(
  runs: readonly EvalRun[],
  heldOutOf: (seed: number) => TrainExample[],
  c: { gpu: Gpu; model: ReturnType<typeof openModelDir>; cache: string; out: string; settings: EvalSettings; size: number },
  say: (text: string) => void,
): Promise<Map<string, HeldOutScores>> {
  const file = (run: EvalRun) => path.join(c.out, 'runs', run.name, HELD_OUT_FILE);
  const result = new Map<string, HeldOutScores>();
  for (const run of runs) if (existsSync(file(run))) result.set(run.name, JSON.parse(await readFile(file(run), 'utf8')) as HeldOutScores);
  const todo = runs.filter((r) => !result.has(r.name));
  if (todo.length === 0) return result;
  const examples = [...new Map(todo.flatMap((r) => heldOutOf(r.seed)).map((e) => [e.id, e])).values()];
  const features = await prepareTrainingFeatures(c.gpu, c.model, examples, { resolution: c.size, store: dirFeatureStore(c.cache), readImage: readImageFile, decode: decodeImageNode });
  const unet = await c.model.loadUNet(c.gpu, { halfWeights: preferHalfWeights(c.gpu) });
  try {
    const schedule = noiseSchedule(await loadSchedulerConfig(c.model.files));
    for (const run of todo) {
      const t0 = performance.now();
      await loadLoraFile(c.gpu, unet, path.join(c.out, 'runs', run.name, LORA_FILE));
      const pairs = heldOutOf(run.seed);
      const s = await implicitScores(c.gpu, unet, pairs, features, { k: c.settings.scoreDraws, seed: DEFAULT_SCORE_SEED, beta: SCORE_BETA, batchSize: c.settings.batch, schedule });
      unet.lora?.release();
      unet.lora = null;
      const byPrinciple = Object.fromEntries([...groupBy(s.scores, (x) => x.principle ?? 'other')].map(([p, xs]) => [p, summarise(xs).accuracy]));
      const scored: HeldOutScores = { accuracy: s.accuracy, meanMargin: s.meanMargin, examples: pairs.length, byPrinciple, seconds: (performance.now() - t0) / 1000, scores: s.scores };
      await writeFileAtomic(file(run), `${JSON.stringify(scored)}\n`);
      say(`scores ${run.name}: held-out implicit accuracy ${s.accuracy.toFixed(3)}, mean margin ${s.meanMargin.toPrecision(4)} (${pairs.length} pairs, K=${c.settings.scoreDraws})`);
      result.set(run.name, scored);
    }
  } finally {
    unet.lora?.release();
    unet.lora = null;
    unet.release();
  }
  return result;
}

interface JudgedSample {
  prompt: string;
  seed: number;
  file: string;
  judgement: Judgement;
  rgba: Uint8Array;
}

/**
 * Draws every prompt from every seed with the base model (no `lora`) or the LoRA in `lora`, writes the PNGs and
 * judged.json into `dir`, and judges them; a folder whose judged.json is complete is read back instead.
 */
async function sampleAndJudge(t2i: TextToImage, modelName: string, loraFile: string | null, prompts: string[], seeds: number[], settings: SampleSettings, dir: string, say: (text: string) => void): Promise<JudgedSample[]> {
  const sampleSettings: SampleSettings = { ...settings, loraScale: loraFile ? 1 : 0 };
  const items = prompts.flatMap((prompt) => seeds.map((seed) => ({ prompt, seed })));
  const index = path.join(dir, 'judged.json');
  if (existsSync(index)) {
    const saved = JSON.parse(await readFile(index, 'utf8')) as Omit<JudgedSample, 'rgba'>[];
    if (saved.length === items.length) {
      const out: JudgedSample[] = [];
      for (const j of saved) out.push({ ...j, rgba: (await decodeImageNode(new Uint8Array(await readFile(path.join(dir, j.file))), j.file)).data });
      return out;
    }
  }
  await mkdir(dir, { recursive: true });
  const unet = t2i.unet;
  const t0 = performance.now();
  if (loraFile) await loadLoraFile(t2i.gpu, unet, loraFile);
  const images: SampledImage[] = [];
  try {
    // Several prompts at once: on a CPU driver a batch of 16 costs far less than 16 batches of one.
    for (let i = 0; i < items.length; i += 16) images.push(...(await t2i.sample(items.slice(i, i + 16), sampleSettings)));
  } finally {
    unet.lora?.release();
    unet.lora = null;
  }
  const out: JudgedSample[] = images.map((image, i) => ({
    prompt: image.prompt,
    seed: image.seed,
    file: `${String(Math.floor(i / seeds.length)).padStart(3, '0')}-${image.seed}.png`,
    judgement: judgeShapes({ width: image.width, height: image.height, data: image.rgba }, image.prompt),
    rgba: image.rgba,
  }));
  // With the lab's parameters in the PNG (what `tpo-lab sample` writes), so `tpo-lab judge-shapes --images` reads them too.
  const lora = loraFile ? path.basename(path.dirname(loraFile)) : undefined;
  for (const [i, j] of out.entries()) await writeFile(path.join(dir, j.file), samplePng(images[i], { prompt: j.prompt, seed: j.seed, settings: sampleSettings, model: modelName, lora }));
  await writeFile(path.join(dir, SECONDS_FILE), `${((performance.now() - t0) / 1000).toFixed(1)}\n`);
  await writeFileAtomic(index, `${JSON.stringify(out.map(({ rgba: _rgba, ...rest }) => rest), null, 2)}\n`);
  const mean = out.reduce((a, j) => a + j.judgement.score, 0) / out.length;
  say(`samples ${path.basename(dir)}: ${out.length} images in ${((performance.now() - t0) / 1000).toFixed(0)} s, judge ${mean.toFixed(3)}`);
  return out;
}
