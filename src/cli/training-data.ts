// What `train` and `score` share: reading a data file into training examples, and preparing their
// features (VAE latents, text states) with the model's encoders into a feature cache.

import { open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { decodeImageNode } from '../data/decode-node';
import { sniffImage } from '../data/image';
import { imageSize } from '../data/pixels';
import { checkModelForTraining, type CheckedModel } from '../models/model-check';
import { parseTrainerJsonl } from '../data/import';
import { detectJsonlKind, parseDpoJsonl, parseKtoJsonl } from '../data/preference-records';
import { DatasetImportError, type ImportProblem } from '../data/types';
import type { Gpu } from '../gpu/gpu';
import { loadClipTextModel } from '../models/clip-text';
import { dirModelFiles } from '../models/model-files-node';
import { loadClipTokenizer } from '../models/tokenizer-node';
import { loadVae } from '../models/vae';
import type { Features } from '../tpo/batch';
import { dataKindFor, dpoExamples, ktoExamples, type NegativeFilter, tpoExamples, type TrainExample } from '../tpo/examples';
import { componentFingerprint, MemoryFeatureStore, prepareFeatures, termsOf } from '../tpo/features';
import { dirFeatureStore } from '../tpo/feature-store-node';
import { longCaptionProblem, smallImageProblem } from '../tpo/input-checks';
import type { LossMethod } from '../tpo/losses';
import { UsageError } from './args';
import { type CliIO, ProgressBar, systemErrorMessage, systemErrorWords } from './io';

export interface TrainingData {
  examples: TrainExample[];
  /** Bad lines left out (only with skipBadLines). */
  problems: ImportProblem[];
  /** Images the examples use, by path (dataset root = the data file's folder). */
  images: number;
}

const KIND_NAMES = { tpo: 'TPO (image, caption, negatives)', dpo: 'Diffusion-DPO (prompt, image_w, image_l)', kto: 'Diffusion-KTO (image, caption, label)' };

/** Reads a data file for `method`; image paths become absolute (relative to the data file). */
export async function loadTrainingData(dataPath: string, method: LossMethod, options: { skipBadLines: boolean; negatives: NegativeFilter }): Promise<TrainingData> {
  let text: string;
  try {
    text = await readFile(dataPath, 'utf8');
  } catch (e) {
    throw new UsageError(`--data ${dataPath}: ${systemErrorWords(e) ?? (e as Error).message}`);
  }
  const want = dataKindFor(method);
  if (text.trim() === '') throw new UsageError(`--data ${dataPath} holds no records`);
  const found = detectJsonlKind(text);
  if (found && found !== want) {
    throw new UsageError(`--data ${dataPath} holds ${KIND_NAMES[found]} records; --method ${method} trains on ${KIND_NAMES[want]} records`);
  }
  const file = path.basename(dataPath);
  const onInvalid = options.skipBadLines ? 'skip' : 'error';
  const abs = (p: string) => path.resolve(path.dirname(dataPath), p);
  const rebase = <T extends { image: string; caption: string }>(t: T): T => ({ ...t, image: abs(t.image) });
  let examples: TrainExample[];
  let problems: ImportProblem[];
  try {
    if (want === 'tpo') {
      const r = parseTrainerJsonl(text, { file, onInvalid });
      problems = r.problems;
      examples = tpoExamples(r.items, method, options.negatives);
    } else if (want === 'dpo') {
      const r = parseDpoJsonl(text, { file, onInvalid });
      problems = r.problems;
      examples = dpoExamples(r.records);
    } else {
      const r = parseKtoJsonl(text, { file, onInvalid });
      problems = r.problems;
      examples = ktoExamples(r.records);
    }
  } catch (e) {
    if (e instanceof DatasetImportError) throw new UsageError(`${e.message}\n(fix these lines, or pass --skip-bad-lines to leave them out)`);
    throw e;
  }
  examples = examples.map((e) => ({ ...e, w: rebase(e.w), l: rebase(e.l) }));
  if (examples.length === 0) {
    throw new UsageError(
      want === 'tpo' && method !== 'sft'
        ? `--data ${dataPath} gives no (caption, negative) pairs: write negatives first (tpo-lab pairs), or check --negatives`
        : `--data ${dataPath} gives no training examples`,
    );
  }
  return { examples, problems, images: new Set(termsOf(examples).map((t) => t.image)).size };
}

/**
 * Loads the VAE, text encoder and tokenizer of a diffusers folder, prepares every feature the examples
 * need (cached in `cacheDir`, or in memory when null), and releases the encoders again.
 */
export async function prepareTrainingFeatures(
  gpu: Gpu,
  modelDir: string,
  examples: readonly TrainExample[],
  options: { resolution: number; cacheDir: string | null; quiet: boolean },
  io: CliIO,
): Promise<Features> {
  const files = dirModelFiles(modelDir);
  const store = options.cacheDir ? dirFeatureStore(options.cacheDir) : new MemoryFeatureStore();
  const tokenizer = await loadClipTokenizer(modelDir);
  const vae = await loadVae(gpu, files);
  try {
    const text = await loadClipTextModel(gpu, files);
    try {
      const terms = termsOf(examples);
      const total = new Set(terms.map((t) => t.image)).size + new Set(terms.map((t) => t.caption)).size;
      const bar = new ProgressBar(io.stderr, total, 'prepare', !options.quiet);
      const keys = await prepareFeatures(
        { gpu, vae, text, tokenizer, vaeFingerprint: await componentFingerprint(files, 'vae'), textFingerprint: await componentFingerprint(files, 'text_encoder') },
        terms,
        {
          resolution: options.resolution,
          readImage: async (p) => {
            try {
              return new Uint8Array(await readFile(p));
            } catch (e) {
              throw new Error(`image ${p}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
            }
          },
          decode: decodeImageNode,
          store,
          onProgress: () => bar.tick(),
        },
      );
      bar.finish();
      return { store, keys };
    } finally {
      text.release();
    }
  } finally {
    vae.release();
    await files.close?.();
  }
}

/** Checks the model folder (configs, weight headers, resolution) before the GPU opens; see model-check.ts. */
export async function checkModelDir(modelDir: string, resolution: number): Promise<CheckedModel> {
  const files = dirModelFiles(modelDir);
  try {
    return await checkModelForTraining(files, { resolution });
  } finally {
    await files.close?.();
  }
}

/** Enough of a file's start to hold its image header (a JPEG's SOF may follow a large EXIF block). */
const HEAD_BYTES = 256 * 1024;

async function readHead(file: string): Promise<Uint8Array> {
  const handle = await open(file, 'r');
  try {
    const buf = new Uint8Array(HEAD_BYTES);
    const { bytesRead } = await handle.read(buf, 0, HEAD_BYTES, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/**
 * Checks the examples' images and captions before the GPU opens: every image is there and has a readable
 * PNG or JPEG header (missing or broken ones are refused, all listed at once); images far smaller than
 * the resolution are refused unless allowed (then warned about); captions over the text encoder's window
 * are warned about first (they are cut).
 */
export async function checkTrainingInputs(
  examples: readonly TrainExample[],
  options: { resolution: number; modelDir: string; allowSmallImages: boolean },
  say: (text: string) => void,
): Promise<void> {
  const terms = termsOf(examples);
  const list = (items: string[]) => items.slice(0, 10).map((x) => `  ${x}`).join('\n') + (items.length > 10 ? `\n  ... and ${items.length - 10} more` : '');
  const tokenizer = await loadClipTokenizer(options.modelDir);
  const long: string[] = [];
  for (const caption of new Set(terms.map((t) => t.caption))) {
    const problem = longCaptionProblem(tokenizer.countTokens(caption));
    if (problem) long.push(`${JSON.stringify(caption.length > 48 ? `${caption.slice(0, 45)}...` : caption)}: ${problem}`);
  }
  if (long.length) say(`warning: ${long.length} caption(s) do not fit the text encoder and are cut:\n${list(long)}`);
  const broken: string[] = [];
  const small: string[] = [];
  for (const image of new Set(terms.map((t) => t.image))) {
    let head: Uint8Array;
    try {
      head = await readHead(image);
    } catch (e) {
      broken.push(systemErrorMessage(e) ?? `${image}: ${(e as Error).message}`);
      continue;
    }
    const kind = sniffImage(head);
    const size = kind === 'png' || kind === 'jpeg' ? imageSize(head) : null;
    if (head.length === 0) broken.push(`${image}: the file is empty, not an image`);
    else if (kind === null) broken.push(`${image}: not an image (its first bytes are not those of a PNG or JPEG file)`);
    else if (kind !== 'png' && kind !== 'jpeg') broken.push(`${image}: a ${kind.toUpperCase()} image; the command-line tool reads PNG and JPEG, convert it`);
    else if (size === null) broken.push(`${image}: the ${kind.toUpperCase()} header is damaged or cut short (no image size found)`);
    else if (!(size.width > 0 && size.height > 0)) broken.push(`${image}: the header says ${size.width}x${size.height} pixels; the file is damaged`);
    else {
      const problem = smallImageProblem(size.width, size.height, options.resolution);
      if (problem) small.push(`${image}: ${problem}`);
    }
  }
  if (broken.length) throw new UsageError(`${broken.length} image(s) cannot be read:\n${list(broken)}`);
  if (small.length && !options.allowSmallImages) {
    throw new UsageError(`${small.length} image(s) are far smaller than the training resolution:\n${list(small)}\nUse larger images or a lower --resolution, or pass --allow-small-images to train on them anyway`);
  }
  if (small.length) say(`warning: ${small.length} image(s) are far smaller than the training resolution (--allow-small-images given):\n${list(small)}`);
}
