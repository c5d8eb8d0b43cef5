// What training and scoring share, on any platform: turning a data file's text into training examples,
// checking the examples' images and captions before the GPU opens, and preparing their features (VAE
// latents, text states) with the model's encoders into a feature store. Files are read through callbacks,
// so the CLI (node:fs) and the browser worker (OPFS, picked files) use the same code.

import { parseTrainerJsonl } from '../data/import';
import { sniffImage } from '../data/image';
import { imageSize, type RgbaImage } from '../data/pixels';
import { detectJsonlKind, parseDpoJsonl, parseKtoJsonl } from '../data/preference-records';
import { DatasetImportError, type ImportProblem } from '../data/types';
import type { Gpu } from '../gpu/gpu';
import type { ClipTokenizer } from '../models/tokenizer';
import type { Features } from '../tpo/batch';
import { dataKindFor, dpoExamples, ktoExamples, type NegativeFilter, tpoExamples, type TrainExample } from '../tpo/examples';
import { type FeatureStore, prepareFeatures, termsOf } from '../tpo/features';
import { longCaptionProblem, smallImageProblem } from '../tpo/input-checks';
import type { LossMethod } from '../tpo/methods';
import { InputError } from './errors';
import type { ModelHandle } from './model';

export interface TrainingData {
  examples: TrainExample[];
  /** Bad lines left out (only with skipBadLines). */
  problems: ImportProblem[];
  /** Images the examples use. */
  images: number;
}

export interface ParseOptions {
  /** Names the data in messages (a path, or a dataset's name). */
  source: string;
  /** The file name that line numbers refer to. */
  file: string;
  method: LossMethod;
  skipBadLines: boolean;
  negatives: NegativeFilter;
  /** Turns an image path as the data writes it into the one readImage understands. */
  resolveImage: (path: string) => string;
}

const KIND_NAMES = { tpo: 'TPO (image, caption, negatives)', dpo: 'Diffusion-DPO (prompt, image_w, image_l)', kto: 'Diffusion-KTO (image, caption, label)' };

/** The training examples of a data file's text for `o.method`; throws InputError naming what is wrong. */
export function parseTrainingData(text: string, o: ParseOptions): TrainingData {
  const want = dataKindFor(o.method);
  if (text.trim() === '') throw new InputError(`--data ${o.source} holds no records`);
  const found = detectJsonlKind(text);
  if (found && found !== want) {
    throw new InputError(`--data ${o.source} holds ${KIND_NAMES[found]} records; --method ${o.method} trains on ${KIND_NAMES[want]} records`);
  }
  const onInvalid = o.skipBadLines ? 'skip' : 'error';
  const rebase = <T extends { image: string; caption: string }>(t: T): T => ({ ...t, image: o.resolveImage(t.image) });
  let examples: TrainExample[];
  let problems: ImportProblem[];
  try {
    if (want === 'tpo') {
      const r = parseTrainerJsonl(text, { file: o.file, onInvalid });
      problems = r.problems;
      examples = tpoExamples(r.items, o.method, o.negatives);
    } else if (want === 'dpo') {
      const r = parseDpoJsonl(text, { file: o.file, onInvalid });
      problems = r.problems;
      examples = dpoExamples(r.records);
    } else {
      const r = parseKtoJsonl(text, { file: o.file, onInvalid });
      problems = r.problems;
      examples = ktoExamples(r.records);
    }
  } catch (e) {
    if (e instanceof DatasetImportError) throw new InputError(`${e.message}\n(fix these lines, or pass --skip-bad-lines to leave them out)`);
    throw e;
  }
  examples = examples.map((e) => ({ ...e, w: rebase(e.w), l: rebase(e.l) }));
  if (examples.length === 0) {
    throw new InputError(
      want === 'tpo' && o.method !== 'sft'
        ? `--data ${o.source} gives no (caption, negative) pairs: write negatives first (tpo-lab pairs), or check --negatives`
        : `--data ${o.source} gives no training examples`,
    );
  }
  return { examples, problems, images: new Set(termsOf(examples).map((t) => t.image)).size };
}

/** Enough of a file's start to hold its image header (a JPEG's SOF may follow a large EXIF block). */
export const IMAGE_HEAD_BYTES = 256 * 1024;

export interface InputCheckOptions {
  resolution: number;
  tokenizer: ClipTokenizer;
  allowSmallImages: boolean;
  /** The first IMAGE_HEAD_BYTES of an image (fewer for a smaller file); throws with a message when it cannot be read. */
  readHead: (image: string) => Promise<Uint8Array>;
  /** Image formats this platform decodes (the CLI: PNG and JPEG; a browser: also WebP, GIF, BMP). */
  formats?: readonly string[];
}

/**
 * Checks the examples' images and captions before the GPU opens: every image is there and has a readable
 * header (missing or broken ones are refused, all listed at once); images far smaller than the resolution
 * are refused unless allowed (then warned about); captions over the text encoder's window are warned about
 * first (they are cut).
 */
export async function checkTrainingInputs(examples: readonly TrainExample[], o: InputCheckOptions, say: (text: string) => void): Promise<void> {
  const terms = termsOf(examples);
  const formats = o.formats ?? ['png', 'jpeg'];
  const list = (items: string[]) => items.slice(0, 10).map((x) => `  ${x}`).join('\n') + (items.length > 10 ? `\n  ... and ${items.length - 10} more` : '');
  const long: string[] = [];
  for (const caption of new Set(terms.map((t) => t.caption))) {
    const problem = longCaptionProblem(o.tokenizer.countTokens(caption));
    if (problem) long.push(`${JSON.stringify(caption.length > 48 ? `${caption.slice(0, 45)}...` : caption)}: ${problem}`);
  }
  if (long.length) say(`warning: ${long.length} caption(s) do not fit the text encoder and are cut:\n${list(long)}`);
  const broken: string[] = [];
  const small: string[] = [];
  for (const image of new Set(terms.map((t) => t.image))) {
    let head: Uint8Array;
    try {
      head = await o.readHead(image);
    } catch (e) {
      broken.push((e as Error).message);
      continue;
    }
    const kind = sniffImage(head);
    const size = kind === 'png' || kind === 'jpeg' ? imageSize(head) : null;
    if (head.length === 0) broken.push(`${image}: the file is empty, not an image`);
    else if (kind === null) broken.push(`${image}: not an image (its first bytes are not those of a PNG or JPEG file)`);
    else if (!formats.includes(kind)) broken.push(`${image}: a ${kind.toUpperCase()} image; the command-line tool reads PNG and JPEG, convert it`);
    else if (kind !== 'png' && kind !== 'jpeg') continue; // decoded by the browser, which checks it then
    else if (size === null) broken.push(`${image}: the ${kind.toUpperCase()} header is damaged or cut short (no image size found)`);
    else if (!(size.width > 0 && size.height > 0)) broken.push(`${image}: the header says ${size.width}x${size.height} pixels; the file is damaged`);
    else {
      const problem = smallImageProblem(size.width, size.height, o.resolution);
      if (problem) small.push(`${image}: ${problem}`);
    }
  }
  if (broken.length) throw new InputError(`${broken.length} image(s) cannot be read:\n${list(broken)}`);
  if (small.length && !o.allowSmallImages) {
    throw new InputError(`${small.length} image(s) are far smaller than the training resolution:\n${list(small)}\nUse larger images or a lower --resolution, or pass --allow-small-images to train on them anyway`);
  }
  if (small.length) say(`warning: ${small.length} image(s) are far smaller than the training resolution (--allow-small-images given):\n${list(small)}`);
}

export interface FeatureOptions {
  resolution: number;
  store: FeatureStore;
  readImage: (image: string) => Promise<Uint8Array>;
  decode: (bytes: Uint8Array, name: string) => Promise<RgbaImage>;
  /** After each image or caption: how many of `total` are prepared (cached ones included). */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Loads the model's VAE and text encoder, prepares every feature the examples need that the store does not
 * hold yet, and releases the encoders again (only the UNet is needed to train).
 */
export async function prepareTrainingFeatures(gpu: Gpu, model: ModelHandle, examples: readonly TrainExample[], o: FeatureOptions): Promise<Features> {
  const tokenizer = await model.tokenizer();
  const vae = await model.loadVae(gpu);
  try {
    const text = await model.loadTextEncoder(gpu);
    try {
      const keys = await prepareFeatures(
        { gpu, vae, text, tokenizer, vaeFingerprint: await model.fingerprint('vae'), textFingerprint: await model.fingerprint('text_encoder') },
        termsOf(examples),
        { resolution: o.resolution, readImage: o.readImage, decode: o.decode, store: o.store, onProgress: o.onProgress },
      );
      return { store: o.store, keys };
    } finally {
      text.release();
    }
  } finally {
    vae.release();
  }
}
