// Importing the trainer's preference formats with their images (src/data/preference-import.ts): the data
// file found beside caption files, every image checked, bad records listed with their lines or left out.

import { afterEach, describe, expect, it } from 'vitest';
import { importPreferenceData } from '../../src/data/preference-import';
import { formatPreferenceJsonl, parsePreferenceJsonl } from '../../src/data/preference-records';
import { nodeSource } from '../../src/data/node-fs';
import { DatasetImportError } from '../../src/data/types';
import { tempDir, tinyPng } from '../helpers/llm/files';

const dirs: { cleanup: () => void }[] = [];
function folder() {
  const d = tempDir();
  dirs.push(d);
  return d;
}
afterEach(() => {
  while (dirs.length) dirs.pop()!.cleanup();
});

const lines = (...records: unknown[]) => records.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n');

describe('preference data import', () => {
  it('reads a DPO file with its images, even beside caption files, and writes it back unchanged in meaning', async () => {
    const d = folder();
    for (const n of ['a', 'b', 'c']) {
      d.write(`img/${n}.png`, tinyPng());
      d.write(`img/${n}.txt`, `caption ${n}`);
    }
    d.write('pairs.jsonl', lines({ prompt: 'a  red\ncircle', image_w: 'img/a.png', image_l: 'img/b.png', score: 3 }, { prompt: 'blue', image_w: 'img/c.png', image_l: 'img/a.png' }));
    const result = await importPreferenceData(nodeSource(d.dir));
    expect(result?.kind).toBe('dpo');
    expect(result?.file).toBe('pairs.jsonl');
    expect(result?.problems).toEqual([]);
    const text = formatPreferenceJsonl(result!);
    const again = parsePreferenceJsonl(text, 'dpo');
    expect(again.records.map((r) => ({ ...r, line: 0 }))).toEqual(result!.records.map((r) => ({ ...r, line: 0 })));
    expect(again.kind === 'dpo' && again.records[0]).toMatchObject({ prompt: 'a red circle', imageW: 'img/a.png', extra: { score: 3 } });
  });

  it('answers null for captioned-image layouts and TPO records', async () => {
    const d = folder();
    d.write('a.png', tinyPng());
    d.write('a.txt', 'a caption');
    expect(await importPreferenceData(nodeSource(d.dir))).toBeNull();
    d.write('data.jsonl', lines({ image: 'a.png', caption: 'a caption', negatives: [] }));
    expect(await importPreferenceData(nodeSource(d.dir))).toBeNull();
  });

  it('lists every bad record (line, missing or broken image), or leaves them out when asked', async () => {
    const d = folder();
    d.write('good.png', tinyPng());
    d.write('bad.png', 'not an image at all');
    d.write('labels.jsonl', lines({ image: 'good.png', caption: 'ok', label: true }, { image: 'gone.png', caption: 'x', label: false }, '{"image": "good.png"', { image: 'bad.png', caption: 'y', label: 'maybe' }, { image: 'bad.png', caption: 'z', label: 0 }));
    let error: unknown;
    await importPreferenceData(nodeSource(d.dir)).catch((e) => (error = e));
    expect(error).toBeInstanceOf(DatasetImportError);
    const messages = (error as DatasetImportError).problems.map((p) => `${p.line}: ${p.message}`);
    expect(messages).toEqual([expect.stringMatching(/^2: image not found: gone\.png/), expect.stringMatching(/^3: not valid JSON/), expect.stringMatching(/^4: label "maybe"/), expect.stringMatching(/^5: bad\.png is not an image/)]);
    const skipped = await importPreferenceData(nodeSource(d.dir), { onInvalid: 'skip' });
    expect(skipped?.kind === 'kto' && skipped.records.map((r) => [r.image, r.label])).toEqual([['good.png', true]]);
    expect(skipped?.problems.length).toBe(4);
  });
});
