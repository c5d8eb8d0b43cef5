// The shapes world: a seeded procedural generator of small images with one or two flat shapes on a plain
// background, each with a templated caption that states exactly what is drawn ("a small red circle on the
// left of a large blue square, on a white background"). It is the lab's built-in demo: a world small enough
// for a tiny model to learn, where a program (judge.ts) can check every fact of a prompt in an image.
//
// Every word a caption uses is one the rule editor (src/llm/rules.ts) knows how to swap, so its mismatched
// negatives stay meaningful here: kinds (circle / square / triangle) are content nouns, colours and sizes
// are attribute words, left / right / top / bottom / above / below are spatial words. shapesCaption's
// comment names the gaps.
//
// Platform-free (no node: imports): the app can build the demo data set in the browser too.

import type { RgbaImage } from '../data/pixels';
import { pick, seededRandom } from '../util/random';

export const SHAPE_KINDS = ['circle', 'square', 'triangle'] as const;
export type ShapeKind = (typeof SHAPE_KINDS)[number];

/**
 * Six colours far apart in RGB (the closest pair, red and yellow, is 171 apart), so a judge can name each
 * one even in a blurry, washed-out sample. Orange, purple, pink and grey were left out: each sits between
 * two of these, where a blurred edge between them would land too.
 */
export const SHAPE_COLOURS = ['red', 'green', 'blue', 'yellow', 'white', 'black'] as const;
export type ShapeColour = (typeof SHAPE_COLOURS)[number];

export const PALETTE: Record<ShapeColour, readonly [number, number, number]> = {
  red: [220, 40, 40],
  green: [40, 170, 60],
  blue: [40, 80, 220],
  yellow: [240, 210, 40],
  white: [245, 245, 245],
  black: [20, 20, 20],
};

export const SHAPE_SIZES = ['small', 'large'] as const;
export type ShapeSize = (typeof SHAPE_SIZES)[number];

/** Where the only shape of a one-shape scene sits. */
export const SINGLE_POSITIONS = ['left', 'right', 'top', 'bottom', 'center'] as const;
export type SinglePosition = (typeof SINGLE_POSITIONS)[number];

/** How the first shape of a two-shape scene sits relative to the second. */
export const RELATIONS = ['left of', 'above'] as const;
export type Relation = (typeof RELATIONS)[number];

export interface Shape {
  kind: ShapeKind;
  colour: ShapeColour;
  size: ShapeSize;
}

/** What an image shows: one shape at a position, or two shapes in a relation; always a plain background. */
export type ShapesScene =
  | { shapes: [Shape]; position: SinglePosition; background: ShapeColour }
  | { shapes: [Shape, Shape]; relation: Relation; background: ShapeColour };

/** Default side of the images: the lab's tiny-model training resolution (an 8 x 8 latent after the VAE's /8). */
export const SHAPES_IMAGE_SIZE = 64;

/**
 * Shape extents as fractions of the image side (14 and 24 px at 64 px): far enough apart that the judge
 * tells them apart after a blur, and small enough that two large shapes side by side keep a gap.
 */
const SIZE_FRACTION: Record<ShapeSize, number> = { small: 14 / 64, large: 24 / 64 };

/** Shape centres as fractions of the image side; a seeded jitter of up to JITTER moves each one. */
const SINGLE_CENTRES: Record<SinglePosition, [number, number]> = {
  left: [0.25, 0.5],
  right: [0.75, 0.5],
  top: [0.5, 0.25],
  bottom: [0.5, 0.75],
  center: [0.5, 0.5],
};
const JITTER = 2 / 64;

// ---------------------------------------------------------------------------------------------------
// Captions

const POSITION_PHRASE: Record<SinglePosition, string> = {
  left: 'on the left',
  right: 'on the right',
  top: 'at the top',
  bottom: 'at the bottom',
  center: 'in the center',
};

const RELATION_PHRASE: Record<Relation, string> = { 'left of': 'on the left of', above: 'above' };

export interface CaptionOptions {
  /** State each shape's size ("a small red circle"); default true. */
  sizes?: boolean;
}

function shapePhrase(s: Shape, sizes: boolean): string {
  return `a ${sizes ? `${s.size} ` : ''}${s.colour} ${s.kind}`;
}

/**
 * The caption of a scene, e.g. "a small red circle on the left of a large blue square, on a white
 * background" or "a large green triangle at the top, on a black background".
 *
 * Rule-editor coverage (src/llm/rules.ts): circle/square/triangle (content, group "shapes"), the colours and
 * small/large (attribute: "colour", "size"), left/right, top/bottom, above (spatial), and the background's
 * colour (context: a colour right before "background") all swap. Gaps: "center" is in no spatial list, so a
 * centred shape has no spatial negative; and the content and colour lists hold words outside this world
 * ("star", "pink"), so an editor not kept to shapesWords() writes some negatives the judge cannot read.
 */
export function shapesCaption(scene: ShapesScene, options: CaptionOptions = {}): string {
  const sizes = options.sizes ?? true;
  const where =
    'position' in scene
      ? `${shapePhrase(scene.shapes[0], sizes)} ${POSITION_PHRASE[scene.position]}`
      : `${shapePhrase(scene.shapes[0], sizes)} ${RELATION_PHRASE[scene.relation]} ${shapePhrase(scene.shapes[1], sizes)}`;
  return `${where}, on a ${scene.background} background`;
}

/** A caption read back: the scene's facts; a shape's size is null when the caption does not state it. */
export interface ParsedShape {
  kind: ShapeKind;
  colour: ShapeColour;
  size: ShapeSize | null;
}

export type ParsedShapesPrompt =
  | { shapes: [ParsedShape]; position: SinglePosition; background: ShapeColour }
  | { shapes: [ParsedShape, ParsedShape]; relation: Relation; background: ShapeColour };

// Synonyms the rule editor may write (it writes a class's first word: "big" for large) are read too, so a
// negative caption parses into the scene it describes. "below" and "on the right of" are read as the
// other two relations with the shapes' order swapped.
const SIZE_WORDS: Record<string, ShapeSize> = { small: 'small', little: 'small', tiny: 'small', large: 'large', big: 'large' };
const SINGLE_PHRASES: Record<string, SinglePosition> = {
  'on the left': 'left',
  'on the right': 'right',
  'at the top': 'top',
  'at the bottom': 'bottom',
  'in the center': 'center',
  'in the centre': 'center',
  'in the middle': 'center',
};
const RELATION_PHRASES: Record<string, { relation: Relation; swap: boolean }> = {
  'on the left of': { relation: 'left of', swap: false },
  'to the left of': { relation: 'left of', swap: false },
  'left of': { relation: 'left of', swap: false },
  'on the right of': { relation: 'left of', swap: true },
  'to the right of': { relation: 'left of', swap: true },
  'right of': { relation: 'left of', swap: true },
  above: { relation: 'above', swap: false },
  over: { relation: 'above', swap: false },
  'on top of': { relation: 'above', swap: false },
  below: { relation: 'above', swap: true },
  under: { relation: 'above', swap: true },
  beneath: { relation: 'above', swap: true },
};

/**
 * Every word a shapes-world caption can hold: the words shapesCaption writes and the synonyms
 * parseShapesPrompt reads (so the rule editor's negatives are made of them too), sorted. The demo model's
 * tokenizer (tokenizer-files.ts) gives each of these one token.
 */
export function shapesWords(): string[] {
  const phrases = [
    ...SHAPE_KINDS,
    ...SHAPE_COLOURS,
    ...Object.keys(SIZE_WORDS),
    ...Object.keys(SINGLE_PHRASES),
    ...Object.keys(RELATION_PHRASES),
    ...Object.values(POSITION_PHRASE),
    ...Object.values(RELATION_PHRASE),
    'a an on background',
  ];
  return [...new Set(phrases.flatMap((p) => p.split(' ')))].sort();
}

/**
 * shapesWords() when every caption is a shapes-world caption (the demo data set, or one made like it), else
 * undefined: the rule editor then keeps such a data set's negatives inside the world, where the demo model
 * knows every word and the judge can read every negative.
 */
export function shapesWorldWords(captions: readonly string[]): string[] | undefined {
  return captions.length > 0 && captions.every((c) => parseShapesPrompt(c) !== null) ? shapesWords() : undefined;
}

const alt = (words: Iterable<string>) => [...words].sort((a, b) => b.length - a.length).join('|');
const SHAPE_RE = `an? (?:(${alt(Object.keys(SIZE_WORDS))}) )?(${SHAPE_COLOURS.join('|')}) (${SHAPE_KINDS.join('|')})`;
const SINGLE_RE = new RegExp(`^${SHAPE_RE} (${alt(Object.keys(SINGLE_PHRASES))}),? on an? (${SHAPE_COLOURS.join('|')}) background\\.?$`);
const PAIR_RE = new RegExp(`^${SHAPE_RE} (${alt(Object.keys(RELATION_PHRASES))}) ${SHAPE_RE},? on an? (${SHAPE_COLOURS.join('|')}) background\\.?$`);

const parsedShape = (size: string | undefined, colour: string, kind: string): ParsedShape => ({
  kind: kind as ShapeKind,
  colour: colour as ShapeColour,
  size: size ? SIZE_WORDS[size] : null,
});

/**
 * The facts of a shapes-world caption (any that shapesCaption writes, and the rule editor's edits of them),
 * or null when the text is not one. Case and surrounding spaces do not matter.
 */
export function parseShapesPrompt(caption: string): ParsedShapesPrompt | null {
  const text = caption.trim().toLowerCase().replace(/\s+/g, ' ');
  let m = SINGLE_RE.exec(text);
  if (m) return { shapes: [parsedShape(m[1], m[2], m[3])], position: SINGLE_PHRASES[m[4]], background: m[5] as ShapeColour };
  m = PAIR_RE.exec(text);
  if (!m) return null;
  const a = parsedShape(m[1], m[2], m[3]);
  const b = parsedShape(m[5], m[6], m[7]);
  const { relation, swap } = RELATION_PHRASES[m[4]];
  return { shapes: swap ? [b, a] : [a, b], relation, background: m[8] as ShapeColour };
}

// ---------------------------------------------------------------------------------------------------
// Drawing

/** A shape placed in an image: centre and extent (the side of its bounding box) in pixels. */
export interface PlacedShape extends Shape {
  cx: number;
  cy: number;
  extent: number;
}

/** Whether the point (x, y) is inside the shape. Triangles point up: apex at the top, base at the bottom. */
function inside(s: PlacedShape, x: number, y: number): boolean {
  const h = s.extent / 2;
  const dx = x - s.cx;
  const dy = y - s.cy;
  switch (s.kind) {
    case 'circle':
      return dx * dx + dy * dy <= h * h;
    case 'square':
      return Math.abs(dx) <= h && Math.abs(dy) <= h;
    case 'triangle':
      // Between the apex (dy = -h) and the base (dy = +h), half as wide as far down as it is.
      return dy >= -h && dy <= h && Math.abs(dx) <= (dy + h) / 2;
  }
}

/** Sub-samples per pixel side: 4 x 4 coverage samples give smooth edges, as a photo of a drawing would have. */
const SUPERSAMPLE = 4;

/** Draws placed shapes (in order, later ones on top) on a plain background: opaque RGBA. */
export function drawShapes(shapes: readonly PlacedShape[], background: ShapeColour, size: number): RgbaImage {
  const data = new Uint8Array(size * size * 4);
  const bg = PALETTE[background];
  const n = SUPERSAMPLE * SUPERSAMPLE;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let sy = 0; sy < SUPERSAMPLE; sy++) {
        for (let sx = 0; sx < SUPERSAMPLE; sx++) {
          const px = x + (sx + 0.5) / SUPERSAMPLE;
          const py = y + (sy + 0.5) / SUPERSAMPLE;
          let c = bg;
          for (const s of shapes) if (inside(s, px, py)) c = PALETTE[s.colour];
          r += c[0];
          g += c[1];
          b += c[2];
        }
      }
      const o = (y * size + x) * 4;
      data[o] = Math.round(r / n);
      data[o + 1] = Math.round(g / n);
      data[o + 2] = Math.round(b / n);
      data[o + 3] = 255;
    }
  }
  return { width: size, height: size, data };
}

/** Where a scene's shapes go in an image `size` pixels wide: the layout's centres, moved by a seeded jitter. */
export function placeShapes(scene: ShapesScene, size: number, rand: () => number): PlacedShape[] {
  const jitter = () => (rand() * 2 - 1) * JITTER * size;
  const at = (shape: Shape, fx: number, fy: number): PlacedShape => ({
    ...shape,
    cx: fx * size + jitter(),
    cy: fy * size + jitter(),
    extent: SIZE_FRACTION[shape.size] * size,
  });
  if ('position' in scene) {
    const [fx, fy] = SINGLE_CENTRES[scene.position];
    return [at(scene.shapes[0], fx, fy)];
  }
  // The first shape on the left of (or above) the second, each centred in its half.
  const [a, b] = scene.shapes;
  return scene.relation === 'left of' ? [at(a, 0.25, 0.5), at(b, 0.75, 0.5)] : [at(a, 0.5, 0.25), at(b, 0.5, 0.75)];
}

/** The image of a scene, `size` pixels square; the same seed gives the same pixels. */
export function renderShapes(scene: ShapesScene, options: { size?: number; seed?: number | string } = {}): RgbaImage {
  const size = options.size ?? SHAPES_IMAGE_SIZE;
  if (!Number.isInteger(size) || size < 32) throw new RangeError(`shapes images must be at least 32 pixels wide, not ${size}`);
  return drawShapes(placeShapes(scene, size, seededRandom(options.seed ?? 0, 'place')), scene.background, size);
}

// ---------------------------------------------------------------------------------------------------
// Data sets

/**
 * Kind and colour pairs that the training split never draws and every held-out scene contains: a model
 * trained on the training split has seen green things and circles, but never a green circle. One pair per
 * kind, each with its own colour, so every kind and every colour is still seen in training.
 */
export const HELD_OUT_PAIRS: readonly (readonly [ShapeKind, ShapeColour])[] = [
  ['circle', 'green'],
  ['square', 'yellow'],
  ['triangle', 'blue'],
];

export type ShapesSplit = 'train' | 'heldout';

export const isHeldOutPair = (s: Pick<Shape, 'kind' | 'colour'>) => HELD_OUT_PAIRS.some(([k, c]) => k === s.kind && c === s.colour);

/** A random scene: one or two shapes (even odds), the background a colour no shape has. */
function randomScene(rand: () => number, forced?: Shape): ShapesScene {
  const shape = (): Shape => ({ kind: pick(rand, SHAPE_KINDS), colour: pick(rand, SHAPE_COLOURS), size: pick(rand, SHAPE_SIZES) });
  const two = rand() < 0.5;
  const shapes: Shape[] = two ? [shape(), shape()] : [shape()];
  // The held-out pair goes in a random slot, so it is seen as the first and as the second shape.
  const slot = Math.floor(rand() * shapes.length);
  if (forced) shapes[slot] = forced;
  // Two shapes differ in kind or colour: two red circles "on the left of" each other would look the same
  // either way round, so neither the relation nor its negative would mean anything.
  const other = slot === 0 ? 1 : 0;
  while (two && shapes[0].kind === shapes[1].kind && shapes[0].colour === shapes[1].colour) shapes[other] = shape();
  const background = pick(rand, SHAPE_COLOURS.filter((c) => shapes.every((s) => s.colour !== c)));
  if (shapes.length === 1) return { shapes: [shapes[0]], position: pick(rand, SINGLE_POSITIONS), background };
  return { shapes: [shapes[0], shapes[1]], relation: pick(rand, RELATIONS), background };
}

/**
 * Scene `index` of a split, deterministic in (seed, split, index). Training scenes never contain a held-out
 * pair (redrawn until they do not); each held-out scene has one, in a random slot, with the rest random.
 */
export function shapesScene(seed: number | string, split: ShapesSplit, index: number): ShapesScene {
  const rand = seededRandom(seed, 'shapes-scene', split, index);
  if (split === 'heldout') {
    const [kind, colour] = pick(rand, HELD_OUT_PAIRS);
    return randomScene(rand, { kind, colour, size: pick(rand, SHAPE_SIZES) });
  }
  // About a sixth of shapes hit a held-out pair, so this ends within a few draws.
  for (;;) {
    const scene = randomScene(rand);
    if (!scene.shapes.some(isHeldOutPair)) return scene;
  }
}

export interface ShapesItem {
  image: RgbaImage;
  caption: string;
  scene: ShapesScene;
}

export interface ShapesDatasetOptions {
  seed: number | string;
  count: number;
  split?: ShapesSplit;
  /** Image side in pixels (default 64). */
  size?: number;
  /** State sizes in captions (default true). */
  sizes?: boolean;
  /** Index of the first item (default 0): a data set can be made in parts. */
  start?: number;
}

/** The seed of an item's placement jitter: its own, so item k is the same whichever part it is made in. */
const itemSeed = (seed: number | string, split: ShapesSplit, index: number) => `${seed}/${split}/${index}`;

/** `count` images with their captions and scenes, from one split. */
export function shapesDataset(options: ShapesDatasetOptions): ShapesItem[] {
  const { seed, count, split = 'train', size = SHAPES_IMAGE_SIZE, start = 0 } = options;
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`count must be a whole number, not ${count}`);
  return Array.from({ length: count }, (_, k) => {
    const index = start + k;
    const scene = shapesScene(seed, split, index);
    return { scene, caption: shapesCaption(scene, { sizes: options.sizes }), image: renderShapes(scene, { size, seed: itemSeed(seed, split, index) }) };
  });
}

/**
 * A shapes item's file name without extension, as `tpo-lab shapes` and the app's demo data set write it
 * (shape-00042.png beside shape-00042.txt): zero-padded to sort in order.
 */
export function shapesFileName(index: number, count: number): string {
  return `shape-${String(index).padStart(Math.max(5, String(count - 1).length), '0')}`;
}
