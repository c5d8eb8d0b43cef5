import { readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { bytesToUnicode, ClipTokenizer, cleanText } from '../../src/models/tokenizer';
import { findTokenizerDir, loadClipTokenizer } from '../../src/models/tokenizer-node';
import { goldensDir, tinyModelDir } from '../helpers/llm/paths';

interface Cases {
  bos: number;
  eos: number;
  pad: number;
  max_length: number;
  cases: { prompt: string; ids: number[]; input_ids_77: number[] }[];
}

const cases = JSON.parse(readFileSync(path.join(goldensDir, 'tokenizer-cases.json'), 'utf8')) as Cases;

let tok: ClipTokenizer;
beforeAll(async () => {
  tok = await loadClipTokenizer(tinyModelDir);
});

describe('CLIP tokenizer against tokenizer-cases.json', () => {
  it('has cases and the special ids of the file', () => {
    expect(cases.cases.length).toBeGreaterThan(0);
    expect(tok.bosId).toBe(cases.bos);
    expect(tok.eosId).toBe(cases.eos);
    expect(tok.padId).toBe(cases.pad);
    expect(tok.maxLength).toBe(cases.max_length);
  });

  for (const [i, c] of cases.cases.entries()) {
    it(`case ${i}: ${JSON.stringify(c.prompt).slice(0, 60)}`, () => {
      expect(tok.encode(c.prompt)).toEqual(c.ids);
      expect(tok.countTokens(c.prompt)).toBe(c.ids.length);
      const model = tok.encodeForModel(c.prompt);
      expect(model).toHaveLength(77);
      expect(model).toEqual(c.input_ids_77);
    });
  }
});

describe('CLIP tokenizer details', () => {
  it('bytes-to-unicode is a bijection onto 256 distinct characters', () => {
    const table = bytesToUnicode();
    expect(new Set(table).size).toBe(256);
    expect(table[0x41]).toBe('A');
    expect(table[0x20]).toBe('\u0120'); // space -> 'Ġ'
  });

  it('cleans whitespace like CLIP and lower-cases', () => {
    expect(cleanText('  a \t b\n\u3000c\u001f ')).toBe('a b c');
    // Python regex's \s: U+0085 is whitespace, U+FEFF and U+001C are not (str.strip() trims U+001C at the ends).
    expect(cleanText('a\u0085b\ufeffc\u001cd')).toBe('a b\ufeffc\u001cd');
    expect(cleanText('\u001ca\u001c')).toBe('a');
    expect(tok.encode('A  Photo')).toEqual(tok.encode('a photo'));
  });

  it('accepts parsed objects as well as file texts (browser path)', () => {
    const folder = findTokenizerDir(tinyModelDir)!;
    const vocab = JSON.parse(readFileSync(path.join(folder, 'vocab.json'), 'utf8')) as Record<string, number>;
    const merges = readFileSync(path.join(folder, 'merges.txt'), 'utf8').split('\n').slice(1);
    const t2 = new ClipTokenizer({ vocab, merges });
    expect(t2.encode('an astronaut riding a horse')).toEqual(tok.encode('an astronaut riding a horse'));
  });

  it('truncates to 75 prompt ids between BOS and EOS', () => {
    const long = Array.from({ length: 120 }, (_, i) => `w${i}`).join(' ');
    const ids = tok.encode(long);
    expect(ids.length).toBeGreaterThan(75);
    const model = tok.encodeForModel(long);
    expect(model).toHaveLength(77);
    expect(model[0]).toBe(tok.bosId);
    expect(model.slice(1, 76)).toEqual(ids.slice(0, 75));
    expect(model[76]).toBe(tok.eosId);
    expect(tok.fits(long)).toBe(false);
    expect(tok.fits('a photo of a cat')).toBe(true);
  });

  it('applies merges by rank on a toy vocabulary', () => {
    const vocab: Record<string, number> = { a: 0, b: 1, c: 2, 'a</w>': 3, 'b</w>': 4, 'c</w>': 5, ab: 6, 'bc</w>': 7, 'abc</w>': 8 };
    vocab['<|startoftext|>'] = 9;
    vocab['<|endoftext|>'] = 10;
    // 'b c</w>' ranks before 'a b', so "abc" -> a + bc</w> -> abc</w> needs 'a bc</w>', which is absent.
    const t = new ClipTokenizer({ vocab, merges: '#version: 0.2\nb c</w>\na b\n' });
    expect(t.encode('abc')).toEqual([0, 7]);
    const t2 = new ClipTokenizer({ vocab, merges: ['a b', 'b c</w>'] });
    expect(t2.encode('ab')).toEqual([0, 4]); // 'a b</w>' is not a merge
    expect(t2.encode('abc')).toEqual([6, 5]);
    expect(t2.encodeForModel('abc').slice(0, 4)).toEqual([9, 6, 5, 10]);
  });
});
