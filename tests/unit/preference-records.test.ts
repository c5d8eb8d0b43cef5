// The trainer's Diffusion-DPO and Diffusion-KTO JSONL: good lines, unknown fields kept and written back,
// bad lines reported by line number, skip mode, paths relative to the data file.

import { describe, expect, it } from 'vitest';
import {
  detectJsonlKind,
  detectRecordKind,
  dpoRecordToJson,
  ktoRecordToJson,
  parseDpoJsonl,
  parseKtoJsonl,
  parseKtoLabel,
} from '../../src/data/preference-records';
import { DatasetImportError, formatProblem, type ImportProblem } from '../../src/data/types';

function problemsOf(f: () => unknown): ImportProblem[] {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(DatasetImportError);
    return (e as DatasetImportError).problems;
  }
  throw new Error('expected DatasetImportError');
}

const lines = (...records: (object | string)[]) => records.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n');

describe('Diffusion-DPO JSONL', () => {
  it('reads prompt, image_w and image_l, keeping unknown fields and line numbers', () => {
    const text = lines(
      { prompt: 'a red  cube\non a table', image_w: 'w/1.png', image_l: 'l/1.png', score_w: 7.5, meta: { source: 'pickapic' } },
      '',
      { prompt: 'two dogs', image_w: 'w/2.jpg', image_l: 'l/2.jpg' },
    );
    const r = parseDpoJsonl(text);
    expect(r.problems).toEqual([]);
    expect(r.skipped).toBe(0);
    expect(r.records).toEqual([
      { prompt: 'a red cube on a table', imageW: 'w/1.png', imageL: 'l/1.png', line: 1, extra: { score_w: 7.5, meta: { source: 'pickapic' } } },
      { prompt: 'two dogs', imageW: 'w/2.jpg', imageL: 'l/2.jpg', line: 3, extra: {} },
    ]);
  });

  it('resolves image paths against the data file folder (absolute paths and URLs as they are)', () => {
    const text = lines(
      { prompt: 'p', image_w: 'imgs/a.png', image_l: '../other/b.png' },
      { prompt: 'q', image_w: '/abs/a.png', image_l: 'https://example.com/b.png' },
      { prompt: 'r', image_w: './c.png', image_l: 'C:\\pics\\d.png' },
    );
    const r = parseDpoJsonl(text, { file: 'sets/dpo/pairs.jsonl' });
    expect(r.records.map((x) => [x.imageW, x.imageL])).toEqual([
      ['sets/dpo/imgs/a.png', 'sets/other/b.png'],
      ['/abs/a.png', 'https://example.com/b.png'],
      ['sets/dpo/c.png', 'C:\\pics\\d.png'],
    ]);
    expect(parseDpoJsonl(text, { file: 'sets/dpo/pairs.jsonl', baseDir: 'root' }).records[0].imageW).toBe('root/imgs/a.png');
    expect(parseDpoJsonl(text).records[0].imageW).toBe('imgs/a.png');
  });

  it('reports bad JSON, missing fields and wrong types with their line numbers', () => {
    const text = lines(
      { prompt: 'good', image_w: 'a.png', image_l: 'b.png' },
      '{"prompt": "cut off',
      { image_w: 'a.png', image_l: 'b.png' },
      { prompt: 3, image_w: 'a.png', image_l: ['b.png'] },
      { prompt: '  ', image_w: '', image_l: 'b.png' },
      '[1, 2]',
      { prompt: 'same', image_w: 'x/a.png', image_l: './x/a.png' },
      { image: 'a.png', caption: 'c', label: true },
    );
    const problems = problemsOf(() => parseDpoJsonl(text, { file: 'dpo.jsonl' }));
    expect(problems.map((p) => [p.line, p.code])).toEqual([
      [2, 'bad-line'],
      [3, 'bad-line'],
      [4, 'bad-line'],
      [5, 'bad-line'],
      [6, 'bad-line'],
      [7, 'bad-line'],
      [8, 'unsupported-record'],
    ]);
    const messages = problems.map(formatProblem);
    expect(messages[0]).toMatch(/^dpo\.jsonl:2: not valid JSON \(/);
    expect(messages.slice(1)).toEqual([
      'dpo.jsonl:3: no prompt (field "prompt")',
      'dpo.jsonl:4: prompt (field "prompt") is not text; rejected image (field "image_l") is not text',
      'dpo.jsonl:5: prompt (field "prompt") is empty; preferred image (field "image_w") is empty',
      'dpo.jsonl:6: not a JSON object',
      'dpo.jsonl:7: image_w and image_l are the same image (x/a.png): a pair needs two different images',
      'dpo.jsonl:8: no prompt (field "prompt"); no preferred image (field "image_w"); no rejected image (field "image_l"): this looks like a Diffusion-KTO record (image, caption, label), not a Diffusion-DPO record (prompt, image_w, image_l)',
    ]);
  });

  it('skips bad lines only when asked, and says how many', () => {
    const text = lines({ prompt: 'good', image_w: 'a.png', image_l: 'b.png' }, 'nope', { prompt: 'no images' });
    expect(() => parseDpoJsonl(text)).toThrow(DatasetImportError);
    expect(() => parseDpoJsonl(text)).toThrow(/2 problems:\n {2}data\.jsonl:2: not valid JSON/);
    const r = parseDpoJsonl(text, { onInvalid: 'skip' });
    expect(r.records.map((x) => x.line)).toEqual([1]);
    expect(r.problems.map((p) => p.line)).toEqual([2, 3]);
    expect(r.skipped).toBe(2);
  });

  it('handles a BOM, CRLF line ends and blank lines; an empty file has no records', () => {
    const text = `\ufeff${JSON.stringify({ prompt: 'p', image_w: 'a.png', image_l: 'b.png' })}\r\n\r\n   \r\n${JSON.stringify({ prompt: 'q', image_w: 'c.png', image_l: 'd.png' })}\r\n`;
    const r = parseDpoJsonl(text);
    expect(r.records.map((x) => [x.prompt, x.line])).toEqual([
      ['p', 1],
      ['q', 4],
    ]);
    expect(parseDpoJsonl('')).toEqual({ records: [], problems: [], skipped: 0 });
  });

  it('writes records back with their unknown fields', () => {
    const text = lines({ prompt: 'p', image_w: 'sub/a.png', image_l: 'sub/b.png', score: 1, tags: ['x'] });
    const [rec] = parseDpoJsonl(text, { file: 'data/pairs.jsonl' }).records;
    expect(dpoRecordToJson(rec)).toEqual({ prompt: 'p', image_w: 'data/sub/a.png', image_l: 'data/sub/b.png', score: 1, tags: ['x'] });
    const back = dpoRecordToJson(rec, (p) => p.replace(/^data\//, ''));
    expect(JSON.stringify(back)).toBe(lines({ prompt: 'p', image_w: 'sub/a.png', image_l: 'sub/b.png', score: 1, tags: ['x'] }));
    // Round trip: parsing what was written gives the same record.
    expect(parseDpoJsonl(JSON.stringify(back), { file: 'data/pairs.jsonl' }).records).toEqual([rec]);
  });
});

describe('Diffusion-KTO JSONL', () => {
  it('reads image, caption and label, keeping unknown fields', () => {
    const text = lines(
      { image: 'good.png', caption: 'a cat', label: true, rater: 'ann' },
      { image: 'bad.png', caption: 'a  cat\t', label: false },
    );
    const r = parseKtoJsonl(text, { file: 'kto/data.jsonl' });
    expect(r.records).toEqual([
      { image: 'kto/good.png', caption: 'a cat', label: true, line: 1, extra: { rater: 'ann' } },
      { image: 'kto/bad.png', caption: 'a cat', label: false, line: 2, extra: {} },
    ]);
  });

  it('accepts true/false, 1/0 and "desirable"/"undesirable" as labels, and nothing else', () => {
    expect([true, false, 1, 0, 'desirable', ' Undesirable '].map(parseKtoLabel)).toEqual([true, false, true, false, true, false]);
    expect(['true', 'false', 'yes', 2, -1, 0.5, null, undefined, [], {}].map(parseKtoLabel)).toEqual(Array(10).fill(null));
    const text = lines(
      { image: 'a.png', caption: 'c', label: 1 },
      { image: 'b.png', caption: 'c', label: 'undesirable' },
      { image: 'c.png', caption: 'c', label: 'true' },
      { image: 'd.png', caption: 'c' },
    );
    const r = parseKtoJsonl(text, { onInvalid: 'skip' });
    expect(r.records.map((x) => x.label)).toEqual([true, false]);
    expect(r.problems.map(formatProblem)).toEqual([
      'data.jsonl:3: label "true" is not true / false (1 / 0 and "desirable" / "undesirable" are accepted too)',
      'data.jsonl:4: no label (field "label": true for desirable, false for undesirable): this looks like a TPO record (image, caption, negatives), not a Diffusion-KTO record (image, caption, label)',
    ]);
    expect(r.problems.map((p) => p.code)).toEqual(['bad-line', 'unsupported-record']);
    expect(r.skipped).toBe(2);
  });

  it('reports missing fields and wrong types with line numbers, and throws unless asked to skip', () => {
    const text = lines({ image: 'a.png', caption: 'c', label: true }, { image: 5, caption: '', label: false }, 'null', '{bad');
    const problems = problemsOf(() => parseKtoJsonl(text, { file: 'k.jsonl' }));
    expect(problems.map(formatProblem)).toEqual([
      'k.jsonl:2: image path (field "image") is not text; caption (field "caption") is empty',
      'k.jsonl:3: not a JSON object',
      expect.stringMatching(/^k\.jsonl:4: not valid JSON/),
    ]);
    expect(parseKtoJsonl(text, { onInvalid: 'skip' }).records).toHaveLength(1);
  });

  it('writes records back, the label as a JSON boolean', () => {
    const text = `\ufeff${lines({ image: 'x/a.png', caption: 'c', label: 0, id: 7 })}\n`;
    const [rec] = parseKtoJsonl(text).records;
    expect(ktoRecordToJson(rec)).toEqual({ image: 'x/a.png', caption: 'c', label: false, id: 7 });
    expect(ktoRecordToJson(rec, (p) => `../${p}`).image).toBe('../x/a.png');
  });
});

describe('detecting the format', () => {
  it('tells TPO, DPO and KTO records apart', () => {
    expect(detectRecordKind({ image: 'a.png', caption: 'c', negatives: [] })).toBe('tpo');
    expect(detectRecordKind({ image: 'a.png', caption: 'c' })).toBe('tpo');
    expect(detectRecordKind({ prompt: 'p', image_w: 'a.png', image_l: 'b.png' })).toBe('dpo');
    expect(detectRecordKind({ image: 'a.png', caption: 'c', label: false })).toBe('kto');
    for (const other of [null, 3, 'x', [], {}, { file_name: 'a.png', text: 'c' }]) expect(detectRecordKind(other)).toBeNull();
  });

  it('detects a file from its first JSON object line', () => {
    expect(detectJsonlKind(`\ufeff\n\nnot json\n${JSON.stringify({ prompt: 'p', image_w: 'a', image_l: 'b' })}\n`)).toBe('dpo');
    expect(detectJsonlKind(lines({ image: 'a', caption: 'c', label: 1 }))).toBe('kto');
    expect(detectJsonlKind('')).toBeNull();
  });
});
