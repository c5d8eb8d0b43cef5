// The trainer's randomness, counter-based so that a run is reproducible and resumable from its step
// number alone. Every draw comes from mulberry32 (src/util/random.ts) seeded with the FNV-1a hash of the
// user's seed and a context that names the draw:
//   data order of epoch e                 -> ("order", e): a Fisher-Yates shuffle of the example indices
//   t and eps of micro-batch k of step s   -> ("noise", s, k): B timesteps, then B x C x H x W normals
//   implicit-score draw j of an example    -> ("score", example id, j): one timestep and one eps
// eps is standard normal by Box-Muller. Nothing depends on state carried from an earlier draw, so a run
// resumed at step s draws exactly what an uninterrupted run draws there.

import { hashSeed, mulberry32 } from '../util/random';

export const RNG_ALGORITHM = 'mulberry32(fnv1a(seed, context)), Box-Muller normals';

export function drawRandom(seed: number, ...context: (string | number)[]): () => number {
  return mulberry32(hashSeed(seed, ...context));
}

/** n standard normal values. */
export function normals(rand: () => number, n: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    const r = Math.sqrt(-2 * Math.log(1 - rand()));
    const a = 2 * Math.PI * rand();
    out[i] = r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = r * Math.sin(a);
  }
  return out;
}

/** A uniform integer in [lo, hi]. */
export function uniformInt(rand: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rand() * (hi - lo + 1));
}

/** The example order of one epoch. */
export function epochOrder(seed: number, epoch: number, n: number): number[] {
  const rand = drawRandom(seed, 'order', epoch);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/** Where a run stands in its data: the epoch, that epoch's example order, and the next position in it. */
export interface DataCursor {
  epoch: number;
  order: number[];
  position: number;
}

/**
 * The next `count` example indices (of `n`) in data order, moving to a new epoch (a new order) when one
 * runs out; advances `cursor`. Every trainer walks its data this way, so its position is resumable.
 */
export function takeInOrder(cursor: DataCursor, seed: number, n: number, count: number): number[] {
  const out: number[] = [];
  while (out.length < count) {
    if (cursor.position >= cursor.order.length) {
      cursor.epoch++;
      cursor.order = epochOrder(seed, cursor.epoch, n);
      cursor.position = 0;
    }
    out.push(cursor.order[cursor.position++]);
  }
  return out;
}
