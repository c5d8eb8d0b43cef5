// The shapes-world judge: reads an image and says, for each fact of a shapes-world prompt (each shape's kind,
// colour, size and position, and the background), whether the image shows it. An image's alignment score is
// the fraction of its prompt's facts shown. It is a plain program, independent of any model, so it can score
// samples of the demo model before and after TPO.
//
// Built to survive what a small diffusion model draws: blurry edges, noise, slightly off colours. Pixels
// are named by their nearest palette colour only when they are close to it (blurred edges between two
// colours are left unnamed); the background is the colour most of the border has; shapes are connected
// regions of one non-background colour; a shape's kind comes from how its mass leans (a triangle pointing
// up is heavier at its base) and how far it reaches along the diagonals (a square's corners); its size
// from its extent and area; its position from its box's centre.

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

/** The fraction of its bounding box each kind fills. */
const IDEAL_FILL: Record<ShapeKind, number> = { circle: Math.PI / 4, square: 1, triangle: 0.5 };

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
  /** Fraction of the bounding box the region fills (square 1, circle 0.79, triangle 0.5). */
  fill: number;
  /** Skewness of the region's rows (upright triangle about -0.57, circle and square 0). */
  skewY: number;
  /** Extent along the diagonals over extent along the axes (square 1.41, circle 1). */
  diagonal: number;
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

/**
 * A region's kind from two measures that ragged, blurred or noisy edges barely move (unlike its bounding
 * box, which one stray pixel widens). An upright triangle's mass leans to its base: the skewness of its
 * rows is about -0.57 (a triangular distribution), a circle's or square's 0. A square reaches 1.41 times
 * further along its diagonals than along its axes, a circle 1; blur rounds a square's corners to about 1.3.
 */
function classifyKind(skewY: number, diagonal: number): ShapeKind {
  if (skewY < -0.28) return 'triangle';
  return diagonal > 1.2 ? 'square' : 'circle';
}

/** The background and the shapes of an image (RGBA, any size; alpha is ignored). */
export function observeShapes(image: RgbaImage): Observation {
  const { width: w, height: h, data } = image;
  // Each pixel's palette index, or -1 when it is near none (an edge between two colours, or off-palette).
  const raw = new Int8Array(w * h);
  for (let i = 0; i < w * h; i++) {
    const { index, distance } = nearestColour(data[i * 4], data[i * 4 + 1], data[i * 4 + 2]);
    raw[i] = distance <= NAMING_DISTANCE ? index : -1;
  }
  // Each pixel takes the colour most of its 3 x 3 neighbourhood has (at least 5 of the 9), else none: noise
  // on a blurred edge names pixels at random, and the ragged border it leaves would widen a shape's box
  // and hide its kind. Edge pixels count the neighbours the image has.
  const label = new Int8Array(w * h);
  const votes = new Int32Array(SHAPE_COLOURS.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      votes.fill(0);
      let n = 0;
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const sx = x + dx;
          const sy = y + dy;
          if (sx < 0 || sy < 0 || sx >= w || sy >= h) continue;
          n++;
          const l = raw[sy * w + sx];
          if (l >= 0) votes[l]++;
        }
      }
      let best = 0;
      for (let k = 1; k < votes.length; k++) if (votes[k] > votes[best]) best = k;
      label[y * w + x] = votes[best] * 2 > n ? best : -1;
    }
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
    let sumY2 = 0;
    let sumY3 = 0;
    // Extremes along the diagonals, x + y and x - y.
    let u0 = Infinity;
    let u1 = -Infinity;
    let v0 = Infinity;
    let v1 = -Infinity;
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
      sumY2 += y * y;
      sumY3 += y * y * y;
      u0 = Math.min(u0, x + y);
      u1 = Math.max(u1, x + y);
      v0 = Math.min(v0, x - y);
      v1 = Math.max(v1, x - y);
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
    const meanY = sumY / n;
    const varY = sumY2 / n - meanY * meanY;
    const skewY = varY > 0 ? (sumY3 / n - 3 * meanY * varY - meanY ** 3) / varY ** 1.5 : 0;
    // Extents in pixels: a pixel is 1 wide along an axis and sqrt(2) along a diagonal (2 in units of x + y).
    const diagonal = (u1 - u0 + 2 + (v1 - v0 + 2)) / Math.SQRT2 / (bw + bh);
    const kind = classifyKind(skewY, diagonal);
    // Extent: the box's, or the side a shape of this kind and area has, whichever is larger; blur eats a
    // triangle's sharp base corners, which shortens its box but takes little of its area.
    const extent = Math.max(bw / w, bh / h, Math.sqrt(n / IDEAL_FILL[kind] / (w * h)));
    shapes.push({
      kind,
      colour: SHAPE_COLOURS[l],
      size: extent > LARGE_EXTENT ? 'large' : 'small',
      cx: (x0 + x1 + 1) / 2 / w,
      cy: (y0 + y1 + 1) / 2 / h,
      area: n / (w * h),
      fill,
      skewY,
      diagonal,
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
