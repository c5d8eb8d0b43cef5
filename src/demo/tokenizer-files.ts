// The demo model's tokenizer: CLIP's byte-level BPE files (vocab.json, merges.txt) with a vocabulary made
// for the shapes world instead of CLIP's 49408 tokens. Laid out as openai/CLIP builds its own vocabulary:
//
//   the 256 byte characters (GPT-2's bytes-to-unicode table, printable bytes first), the same 256 with
//   '</w>' (end of word), one token per merge in merge order, then <|startoftext|> and <|endoftext|>
//
// and the merges are chosen so that every word of the shapes world (shapesWords) ends as one token. Any
// other text still tokenizes, byte by byte, as CLIP's tokenizer does with a rare word. Deterministic: the
// same words give the same files, so the build needs no seed for this stage.
// Platform-free (no node: imports).

import { bytesToUnicode, CLIP_BOS, CLIP_EOS } from '../models/tokenizer';
import { shapesWords } from './shapes';

export interface DemoTokenizerFiles {
  /** token -> id, in CLIP's order (see the header). */
  vocab: Record<string, number>;
  /** Merge lines "a b", in rank order (merges.txt adds CLIP's "#version: 0.2" first line). */
  merges: string[];
}

/** The byte characters in the order CLIP lists them: printable bytes ascending, then the others. */
function byteCharsInClipOrder(): string[] {
  const table = bytesToUnicode();
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const order = [...Array(256).keys()].filter(printable).concat([...Array(256).keys()].filter((b) => !printable(b)));
  return order.map((b) => table[b]);
}

/** The symbols BPE leaves of one word under `ranks`: the same loop as ClipTokenizer's, on byte characters. */
function bpe(symbols: string[], ranks: Map<string, number>): string[] {
  let s = [...symbols];
  for (;;) {
    let best = -1;
    let bestRank = Infinity;
    for (let i = 0; i < s.length - 1; i++) {
      const r = ranks.get(`${s[i]} ${s[i + 1]}`);
      if (r !== undefined && r < bestRank) {
        bestRank = r;
        best = i;
      }
    }
    if (best < 0) return s;
    const [a, b] = [s[best], s[best + 1]];
    const merged: string[] = [];
    for (let i = 0; i < s.length; ) {
      if (i < s.length - 1 && s[i] === a && s[i + 1] === b) {
        merged.push(a + b);
        i += 2;
      } else {
        merged.push(s[i++]);
      }
    }
    s = merged;
  }
}

/**
 * vocab.json and merges.txt contents whose merges build each of `words` into one token. Words are taken in
 * the order given; for each, while BPE with the merges so far leaves more than one symbol, the merge of its
 * first two symbols is added. A new merge ranks after all earlier ones, so it never changes how an earlier
 * word is merged (BPE takes it only when no earlier merge applies, and each earlier word always has one
 * until it is whole).
 */
export function demoTokenizerFiles(words: readonly string[] = shapesWords()): DemoTokenizerFiles {
  const bytes = byteCharsInClipOrder();
  const table = bytesToUnicode();
  const encoder = new TextEncoder();
  const ranks = new Map<string, number>();
  const merges: string[] = [];
  const mergedTokens: string[] = [];
  for (const word of words) {
    const symbols = [...encoder.encode(word)].map((b) => table[b]);
    symbols[symbols.length - 1] += '</w>';
    for (let parts = bpe(symbols, ranks); parts.length > 1; parts = bpe(symbols, ranks)) {
      const line = `${parts[0]} ${parts[1]}`;
      ranks.set(line, merges.length);
      merges.push(line);
      mergedTokens.push(parts[0] + parts[1]);
    }
  }
  const tokens = [...bytes, ...bytes.map((b) => `${b}</w>`), ...mergedTokens, CLIP_BOS, CLIP_EOS];
  const vocab: Record<string, number> = {};
  for (const t of tokens) if (!(t in vocab)) vocab[t] = Object.keys(vocab).length;
  return { vocab, merges };
}

/** merges.txt as CLIP ships it: a version line, then one merge per line. */
export function mergesText(merges: readonly string[]): string {
  return `#version: 0.2\n${merges.join('\n')}\n`;
}
