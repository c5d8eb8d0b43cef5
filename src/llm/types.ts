// The caption editors' interface: what an edit request asks and what an editor answers.

import type { NegativeSource, PrincipleChoice, RecordedPrinciple } from '../data/vocabulary';

// The vocabulary is the data layer's; re-exported so the editors' users need one import.
export {
  isPrinciple,
  isPrincipleChoice,
  type NegativeSource,
  type Principle,
  PRINCIPLE_CHOICES,
  type PrincipleChoice,
  PRINCIPLES,
  type RecordedPrinciple,
} from '../data/vocabulary';

/** One edit request: make caption `caption` wrong by `principle`, differently from `avoid`. */
export interface EditRequest {
  caption: string;
  principle: PrincipleChoice;
  /** Negatives already made for this caption (the editor should not repeat them). */
  avoid?: readonly string[];
  /** Position of this negative among the caption's negatives (seeds the rule editor). */
  index?: number;
  signal?: AbortSignal;
}

export type EditResult =
  | { ok: true; caption: string; principle: RecordedPrinciple; source: NegativeSource; attempts: number }
  | {
      ok: false;
      reason: string;
      principle: PrincipleChoice;
      source: NegativeSource;
      attempts: number;
      /** Every further request would fail the same way (the server cannot be reached, or refuses the key or model). */
      serverGone?: boolean;
    };

/** Anything that turns a true caption into a mismatched one: the LLM editor or the rule editor. */
export interface CaptionEditor {
  readonly source: NegativeSource;
  edit(request: EditRequest): Promise<EditResult>;
}
