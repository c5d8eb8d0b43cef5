// The shapes-world judge: reads an image and says, for each fact of a shapes-world prompt (each shape's kind,
// colour, size and position, and the background), whether the image shows it. An image's alignment score is
// the fraction of its prompt's facts shown. It is a plain program, independent of any model, so it can score
// samples of the demo model before and after TPO.
//
// Built to survive what a small diffusion model draws: blurry edges, noise, slightly off colours. Pixels
// are named by their nearest palette colour only when they are close to it (blurred edges between two
// colours are left unnamed); the background is the colour most of the border has; shapes are connected
// regions of one non-background colour; a shape's kind comes from how much of its bounding box it fills
// (square 1, circle pi/4, triangle 1/2) and how low its mass sits in the box (a triangle pointing up is
// heavier at the bottom); its size from its extent; its position from its box's centre.

import type { RgbaImage } from '../data/pixels';
import {
  PALETTE,
  parseShapesPrompt,
  type ParsedShape,
  type ParsedShapesPrompt,
  type Relation,
  SHAPE_COLOURS,
  type ShapeColour,
  type ShapeKind,
  type ShapeSize,
  type SinglePosition,
} from './shapes';

/**
 * A pixel is named after a palette colour when it is within this RGB distance of it. Half the distance
 * between the two closest palette colours (red and yellow, 171), a little less: a pixel halfway between
 * two colours (a blurred edge) is named neither, while noise of a few tens of levels keeps its name.
 */
export const NAMING_DISTANCE = 80;

/** Regions smaller than this fraction of the image are specks (noise, blurred fringes), not shapes. A small shape covers 3.7%. */
const MIN_SHAPE_AREA = 0.006;

/** Extent (the longer side of the box, as a fraction of the image side) between small (0.22) and large (0.375). */
const LARGE_EXTENT = 19 / 64;

/** A single shape whose centre is this close (as a fraction of the side) to the image centre is "in the center". */
const CENTER_RADIUS = 0.125;

/** What the judge sees in one region. Coordinates are fractions of the image's width and height. */
export interface ObservedShape {
  kind: ShapeKind;
  colour: ShapeColour;
  size: ShapeSize;
  /** Centre of the bounding box. */
  cx: number;
  cy: number;
  /** Pixels in the region, as a fraction of the image. */
  area: number;
  /** Fraction of the bounding box the region fills. */
  fill: number;
  /** Height of the mass centre in the box, 0 top to 1 bottom (0.5 for a circle or square, 2/3 for an upright triangle). */
  massY: number;
}

export interface Observation {
  /** The border's colour, or null when no palette colour holds most of it. */
  background: ShapeColour | null;
  /** Every region big enough to be a shape, largest first. */
  shapes: ObservedShape[];
}

function nearestColour(r: number, g: number, b: number): { index: number; distance: number } {
  let index = -1;
  let best = Infinity;
  SHAPE_COLOURS.forEach((name, i) => {
    const [pr, pg, pb] = PALETTE[name];
    const d = (r - pr) ** 2 + (g - pg) ** 2 + (b - pb) ** 2;
    if (d < best) {
      best = d;
      index = i;
    }
  });
  return { index, distance: Math.sqrt(best) };
}

/** A region's kind from its fill ratio and mass height; thresholds halfway between the ideal shapes' values, measured under blur. */
function classifyKind(fill: number, massY: number): ShapeKind {
  if (fill < 0.64 || massY > 0.585) return 'triangle';
  return fill > 0.9 ? 'square' : 'circle';
}

/** The background and the shapes of an image (RGBA, any size; alpha is ignored). */
export function observeShapes(image: RgbaImage): Observation {
  const { width: w, height: h, data } = image;
  // Each pixel's palette index, or -1 when it is near none (an edge between two colours, or off-palette).
  const label = new Int8Array(w * h);
  for (let i = 0; i < w * h; i++) {
    const { index, distance } = nearestColour(data[i * 4], data[i * 4 + 1], data[i * 4 + 2]);
    label[i] = distance <= NAMING_DISTANCE ? index : -1;
  }

  // Background: the colour of most of a frame 1/32 of the side thick (2 px at 64 px).
  const frame = Math.max(1, Math.round(Math.min(w, h) / 32));
  const counts = new Array<number>(SHAPE_COLOURS.length).fill(0);
  let framePixels = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (x >= frame && x < w - frame && y >= frame && y < h - frame) continue;
      framePixels++;
      const l = label[y * w + x];
      if (l >= 0) counts[l]++;
    }
  }
  const top = counts.indexOf(Math.max(...counts));
  const bgIndex = counts[top] > framePixels / 2 ? top : -1;

  // Regions: 4-connected pixels of one colour that is not the background's.
  const seen = new Uint8Array(w * h);
  const stack = new Int32Array(w * h);
  const shapes: ObservedShape[] = [];
  for (let start = 0; start < w * h; start++) {
    const l = label[start];
    if (l < 0 || l === bgIndex || seen[start]) continue;
    let n = 0;
    let sumY = 0;
    let x0 = w;
    let x1 = -1;
    let y0 = h;
    let y1 = -1;
    let sp = 0;
    stack[sp++] = start;
    seen[start] = 1;
    while (sp > 0) {
      const p = stack[--sp];
      const x = p % w;
      const y = (p - x) / w;
      n++;
      sumY += y;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
      const visit = (q: number) => {
        if (!seen[q] && label[q] === l) {
          seen[q] = 1;
          stack[sp++] = q;
        }
      };
      if (x > 0) visit(p - 1);
      if (x < w - 1) visit(p + 1);
      if (y > 0) visit(p - w);
      if (y < h - 1) visit(p + w);
    }
    if (n < MIN_SHAPE_AREA * w * h) continue;
    const bw = x1 - x0 + 1;
    const bh = y1 - y0 + 1;
    const fill = n / (bw * bh);
    const massY = (sumY / n - y0 + 0.5) / bh;
    shapes.push({
      kind: classifyKind(fill, massY),
      colour: SHAPE_COLOURS[l],
      size: Math.max(bw / w, bh / h) > LARGE_EXTENT ? 'large' : 'small',
      cx: (x0 + x1 + 1) / 2 / w,
      cy: (y0 + y1 + 1) / 2 / h,
      area: n / (w * h),
      fill,
      massY,
    });
  }
  shapes.sort((a, b) => b.area - a.area);
  return { background: bgIndex >= 0 ? SHAPE_COLOURS[bgIndex] : null, shapes };
}

/** Where a lone shape is: the nearest of the five places. */
export function singlePosition(s: Pick<ObservedShape, 'cx' | 'cy'>): SinglePosition {
  const dx = s.cx - 0.5;
  const dy = s.cy - 0.5;
  if (Math.max(Math.abs(dx), Math.abs(dy)) < CENTER_RADIUS) return 'center';
  if (Math.abs(dx) >= Math.abs(dy)) return dx < 0 ? 'left' : 'right';
  return dy < 0 ? 'top' : 'bottom';
}

/** How shape a sits relative to shape b, along the axis they are further apart on. */
export function relationOf(a: Pick<ObservedShape, 'cx' | 'cy'>, b: Pick<ObservedShape, 'cx' | 'cy'>): Relation | 'right of' | 'below' {
  const dx = b.cx - a.cx;
  const dy = b.cy - a.cy;
  if (Math.abs(dx) >= Math.abs(dy)) return dx > 0 ? 'left of' : 'right of';
  return dy > 0 ? 'above' : 'below';
}

// ---------------------------------------------------------------------------------------------------
// Facts

export const FACT_KINDS = ['kind', 'colour', 'size', 'position', 'background'] as const;
export type FactKind = (typeof FACT_KINDS)[number];

/** One fact of the prompt and whether the image shows it. */
export interface FactCheck {
  /** The fact in words: "the first shape is red". */
  fact: string;
  kind: FactKind;
  expected: string;
  /** What the image shows in its place ("none" when the shape or background is not there). */
  observed: string;
  shown: boolean;
}

export interface Judgement {
  prompt: ParsedShapesPrompt;
  facts: FactCheck[];
  /** Fraction of the facts shown, 0 to 1. */
  score: number;
  observation: Observation;
}

/** Appearance facts of an expected shape that an observed one gets wrong (size only when the prompt states it). */
function mismatches(want: ParsedShape, got: ObservedShape): number {
  return Number(want.kind !== got.kind) + Number(want.colour !== got.colour) + Number(want.size !== null && want.size !== got.size);
}

/**
 * Which observed shape stands for each expected one (null: none left). Appearance decides first, so a shape
 * drawn in the wrong place is still recognised and only its position fails; then the prompt's relation;
 * then size of the region (a real shape over a speck).
 */
function matchShapes(prompt: ParsedShapesPrompt, seen: ObservedShape[]): (ObservedShape | null)[] {
  const candidates = seen.slice(0, 4);
  if ('position' in prompt) {
    let best: ObservedShape | null = null;
    for (const c of candidates) if (!best || mismatches(prompt.shapes[0], c) < mismatches(prompt.shapes[0], best)) best = c;
    return [best];
  }
  const [wa, wb] = prompt.shapes;
  if (candidates.length === 0) return [null, null];
  if (candidates.length === 1) {
    const c = candidates[0];
    return mismatches(wa, c) <= mismatches(wb, c) ? [c, null] : [null, c];
  }
  let best: [ObservedShape, ObservedShape] | null = null;
  let bestCost = Infinity;
  for (const a of candidates) {
    for (const b of candidates) {
      if (a === b) continue;
      // Appearance counts ten times a position, so no wrong kind or colour is traded for a right position.
      const cost = 10 * (mismatches(wa, a) + mismatches(wb, b)) + Number(relationOf(a, b) !== prompt.relation);
      if (cost < bestCost) {
        bestCost = cost;
        best = [a, b];
      }
    }
  }
  return best!;
}

/**
 * Judges an image against a shapes-world prompt (text or parsed). Throws when the text is not a
 * shapes-world caption.
 */
export function judgeShapes(image: RgbaImage, prompt: string | ParsedShapesPrompt): Judgement {
  const parsed = typeof prompt === 'string' ? parseShapesPrompt(prompt) : prompt;
  if (!parsed) throw new Error(`not a shapes-world prompt: ${JSON.stringify(prompt)}`);
  const observation = observeShapes(image);
  const matched = matchShapes(parsed, observation.shapes);
  const facts: FactCheck[] = [];
  const two = parsed.shapes.length === 2;
  const names = two ? ['the first shape', 'the second shape'] : ['the shape'];
  const check = (fact: string, kind: FactKind, expected: string, observed: string | undefined) => {
    facts.push({ fact, kind, expected, observed: observed ?? 'none', shown: observed === expected });
  };
  parsed.shapes.forEach((want, i) => {
    const got = matched[i];
    check(`${names[i]} is a ${want.kind}`, 'kind', want.kind, got?.kind);
    check(`${names[i]} is ${want.colour}`, 'colour', want.colour, got?.colour);
    if (want.size !== null) check(`${names[i]} is ${want.size}`, 'size', want.size, got?.size);
  });
  if ('position' in parsed) {
    const got = matched[0];
    check(`the shape is at the ${parsed.position}`, 'position', parsed.position, got ? singlePosition(got) : undefined);
  } else {
    const [a, b] = matched;
    check(`the first shape is ${parsed.relation} the second`, 'position', parsed.relation, a && b ? relationOf(a, b) : undefined);
  }
  check(`the background is ${parsed.background}`, 'background', parsed.background, observation.background ?? undefined);
  const score = facts.filter((f) => f.shown).length / facts.length;
  return { prompt: parsed, facts, score, observation };
}

/** Scores of many images: the mean score, and the fraction of facts shown overall and per kind of fact. */
export interface JudgeSummary {
  images: number;
  meanScore: number;
  facts: { shown: number; total: number; rate: number };
  byKind: Record<FactKind, { shown: number; total: number; rate: number }>;
}

export function summarizeJudgements(judgements: readonly Pick<Judgement, 'facts' | 'score'>[]): JudgeSummary {
  const tally = () => ({ shown: 0, total: 0, rate: 0 });
  const facts = tally();
  const byKind = Object.fromEntries(FACT_KINDS.map((k) => [k, tally()])) as JudgeSummary['byKind'];
  for (const j of judgements) {
    for (const f of j.facts) {
      for (const t of [facts, byKind[f.kind]]) {
        t.total++;
        if (f.shown) t.shown++;
      }
    }
  }
  for (const t of [facts, ...Object.values(byKind)]) t.rate = t.total ? t.shown / t.total : 0;
  const meanScore = judgements.length ? judgements.reduce((a, j) => a + j.score, 0) / judgements.length : 0;
  return { images: judgements.length, meanScore, facts, byKind };
}
