// Judging TPO pairs and images with a ClipJudge, shared by `tpo-lab judge` and the lab (the app's engine
// worker): each distinct image and caption is embedded once, then every pair is scored from the
// embeddings, score_w = S(x, c_w), score_l = S(x, c_l), margin = score_w - score_l, and, given implicit
// scores, the pairs are matched with them and the two margins correlated (agreement.ts). Platform-free:
// images come through a decode function the caller gives.

import type { RgbaImage } from '../data/pixels';
import { agreement, type Correlation, type ImplicitScores, pairKey } from './agreement';
import type { ClipJudge } from './clip-judge';

/** Which tower is running, how many of its inputs are done, of how many; `done` 0 opens each stage. */
export type JudgeProgress = (stage: 'captions' | 'images', done: number, total: number) => void;

/** Images are decoded this many at a time, so a large data set is never all in memory as pixels. */
const DECODE_CHUNK = 32;

/** Embeds each distinct image and caption once; returns lookups by image and by caption. */
export async function embedAll<I>(
  judge: ClipJudge,
  images: readonly I[],
  captions: readonly string[],
  decode: (image: I) => Promise<RgbaImage>,
  onProgress?: JudgeProgress,
): Promise<{ image(i: I): Float32Array; text(c: string): Float32Array }> {
  const uniqueImages = [...new Set(images)];
  const uniqueCaptions = [...new Set(captions)];
  onProgress?.('captions', 0, uniqueCaptions.length);
  const textEmbeds = await judge.embedTexts(uniqueCaptions, (done) => onProgress?.('captions', done, uniqueCaptions.length));
  onProgress?.('images', 0, uniqueImages.length);
  const imageEmbeds: Float32Array[] = [];
  for (let i = 0; i < uniqueImages.length; i += DECODE_CHUNK) {
    const decoded = await Promise.all(uniqueImages.slice(i, i + DECODE_CHUNK).map(decode));
    const before = imageEmbeds.length;
    imageEmbeds.push(...(await judge.embedImages(decoded, (done) => onProgress?.('images', before + done, uniqueImages.length))));
  }
  const byImage = new Map(uniqueImages.map((p, i) => [p, imageEmbeds[i]]));
  const byCaption = new Map(uniqueCaptions.map((c, i) => [c, textEmbeds[i]]));
  return { image: (p) => byImage.get(p)!, text: (c) => byCaption.get(c)! };
}

/** A TPO pair: an image, its caption and a subtly wrong caption (of a principle, when the data names one). */
export interface CaptionPair {
  image: string;
  caption: string;
  negative: string;
  principle: string | null;
}

export interface JudgedPair extends CaptionPair {
  scoreW: number;
  scoreL: number;
  margin: number;
}

/** The judge's scores of every pair, in order. */
export async function judgeCaptionPairs(judge: ClipJudge, pairs: readonly CaptionPair[], decode: (image: string) => Promise<RgbaImage>, onProgress?: JudgeProgress): Promise<JudgedPair[]> {
  const embeds = await embedAll(
    judge,
    pairs.map((p) => p.image),
    pairs.flatMap((p) => [p.caption, p.negative]),
    decode,
    onProgress,
  );
  return pairs.map((p) => {
    const x = embeds.image(p.image);
    const scoreW = judge.score(x, embeds.text(p.caption));
    const scoreL = judge.score(x, embeds.text(p.negative));
    return { ...p, scoreW, scoreL, margin: scoreW - scoreL };
  });
}

/** Share of pairs the judge gets right (score_w > score_l; a tie counts half) and the mean margin. */
export function judgeSummary(rows: readonly { margin: number }[]): { accuracy: number; meanMargin: number } {
  const n = rows.length;
  return {
    accuracy: n ? rows.reduce((a, r) => a + (r.margin > 0 ? 1 : r.margin === 0 ? 0.5 : 0), 0) / n : NaN,
    meanMargin: n ? rows.reduce((a, r) => a + r.margin, 0) / n : NaN,
  };
}

/** The principle a pair is grouped under for the per-principle correlations. */
export const principleOf = (p: { principle: string | null }) => p.principle ?? 'none';

/**
 * Each judged pair's implicit margin (undefined when the implicit scores lack it, `image` being matched as
 * `resolveImage` turns it into the implicit scores' paths), and the correlation over the matched pairs.
 */
export function compareWithImplicit<R extends JudgedPair>(
  rows: readonly R[],
  implicit: ImplicitScores,
  resolveImage: (image: string) => string = (image) => image,
): { rows: (R & { implicitMargin: number | undefined })[]; matched: number; overall: Correlation; byPrinciple: Record<string, Correlation> } {
  const joined = rows.map((r) => ({ ...r, implicitMargin: implicit.margins.get(pairKey(resolveImage(r.image), r.negative)) }));
  const matched = joined.filter((r) => r.implicitMargin !== undefined).map((r) => ({ principle: principleOf(r), judge: r.margin, implicit: r.implicitMargin! }));
  return { rows: joined, matched: matched.length, ...agreement(matched) };
}
