// Node-only loader for the CLIP tokenizer: reads vocab.json and merges.txt from a model folder.

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ClipTokenizer, type TokenizerOptions } from './tokenizer';

/**
 * The folder that holds vocab.json + merges.txt for `dir`: a diffusers model folder (its `tokenizer/`),
 * or the tokenizer folder itself. Null when neither layout is there.
 */
export function findTokenizerDir(dir: string): string | null {
  for (const candidate of [path.join(dir, 'tokenizer'), dir]) {
    if (existsSync(path.join(candidate, 'vocab.json')) && existsSync(path.join(candidate, 'merges.txt'))) return candidate;
  }
  return null;
}

/** Loads the CLIP tokenizer of a model folder (or of a folder holding vocab.json and merges.txt). */
export async function loadClipTokenizer(dir: string, options?: TokenizerOptions): Promise<ClipTokenizer> {
  const folder = findTokenizerDir(dir);
  if (!folder) throw new Error(`no tokenizer in ${dir}: expected tokenizer/vocab.json and tokenizer/merges.txt`);
  const [vocab, merges] = await Promise.all([
    readFile(path.join(folder, 'vocab.json'), 'utf8'),
    readFile(path.join(folder, 'merges.txt'), 'utf8'),
  ]);
  return new ClipTokenizer({ vocab, merges }, options);
}
