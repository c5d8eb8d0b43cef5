// The Scores screen's state: a run's implicit preference scores (scores.jsonl: per example and per split, at
// each step they were computed), the dataset items they refer to (to open a pair), and what is compared.

import { create } from 'zustand';
import type { DatasetItem } from '../../data/types';
import type { EngineError } from '../../worker/api';
import type { EngineClient } from '../../worker/client';
import { engine } from '../engine';

export type Split = 'train' | 'held-out';

export interface PairScore {
  /**
   * The example's id: `image\0negative caption` for TDPO / TKTO data, `prompt\0preferred\0rejected` for
   * Diffusion-DPO pairs, `desirable image\0caption\0undesirable image\0caption` for Diffusion-KTO.
   */
  id: string;
  /** The matched image (TPO), the preferred one (DPO), the desirable one (KTO). */
  image: string;
  /** The mismatched caption (TPO), the rejected image (DPO), the undesirable image and its caption (KTO). */
  negative: string;
  principle: string;
  rewardW: number;
  rewardL: number;
  margin: number;
}

export interface ScoreSet {
  /** The step the scores were computed at; 0 with `base`. */
  step: number;
  /** The base model: without the LoRA the policy is its own reference, so every reward and margin is 0. */
  base: boolean;
  split: Split;
  pairs: PairScore[];
  accuracy: number;
  meanMargin: number;
}

/** Which scores: a step of the run, or the base model. */
export type ScoreChoice = { kind: 'step'; step: number } | { kind: 'base' };

export interface ScoresStore {
  run: string | null;
  dataset: string | null;
  items: DatasetItem[];
  /** Every per-example line of the run's scores file. */
  lines: (PairScore & { step: number; split: Split })[];
  steps: number[];
  loading: boolean;
  error: EngineError | null;
  load(run: string, dataset: string): Promise<void>;
  /** The scores of one choice on one split. */
  scoreSet(choice: ScoreChoice, split: Split): ScoreSet;
}

function summarise(pairs: PairScore[]): { accuracy: number; meanMargin: number } {
  if (!pairs.length) return { accuracy: NaN, meanMargin: NaN };
  // As the trainer counts it: a tie is half right.
  const accuracy = pairs.reduce((a, p) => a + (p.margin > 0 ? 1 : p.margin === 0 ? 0.5 : 0), 0) / pairs.length;
  return { accuracy, meanMargin: pairs.reduce((a, p) => a + p.margin, 0) / pairs.length };
}

/** What an example's id says of its two sides (see PairScore.id); preference data has no principle. */
function pairOf(id: string): { image: string; negative: string; principle: string } {
  const parts = id.split('\u0000');
  if (parts.length === 3) return { image: parts[1], negative: `${parts[2]} (rejected)`, principle: 'image pair' };
  if (parts.length === 4) return { image: parts[0], negative: `${parts[2]}: ${parts[3]} (undesirable)`, principle: 'labels' };
  return { image: parts[0], negative: parts[1] ?? '', principle: 'unknown' };
}

export function createScoresStore(client: () => EngineClient) {
  return create<ScoresStore>()((set, get) => ({
    run: null,
    dataset: null,
    items: [],
    lines: [],
    steps: [],
    loading: false,
    error: null,

    async load(run, dataset) {
      set({ loading: true, error: null, run, dataset });
      const [scores, items] = await Promise.all([client().lab.scores(run), client().lab.datasetItems(dataset)]);
      if (!scores.ok) return set({ loading: false, error: scores.error });
      const lines: ScoresStore['lines'] = [];
      for (const row of scores.value) {
        if (row.summary || typeof row.id !== 'string' || typeof row.margin !== 'number') continue;
        lines.push({
          id: row.id,
          ...pairOf(row.id),
          ...(typeof row.principle === 'string' ? { principle: row.principle } : {}),
          rewardW: Number(row.rewardW),
          rewardL: Number(row.rewardL),
          margin: row.margin,
          step: Number(row.step),
          split: row.split === 'held-out' ? 'held-out' : 'train',
        });
      }
      const steps = [...new Set(lines.map((l) => l.step))].sort((a, b) => a - b);
      // The dataset may have been deleted since: the scores still show, without the pairs' images.
      set({ loading: false, lines, steps, items: items.ok ? items.value : [] });
    },

    scoreSet(choice, split) {
      const ofSplit = (step: number) => get().lines.filter((l) => l.split === split && l.step === step);
      if (choice.kind === 'step') {
        const pairs = ofSplit(choice.step);
        return { step: choice.step, base: false, split, pairs, ...summarise(pairs) };
      }
      // The base model's scores are known without computing: the same pairs, every reward 0.
      const any = get().steps.at(-1) ?? 0;
      const pairs = ofSplit(any).map((p) => ({ ...p, rewardW: 0, rewardL: 0, margin: 0 }));
      return { step: 0, base: true, split, pairs, ...summarise(pairs) };
    },
  }));
}

export const useScoresStore = createScoresStore(engine);
