// Shared vocabulary of the caption-editing pipeline: principles, sources, results.

/** The four editing principles of TPO. */
export const PRINCIPLES = ['content', 'attribute', 'spatial', 'context'] as const;
export type Principle = (typeof PRINCIPLES)[number];

/** What a negative records: one of the four, or 'other' (manual edits, unknown labels). */
export type RecordedPrinciple = Principle | 'other';

/** What a request may ask for: one principle, or 'mix' (the editor picks one and reports which). */
export type PrincipleChoice = Principle | 'mix';
export const PRINCIPLE_CHOICES: readonly PrincipleChoice[] = [...PRINCIPLES, 'mix'];

export type NegativeSource = 'llm' | 'rule' | 'manual';

export function isPrinciple(x: unknown): x is Principle {
  return typeof x === 'string' && (PRINCIPLES as readonly string[]).includes(x);
}

export function isPrincipleChoice(x: unknown): x is PrincipleChoice {
  return x === 'mix' || isPrinciple(x);
}

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
