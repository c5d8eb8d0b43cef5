// The rule-based editor: one swap per negative, by principle, deterministic for a seed.

import { describe, expect, it } from 'vitest';
import { pluralize, RuleCaptionEditor, ruleEdit, SWAP_GROUPS } from '../../src/llm/rules';
import { seededRandom } from '../../src/util/random';
import type { EditResult, PrincipleChoice } from '../../src/llm/types';
import { validateNegative } from '../../src/llm/validate';

const editor = new RuleCaptionEditor({ seed: 7 });
const edit = (caption: string, principle: PrincipleChoice, index = 0): EditResult => editor.editSync({ caption, principle, index });

/** Words of `b` that are not at the same position in `a` (captions of equal word count). */
function changedWords(a: string, b: string): { from: string[]; to: string[] } {
  const wa = a.split(/\s+/);
  const wb = b.split(/\s+/);
  let i = 0;
  while (i < wa.length && i < wb.length && wa[i] === wb[i]) i++;
  let j = 0;
  while (j < wa.length - i && j < wb.length - i && wa[wa.length - 1 - j] === wb[wb.length - 1 - j]) j++;
  return { from: wa.slice(i, wa.length - j), to: wb.slice(i, wb.length - j) };
}

const classesOf = (principle: 'content' | 'attribute' | 'spatial' | 'context', group: string) =>
  SWAP_GROUPS[principle].find((g) => g.name === group)!.classes;
const colours = classesOf('attribute', 'colour');
const colourClass = (w: string) => colours.findIndex((c) => c.includes(w.toLowerCase()));

describe('rule editor, per principle', () => {
  it('attribute: swaps a colour for a colour of another class', () => {
    for (let i = 0; i < 8; i++) {
      const r = edit('a red car parked by the kerb', 'attribute', i);
      expect(r.ok).toBe(true);
      if (!r.ok) continue;
      expect(r.principle).toBe('attribute');
      expect(r.source).toBe('rule');
      const { from, to } = changedWords('a red car parked by the kerb', r.caption);
      expect(from).toEqual(['red']);
      expect(to).toHaveLength(1);
      expect(colourClass(to[0])).toBeGreaterThanOrEqual(0);
      expect(colourClass(to[0])).not.toBe(colourClass('red'));
    }
  });

  it('attribute: swaps materials and sizes, keeping the article right', () => {
    const r = edit('a wooden chair', 'attribute');
    expect(r.ok && r.caption).toMatch(/^an? \S+ chair$/);
    expect(r.ok && r.caption).not.toBe('a wooden chair');
    const material = classesOf('attribute', 'material').map((c) => c[0]);
    expect(material).toContain(r.ok ? r.caption.split(' ')[1] : '');
    const big = edit('a big dog', 'attribute');
    expect(big.ok && big.caption).toMatch(/^a (small) dog$/);
  });

  it('attribute: adds a colour to a known object when the caption names no attribute', () => {
    const r = edit('two dogs playing', 'attribute');
    expect(r.ok && r.caption).toMatch(/^two (\S+) dogs playing$/);
  });

  it('content: swaps an object within its domain, or changes a count', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const r = edit('a cat sitting on a sofa', 'content', i);
      expect(r.ok).toBe(true);
      if (r.ok) seen.add(r.caption);
    }
    const animals = new Set(classesOf('content', 'animals').map((c) => c[0]));
    const furniture = new Set(classesOf('content', 'furniture').map((c) => c[0]));
    for (const c of seen) {
      const m = /^(?:an? (\S+)|(two|three|four) (\S+)) sitting on (?:an? (\S+)|(two|three|four) (\S+))$/.exec(c);
      expect(m, c).not.toBeNull();
      const changedAnimal = m![1] !== 'cat';
      const changedSofa = m![4] !== 'sofa';
      // exactly one thing changed: an animal, the furniture, or one count
      expect([changedAnimal && !!m![1] && animals.has(m![1]), !!m![2], changedSofa && !!m![4] && furniture.has(m![4]), !!m![5]].filter(Boolean).length, c).toBe(1);
    }
    expect(seen.size).toBeGreaterThan(2);
    // both kinds of content edit occur: another object, and another count of the same object
    expect([...seen].some((c) => /^an? (?!cat )\S+ sitting/.test(c))).toBe(true);
    expect([...seen].some((c) => /^(two|three|four) cats sitting/.test(c) || /(two|three|four) sofas$/.test(c))).toBe(true);
  });

  it('content: changes number words and digits', () => {
    const r = edit('two dogs', 'content');
    expect(r.ok && r.caption).toMatch(/^(?:three|four|five|six|seven|eight|nine|ten) dogs$|^two \S+$/);
    const d = ruleEdit('12 oranges', 'content', seededRandom(1));
    expect(d?.caption).toMatch(/^(?:10|11|13|14|15) oranges$/);
    expect(ruleEdit('3.5 kilometres', 'content', seededRandom(1))).toBeNull(); // a decimal is not a count
  });

  it('spatial: swaps relations and poses', () => {
    expect(edit('a lamp to the left of a chair', 'spatial')).toMatchObject({ ok: true, caption: 'a lamp to the right of a chair', principle: 'spatial' });
    expect(edit('a ball in front of a box', 'spatial')).toMatchObject({ ok: true, caption: 'a ball behind a box' });
    expect(edit('a bird above the clouds', 'spatial')).toMatchObject({ ok: true, caption: 'a bird below the clouds' });
    const pose = edit('a dog sitting in the grass', 'spatial');
    expect(pose.ok && pose.caption).toMatch(/^a dog (standing|lying|kneeling) in the grass$/);
  });

  it('spatial: uses "on" only when it is about objects', () => {
    const r = edit('a cup on a table', 'spatial');
    expect(r.ok && r.caption).toMatch(/^a cup (under|next to|in front of) a table$/);
    expect(edit('a cat on a sunny day', 'spatial').ok).toBe(false);
    expect(edit('a horse on mars', 'spatial').ok).toBe(false);
  });

  it('spatial: fails with a reason when the caption has no spatial word', () => {
    const r = edit('two dogs playing', 'spatial');
    expect(r).toMatchObject({ ok: false, principle: 'spatial', source: 'rule' });
    expect(!r.ok && r.reason).toMatch(/no spatial word/);
  });

  it('context: swaps time, weather, season and setting', () => {
    expect(edit('a street at night', 'context')).toMatchObject({ ok: true, principle: 'context' });
    const weather = edit('a rainy street', 'context');
    expect(weather.ok && weather.caption).toMatch(/^an? (sunny|snowy|foggy|cloudy|stormy|windy) street$/);
    const season = edit('a park in winter', 'context');
    expect(season.ok && season.caption).toMatch(/^an? (\S+) in winter$|^a park in (summer|autumn|spring)$/);
    const night = edit('a street at night', 'context');
    expect(night.ok && night.caption).toMatch(/^a (\S+) at night$|^a street at (day|sunrise|sunset|morning|afternoon|evening)$/);
  });

  it('context: appends a setting when the caption names none', () => {
    const r = edit('a portrait of a woman.', 'context');
    expect(r.ok && r.caption).toMatch(/^a portrait of a woman, (at night|in the rain|on a snowy day|at sunset|in thick fog|in a desert)$/);
  });

  it('mix: picks a principle that applies and records it', () => {
    const kinds = new Set<string>();
    for (let i = 0; i < 16; i++) {
      const r = edit('a red cube to the left of a dog at night', 'mix', i);
      expect(r.ok).toBe(true);
      if (r.ok) kinds.add(r.principle);
    }
    expect(kinds.size).toBeGreaterThanOrEqual(3);
    expect([...kinds].every((k) => ['content', 'attribute', 'spatial', 'context'].includes(k))).toBe(true);
  });

  it('keeps capitals and fixes "a"/"an"', () => {
    const r = edit('A RED CAR', 'attribute');
    expect(r.ok && r.caption).toMatch(/^AN? [A-Z]+ CAR$/);
    const article = ruleEdit('a dog and an owl', 'content', seededRandom(3));
    expect(article?.caption).not.toMatch(/\ba [aeiou]|\ban [^aeiou\s]/i);
  });
});

describe('rule editor, determinism and validity', () => {
  const captions = ['a red car parked on a street at night', 'two dogs playing in the snow', 'a wooden chair to the left of a lamp', 'an old man reading a book in a library'];

  it('gives the same edits for the same seed, other edits for another seed', () => {
    const run = (seed: number) => captions.flatMap((c) => (['content', 'attribute', 'spatial', 'context'] as const).map((p, i) => JSON.stringify(new RuleCaptionEditor({ seed }).editSync({ caption: c, principle: p, index: i }))));
    expect(run(1)).toEqual(run(1));
    expect(run(1)).not.toEqual(run(2));
  });

  it('makes different negatives for the same caption when asked again', () => {
    const avoid: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = editor.editSync({ caption: captions[0], principle: 'attribute', avoid, index: i });
      expect(r.ok).toBe(true);
      if (r.ok) {
        expect(avoid).not.toContain(r.caption);
        avoid.push(r.caption);
      }
    }
  });

  it('every edit passes validation', () => {
    for (const c of captions) {
      for (const p of ['content', 'attribute', 'spatial', 'context', 'mix'] as const) {
        const r = edit(c, p);
        if (!r.ok) continue;
        expect(validateNegative(c, r.caption, { principle: r.principle === 'other' ? 'mix' : r.principle }).ok, `${p}: ${r.caption}`).toBe(true);
      }
    }
  });

  it('pluralizes the word lists', () => {
    expect(['cat', 'bus', 'strawberry', 'man', 'sheep', 'wolf', 'bench'].map(pluralize)).toEqual(['cats', 'buses', 'strawberries', 'men', 'sheep', 'wolves', 'benches']);
  });
});

describe('rule editor, backgrounds and word sets', () => {
  it('context swaps the colour of a background; attribute leaves it alone', async () => {
    const caption = 'a red car on a white background';
    for (let i = 0; i < 6; i++) {
      const context = edit(caption, 'context', i);
      expect(context.ok && context.caption, `context ${i}`).toMatch(/^a red car on an? (?!white )\S+ background$/);
      const attribute = edit(caption, 'attribute', i);
      expect(attribute.ok && attribute.caption, `attribute ${i}`).toMatch(/^an? (?!red )\S+ car on a white background$/);
    }
    // "on" before a background is not a relation between objects: no spatial edit to make.
    expect(edit('a red car on a white background', 'spatial').ok).toBe(false);
  });

  it('writes only words of `words` when given, and fails when none is left', async () => {
    const words = new Set(['a', 'red', 'blue', 'cat', 'dog', 'on', 'the', 'left', 'right']);
    const editor = new RuleCaptionEditor({ seed: 3, words });
    for (let i = 0; i < 8; i++) {
      const r = await editor.edit({ caption: 'a red cat on the left', principle: 'mix', index: i });
      expect(r.ok).toBe(true);
      if (r.ok) for (const w of r.caption.split(' ')) expect(words.has(w), r.caption).toBe(true);
    }
    const none = await new RuleCaptionEditor({ words: new Set(['a', 'red', 'cat']) }).edit({ caption: 'a red cat', principle: 'content' });
    expect(none.ok).toBe(false);
  });
});
