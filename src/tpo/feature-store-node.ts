// Prepared features on disk (CLI): one file of little-endian float32 values per cache key.

import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { FeatureStore } from './features';

export function dirFeatureStore(dir: string): FeatureStore {
  const file = (key: string) => {
    if (!/^[a-z]+-[0-9a-f]+$/.test(key)) throw new Error(`feature cache key ${JSON.stringify(key)} is malformed`);
    return path.join(dir, `${key}.f32`);
  };
  return {
    async get(key) {
      let bytes: Buffer;
      try {
        bytes = await readFile(file(key));
      } catch {
        return null;
      }
      // A cut-short file (disk full, killed mid-write before the rename existed) is a miss, not an error.
      if (bytes.byteLength % 4 !== 0 || bytes.byteLength === 0) return null;
      const out = new Float32Array(bytes.byteLength / 4);
      new Uint8Array(out.buffer).set(bytes);
      return out;
    },
    async put(key, values) {
      await mkdir(dir, { recursive: true });
      const target = file(key);
      const tmp = `${target}.${process.pid}.tmp`;
      await writeFile(tmp, new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
      await rename(tmp, target);
    },
  };
}
