// Hugging Face tokenizers' tokenizer.json, read for its BPE vocabulary and merges, so a CLIP export that
// ships only tokenizer.json works like one with vocab.json + merges.txt. The rest of the file (normaliser,
// pre-tokeniser) is not read: ClipTokenizer implements CLIP's own rules.

import type { TokenizerFiles } from '../models/tokenizer';

export function tokenizerFilesFromJson(text: string, file = 'tokenizer.json'): TokenizerFiles {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  const model = (raw as { model?: { type?: unknown; vocab?: unknown; merges?: unknown } } | null)?.model;
  if (!model || typeof model !== 'object') throw new Error(`${file}: no "model" object (not a Hugging Face tokenizer.json)`);
  if (model.type !== undefined && model.type !== 'BPE') throw new Error(`${file}: the tokenizer is ${JSON.stringify(model.type)}, expected CLIP's BPE`);
  if (!model.vocab || typeof model.vocab !== 'object' || Array.isArray(model.vocab)) throw new Error(`${file}: "model.vocab" must be an object of token -> id`);
  if (!Array.isArray(model.merges)) throw new Error(`${file}: "model.merges" must be a list`);
  // Merges are "a b" strings (tokenizers < 0.20) or ["a", "b"] pairs (later versions).
  const merges = model.merges.map((m: unknown, i: number) => {
    if (typeof m === 'string') return m;
    if (Array.isArray(m) && m.length === 2 && m.every((x) => typeof x === 'string')) return `${m[0]} ${m[1]}`;
    throw new Error(`${file}: merge ${i} is neither "a b" nor ["a", "b"]`);
  });
  return { vocab: model.vocab as Record<string, number>, merges };
}
