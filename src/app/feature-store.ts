// The prepared-feature cache (VAE latents, text-encoder states) on any Storage: the OPFS in the browser, a
// folder on disk for the CLI. One file `<key>.f32` of little-endian float32 values per cache key.

import type { FeatureStore } from '../tpo/features';
import type { Storage } from './storage';

const KEY = /^[a-z]+-[0-9a-f]+$/;

function fileOf(key: string): string {
  // Keys are made by prepareFeatures ("latent-<hash>"); anything else is a bug, and must not become a path.
  if (!KEY.test(key)) throw new Error(`feature cache key ${JSON.stringify(key)} is malformed`);
  return `${key}.f32`;
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function storageFeatureStore(storage: Storage): FeatureStore {
  return {
    async get(key) {
      const bytes = await storage.read(fileOf(key));
      // Empty or cut short (a write that failed before atomic writes existed, a damaged disk): a miss, so
      // the features are computed again instead of failing the run.
      if (!bytes || bytes.byteLength === 0 || bytes.byteLength % 4 !== 0) return null;
      const out = new Float32Array(bytes.byteLength / 4);
      if (littleEndian) new Uint8Array(out.buffer).set(bytes);
      else {
        const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
      }
      return out;
    },
    async put(key, values) {
      let bytes: Uint8Array;
      if (littleEndian) bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      else {
        bytes = new Uint8Array(values.length * 4);
        const view = new DataView(bytes.buffer);
        for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i], true);
      }
      await storage.write(fileOf(key), bytes);
    },
  };
}
