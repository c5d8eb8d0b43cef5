// The encoder goldens (tiny-sd15/encoders.safetensors) and the model sources the encoder tests load from:
// the diffusers folder and the single-file checkpoint beside it.

import { join } from 'node:path';
import { dirModelFiles } from '../../src/models/model-files-node';
import { openSafetensorsFile } from '../../src/models/safetensors-node';
import type { ModelFiles } from '../../src/models/weights';
import { GOLDENS } from './goldens';

export const TINY_FOLDER = join(GOLDENS, 'tiny-sd15');
export const TINY_SINGLE = join(GOLDENS, 'tiny-sd15-single.safetensors');

export interface GoldenTensor {
  shape: number[];
  /** Float64 for F64 tensors (no rounding), else the values converted to numbers. */
  data: Float64Array;
}

/** Every tensor of encoders.safetensors, with float64 values kept exact. */
export async function readEncoderGoldens(): Promise<Map<string, GoldenTensor>> {
  const { file, close } = await openSafetensorsFile(join(TINY_FOLDER, 'encoders.safetensors'));
  try {
    const out = new Map<string, GoldenTensor>();
    for (const [name, info] of file.tensors) {
      const bytes = await file.readBytes(name);
      const copy = bytes.slice(); // aligned
      const data =
        info.dtype === 'F64'
          ? new Float64Array(copy.buffer, 0, copy.length / 8)
          : Float64Array.from(await file.readF32(name));
      out.set(name, { shape: info.shape, data });
    }
    return out;
  } finally {
    await close();
  }
}

/** The folder with some files' text replaced (e.g. a config edited to mismatch the weights). */
export function withReplacedText(files: ModelFiles, replaced: Record<string, string>): ModelFiles {
  return { ...files, readText: async (path) => replaced[path] ?? files.readText(path) };
}

export { dirModelFiles, openSafetensorsFile };
