// CLIP's byte-level BPE tokenizer (openai/CLIP `simple_tokenizer.py`), written from its rules:
//   1. clean-up: every run of whitespace becomes one space, ends trimmed; lower-cased;
//   2. pre-tokenizer: the special tokens, the contractions 's 't 're 've 'm 'll 'd, runs of letters,
//      single digits, runs of anything else that is neither whitespace, letter nor digit;
//   3. each piece's UTF-8 bytes mapped to printable characters with GPT-2's bytes-to-unicode table, the
//      last symbol marked with '</w>', then merged pair by pair, lowest merge rank first;
//   4. ids looked up in vocab.json.
// No file-system access here: the vocabulary and merges come in as strings or parsed objects, so the same
// code runs in the browser and in Node (`tokenizer-node.ts` reads a model folder).

/** Stable Diffusion's text encoder sees exactly this many ids. */
export const CLIP_MAX_LENGTH = 77;
/** Ids left for the prompt between BOS and EOS. */
export const CLIP_PROMPT_BUDGET = CLIP_MAX_LENGTH - 2;
export const CLIP_BOS = '<|startoftext|>';
export const CLIP_EOS = '<|endoftext|>';
/** openai/CLIP (and transformers' CLIPTokenizer) read only this many merges: 49152 - 256 - 2. */
export const CLIP_MERGE_COUNT = 49152 - 256 - 2;

export interface TokenizerFiles {
  /** vocab.json: its text, or the parsed token -> id map. */
  vocab: string | Record<string, number>;
  /** merges.txt: its text (a '#version' first line is skipped), or the merge lines ("a b") in rank order. */
  merges: string | readonly string[];
}

export interface TokenizerOptions {
  /** Total ids handed to the text encoder (77 for SD1.5). */
  maxLength?: number;
  /** How many merges to read; default CLIP's 48894. */
  maxMerges?: number;
  /** Padding token; default the end-of-text token, as SD1.5's tokenizer pads. */
  padToken?: string;
}

/**
 * Whitespace as openai/CLIP sees it. Its whitespace_clean is `regex.sub(r'\s+', ' ', text).strip()` with
 * Python's `regex` module, whose `\s` is Unicode's White_Space set: JS's `\s` differs (it adds U+FEFF,
 * lacks U+0085), so the set is written out. Python's str.strip() removes U+001C..U+001F as well.
 */
const CLIP_SPACE = '\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const WHITESPACE_RUN = new RegExp(`[${CLIP_SPACE}]+`, 'gu');
const STRIP_ENDS = new RegExp(`^[${CLIP_SPACE}\\x1c-\\x1f]+|[${CLIP_SPACE}\\x1c-\\x1f]+$`, 'gu');

/** CLIP's pre-tokenizer: special tokens, contractions, letter runs, single digits, other runs. */
const PRE_TOKENIZER = new RegExp(
  `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^${CLIP_SPACE}\\p{L}\\p{N}]+`,
  'giu',
);

/** GPT-2's reversible map from the 256 byte values to printable unicode characters. */
export function bytesToUnicode(): string[] {
  const table = new Array<string>(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCodePoint(printable(b) ? b : 256 + next++);
  }
  return table;
}

/** CLIP's text clean-up: whitespace runs collapsed to one space, then trimmed as Python's str.strip() does. */
export function cleanText(text: string): string {
  return text.replace(WHITESPACE_RUN, ' ').replace(STRIP_ENDS, '');
}

function parseVocab(vocab: TokenizerFiles['vocab']): Map<string, number> {
  const obj: unknown = typeof vocab === 'string' ? JSON.parse(vocab) : vocab;
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new Error('vocab.json: expected an object of token -> id');
  const map = new Map<string, number>();
  for (const [token, id] of Object.entries(obj as Record<string, unknown>)) {
    if (typeof id !== 'number' || !Number.isInteger(id)) throw new Error(`vocab.json: id of ${JSON.stringify(token)} is not an integer`);
    map.set(token, id);
  }
  return map;
}

function parseMerges(merges: TokenizerFiles['merges'], maxMerges: number): Map<string, number> {
  let lines: readonly string[];
  if (typeof merges === 'string') {
    lines = merges.split(/\r?\n/);
    if (lines.length > 0 && lines[0].startsWith('#version')) lines = lines.slice(1);
  } else {
    lines = merges;
  }
  const ranks = new Map<string, number>();
  for (const line of lines) {
    if (ranks.size >= maxMerges) break;
    const trimmed = line.trim();
    if (trimmed === '') continue;
    const parts = trimmed.split(/ +/);
    if (parts.length !== 2) throw new Error(`merges.txt: bad merge line ${JSON.stringify(line)}`);
    const key = `${parts[0]} ${parts[1]}`;
    if (!ranks.has(key)) ranks.set(key, ranks.size);
  }
  return ranks;
}

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly maxLength: number;

  private readonly vocab: Map<string, number>;
  private readonly ranks: Map<string, number>;
  private readonly byteChars = bytesToUnicode();
  private readonly encoder = new TextEncoder();
  /** word (byte-encoded) -> its BPE ids; the special tokens map to themselves. */
  private readonly cache = new Map<string, readonly number[]>();

  constructor(files: TokenizerFiles, options: TokenizerOptions = {}) {
    this.vocab = parseVocab(files.vocab);
    this.ranks = parseMerges(files.merges, options.maxMerges ?? CLIP_MERGE_COUNT);
    this.maxLength = options.maxLength ?? CLIP_MAX_LENGTH;
    if (this.maxLength < 2) throw new Error('maxLength must leave room for BOS and EOS');
    const special = (token: string, fallback: number) => this.vocab.get(token) ?? fallback;
    this.bosId = special(CLIP_BOS, 49406);
    this.eosId = special(CLIP_EOS, 49407);
    this.padId = options.padToken === undefined ? this.eosId : special(options.padToken, this.eosId);
    this.cache.set(CLIP_BOS, [this.bosId]);
    this.cache.set(CLIP_EOS, [this.eosId]);
  }

  /** How many ids of a prompt fit between BOS and EOS. */
  get promptBudget(): number {
    return this.maxLength - 2;
  }

  /** The pre-tokenizer's pieces of a prompt, after clean-up and lower-casing. */
  pieces(text: string): string[] {
    return cleanText(text).toLowerCase().match(PRE_TOKENIZER) ?? [];
  }

  /** BPE ids of a prompt, without BOS/EOS and without truncation. */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const piece of this.pieces(text)) {
      for (const id of this.encodeWord(piece)) ids.push(id);
    }
    return ids;
  }

  /** Exactly `maxLength` ids: BOS, at most maxLength-2 prompt ids (truncated), EOS, then padding. */
  encodeForModel(text: string): number[] {
    const ids = this.encode(text).slice(0, this.promptBudget);
    const out = [this.bosId, ...ids, this.eosId];
    while (out.length < this.maxLength) out.push(this.padId);
    return out;
  }

  /** Prompt ids (no BOS/EOS); a prompt fits the text encoder when this is at most `promptBudget`. */
  countTokens(text: string): number {
    return this.encode(text).length;
  }

  /** Whether a prompt fits without truncation. */
  fits(text: string): boolean {
    return this.countTokens(text) <= this.promptBudget;
  }

  /** Token strings for ids (for display and debugging). */
  idsToTokens(ids: readonly number[]): string[] {
    const inverse = new Map<number, string>();
    for (const [token, id] of this.vocab) inverse.set(id, token);
    return ids.map((id) => inverse.get(id) ?? `<${id}>`);
  }

  private encodeWord(piece: string): readonly number[] {
    let word = '';
    for (const byte of this.encoder.encode(piece)) word += this.byteChars[byte];
    const cached = this.cache.get(word);
    if (cached) return cached;
    const ids = this.bpe(word).map((symbol) => this.vocab.get(symbol) ?? this.eosId);
    this.cache.set(word, ids);
    return ids;
  }

  /** Merges the symbols of one byte-encoded word, lowest rank first, until no ranked pair is left. */
  private bpe(word: string): string[] {
    // Every byte character is a single UTF-16 unit (code points below 512).
    let symbols = word.split('');
    symbols[symbols.length - 1] += '</w>';
    while (symbols.length > 1) {
      let best = Infinity;
      let first = '';
      let second = '';
      for (let i = 0; i < symbols.length - 1; i++) {
        const rank = this.ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (rank !== undefined && rank < best) {
          best = rank;
          first = symbols[i];
          second = symbols[i + 1];
        }
      }
      if (best === Infinity) break;
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; ) {
        if (i < symbols.length - 1 && symbols[i] === first && symbols[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(symbols[i]);
          i += 1;
        }
      }
      symbols = merged;
    }
    return symbols;
  }
}

/** Builds a tokenizer from vocab.json and merges.txt contents (strings or parsed). */
export function createClipTokenizer(files: TokenizerFiles, options?: TokenizerOptions): ClipTokenizer {
  return new ClipTokenizer(files, options);
}

/** Reads a tokenizer from browser File objects (e.g. a model folder picked by the user). */
export async function clipTokenizerFromBlobs(vocab: Blob, merges: Blob, options?: TokenizerOptions): Promise<ClipTokenizer> {
  const [v, m] = await Promise.all([vocab.text(), merges.text()]);
  return new ClipTokenizer({ vocab: v, merges: m }, options);
}
