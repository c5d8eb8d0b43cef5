// Training examples: two loss rows each, the matched ("w") and the mismatched ("l") half of a batch.
//   TDPO, TKTO: one image under its caption (w) and under one negative caption (l): one example per negative.
//   SFT:        one image under its caption; the l row is only reported (SFT's loss has no l term).
//   DPO:        two images (preferred w, rejected l) under one prompt.
//   KTO:        a desirable image (w) beside an undesirable one (l), each under its own caption; the
//               shorter list is cycled so every labelled image is used at least once per epoch. TKTO's
//               math then gives each image its own term: lambda_D for desirable, lambda_U for undesirable.
// Rows name their inputs by path and caption; the cached latents and text states are looked up by those.

import type { DatasetItem, Negative } from '../data/types';
import type { DpoRecord, KtoRecord } from '../data/preference-records';
import type { LossMethod } from './methods';
import { fnv1a } from '../util/random';

export interface TermRef {
  /** Image path as the data file names it (resolved against the data file's folder by the caller). */
  image: string;
  caption: string;
}

export interface TrainExample {
  /** Stable across runs and orderings: what implicit-score draws and checkpoints are keyed by. */
  id: string;
  /** The image (or DPO prompt) the example belongs to: train / held-out splits never separate a group. */
  group: string;
  w: TermRef;
  l: TermRef;
  principle?: string;
}

export type DataKind = 'tpo' | 'dpo' | 'kto';

export function dataKindFor(method: LossMethod): DataKind {
  return method === 'dpo' ? 'dpo' : method === 'kto' ? 'kto' : 'tpo';
}

/** The methods that train on each kind of data (the first is the one to offer first). */
export const METHODS_FOR: Record<DataKind, readonly LossMethod[]> = { tpo: ['tdpo', 'tkto', 'sft'], dpo: ['dpo'], kto: ['kto'] };

/** Which negatives train: every one not rejected (default), or only those a person accepted. */
export type NegativeFilter = 'all' | 'accepted';

function usable(n: Negative, filter: NegativeFilter): boolean {
  return filter === 'accepted' ? n.status === 'accepted' : n.status !== 'rejected';
}

export function tpoExamples(items: readonly DatasetItem[], method: LossMethod, filter: NegativeFilter = 'all'): TrainExample[] {
  const out: TrainExample[] = [];
  for (const item of items) {
    const negatives = item.negatives.filter((n) => usable(n, filter));
    const w = { image: item.image, caption: item.caption };
    if (method === 'sft') {
      // One example per image: an image with many negatives must not weigh more in plain fine-tuning.
      out.push({ id: item.image, group: item.image, w, l: { image: item.image, caption: negatives[0]?.caption ?? item.caption } });
      continue;
    }
    negatives.forEach((n) => {
      out.push({ id: `${item.image}\u0000${n.caption}`, group: item.image, w, l: { image: item.image, caption: n.caption }, principle: n.principle });
    });
  }
  return out;
}

export function dpoExamples(records: readonly DpoRecord[]): TrainExample[] {
  return records.map((r) => ({
    id: `${r.prompt}\u0000${r.imageW}\u0000${r.imageL}`,
    group: r.prompt,
    w: { image: r.imageW, caption: r.prompt },
    l: { image: r.imageL, caption: r.prompt },
  }));
}

export function ktoExamples(records: readonly KtoRecord[]): TrainExample[] {
  const good = records.filter((r) => r.label);
  const bad = records.filter((r) => !r.label);
  if (good.length === 0 || bad.length === 0) {
    throw new Error(`Diffusion-KTO needs desirable and undesirable images; this data has ${good.length} desirable and ${bad.length} undesirable.`);
  }
  const n = Math.max(good.length, bad.length);
  return Array.from({ length: n }, (_, i) => {
    const g = good[i % good.length];
    const b = bad[i % bad.length];
    return {
      id: `${g.image}\u0000${g.caption}\u0000${b.image}\u0000${b.caption}`,
      group: `${g.image}\u0000${b.image}`,
      w: { image: g.image, caption: g.caption },
      l: { image: b.image, caption: b.caption },
    };
  });
}

/** FNV-1a of a string, in [0, 1): a stable, order-free way to put a group in a split. */
function unitHash(text: string, seed: number): number {
  return fnv1a(text, 0x811c9dc5 ^ seed) / 4294967296;
}

/**
 * Splits examples into train and held-out by group: about `fraction` of the groups are held out (at least
 * one when fraction > 0 and there are two groups or more), chosen by a hash of the group and the seed.
 */
export function splitExamples(examples: readonly TrainExample[], fraction: number, seed: number): { train: TrainExample[]; heldOut: TrainExample[] } {
  if (fraction <= 0) return { train: [...examples], heldOut: [] };
  const groups = [...new Set(examples.map((e) => e.group))].sort((a, b) => unitHash(a, seed) - unitHash(b, seed));
  let count = Math.round(groups.length * fraction);
  if (count === 0 && groups.length >= 2) count = 1;
  if (count >= groups.length) count = groups.length - 1;
  const held = new Set(groups.slice(0, count));
  return { train: examples.filter((e) => !held.has(e.group)), heldOut: examples.filter((e) => held.has(e.group)) };
}
