// The shapes-world judge (src/demo/judge.ts): on the generator's own images (clean, with Gaussian noise,
// blurred, both) it must find at least 95% of the facts; on images drawn deliberately wrong it must report
// exactly the wrong fact as not shown, and every other fact as shown.

import { describe, expect, it } from 'vitest';
import type { RgbaImage } from '../../src/data/pixels';
import { type FactKind, judgeShapes, type Judgement, summarizeJudgements } from '../../src/demo/judge';
import { renderShapes, SHAPE_COLOURS, SHAPE_KINDS, type Shape, shapesCaption, shapesDataset, shapesScene, type ShapesScene, SINGLE_POSITIONS } from '../../src/demo/shapes';
import { mulberry32, pick, seededRandom } from '../../src/util/random';

/** The image with independent Gaussian noise of standard deviation `sigma` levels on each channel. */
function addNoise(img: RgbaImage, sigma: number, seed: number): RgbaImage {
  const rand = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()); // Box-Muller
  const data = img.data.slice();
  for (let i = 0; i < data.length; i++) if (i % 4 !== 3) data[i] = Math.max(0, Math.min(255, Math.round(data[i] + sigma * gauss())));
  return { ...img, data };
}

/** A 3 x 3 box blur (edges clamped): the soft edges of a small diffusion model's samples. */
function blur3(img: RgbaImage): RgbaImage {
  const { width: w, height: h, data } = img;
  const out = new Uint8Array(data.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 4; c++) {
        let sum = 0;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const sx = Math.min(w - 1, Math.max(0, x + dx));
            const sy = Math.min(h - 1, Math.max(0, y + dy));
            sum += data[(sy * w + sx) * 4 + c];
          }
        }
        out[(y * w + x) * 4 + c] = Math.round(sum / 9);
      }
    }
  }
  return { width: w, height: h, data: out };
}

/** Colours pulled a fraction `amount` of the way to mid-grey: a washed-out sample. */
function washOut(img: RgbaImage, amount: number): RgbaImage {
  const data = img.data.map((v, i) => (i % 4 === 3 ? v : Math.round(v + (128 - v) * amount)));
  return { ...img, data };
}

const CONDITIONS: [string, (img: RgbaImage, i: number) => RgbaImage][] = [
  ['clean', (img) => img],
  ['noise sigma 12', (img, i) => addNoise(img, 12, i)],
  ['3x3 blur', (img) => blur3(img)],
  ['3x3 blur + noise sigma 12', (img, i) => addNoise(blur3(img), 12, i)],
];

/** Harsher than the demo model's samples should be: two blurs (a 5 x 5 tent), colours 25% washed out, noise sigma 20. */
const STRESS: [string, (img: RgbaImage, i: number) => RgbaImage] = [
  'two 3x3 blurs + 25% washed out + noise sigma 20',
  (img, i) => addNoise(washOut(blur3(blur3(img)), 0.25), 20, i),
];

describe('shapes judge on the generator\'s images', () => {
  // 200 training and 100 held-out images; the numbers printed here are the ones the README quotes.
  const items = [...shapesDataset({ seed: 11, count: 200 }), ...shapesDataset({ seed: 11, count: 100, split: 'heldout' })];

  for (const [name, distort] of [...CONDITIONS, STRESS]) {
    it(`finds at least 95% of the facts (${name})`, () => {
      const judgements = items.map((item, i) => judgeShapes(distort(item.image, i), item.caption));
      const summary = summarizeJudgements(judgements);
      const perKind = Object.entries(summary.byKind)
        .map(([k, t]) => `${k} ${(100 * t.rate).toFixed(1)}%`)
        .join(', ');
      console.log(`judge, ${name}: ${summary.facts.shown}/${summary.facts.total} facts (${(100 * summary.facts.rate).toFixed(2)}%), mean score ${summary.meanScore.toFixed(4)}; ${perKind}`);
      expect(summary.images).toBe(300);
      expect(summary.facts.rate).toBeGreaterThanOrEqual(0.95);
      // Under stress the kind of small shapes goes first (about 94% measured); every other condition keeps each kind of fact at 95%.
      const floor = name === STRESS[0] ? 0.9 : 0.95;
      for (const t of Object.values(summary.byKind)) expect(t.rate).toBeGreaterThanOrEqual(floor);
    });
  }

  it('works at other image sizes (32 and 128 px)', () => {
    for (const size of [32, 128]) {
      const judgements = shapesDataset({ seed: 12, count: 60, size }).map((item) => judgeShapes(item.image, item.caption));
      expect(summarizeJudgements(judgements).facts.rate, `${size} px`).toBeGreaterThanOrEqual(0.95);
    }
  });

  it('reports each fact of the prompt with what it saw', () => {
    const scene: ShapesScene = {
      shapes: [
        { kind: 'circle', colour: 'red', size: 'small' },
        { kind: 'square', colour: 'blue', size: 'large' },
      ],
      relation: 'left of',
      background: 'white',
    };
    const j = judgeShapes(renderShapes(scene), shapesCaption(scene));
    expect(j.facts.map((f) => [f.kind, f.expected, f.observed, f.shown])).toEqual([
      ['kind', 'circle', 'circle', true],
      ['colour', 'red', 'red', true],
      ['size', 'small', 'small', true],
      ['kind', 'square', 'square', true],
      ['colour', 'blue', 'blue', true],
      ['size', 'large', 'large', true],
      ['position', 'left of', 'left of', true],
      ['background', 'white', 'white', true],
    ]);
    expect(j.facts[0].fact).toBe('the first shape is a circle');
    expect(j.score).toBe(1);
    // Without sizes in the caption there is no size fact.
    expect(judgeShapes(renderShapes(scene), shapesCaption(scene, { sizes: false })).facts.map((f) => f.kind)).toEqual(['kind', 'colour', 'kind', 'colour', 'position', 'background']);
    expect(() => judgeShapes(renderShapes(scene), 'a photo of a cat')).toThrow(/not a shapes-world prompt/);
  });

  it('scores a blank image low: no shape, only the background', () => {
    const blank: RgbaImage = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 4).fill(255) };
    const j = judgeShapes(blank, 'a small red circle on the left, on a white background');
    expect(j.facts.filter((f) => f.shown).map((f) => f.kind)).toEqual(['background']);
    expect(j.facts.find((f) => f.kind === 'kind')!.observed).toBe('none');
    expect(j.score).toBeCloseTo(1 / 5);
  });
});

// ---------------------------------------------------------------------------------------------------
// Deliberately wrong images.

interface Wrong {
  fact: FactKind;
  /** Which shape the wrong fact is about (the position of a pair and the background: none). */
  shape?: number;
  scene: ShapesScene;
}

/** The scene drawn with one fact changed, chosen at random among those that can change. */
function wrongVersions(scene: ShapesScene, rand: () => number): Wrong[] {
  const out: Wrong[] = [];
  const withShape = (i: number, change: Partial<Shape>): ShapesScene => {
    const shapes = scene.shapes.map((s, k) => (k === i ? { ...s, ...change } : s));
    return { ...scene, shapes } as ShapesScene;
  };
  const used = scene.shapes.map((s) => s.colour);
  scene.shapes.forEach((s, i) => {
    const other = scene.shapes[1 - i];
    // Another kind (and, with two shapes, not one that would make both look alike).
    const kinds = SHAPE_KINDS.filter((k) => k !== s.kind && !(other && other.kind === k && other.colour === s.colour));
    out.push({ fact: 'kind', shape: i, scene: withShape(i, { kind: pick(rand, kinds) }) });
    const colours = SHAPE_COLOURS.filter((c) => c !== scene.background && !used.includes(c));
    out.push({ fact: 'colour', shape: i, scene: withShape(i, { colour: pick(rand, colours) }) });
    out.push({ fact: 'size', shape: i, scene: withShape(i, { size: s.size === 'small' ? 'large' : 'small' }) });
  });
  if ('position' in scene) {
    out.push({ fact: 'position', scene: { ...scene, position: pick(rand, SINGLE_POSITIONS.filter((p) => p !== scene.position)) } });
  } else {
    // The two shapes swapped, and the other relation.
    out.push({ fact: 'position', scene: { ...scene, shapes: [scene.shapes[1], scene.shapes[0]] } });
    out.push({ fact: 'position', scene: { ...scene, relation: scene.relation === 'left of' ? 'above' : 'left of' } });
  }
  out.push({ fact: 'background', scene: { ...scene, background: pick(rand, SHAPE_COLOURS.filter((c) => c !== scene.background && !used.includes(c))) } });
  return out;
}

describe('shapes judge on deliberately wrong images', () => {
  for (const [name, distort] of [CONDITIONS[0], CONDITIONS[3]]) {
    it(`reports exactly the wrong fact as not shown (${name})`, () => {
      let cases = 0;
      const missed: string[] = [];
      for (let i = 0; i < 80; i++) {
        const scene = shapesScene(21, i % 4 === 0 ? 'heldout' : 'train', i);
        const caption = shapesCaption(scene);
        for (const wrong of wrongVersions(scene, seededRandom(21, 'wrong', i))) {
          cases++;
          // The same placement seed as a right image would have: only the changed fact differs.
          const img = distort(renderShapes(wrong.scene, { seed: i }), i);
          const j: Judgement = judgeShapes(img, caption);
          const notShown = j.facts.filter((f) => !f.shown);
          const names = ['the first shape', 'the second shape'];
          const ok =
            notShown.length === 1 &&
            notShown[0].kind === wrong.fact &&
            (wrong.shape === undefined || scene.shapes.length === 1 || notShown[0].fact.startsWith(names[wrong.shape]));
          if (!ok) missed.push(`${caption} | drawn: ${shapesCaption(wrong.scene)} | not shown: ${notShown.map((f) => `${f.fact} (saw ${f.observed})`).join('; ') || 'nothing'}`);
        }
      }
      console.log(`judge, wrong images (${name}): ${cases - missed.length}/${cases} caught exactly`);
      expect(missed).toEqual([]);
    });
  }
});
