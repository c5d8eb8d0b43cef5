// What `train` and `score` share: reading a data file into training examples, and preparing their
// features (VAE latents, text states) with the model's encoders into a feature cache.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { decodeImageNode } from '../data/decode-node';
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
import type { LossMethod } from '../tpo/losses';
import { UsageError } from './args';
import { type CliIO, ProgressBar } from './io';

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
    throw new UsageError(`--data ${dataPath}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
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
