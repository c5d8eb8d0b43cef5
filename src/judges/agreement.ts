// How a judge's margins agree with the lab's implicit preference margins. The implicit scores come from
// either file the lab writes:
//   a training run's scores.jsonl: {"step", "split", "id": "image\0negative caption", "margin", "principle", ...}
//     at every step it scored (the last step is used; the image is the path the data file gave, resolved
//     by the caller);
//   `tpo-lab score --out`: {"image_w", "caption_l", "margin", ...} with image_w relative to that file.
// Both end groups with a {"summary": true} line, which is skipped. Platform-free: paths are resolved by a
// function the caller gives.

import { pearson, spearman } from './correlation';

export interface ImplicitScores {
  /** pairKey(image, negative) -> implicit margin. */
  margins: Map<string, number>;
  /** The training step the margins are from (run files), or null (`tpo-lab score` files). */
  step: number | null;
}

/** How a pair is matched across files: the resolved image path and the negative caption. */
export function pairKey(image: string, negative: string): string {
  return `${image}\u0000${negative}`;
}

/**
 * Reads implicit scores. `resolveRunImage` turns a run file's image (from the id) into the path the judge's
 * data uses; `resolveScoreImage` does the same for a `tpo-lab score` file's image_w. Throws an Error naming
 * `file` and the line on a malformed line.
 */
export function parseImplicitScores(
  text: string,
  file: string,
  resolve: { runImage: (image: string) => string; scoreImage: (image: string) => string },
): ImplicitScores {
  const run = new Map<string, { step: number; margin: number }>();
  const plain = new Map<string, number>();
  let lastStep = -Infinity;
  text.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new Error(`${file}:${i + 1}: not a JSON line`);
    }
    if (o === null || typeof o !== 'object' || o.summary === true) return;
    if (typeof o.margin !== 'number') throw new Error(`${file}:${i + 1}: no numeric "margin" (expected a run's scores.jsonl or the output of tpo-lab score)`);
    if (typeof o.id === 'string') {
      const parts = o.id.split('\u0000');
      // Two parts: a TPO pair (image, negative). DPO / KTO ids have more and have no caption pair to judge.
      if (parts.length !== 2) return;
      const step = typeof o.step === 'number' ? o.step : 0;
      const key = pairKey(resolve.runImage(parts[0]), parts[1]);
      const seen = run.get(key);
      // A pair belongs to one split, so it appears once per step; keep the latest step's margin.
      if (!seen || step >= seen.step) run.set(key, { step, margin: o.margin });
      lastStep = Math.max(lastStep, step);
    } else if (typeof o.image_w === 'string' && typeof o.caption_l === 'string') {
      if (typeof o.image_l === 'string') return; // a DPO pair: two images, not a caption pair
      plain.set(pairKey(resolve.scoreImage(o.image_w), o.caption_l), o.margin);
    } else {
      throw new Error(`${file}:${i + 1}: neither an "id" nor "image_w" and "caption_l" (expected a run's scores.jsonl or the output of tpo-lab score)`);
    }
  });
  if (run.size) {
    // Only the last step's scores: earlier ones describe earlier checkpoints.
    const margins = new Map<string, number>();
    for (const [k, v] of run) if (v.step === lastStep) margins.set(k, v.margin);
    for (const [k, v] of plain) margins.set(k, v);
    return { margins, step: lastStep };
  }
  return { margins: plain, step: null };
}

export interface Correlation {
  pairs: number;
  pearson: number | null;
  spearman: number | null;
}

export function correlate(judge: readonly number[], implicit: readonly number[]): Correlation {
  return { pairs: judge.length, pearson: pearson(judge, implicit), spearman: spearman(judge, implicit) };
}

/** Correlation of judge and implicit margins over all matched pairs and within each principle. */
export function agreement(rows: readonly { principle: string; judge: number; implicit: number }[]): { overall: Correlation; byPrinciple: Record<string, Correlation> } {
  const groups = new Map<string, { judge: number[]; implicit: number[] }>();
  for (const r of rows) {
    const g = groups.get(r.principle) ?? { judge: [], implicit: [] };
    g.judge.push(r.judge);
    g.implicit.push(r.implicit);
    groups.set(r.principle, g);
  }
  const byPrinciple: Record<string, Correlation> = {};
  for (const [p, g] of [...groups].sort(([a], [b]) => a.localeCompare(b))) byPrinciple[p] = correlate(g.judge, g.implicit);
  return {
    overall: correlate(
      rows.map((r) => r.judge),
      rows.map((r) => r.implicit),
    ),
    byPrinciple,
  };
}
