// The shapes world (src/demo/shapes.ts): seeded scenes and images, captions that parse back to their scene,
// the training / held-out split, and captions the rule editor can make meaningful negatives of.

import { describe, expect, it } from 'vitest';
import {
  HELD_OUT_PAIRS,
  isHeldOutPair,
  parseShapesPrompt,
  renderShapes,
  SHAPE_COLOURS,
  SHAPE_KINDS,
  shapesCaption,
  shapesDataset,
  shapesScene,
  shapesWords,
  type ParsedShapesPrompt,
  type ShapesScene,
} from '../../src/demo/shapes';
import { RuleCaptionEditor } from '../../src/llm/rules';

const scenes = (split: 'train' | 'heldout', n: number, seed = 7) => Array.from({ length: n }, (_, i) => shapesScene(seed, split, i));

describe('shapes world: scenes and images', () => {
  it('is deterministic in the seed, and different seeds give different data', () => {
    const a = shapesDataset({ seed: 3, count: 5 });
    const b = shapesDataset({ seed: 3, count: 5 });
    const c = shapesDataset({ seed: 4, count: 5 });
    expect(a.map((x) => x.caption)).toEqual(b.map((x) => x.caption));
    a.forEach((x, i) => expect(Buffer.from(x.image.data).equals(Buffer.from(b[i].image.data))).toBe(true));
    expect(a.map((x) => x.caption)).not.toEqual(c.map((x) => x.caption));
    // Made in parts (start), item k is the same item.
    const tail = shapesDataset({ seed: 3, count: 2, start: 3 });
    expect(tail.map((x) => x.caption)).toEqual(a.slice(3).map((x) => x.caption));
    expect(Buffer.from(tail[0].image.data).equals(Buffer.from(a[3].image.data))).toBe(true);
  });

  it('draws opaque RGBA images of the asked size (64 by default, at least 32)', () => {
    const [item] = shapesDataset({ seed: 1, count: 1 });
    expect(item.image.width).toBe(64);
    expect(item.image.height).toBe(64);
    expect(item.image.data.length).toBe(64 * 64 * 4);
    for (let i = 3; i < item.image.data.length; i += 4) expect(item.image.data[i]).toBe(255);
    expect(shapesDataset({ seed: 1, count: 1, size: 128 })[0].image.width).toBe(128);
    expect(() => renderShapes(item.scene, { size: 16 })).toThrow(/at least 32/);
  });

  it('never paints the background in a shape\'s colour, and uses every kind, colour, position and relation', () => {
    const all = [...scenes('train', 400), ...scenes('heldout', 100)];
    for (const s of all) {
      expect(s.shapes.map((x) => x.colour)).not.toContain(s.background);
      // Two shapes are told apart by kind or colour, so "on the left of" says which is where.
      if (s.shapes.length === 2) expect(s.shapes[0].kind !== s.shapes[1].kind || s.shapes[0].colour !== s.shapes[1].colour).toBe(true);
    }
    const used = (f: (s: ShapesScene) => string[]) => new Set(all.flatMap(f));
    expect(used((s) => s.shapes.map((x) => x.kind))).toEqual(new Set(SHAPE_KINDS));
    expect(used((s) => s.shapes.map((x) => x.colour))).toEqual(new Set(SHAPE_COLOURS));
    expect(used((s) => [s.background])).toEqual(new Set(SHAPE_COLOURS));
    expect(used((s) => ('position' in s ? [s.position] : []))).toEqual(new Set(['left', 'right', 'top', 'bottom', 'center']));
    expect(used((s) => ('relation' in s ? [s.relation] : []))).toEqual(new Set(['left of', 'above']));
    const two = all.filter((s) => s.shapes.length === 2).length;
    expect(two / all.length).toBeGreaterThan(0.35);
    expect(two / all.length).toBeLessThan(0.65);
  });

  it('draws the shape where the caption says: its colour at the position, the background at the corners', () => {
    const img = renderShapes({ shapes: [{ kind: 'square', colour: 'red', size: 'large' }], position: 'left', background: 'blue' });
    const px = (x: number, y: number) => Array.from(img.data.subarray((y * 64 + x) * 4, (y * 64 + x) * 4 + 3));
    expect(px(16, 32)).toEqual([220, 40, 40]);
    expect(px(48, 32)).toEqual([40, 80, 220]);
    expect(px(0, 0)).toEqual([40, 80, 220]);
  });
});

describe('shapes world: captions', () => {
  it('writes the scene in words', () => {
    expect(
      shapesCaption({
        shapes: [
          { kind: 'circle', colour: 'red', size: 'small' },
          { kind: 'square', colour: 'blue', size: 'large' },
        ],
        relation: 'left of',
        background: 'white',
      }),
    ).toBe('a small red circle on the left of a large blue square, on a white background');
    const single: ShapesScene = { shapes: [{ kind: 'triangle', colour: 'green', size: 'large' }], position: 'top', background: 'black' };
    expect(shapesCaption(single)).toBe('a large green triangle at the top, on a black background');
    expect(shapesCaption(single, { sizes: false })).toBe('a green triangle at the top, on a black background');
  });

  it('parses every caption back to its scene (with and without sizes)', () => {
    for (const scene of [...scenes('train', 300), ...scenes('heldout', 100)]) {
      expect(parseShapesPrompt(shapesCaption(scene))).toEqual(scene);
      const noSizes = parseShapesPrompt(shapesCaption(scene, { sizes: false }))!;
      expect(noSizes.shapes.every((s) => s.size === null)).toBe(true);
      expect({ ...noSizes, shapes: noSizes.shapes.map((s, i) => ({ ...s, size: scene.shapes[i].size })) }).toEqual(scene);
    }
  });

  it('reads the other words for the same scene, and refuses other text', () => {
    const pair = (first: string, second: string, relation: string): ParsedShapesPrompt =>
      ({
        shapes: [
          { kind: first.split(' ')[1], colour: first.split(' ')[0], size: null },
          { kind: second.split(' ')[1], colour: second.split(' ')[0], size: null },
        ],
        relation,
        background: 'white',
      }) as ParsedShapesPrompt;
    expect(parseShapesPrompt('a blue square on the right of a red circle, on a white background')).toEqual(pair('red circle', 'blue square', 'left of'));
    expect(parseShapesPrompt('A blue square below a red circle on a white background.')).toEqual(pair('red circle', 'blue square', 'above'));
    expect(parseShapesPrompt('a big red circle in the middle, on a white background')).toEqual({
      shapes: [{ kind: 'circle', colour: 'red', size: 'large' }],
      position: 'center',
      background: 'white',
    });
    for (const text of ['a red star on the left, on a white background', 'a photo of a cat', 'a red circle on the left', 'a pink circle at the top, on a white background', '']) {
      expect(parseShapesPrompt(text)).toBeNull();
    }
  });
});

describe('shapes world: training and held-out splits', () => {
  it('keeps the held-out kind and colour pairs out of training and puts one in every held-out scene', () => {
    const train = scenes('train', 1000);
    const heldout = scenes('heldout', 300);
    for (const s of train) expect(s.shapes.some(isHeldOutPair)).toBe(false);
    for (const s of heldout) expect(s.shapes.some(isHeldOutPair)).toBe(true);
    // Every held-out pair shows up, as a first and as a second shape.
    for (const [kind, colour] of HELD_OUT_PAIRS) {
      for (const slot of [0, 1]) expect(heldout.some((s) => s.shapes[slot]?.kind === kind && s.shapes[slot]?.colour === colour)).toBe(true);
    }
    // Training still sees each kind and colour of the held-out pairs, only never together.
    for (const [kind, colour] of HELD_OUT_PAIRS) {
      expect(train.some((s) => s.shapes.some((x) => x.kind === kind))).toBe(true);
      expect(train.some((s) => s.shapes.some((x) => x.colour === colour))).toBe(true);
    }
    // Held-out captions are new: none is a training caption.
    const trainCaptions = new Set(train.map((s) => shapesCaption(s)));
    expect(heldout.filter((s) => trainCaptions.has(shapesCaption(s)))).toEqual([]);
  });
});

describe('shapes world: the rule editor\'s negatives', () => {
  const same = (x: object, y: object) => JSON.stringify(x) === JSON.stringify(y);

  /** Which kinds of fact a negative changed, from the two parsed scenes. */
  function changed(a: ParsedShapesPrompt, b: ParsedShapesPrompt): string[] {
    const diff: string[] = [];
    if (a.background !== b.background) diff.push('background');
    if ('position' in a !== 'position' in b) return [...diff, 'layout'];
    if ('position' in a && 'position' in b && a.position !== b.position) diff.push('position');
    if ('relation' in a && 'relation' in b) {
      // "left" -> "right" (or "above" -> "below") reads back as the same relation with the shapes swapped.
      if (a.relation === b.relation && !same(a.shapes[0], a.shapes[1]) && same(a.shapes[0], b.shapes[1]) && same(a.shapes[1], b.shapes[0])) return [...diff, 'position'];
      if (a.relation !== b.relation) diff.push('position');
    }
    a.shapes.forEach((s, i) => {
      for (const key of ['kind', 'colour', 'size'] as const) if (s[key] !== b.shapes[i][key]) diff.push(key);
    });
    return diff;
  }

  it('swaps a kind (content), a colour or size (attribute), a position (spatial), the background (context): each negative differs in that fact only', async () => {
    const expectedChange = { content: ['kind'], attribute: ['colour', 'size'], spatial: ['position'], context: ['background'] } as const;
    const captions = scenes('train', 60).map((s) => shapesCaption(s));
    // Kept to the world's words, every negative is a caption of the world; without, some name a "star".
    for (const words of [new Set(shapesWords()), undefined]) {
      const editor = new RuleCaptionEditor({ seed: 5, words });
      for (const principle of ['content', 'attribute', 'spatial', 'context'] as const) {
        let parsed = 0;
        let edited = 0;
        for (const caption of captions) {
          const result = await editor.edit({ caption, principle });
          // A centred shape has no spatial word the rules know (see shapesCaption's comment).
          if (principle === 'spatial' && caption.includes('in the center')) {
            expect(result.ok, caption).toBe(false);
            continue;
          }
          expect(result.ok, `${principle}: ${caption}`).toBe(true);
          if (!result.ok) continue;
          edited++;
          const negative = parseShapesPrompt(result.caption);
          if (!negative) continue;
          parsed++;
          const diff = changed(parseShapesPrompt(caption)!, negative);
          expect(diff.length, `${principle}: ${caption} -> ${result.caption}`).toBe(1);
          expect(expectedChange[principle] as readonly string[]).toContain(diff[0]);
        }
        expect(edited, principle).toBeGreaterThan(principle === 'spatial' ? 30 : 59);
        if (words || principle === 'spatial') expect(parsed, `${principle}, words ${!!words}`).toBe(edited);
        else expect(parsed / edited, principle).toBeGreaterThan(0.2);
      }
    }
  });
});
