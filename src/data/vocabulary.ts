// The words a dataset is written in: the editing principles, where a negative came from, and its review
// status. They live here, in the data layer, because a dataset file uses them whether or not an LLM ever
// touched it; the caption editors in llm/ import them from here (llm -> data, never the reverse).

/** The four editing principles of TPO. */
export const PRINCIPLES = ['content', 'attribute', 'spatial', 'context'] as const;
export type Principle = (typeof PRINCIPLES)[number];

/** What a negative records: one of the four, or 'other' (manual edits, unknown labels). */
export type RecordedPrinciple = Principle | 'other';
export const RECORDED_PRINCIPLES: readonly RecordedPrinciple[] = [...PRINCIPLES, 'other'];

/** What a request may ask for: one principle, or 'mix' (the editor picks one and reports which). */
export type PrincipleChoice = Principle | 'mix';
export const PRINCIPLE_CHOICES: readonly PrincipleChoice[] = [...PRINCIPLES, 'mix'];

/** Who wrote a negative: an LLM, the rule editor, or a person. */
export type NegativeSource = 'llm' | 'rule' | 'manual';
export const NEGATIVE_SOURCES: readonly NegativeSource[] = ['llm', 'rule', 'manual'];

/** Where a negative stands in review. */
export type NegativeStatus = 'pending' | 'accepted' | 'rejected';
export const NEGATIVE_STATUSES: readonly NegativeStatus[] = ['pending', 'accepted', 'rejected'];

export function isPrinciple(x: unknown): x is Principle {
  return typeof x === 'string' && (PRINCIPLES as readonly string[]).includes(x);
}

export function isPrincipleChoice(x: unknown): x is PrincipleChoice {
  return x === 'mix' || isPrinciple(x);
}
