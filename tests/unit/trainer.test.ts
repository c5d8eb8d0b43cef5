// The trainer end to end on the tiny SD1.5-layout model, through the CLI: TDPO learns the pairs (implicit
// accuracy >= 0.9 while the loss falls), a resumed run equals an uninterrupted one, TKTO / SFT / DPO / KTO
// run through the same command, the base model's margins are exactly zero, and bad input is refused.
// All commands share one GPU (io.gpu) so each kernel compiles once on SwiftShader.

import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli';
import { openSafetensorsFile } from '../../src/models/safetensors-node';
import { GOLDENS } from '../helpers/goldens';
import { testGpu } from '../helpers/gpu';
import { writePreferenceSets, writeTpoSet } from '../helpers/train-data';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const tmp = mkdtempSync(path.join(tmpdir(), 'trainer-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let set: ReturnType<typeof writeTpoSet>;
let prefs: { dpo: string; kto: string };
beforeAll(() => {
  set = writeTpoSet(tmp, 4, 64);
  prefs = writePreferenceSets(tmp, set.images);
});

const run = async (argv: string[], signal?: AbortSignal) => runCli(argv, { cwd: tmp, gpu: await testGpu(), signal });

// SwiftShader runs a tiny-model training step in seconds, and compiles each kernel variant once per file.
const LONG = 30 * 60_000;

// One feature cache for every run: the images and captions are encoded once.
const common = ['--model', TINY, '--resolution', '64', '--holdout', '0', '--quiet', '--cache', path.join(tmp, 'cache')];

function jsonl(file: string): Record<string, unknown>[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function loraTensors(file: string): Promise<Map<string, Float32Array>> {
  const { file: f, close } = await openSafetensorsFile(file);
  try {
    const out = new Map<string, Float32Array>();
    for (const name of f.names) out.set(name, await f.readF32(name));
    return out;
  } finally {
    await close();
  }
}

describe('tpo-lab train', () => {
  it('TDPO raises the implicit accuracy on its pairs to >= 0.9 while the loss falls', async () => {
    const out = path.join(tmp, 'tdpo');
    const r = await run(['train', ...common, '--data', set.file, '--method', 'tdpo', '--steps', '20', '--lr', '3e-3', '--batch', '4', '--out', out, '--score-draws', '4', '--checkpoint-every', '10', '--dtype', 'fp32']);
    expect(r.status, r.err).toBe(0);
    const metrics = jsonl(path.join(out, 'metrics.jsonl'));
    expect(metrics.map((m) => m.step)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    for (const key of ['loss', 'accuracy', 'meanMargin', 'errPolicyW', 'errRefW', 'errPolicyL', 'errRefL', 'clipFraction', 'gradNorm', 'lr', 'stepTime', 'skipped']) {
      expect(metrics[0]).toHaveProperty(key);
    }
    // Step 1: policy == reference (B = 0), so the loss is log 2 exactly.
    expect(metrics[0].loss as number).toBeCloseTo(Math.log(2), 5);
    const mean = (xs: Record<string, unknown>[]) => xs.reduce((a, m) => a + (m.loss as number), 0) / xs.length;
    expect(mean(metrics.slice(-5))).toBeLessThan(mean(metrics.slice(0, 5)));
    const trainScores = jsonl(path.join(out, 'scores.jsonl')).filter((l) => l.split === 'train');
    const summary = trainScores.find((l) => l.summary)!;
    expect(summary.accuracy as number).toBeGreaterThanOrEqual(0.9);
    expect(existsSync(path.join(out, 'checkpoint', 'state.json'))).toBe(true);
    const lora = await loraTensors(path.join(out, 'lora.safetensors'));
    expect(lora.size).toBe(128 * 3);

    // Its scores, through `score`, agree with the trainer's; the base model's margins are exactly zero.
    const scored = path.join(tmp, 'scores-lora.jsonl');
    const s = await run(['score', '--model', TINY, '--lora', path.join(out, 'lora.safetensors'), '--data', set.file, '--out', scored, '--resolution', '64', '--draws', '4', '--quiet']);
    expect(s.status, s.err).toBe(0);
    const rescored = jsonl(scored);
    expect(rescored.at(-1)!.accuracy).toBe(summary.accuracy);
    // Same draws (keyed by example), same LoRA (fp32 file): the same margins as the trainer's own scores.
    const margins = trainScores.filter((l) => !l.summary).map((l) => l.margin as number);
    rescored.slice(0, -1).forEach((l, i) => expect(l.margin as number).toBeCloseTo(margins[i], 3));
    const base = path.join(tmp, 'scores-base.jsonl');
    const b = await run(['score', '--model', TINY, '--data', set.file, '--out', base, '--resolution', '64', '--draws', '2', '--quiet']);
    expect(b.status, b.err).toBe(0);
    const lines = jsonl(base);
    for (const l of lines.slice(0, -1)) {
      expect(l.margin).toBe(0);
      expect(l.reward_w).toBe(0);
    }
    expect(lines.at(-1)!.accuracy).toBe(0.5);
  }, LONG);

  it('a run stopped and resumed equals one that never stopped', async () => {
    const args = ['--data', set.file, '--method', 'tdpo', '--lr', '1e-3', '--batch', '1', '--grad-accum', '2', '--warmup', '1', '--lr-schedule', 'cosine', '--score-draws', '0', '--dtype', 'fp32'];
    const whole = path.join(tmp, 'whole');
    expect((await run(['train', ...common, ...args, '--steps', '3', '--out', whole])).status).toBe(0);
    // Stopped after step 1; then Ctrl-C at once (the step in flight finishes, a checkpoint is saved, exit
    // 130); then resumed to the end.
    const parts = path.join(tmp, 'parts');
    expect((await run(['train', ...common, ...args, '--steps', '1', '--out', parts])).status).toBe(0);
    const ctl = new AbortController();
    ctl.abort();
    const stopped = await run(['train', '--resume', parts, '--steps', '3', '--quiet'], ctl.signal);
    expect(stopped.status).toBe(130);
    expect(stopped.err).toMatch(/stopped at step 1 of 3.*--resume/s);
    const again = await run(['train', '--resume', parts, '--steps', '3', '--quiet']);
    expect(again.status, again.err).toBe(0);
    expect(again.err).toMatch(/resuming at step 1 of 3/);
    const a = await loraTensors(path.join(whole, 'lora.safetensors'));
    const b = await loraTensors(path.join(parts, 'lora.safetensors'));
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [k, v] of a) expect(b.get(k), k).toEqual(v);
    const ma = jsonl(path.join(whole, 'metrics.jsonl'));
    const mb = jsonl(path.join(parts, 'metrics.jsonl'));
    expect(mb.map((m) => [m.step, m.loss, m.gradNorm, m.lr])).toEqual(ma.map((m) => [m.step, m.loss, m.gradNorm, m.lr]));
    const done = await run(['train', '--resume', parts, '--quiet']);
    expect(done.status).toBe(0);
    expect(done.err).toMatch(/--steps with a larger total/);
  }, LONG);

  it('runs TKTO, SFT, Diffusion-DPO and Diffusion-KTO through the same command', async () => {
    for (const [method, data] of [['tkto', set.file], ['sft', set.file], ['dpo', prefs.dpo], ['kto', prefs.kto]] as const) {
      const out = path.join(tmp, method);
      const r = await run(['train', ...common, '--data', data, '--method', method, '--steps', '1', '--batch', '2', '--out', out, '--score-draws', '1']);
      expect(r.status, `${method}: ${r.err}`).toBe(0);
      const m = jsonl(path.join(out, 'metrics.jsonl'));
      expect(m).toHaveLength(1);
      expect(Number.isFinite(m[0].loss as number), method).toBe(true);
      if (method === 'tkto' || method === 'kto') expect(m[0]).toHaveProperty('tktoZ');
      const { file, close } = await openSafetensorsFile(path.join(out, 'lora.safetensors'));
      expect(file.metadata?.tpo_method ?? file.metadata?.ss_training_comment ?? '').toContain(method);
      await close();
    }
  }, LONG);

  it('refuses bad data with line numbers, and skips bad lines only when asked', async () => {
    const bad = path.join(tmp, 'bad.jsonl');
    writeFileSync(bad, `${readFileSync(set.file, 'utf8')}{"image": "img0.png"\n{"caption": "no image"}\n`);
    let r = await run(['train', ...common, '--data', bad, '--steps', '1', '--out', path.join(tmp, 'bad-run')]);
    expect(r.status).not.toBe(0);
    expect(r.err).toMatch(/bad\.jsonl:5/);
    expect(r.err).toMatch(/--skip-bad-lines/);
    r = await run(['train', ...common, '--data', prefs.dpo, '--method', 'tdpo', '--steps', '1', '--out', path.join(tmp, 'wrong-kind')]);
    expect(r.status).not.toBe(0);
    expect(r.err).toMatch(/Diffusion-DPO/);
    r = await run(['train', ...common, '--data', bad, '--steps', '1', '--skip-bad-lines', '--score-draws', '0', '--out', path.join(tmp, 'skipping')]);
    expect(r.status, r.err).toBe(0);
    expect(r.err).toMatch(/skipped bad\.jsonl:5/);
    r = await run(['train', ...common, '--data', set.file, '--steps', '1', '--resolution', '30', '--out', path.join(tmp, 'res')]);
    expect(r.status).not.toBe(0);
    expect(r.err).toMatch(/multiple of 8/);
  }, LONG);
});
