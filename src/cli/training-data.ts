// The CLI's side of training and scoring data: reading a data file and the images it names from disk, and
// the shared layer's checks and feature preparation (src/app/training-data.ts) with a progress bar.

import { open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { folderModel, type ModelHandle } from '../app/model';
import { checkTrainingInputs as checkInputs, IMAGE_HEAD_BYTES, parseTrainingData, type TrainingData } from '../app/training-data';
import { decodeImageNode } from '../data/decode-node';
import type { CheckedModel } from '../models/model-check';
import { dirModelFiles } from '../models/model-files-node';
import type { Gpu } from '../gpu/gpu';
import type { Features } from '../tpo/batch';
import type { NegativeFilter, TrainExample } from '../tpo/examples';
import { MemoryFeatureStore } from '../tpo/features';
import { dirFeatureStore } from '../tpo/feature-store-node';
import type { LossMethod } from '../tpo/methods';
import { prepareTrainingFeatures as prepareShared } from '../app/training-data';
import { UsageError } from './args';
import { type CliIO, ProgressBar, systemErrorMessage, systemErrorWords } from './io';

export type { TrainingData };

/** Reads a data file for `method`; image paths become absolute (relative to the data file). */
export async function loadTrainingData(dataPath: string, method: LossMethod, options: { skipBadLines: boolean; negatives: NegativeFilter }): Promise<TrainingData> {
  let text: string;
  try {
    text = await readFile(dataPath, 'utf8');
  } catch (e) {
    throw new UsageError(`--data ${dataPath}: ${systemErrorWords(e) ?? (e as Error).message}`);
  }
  return parseTrainingData(text, {
    source: dataPath,
    file: path.basename(dataPath),
    method,
    ...options,
    resolveImage: (p) => path.resolve(path.dirname(dataPath), p),
  });
}

/** An image's bytes from disk: all of them, or the first `bytes` (for header checks). */
export async function readImageFile(image: string, bytes?: number): Promise<Uint8Array> {
  if (bytes === undefined) {
    try {
      return new Uint8Array(await readFile(image));
    } catch (e) {
      throw new Error(`image ${image}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
  }
  let handle;
  try {
    handle = await open(image, 'r');
    const buf = new Uint8Array(bytes);
    const { bytesRead } = await handle.read(buf, 0, bytes, 0);
    return buf.subarray(0, bytesRead);
  } catch (e) {
    throw new Error(systemErrorMessage(e) ?? `${image}: ${(e as Error).message}`);
  } finally {
    await handle?.close();
  }
}

/** The model folder as the shared layer opens it; close() it when done. */
export function openModelDir(modelDir: string): ModelHandle {
  return folderModel(dirModelFiles(modelDir));
}

/** Prepares the examples' features with the model's encoders (cached in `cacheDir`, or in memory when null). */
export async function prepareTrainingFeatures(
  gpu: Gpu,
  modelDir: string,
  examples: readonly TrainExample[],
  options: { resolution: number; cacheDir: string | null; quiet: boolean },
  io: CliIO,
): Promise<Features> {
  const model = openModelDir(modelDir);
  let bar = null as ProgressBar | null;
  try {
    return await prepareShared(gpu, model, examples, {
      resolution: options.resolution,
      store: options.cacheDir ? dirFeatureStore(options.cacheDir) : new MemoryFeatureStore(),
      readImage: (image) => readImageFile(image),
      decode: decodeImageNode,
      onProgress: (done, total) => {
        bar ??= new ProgressBar(io.stderr, total, 'prepare', !options.quiet);
        bar.tick();
      },
    });
  } finally {
    bar?.finish();
    await model.close();
  }
}

/** Checks the model folder (configs, weight headers, resolution) before the GPU opens; see model-check.ts. */
export async function checkModelDir(modelDir: string, resolution: number): Promise<CheckedModel> {
  const model = openModelDir(modelDir);
  try {
    return await model.check({ resolution });
  } finally {
    await model.close();
  }
}

/** The shared input checks (src/app/training-data.ts) on files on disk. */
export async function checkTrainingInputs(
  examples: readonly TrainExample[],
  options: { resolution: number; modelDir: string; allowSmallImages: boolean },
  say: (text: string) => void,
): Promise<void> {
  const model = openModelDir(options.modelDir);
  try {
    await checkInputs(examples, { resolution: options.resolution, tokenizer: await model.tokenizer(), allowSmallImages: options.allowSmallImages, readHead: (image) => readImageFile(image, IMAGE_HEAD_BYTES) }, say);
  } finally {
    await model.close();
  }
}
