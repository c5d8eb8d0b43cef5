// An opened model, whatever it came from: a diffusers folder (on disk, picked in the browser, or a directory
// handle) or a single-file checkpoint. The orchestration layer (training runs, sampling, the memory plan)
// sees only this, so it never asks where the bytes live; weights are read lazily, component by component,
// straight onto the GPU.

import type { Gpu } from '../gpu/gpu';
import { type ClipTextModel, loadClipTextModel } from '../models/clip-text';
import { checkModelForTraining, type CheckedModel } from '../models/model-check';
import { type ClipTokenizer, createClipTokenizer } from '../models/tokenizer';
import { loadUNet, type UNet } from '../models/unet';
import { type AutoencoderKL, loadVae } from '../models/vae';
import type { ModelFiles, UploadOptions } from '../models/weights';
import { componentFingerprint } from '../tpo/features';

export type ModelComponent = 'unet' | 'vae' | 'text_encoder';

export interface ModelHandle {
  /** For messages and LoRA metadata: the folder's or the file's name. */
  readonly name: string;
  readonly kind: 'folder' | 'single-file';
  /**
   * Configs, tokenizer and scheduler files (for a single file: the SD1.5 ones the app ships); weights are
   * loaded through the load* methods, not read from here.
   */
  readonly files: ModelFiles;
  /** Configs read and cross-checked, weight headers checked; no weight is read. */
  check(options?: { resolution?: number }): Promise<CheckedModel>;
  tokenizer(): Promise<ClipTokenizer>;
  loadUNet(gpu: Gpu, options?: UploadOptions): Promise<UNet>;
  loadVae(gpu: Gpu): Promise<AutoencoderKL>;
  loadTextEncoder(gpu: Gpu): Promise<ClipTextModel>;
  /** Identifies a component's weights for the feature cache (cheap: header and samples). */
  fingerprint(component: ModelComponent): Promise<string>;
  /** Closes open files; loaded weights stay on the GPU. */
  close(): Promise<void>;
}

/** The CLIP tokenizer of a folder's tokenizer/ (vocab.json + merges.txt). */
export async function folderTokenizer(files: ModelFiles): Promise<ClipTokenizer> {
  const have = files.list();
  for (const f of ['tokenizer/vocab.json', 'tokenizer/merges.txt']) {
    if (!have.includes(f)) throw new Error(`${files.name}: ${f} is missing; a diffusers Stable Diffusion folder has tokenizer/vocab.json and tokenizer/merges.txt`);
  }
  return createClipTokenizer({ vocab: await files.readText('tokenizer/vocab.json'), merges: await files.readText('tokenizer/merges.txt') });
}

/** A diffusers folder (SD1.x layout) read through `files`. */
export function folderModel(files: ModelFiles): ModelHandle {
  let tokenizer: Promise<ClipTokenizer> | null = null;
  return {
    name: files.name,
    kind: 'folder',
    files,
    check: (options) => checkModelForTraining(files, options),
    tokenizer: () => {
      tokenizer ??= folderTokenizer(files);
      tokenizer.catch(() => (tokenizer = null));
      return tokenizer;
    },
    loadUNet: (gpu, options) => loadUNet(gpu, files, options),
    loadVae: (gpu) => loadVae(gpu, files),
    loadTextEncoder: (gpu) => loadClipTextModel(gpu, files),
    fingerprint: (component) => componentFingerprint(files, component),
    close: async () => {
      await files.close?.();
    },
  };
}
