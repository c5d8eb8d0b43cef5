// The alignment experiment (`tpo-lab eval`): the runs it plans, how it summarises them, and its --quick form
// end to end on the committed demo model: demo-eval.json has the shape the issue asks for (not its numbers),
// the grid is written, and running the same command again reuses every finished run and sample.

import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeImageNode } from '../../src/data/decode-node';
import { DOCS_MARKERS, EVAL_QUICK, EVAL_SETTINGS, evalRuns, meanStd, methodResult, type ModelOutcome, replaceMarkedSection } from '../../src/demo/eval';
import { FACT_KINDS, type JudgeSummary } from '../../src/demo/judge';
import { runCli } from '../helpers/cli';
import { testGpu } from '../helpers/gpu';
import { tempDir } from '../helpers/llm/files';

const dirs: { cleanup: () => void }[] = [];
afterEach(() => {
  while (dirs.length) dirs.pop()!.cleanup();
});

const summary = (score: number, rate: number): JudgeSummary => ({
  images: 4,
  meanScore: score,
  facts: { shown: 1, total: 2, rate },
  byKind: Object.fromEntries(FACT_KINDS.map((k) => [k, { shown: 1, total: 2, rate }])) as JudgeSummary['byKind'],
});

describe('the experiment\'s plan and summaries', () => {
  it('trains every method from every seed with the same settings, then the ablations from the first seed', () => {
    const runs = evalRuns(EVAL_SETTINGS);
    const main = runs.filter((r) => !r.ablation);
    expect(main.map((r) => r.name)).toEqual(['sft-s0', 'sft-s1', 'sft-s2', 'tdpo-s0', 'tdpo-s1', 'tdpo-s2', 'tkto-s0', 'tkto-s1', 'tkto-s2']);
    for (const r of main) expect(r.principles).toEqual(['content', 'attribute', 'spatial', 'context']);
    const ablations = runs.filter((r) => r.ablation);
    expect(ablations.map((r) => r.key)).toEqual(['tdpo_noclip', 'tdpo_content', 'tdpo_attribute', 'tdpo_spatial', 'tdpo_context']);
    expect(ablations.every((r) => r.method === 'tdpo' && r.seed === 0)).toBe(true);
    expect(ablations[0].kappa).toBeNull();
    expect(ablations.slice(1).map((r) => r.principles)).toEqual([['content'], ['attribute'], ['spatial'], ['context']]);
    expect(evalRuns({ ...EVAL_QUICK, ablations: false }).every((r) => !r.ablation)).toBe(true);
  });

  it('mean and sample standard deviation over seeds; the base model has no implicit scores', () => {
    expect(meanStd([1, 2, 3])).toEqual({ mean: 2, std: 1 });
    expect(meanStd([0.5])).toEqual({ mean: 0.5, std: 0 });
    const outcome = (run: string, score: number, acc: number | null): ModelOutcome => ({
      run,
      seed: 0,
      judge: summary(score, score),
      heldOut: acc === null ? null : { accuracy: acc, meanMargin: acc - 0.5, examples: 10, byPrinciple: { content: acc, spatial: 1 - acc } },
      trainSeconds: null,
    });
    const m = methodResult([outcome('tdpo-s0', 0.2, 0.6), outcome('tdpo-s1', 0.4, 0.8)]);
    expect(m.judge.mean).toBeCloseTo(0.3, 10);
    expect(m.judge.std).toBeCloseTo(Math.SQRT2 * 0.1, 4);
    expect(m.judge.per_fact.colour.mean).toBeCloseTo(0.3, 10);
    expect(m.judge.runs.map((r) => r.run)).toEqual(['tdpo-s0', 'tdpo-s1']);
    expect(m.heldout_accuracy!.mean).toBeCloseTo(0.7, 10);
    expect(m.heldout_margin!.mean).toBeCloseTo(0.2, 10);
    expect(Object.keys(m.heldout_accuracy_by_principle!)).toEqual(['content', 'spatial']); // in PRINCIPLES' order
    expect(m.heldout_accuracy_by_principle!.spatial.mean).toBeCloseTo(0.3, 10);
    const base = methodResult([outcome('base', 0.1, null)]);
    expect(base.heldout_accuracy).toBeNull();
    expect(base.heldout_margin).toBeNull();
    expect(base.heldout_accuracy_by_principle).toBeNull();
  });

  it('replaces its own section of BENCHMARKS.md and nothing else; appends one when there is none', () => {
    const [start, end] = DOCS_MARKERS;
    const first = replaceMarkedSection('# Benchmarks\n\nkernels\n', 'table one');
    expect(first).toContain(`${start}\ntable one\n${end}`);
    expect(first.startsWith('# Benchmarks\n\nkernels\n')).toBe(true);
    const doc = `${first}\nafter\n`;
    const second = replaceMarkedSection(doc, 'table two');
    expect(second).not.toContain('table one');
    expect(second).toContain(`${start}\ntable two\n${end}`);
    expect(second.endsWith('\nafter\n')).toBe(true);
    expect(second.split(start)).toHaveLength(2);
  });
});

describe('tpo-lab eval --quick', () => {
  const demo = path.resolve('public/demo');

  it('runs the whole experiment on the demo model, writes demo-eval.json, the table and the grid, and resumes', async () => {
    const d = tempDir();
    dirs.push(d);
    const gpu = await testGpu();
    const r = await runCli(['eval', '--quick', '--out', 'ev'], { cwd: d.dir, gpu, env: { TPO_LAB_DEMO: demo } });
    expect(r.status, r.err).toBe(0);
    const out = path.join(d.dir, 'ev');
    const result = JSON.parse(readFileSync(path.join(out, 'demo-eval.json'), 'utf8'));

    expect(result.settings).toMatchObject({ quick: true, steps: EVAL_QUICK.steps, batch: EVAL_QUICK.batch, lr: EVAL_QUICK.lr, trainSeeds: EVAL_QUICK.trainSeeds });
    expect(Object.keys(result.settings.negatives).sort()).toEqual(['attribute', 'content', 'context', 'spatial']);
    const meanStdShape = { mean: expect.any(Number), std: expect.any(Number) };
    expect(Object.keys(result.methods)).toEqual(['base', 'sft', 'tdpo', 'tkto']);
    expect(Object.keys(result.ablations)).toEqual(['tdpo_noclip', 'tdpo_content', 'tdpo_attribute', 'tdpo_spatial', 'tdpo_context']);
    for (const [name, m] of Object.entries({ ...result.methods, ...result.ablations }) as [string, Record<string, unknown>][]) {
      expect(m.judge, name).toMatchObject(meanStdShape);
      const judge = m.judge as { per_fact: Record<string, unknown>; runs: unknown[]; mean: number };
      expect(Object.keys(judge.per_fact).sort(), name).toEqual([...FACT_KINDS].sort());
      for (const k of FACT_KINDS) expect(judge.per_fact[k], `${name} ${k}`).toMatchObject(meanStdShape);
      expect(judge.runs, name).toHaveLength(EVAL_QUICK.trainSeeds.length);
      expect(judge.mean).toBeGreaterThanOrEqual(0);
      expect(judge.mean).toBeLessThanOrEqual(1);
      if (name === 'base') {
        expect(m.heldout_accuracy).toBeNull();
        expect(m.heldout_margin).toBeNull();
      } else {
        expect(m.heldout_accuracy, name).toMatchObject(meanStdShape);
        expect(m.heldout_margin, name).toMatchObject(meanStdShape);
        // Every LoRA is scored on the same held-out pairs: negatives of every principle, ablations included.
        expect(Object.keys(m.heldout_accuracy_by_principle as object).length, name).toBeGreaterThanOrEqual(3);
      }
    }
    expect(result.margin_correlation.pairs).toBeGreaterThan(0);
    expect(Object.keys(result.settings.timing).sort()).toEqual(['sample_s', 'score_s', 'train_s']);
    expect(r.out).toContain('| tdpo | 1 |');
    expect(readFileSync(path.join(out, 'demo-eval.md'), 'utf8')).toContain('Ablations');
    // The grid: base, SFT, TDPO, TKTO from the same seed, one column per held-out prompt.
    const grid = await decodeImageNode(new Uint8Array(readFileSync(path.join(out, 'grid.png'))), 'grid.png');
    expect(grid.height).toBe(4 * 64 + 3 * 4);
    expect(grid.width).toBe(EVAL_QUICK.heldOutPrompts * 64 + (EVAL_QUICK.heldOutPrompts - 1) * 4);
    expect(existsSync(path.join(out, 'runs', 'tkto-s0', 'lora.safetensors'))).toBe(true);
    // The samples carry their prompt and settings as `tpo-lab sample` writes them: judge-shapes reads them.
    const judged = await runCli(['judge-shapes', '--images', path.join('ev', 'samples', 'tdpo-s0')], { cwd: d.dir });
    expect(judged.status, judged.err).toBe(0);
    expect(judged.out).toMatch(new RegExp(`over ${EVAL_QUICK.heldOutPrompts} images`));

    // Again: every run and every model's samples are reused, and the numbers are the same.
    const again = await runCli(['eval', '--quick', '--out', 'ev'], { cwd: d.dir, gpu, env: { TPO_LAB_DEMO: demo } });
    expect(again.status, again.err).toBe(0);
    expect(again.err).not.toMatch(/^train \d/m);
    expect(again.err).not.toMatch(/^samples /m);
    expect(again.err).not.toMatch(/^scores /m);
    const second = JSON.parse(readFileSync(path.join(out, 'demo-eval.json'), 'utf8'));
    expect(second.methods).toEqual(result.methods);
    expect(second.ablations).toEqual(result.ablations);
  }, 900_000);

  it('says what is wrong with its options', async () => {
    const r = await runCli(['eval', '--out', 'x', '--seeds', '1,a'], { cwd: '/tmp' });
    expect(r.status).not.toBe(0);
    expect(r.err).toMatch(/--seeds must be whole numbers/);
    const none = await runCli(['eval', '--quick'], { cwd: '/tmp' });
    expect(none.err).toMatch(/--out is required/);
  });
});
