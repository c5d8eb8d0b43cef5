// The alignment experiment on the demo world (`tpo-lab eval`, `npm run demo:eval`): which runs it makes,
// and how their numbers are summarised, written as JSON and as a Markdown table. Platform-free; the CLI
// (src/cli/eval.ts) does the files, the GPU, the training (src/app/training-run.ts) and the sampling.
//
// Every method trains a LoRA on the same data (the demo's training images, one rule-editor negative per
// principle per caption), for the same steps, batch and learning rate, from each training seed; the base
// model and each LoRA then draw the same held-out prompts from the same seeds, and the demo's judge
// (judge.ts) scores every image. Held-out implicit accuracy and margin: every LoRA scored on the same pairs,
// the images its seed holds out with their negatives of every principle.

import type { Principle } from '../data/vocabulary';
import { PRINCIPLES } from '../data/vocabulary';
import type { LossMethod } from '../tpo/methods';
import { FACT_KINDS, type FactKind, type JudgeSummary } from './judge';

export interface EvalSettings {
  /** Training images drawn from the shapes world (seed `dataSeed`). */
  trainImages: number;
  dataSeed: number;
  /** Held-out prompts (scenes with kind and colour pairs training never shows), each drawn from every sample seed. */
  heldOutPrompts: number;
  sampleSeeds: number[];
  /** One LoRA per method and training seed. */
  methods: LossMethod[];
  trainSeeds: number[];
  /** The paper's ablations (TDPO without the negative-term clip; each principle alone), from the first seed. */
  ablations: boolean;
  steps: number;
  batch: number;
  lr: number;
  rank: number;
  /** Share of the training images held out for the implicit scores. */
  holdout: number;
  /** Implicit-score draws of (t, eps) per held-out pair (every held-out pair is scored). */
  scoreDraws: number;
  sampleSteps: number;
  guidance: number;
}

/** The full experiment, sized to run within an hour on a 2-core machine without a GPU (BENCHMARKS.md has the time). */
export const EVAL_SETTINGS: EvalSettings = {
  trainImages: 256,
  dataSeed: 0,
  heldOutPrompts: 16,
  sampleSeeds: [0],
  methods: ['sft', 'tdpo', 'tkto'],
  trainSeeds: [0, 1, 2],
  ablations: true,
  steps: 40,
  batch: 4,
  lr: 1e-3,
  rank: 8,
  holdout: 0.1,
  scoreDraws: 1,
  sampleSteps: 20,
  guidance: 3,
};

/** `--quick`: the same experiment end to end, small enough for the test suite (its numbers mean nothing). */
export const EVAL_QUICK: EvalSettings = {
  ...EVAL_SETTINGS,
  trainImages: 8,
  heldOutPrompts: 2,
  sampleSeeds: [0],
  trainSeeds: [0],
  steps: 1,
  batch: 2,
  holdout: 0.25,
  scoreDraws: 1,
  sampleSteps: 2,
};

/** One training run of the experiment. */
export interface EvalRun {
  /** Folder name and key: "tdpo-s0", "tdpo-noclip-s0", "tdpo-content-s0". */
  name: string;
  /** The method's key in the results ("tdpo"), or the ablation's ("tdpo_noclip", "tdpo_content"). */
  key: string;
  method: LossMethod;
  seed: number;
  /** Negatives of these principles train (every principle: the mix). */
  principles: readonly Principle[];
  /** The TDPO negative-term clip; undefined: the method's default. */
  kappa?: number | null;
  ablation: boolean;
}

/** Every run the settings ask for, methods first. */
export function evalRuns(s: EvalSettings): EvalRun[] {
  const runs: EvalRun[] = [];
  for (const method of s.methods) {
    for (const seed of s.trainSeeds) runs.push({ name: `${method}-s${seed}`, key: method, method, seed, principles: PRINCIPLES, ablation: false });
  }
  if (s.ablations) {
    const seed = s.trainSeeds[0];
    runs.push({ name: `tdpo-noclip-s${seed}`, key: 'tdpo_noclip', method: 'tdpo', seed, principles: PRINCIPLES, kappa: null, ablation: true });
    for (const p of PRINCIPLES) runs.push({ name: `tdpo-${p}-s${seed}`, key: `tdpo_${p}`, method: 'tdpo', seed, principles: [p], ablation: true });
  }
  return runs;
}

/** What one model (the base, or one run's LoRA) scored. */
export interface ModelOutcome {
  run: string;
  seed: number | null;
  judge: JudgeSummary;
  /** Held-out implicit scores (null for the base model): accuracy overall and by the negative's principle. */
  heldOut: { accuracy: number; meanMargin: number; examples: number; byPrinciple: Record<string, number> } | null;
  trainSeconds: number | null;
}

export interface MeanStd {
  mean: number;
  std: number;
}

/** Mean and sample standard deviation (0 for a single value); null for none. */
export function meanStd(xs: readonly number[]): MeanStd {
  if (xs.length === 0) return { mean: Number.NaN, std: Number.NaN };
  const mean = xs.reduce((a, x) => a + x, 0) / xs.length;
  const std = xs.length > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return { mean, std };
}

/** The issue's M: a method over its seeds. */
export interface MethodResult {
  judge: MeanStd & { per_fact: Record<FactKind, MeanStd>; runs: { run: string; seed: number | null; score: number; per_fact: Record<FactKind, number> }[] };
  heldout_accuracy: MeanStd | null;
  heldout_margin: MeanStd | null;
  /** Held-out implicit accuracy on each principle's pairs. */
  heldout_accuracy_by_principle: Record<string, MeanStd> | null;
}

const round = (x: number, digits = 4) => (Number.isFinite(x) ? Number(x.toFixed(digits)) : x);
const rounded = (m: MeanStd): MeanStd => ({ mean: round(m.mean), std: round(m.std) });

/** A method's outcomes (one per seed) summarised. */
export function methodResult(outcomes: readonly ModelOutcome[]): MethodResult {
  const perFact = (o: ModelOutcome) => Object.fromEntries(FACT_KINDS.map((k) => [k, round(o.judge.byKind[k].rate)])) as Record<FactKind, number>;
  const scored = outcomes.filter((o) => o.heldOut !== null);
  return {
    judge: {
      ...rounded(meanStd(outcomes.map((o) => o.judge.meanScore))),
      per_fact: Object.fromEntries(FACT_KINDS.map((k) => [k, rounded(meanStd(outcomes.map((o) => o.judge.byKind[k].rate)))])) as Record<FactKind, MeanStd>,
      runs: outcomes.map((o) => ({ run: o.run, seed: o.seed, score: round(o.judge.meanScore), per_fact: perFact(o) })),
    },
    heldout_accuracy: scored.length ? rounded(meanStd(scored.map((o) => o.heldOut!.accuracy))) : null,
    heldout_margin: scored.length ? rounded(meanStd(scored.map((o) => o.heldOut!.meanMargin))) : null,
    heldout_accuracy_by_principle: scored.length
      ? Object.fromEntries(PRINCIPLES.filter((p) => p in scored[0].heldOut!.byPrinciple).map((p) => [p, rounded(meanStd(scored.map((o) => o.heldOut!.byPrinciple[p])))]))
      : null,
  };
}

/** Groups outcomes by key, in first-seen order. */
export function groupBy<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const t of items) groups.set(key(t), [...(groups.get(key(t)) ?? []), t]);
  return groups;
}

export interface EvalResult {
  settings: EvalSettings & {
    quick: boolean;
    model: string;
    /** This command's wall-clock time; `timing` sums each part's time as first measured (a resumed command reuses them). */
    seconds: number;
    timing: Record<string, number>;
    adapter: string;
    negatives: Record<string, number>;
    /** The beta of every implicit margin (TDPO's default), whatever the method trained with. */
    scoreBeta: number;
  };
  methods: Record<string, MethodResult>;
  ablations: Record<string, MethodResult>;
  /** Implicit margin (the TDPO runs' held-out scores) against the judge's margin on the same image and captions. */
  margin_correlation: { pairs: number; pearson: number | null; spearman: number | null };
}

const pct = (x: number) => (100 * x).toFixed(1);
const min = (seconds: number | undefined) => ((seconds ?? 0) / 60).toFixed(1);
const ms = (m: MeanStd | null, f: (x: number) => string) => (m === null ? '–' : m.std > 0 ? `${f(m.mean)} ± ${f(m.std)}` : f(m.mean));

/** The result as Markdown tables (for BENCHMARKS.md). */
export function evalMarkdown(r: EvalResult): string {
  const s = r.settings;
  const head = `| model | runs | judge score (%) | ${FACT_KINDS.join(' | ')} | held-out implicit acc. (%) | held-out margin |`;
  const rule = `|${' --- |'.repeat(5 + FACT_KINDS.length)}`;
  const row = (name: string, m: MethodResult) =>
    `| ${name} | ${m.judge.runs.length} | ${ms(m.judge, pct)} | ${FACT_KINDS.map((k) => ms(m.judge.per_fact[k], pct)).join(' | ')} | ${ms(m.heldout_accuracy, pct)} | ${ms(m.heldout_margin, (x) => x.toFixed(3))} |`;
  const lines = [
    `Settings: ${s.trainImages} training images (seed ${s.dataSeed}), one rule-editor negative per principle per caption (${Object.entries(s.negatives)
      .map(([p, n]) => `${p} ${n}`)
      .join(', ')}); every LoRA rank ${s.rank}, ${s.steps} steps, batch ${s.batch}, lr ${s.lr}, training seeds ${s.trainSeeds.join(', ')}; ` +
      `${s.heldOutPrompts} held-out prompts x ${s.sampleSeeds.length} sample seed${s.sampleSeeds.length > 1 ? 's' : ''}, DDIM ${s.sampleSteps} steps, guidance ${s.guidance}; ` +
      `implicit scores on ${Math.round(100 * s.holdout)}% held-out images, K = ${s.scoreDraws}. ${s.quick ? '**--quick: numbers mean nothing.** ' : ''}` +
      `Time on ${s.adapter}: training ${min(s.timing.train_s)}, scoring ${min(s.timing.score_s)}, sampling ${min(s.timing.sample_s)} min. Mean ± standard deviation over training seeds; implicit margins with beta ${s.scoreBeta} for every method.`,
    '',
    head,
    rule,
    ...Object.entries(r.methods).map(([k, m]) => row(k, m)),
  ];
  if (Object.keys(r.ablations).length) lines.push('', 'Ablations (first training seed only):', '', head, rule, ...Object.entries(r.ablations).map(([k, m]) => row(k, m)));
  const withScores = Object.entries({ ...r.methods, ...r.ablations }).filter(([, m]) => m.heldout_accuracy_by_principle);
  if (withScores.length) {
    const principles = Object.keys(withScores[0][1].heldout_accuracy_by_principle!);
    lines.push('', 'Held-out implicit accuracy (%) by the negative\'s principle:', '', `| model | ${principles.join(' | ')} |`, `|${' --- |'.repeat(principles.length + 1)}`);
    for (const [k, m] of withScores) lines.push(`| ${k} | ${principles.map((p) => ms(m.heldout_accuracy_by_principle![p] ?? null, pct)).join(' | ')} |`);
  }
  const c = r.margin_correlation;
  const f = (x: number | null) => (x === null ? 'undefined' : x.toFixed(3));
  lines.push('', `Implicit margin against the judge's margin over ${c.pairs} held-out pairs of the TDPO runs: Pearson ${f(c.pearson)}, Spearman ${f(c.spearman)}.`);
  return `${lines.join('\n')}\n`;
}

/** Markers around the experiment's section in BENCHMARKS.md, which `--docs` replaces. */
export const DOCS_MARKERS = ['<!-- demo-eval:start -->', '<!-- demo-eval:end -->'] as const;

/** `doc` with its marked section replaced by `section` (appended under a heading when there is none yet). */
export function replaceMarkedSection(doc: string, section: string): string {
  const [start, end] = DOCS_MARKERS;
  const block = `${start}\n${section.trimEnd()}\n${end}`;
  const i = doc.indexOf(start);
  const j = doc.indexOf(end);
  if (i >= 0 && j > i) return doc.slice(0, i) + block + doc.slice(j + end.length);
  return `${doc.trimEnd()}\n\n## The alignment experiment (npm run demo:eval)\n\n${block}\n`;
}
