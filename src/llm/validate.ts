// Validation of a proposed negative caption, for LLM answers and rule edits alike: exactly one caption,
// different from the original, not a paraphrase (its content words differ), within the text encoder's
// token budget, with the principle recorded.

import { isPrinciple, type PrincipleChoice, type RecordedPrinciple } from '../data/vocabulary';
import { extractCaption, tidyCaption, type ExtractedAnswer } from './extract';

/** SD1.5's text encoder: 77 ids, of which BOS and EOS take two. */
export const DEFAULT_TOKEN_BUDGET = 75;

/**
 * Words that carry no visual content: articles, auxiliaries, pronouns, conjunctions and a few fillers.
 * Spatial prepositions (on, under, in, behind, left...) and numbers are deliberately NOT here: changing
 * them is exactly what a spatial or content edit does.
 */
export const STOP_WORDS: ReadonlySet<string> = new Set(
  (
    'a an the this that these those some any each every ' +
    'and or but nor so yet as than then ' +
    'is are was were be been being am has have had having do does did ' +
    'it its it\'s they them their there here he him his she her hers we us our you your i me my ' +
    'which who whom whose what while where when ' +
    'of to for by from' +
    ' very quite really just also too rather somewhat ' +
    'can could may might will would shall should must ' +
    'image picture photo photograph shot showing shows depicting depicts featuring features'
  ).split(/\s+/),
);

/** Lower-cased words of a caption, with "'s" and edge punctuation dropped. */
export function words(text: string): string[] {
  return (text.toLowerCase().normalize('NFC').match(/[\p{L}\p{N}]+(?:['’][\p{L}]+)*/gu) ?? []).map((w) => w.replace(/['’]s$/, ''));
}

/** The caption's content words in order: its words minus the stop words. */
export function contentWords(text: string, stopWords: ReadonlySet<string> = STOP_WORDS): string[] {
  return words(text).filter((w) => !stopWords.has(w));
}

/** Case, whitespace and punctuation folded away: two captions equal under this say the same thing. */
export function normalizeCaption(text: string): string {
  return words(text).join(' ');
}

const REFUSAL =
  /^(?:i['’]?m sorry|i am sorry|sorry,|i apologi[sz]e|i can(?:no|['’])t|i cannot|i am unable|i['’]m unable|i am not able|i won['’]t|i will not|as an ai\b|as a language model|unfortunately,? i)/i;

export type ValidationCode = 'empty' | 'refusal' | 'multiple' | 'identical' | 'paraphrase' | 'duplicate' | 'too-long';

export type ValidationResult =
  | { ok: true; caption: string; principle: RecordedPrinciple }
  | { ok: false; code: ValidationCode; reason: string };

export interface ValidationOptions {
  /** The principle that was asked for; 'mix' records the one the answer names (else 'other'). */
  principle: PrincipleChoice;
  /** Token counter of the text encoder's tokenizer (ClipTokenizer.countTokens); else approxTokenCount. */
  countTokens?: (text: string) => number;
  /** Most tokens allowed between BOS and EOS; default 75. */
  tokenBudget?: number;
  /** Negatives already made for the same caption: a repeat is rejected. */
  avoid?: readonly string[];
  stopWords?: ReadonlySet<string>;
}

/**
 * A rough token count for when no tokenizer is loaded: CLIP-style pieces, long words counted as several.
 * Errs high, so that a caption it accepts very likely fits.
 */
export function approxTokenCount(text: string): number {
  const pieces = text.toLowerCase().match(/'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/gu) ?? [];
  let n = 0;
  for (const p of pieces) n += Math.max(1, Math.ceil(p.length / 6));
  return n;
}

/** Differences of two content-word multisets: words only in a, words only in b. */
function multisetDiff(a: string[], b: string[]): { onlyA: string[]; onlyB: string[] } {
  const counts = new Map<string, number>();
  for (const w of a) counts.set(w, (counts.get(w) ?? 0) + 1);
  const onlyB: string[] = [];
  for (const w of b) {
    const c = counts.get(w) ?? 0;
    if (c > 0) counts.set(w, c - 1);
    else onlyB.push(w);
  }
  const onlyA: string[] = [];
  for (const [w, c] of counts) for (let i = 0; i < c; i++) onlyA.push(w);
  return { onlyA, onlyB };
}

/**
 * Checks one candidate negative (raw LLM text, or an already extracted answer) against its original.
 * A candidate with the same content words in another order passes only for attribute, spatial and mix
 * edits, where swapping two words ("red cube, blue ball" -> "blue cube, red ball") is the edit itself.
 */
export function validateNegative(original: string, candidate: string | ExtractedAnswer, options: ValidationOptions): ValidationResult {
  const answer = typeof candidate === 'string' ? { captions: [tidyCaption(candidate)].filter((c) => c !== ''), fromJson: false } : candidate;
  if (answer.refusal) return { ok: false, code: 'refusal', reason: `the model refused: ${clip(answer.refusal)}` };
  const captions = answer.captions.map(tidyCaption).filter((c) => c !== '');
  if (captions.length === 0) return { ok: false, code: 'empty', reason: 'no caption in the answer' };
  if (captions.length > 1) return { ok: false, code: 'multiple', reason: `more than one caption in the answer (${captions.length} captions), expected one` };
  const caption = captions[0];
  if (REFUSAL.test(caption)) return { ok: false, code: 'refusal', reason: `the model refused: ${clip(caption)}` };

  const budget = options.tokenBudget ?? DEFAULT_TOKEN_BUDGET;
  // Tokenizing a runaway answer is wasted work: anything this long cannot fit 75 tokens anyway.
  const tokens = caption.length > budget * 40 ? Infinity : (options.countTokens ?? approxTokenCount)(caption);
  if (tokens > budget) {
    const reason = Number.isFinite(tokens)
      ? `${tokens} tokens, over the ${budget}-token budget of the text encoder`
      : `far over the ${budget}-token budget of the text encoder (${caption.length} characters)`;
    return { ok: false, code: 'too-long', reason };
  }

  if (normalizeCaption(caption) === normalizeCaption(original)) return { ok: false, code: 'identical', reason: 'identical to the original caption' };
  for (const earlier of options.avoid ?? []) {
    if (normalizeCaption(caption) === normalizeCaption(earlier)) return { ok: false, code: 'duplicate', reason: 'same as another negative of this caption' };
  }

  const stop = options.stopWords ?? STOP_WORDS;
  const a = contentWords(original, stop);
  const b = contentWords(caption, stop);
  const { onlyA, onlyB } = multisetDiff(a, b);
  if (onlyA.length === 0 && onlyB.length === 0) {
    const reordered = a.join(' ') !== b.join(' ');
    const swapAllowed = options.principle === 'attribute' || options.principle === 'spatial' || options.principle === 'mix';
    if (!reordered) return { ok: false, code: 'paraphrase', reason: 'a paraphrase: the content words are the same' };
    if (!swapAllowed) return { ok: false, code: 'paraphrase', reason: 'a paraphrase: the same content words in another order' };
  }

  let principle: RecordedPrinciple;
  if (options.principle === 'mix') {
    const named = answer.principle?.toLowerCase().trim();
    principle = isPrinciple(named) ? named : 'other';
  } else {
    principle = options.principle;
  }
  return { ok: true, caption, principle };
}

/** Extracts the caption from a raw LLM answer and validates it. */
export function validateAnswer(original: string, answer: string, options: ValidationOptions): ValidationResult {
  return validateNegative(original, extractCaption(answer), options);
}

function clip(s: string, n = 120): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > n ? `${t.slice(0, n)}...` : t;
}
