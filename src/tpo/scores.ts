// Implicit preference scores (TPO_SPEC "Implicit preference score"): r(x, c) = -beta * D(c), D = e_policy -
// e_ref, averaged over K fixed draws of (t, eps) per example. Draw j of an example depends only on the
// score seed, the example's id and j, so scores of different checkpoints (and of the base model, whose
// margins are exactly zero: policy and reference are the same network) are comparable.

import type { Gpu } from '../gpu/gpu';
import { noiseSchedule, type NoiseSchedule } from '../diffusion/schedule';
import type { UNet } from '../models/unet';
import { mseRowsDiff } from '../nn/ops/reduce';
import { Ctx } from '../nn/tape';
import { batchTensors, drawNoise, type Features } from './batch';
import type { TermRef, TrainExample } from './examples';
import { drawRandom } from './random';

export interface ScoreOptions {
  /** Draws per example (default 8). */
  k?: number;
  seed?: number;
  beta: number;
  /** Examples x draws per forward (each is two rows). */
  batchSize?: number;
  tMin?: number;
  tMax?: number;
  /** The model's training schedule (default SD1.5's): it noises the latents and says what the UNet predicts. */
  schedule?: NoiseSchedule;
  onProgress?: (done: number, total: number) => void;
}

export interface ExampleScore {
  id: string;
  /** r(x, c_w), r(x, c_l): averaged implicit rewards. */
  rewardW: number;
  rewardL: number;
  /** r_w - r_l = beta * (D(c_l) - D(c_w)). */
  margin: number;
  principle?: string;
}

export interface ScoreSummary {
  scores: ExampleScore[];
  /** mean(m > 0) + 0.5 mean(m == 0) */
  accuracy: number;
  meanMargin: number;
}

export const DEFAULT_SCORE_DRAWS = 8;
export const DEFAULT_SCORE_SEED = 1234;

export function summarise(scores: ExampleScore[]): ScoreSummary {
  const n = scores.length;
  if (n === 0) return { scores, accuracy: NaN, meanMargin: NaN };
  const acc = scores.reduce((a, s) => a + (s.margin > 0 ? 1 : s.margin === 0 ? 0.5 : 0), 0) / n;
  return { scores, accuracy: acc, meanMargin: scores.reduce((a, s) => a + s.margin, 0) / n };
}

/** Scores of every example under the UNet's current LoRA (none, or disabled: the base model). */
export async function implicitScores(gpu: Gpu, unet: UNet, examples: readonly TrainExample[], features: Features, o: ScoreOptions): Promise<ScoreSummary> {
  const k = o.k ?? DEFAULT_SCORE_DRAWS;
  const seed = o.seed ?? DEFAULT_SCORE_SEED;
  const per = Math.max(1, o.batchSize ?? 4);
  const schedule = o.schedule ?? noiseSchedule();
  const jobs = examples.flatMap((e, i) => Array.from({ length: k }, (_, j) => ({ i, j, e })));
  const sumW = new Float64Array(examples.length);
  const sumL = new Float64Array(examples.length);
  const loraWasEnabled = unet.loraEnabled;
  try {
    for (let start = 0; start < jobs.length; start += per) {
      const chunk = jobs.slice(start, start + per);
      const ts: number[] = [];
      const eps = new Float32Array(chunk.length * features.keys.latentShape.reduce((a, b) => a * b, 1));
      chunk.forEach(({ e, j }, r) => {
        const d = drawNoise(drawRandom(seed, 'score', e.id, j), 1, features.keys.latentShape, o.tMin ?? 0, o.tMax ?? 999);
        ts.push(d.t[0]);
        eps.set(d.eps, r * d.eps.length);
      });
      const rows: TermRef[] = [...chunk.map((c) => c.e.w), ...chunk.map((c) => c.e.l)];
      const inputs = await batchTensors(gpu, features, rows, ts, eps, schedule);
      unet.loraEnabled = false;
      const epsRef = await unet.forward(new Ctx(gpu), inputs.xt, inputs.timesteps, inputs.ctx);
      unet.loraEnabled = loraWasEnabled;
      const epsPolicy = await unet.forward(new Ctx(gpu), inputs.xt, inputs.timesteps, inputs.ctx);
      const diff = mseRowsDiff(epsPolicy, epsRef, inputs.target);
      const d = await diff.read();
      for (const x of [epsRef, epsPolicy, diff]) x.release();
      inputs.release();
      chunk.forEach(({ i }, r) => {
        sumW[i] += d[r];
        sumL[i] += d[chunk.length + r];
      });
      o.onProgress?.(Math.min(jobs.length, start + per), jobs.length);
    }
  } finally {
    unet.loraEnabled = loraWasEnabled;
  }
  return summarise(
    examples.map((e, i) => {
      const rewardW = (-o.beta * sumW[i]) / k;
      const rewardL = (-o.beta * sumL[i]) / k;
      return { id: e.id, rewardW, rewardL, margin: rewardW - rewardL, ...(e.principle ? { principle: e.principle } : {}) };
    }),
  );
}
