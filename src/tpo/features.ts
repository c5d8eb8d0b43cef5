// Data preparation: every image becomes its VAE latent (the mean of the encoder's moments times the VAE's
// scaling factor, 0.18215 for SD1.5) and every caption its text-encoder states, computed once and cached by
// content hash, so training itself runs only the UNet. A cache key hashes the image's bytes (or the
// caption's text), the training resolution and a fingerprint of the encoder that made it: editing an
// image, changing the resolution or switching models never reuses a stale entry.

import type { Gpu } from '../gpu/gpu';
import { checkResolution, centerCropResize, imageToCHW, type DecodeImage } from '../data/pixels';
import type { ClipTextModel } from '../models/clip-text';
import { clipTextForward } from '../models/clip-text';
import type { ClipTokenizer } from '../models/tokenizer';
import type { AutoencoderKL } from '../models/vae';
import { vaeEncode } from '../models/vae';
import { sha256HexSync } from '../util/hash';
import { isIgnorableLdmKey, mapLdmKey, type Component, type LdmLayout } from '../models/ldm-keys';
import type { SafetensorsFile } from '../models/safetensors';
import type { ModelFiles } from '../models/weights';
import { Tensor } from '../nn/tensor';
import type { TermRef, TrainExample } from './examples';

/** Where prepared features live: a folder on disk (Node), IndexedDB (browser) or memory (tests). */
export interface FeatureStore {
  get(key: string): Promise<Float32Array | null>;
  put(key: string, values: Float32Array): Promise<void>;
}

export class MemoryFeatureStore implements FeatureStore {
  readonly entries = new Map<string, Float32Array>();
  async get(key: string) {
    return this.entries.get(key) ?? null;
  }
  async put(key: string, values: Float32Array) {
    this.entries.set(key, values.slice());
  }
}

function sha256Hex(data: Uint8Array | string): string {
  return sha256HexSync(typeof data === 'string' ? new TextEncoder().encode(data) : data);
}

/**
 * A fingerprint of a model component's weights that does not read the whole file: its config, then each
 * weight file's size, header and 16 evenly spaced 64 KiB samples. Two fine-tunes of one architecture differ
 * in every tensor, so the samples tell them apart.
 */
export async function componentFingerprint(files: ModelFiles, component: Component): Promise<string> {
  const parts: Uint8Array[] = [];
  const enc = new TextEncoder();
  const paths = files.list().filter((p) => p.startsWith(`${component}/`)).sort();
  for (const p of paths) {
    if (p.endsWith('.json')) parts.push(enc.encode(await files.readText(p)));
    if (!p.endsWith('.safetensors')) continue;
    const src = await files.open(p);
    parts.push(enc.encode(`${p}:${src.size}`));
    parts.push(...(await sampleWindows(src.size, (at, length) => src.read(at, length))));
  }
  return hashParts(parts);
}

/**
 * The same for one component of a single-file (LDM keys) checkpoint: the component's config (from
 * `configs`), the names, dtypes and shapes of its tensors, and samples of its tensors' bytes alone. So a
 * fine-tune that changed only the UNet keeps the cached VAE latents and text states of its base.
 */
export async function singleFileComponentFingerprint(file: SafetensorsFile, configs: ModelFiles, component: Component, layout: LdmLayout): Promise<string> {
  const parts: Uint8Array[] = [];
  const enc = new TextEncoder();
  const config = `${component}/config.json`;
  if (configs.list().includes(config)) parts.push(enc.encode(await configs.readText(config)));
  const own = [...file.tensors.values()].filter((t) => !isIgnorableLdmKey(t.name) && mapLdmKey(t.name, layout)?.component === component);
  own.sort((a, b) => a.begin - b.begin);
  parts.push(enc.encode(JSON.stringify(own.map((t) => [t.name, t.dtype, t.shape]))));
  // The component's bytes as one stream: its tensors in file order, neighbours merged into one range.
  const ranges: { begin: number; end: number }[] = [];
  for (const t of own) {
    const last = ranges[ranges.length - 1];
    if (last && last.end === t.begin) last.end = t.end;
    else ranges.push({ begin: t.begin, end: t.end });
  }
  const size = ranges.reduce((n, r) => n + r.end - r.begin, 0);
  const read = async (at: number, length: number) => {
    const out = new Uint8Array(length);
    let filled = 0;
    let base = 0; // where the current range starts in the stream
    for (const r of ranges) {
      const n = r.end - r.begin;
      if (filled < length && at + filled < base + n) {
        const from = at + filled - base;
        const take = Math.min(n - from, length - filled);
        out.set(await file.source.read(r.begin + from, take), filled);
        filled += take;
      }
      base += n;
    }
    return out;
  };
  parts.push(...(await sampleWindows(size, read)));
  return hashParts(parts);
}

/** The first 64 KiB of a stream of `size` bytes and 16 evenly spaced 64 KiB windows of it. */
async function sampleWindows(size: number, read: (at: number, length: number) => Promise<Uint8Array>): Promise<Uint8Array[]> {
  const sample = 64 * 1024;
  const out = [await read(0, Math.min(size, sample))];
  for (let i = 1; i <= 16; i++) {
    const at = Math.max(0, Math.floor((size * i) / 17) - sample / 2);
    out.push(await read(at, Math.min(sample, size - at)));
  }
  return out;
}

function hashParts(parts: Uint8Array[]): string {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const all = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return sha256Hex(all).slice(0, 32);
}

export interface Encoders {
  gpu: Gpu;
  vae: AutoencoderKL;
  text: ClipTextModel;
  tokenizer: ClipTokenizer;
  /** componentFingerprint of vae/ and text_encoder/. */
  vaeFingerprint: string;
  textFingerprint: string;
}

export interface PrepareOptions {
  resolution: number;
  /** Reads an image named by the data (a path relative to the data file, or absolute). */
  readImage: (path: string) => Promise<Uint8Array>;
  decode: DecodeImage;
  store: FeatureStore;
  onProgress?: (done: number, total: number, what: string) => void;
  /** Captions encoded per text-encoder call. */
  textBatch?: number;
}

/** Cache keys of every row's inputs, by image path and by caption. */
export interface FeatureKeys {
  latent: Map<string, string>;
  text: Map<string, string>;
  /** Shapes of one latent [C, h, w] and one text state [N, D]. */
  latentShape: number[];
  textShape: number[];
}

export function termsOf(examples: readonly TrainExample[]): TermRef[] {
  return examples.flatMap((e) => [e.w, e.l]);
}

/**
 * Encodes what the store does not hold yet and returns the keys of everything. The encoders run one image
 * at a time (the VAE encoder's activations at 512 px are large) and a few captions at a time.
 */
export async function prepareFeatures(enc: Encoders, terms: readonly TermRef[], o: PrepareOptions): Promise<FeatureKeys> {
  checkResolution(o.resolution);
  const images = [...new Set(terms.map((t) => t.image))];
  const captions = [...new Set(terms.map((t) => t.caption))];
  const total = images.length + captions.length;
  let done = 0;
  const factor = 2 ** (enc.vae.config.block_out_channels.length - 1);
  const latentShape = [enc.vae.config.latent_channels, o.resolution / factor, o.resolution / factor];
  const textShape = [enc.tokenizer.maxLength, enc.text.config.hidden_size];
  const latent = new Map<string, string>();
  for (const image of images) {
    const bytes = await o.readImage(image);
    const key = `latent-${(sha256Hex(`${sha256Hex(bytes)}|${o.resolution}|${enc.vaeFingerprint}`)).slice(0, 40)}`;
    latent.set(image, key);
    if (!(await o.store.get(key))) await o.store.put(key, await encodeImage(enc, bytes, image, o));
    o.onProgress?.(++done, total, image);
  }
  const text = new Map<string, string>();
  const missing: string[] = [];
  for (const caption of captions) {
    const key = `text-${(sha256Hex(`${caption}|${enc.tokenizer.maxLength}|${enc.textFingerprint}`)).slice(0, 40)}`;
    text.set(caption, key);
    if (await o.store.get(key)) o.onProgress?.(++done, total, caption);
    else missing.push(caption);
  }
  const batch = o.textBatch ?? 8;
  for (let i = 0; i < missing.length; i += batch) {
    const chunk = missing.slice(i, i + batch);
    const states = await encodeCaptions(enc, chunk);
    const per = states.length / chunk.length;
    for (const [j, caption] of chunk.entries()) {
      await o.store.put(text.get(caption)!, states.subarray(j * per, (j + 1) * per));
      o.onProgress?.(++done, total, caption);
    }
  }
  return { latent, text, latentShape, textShape };
}

async function encodeImage(enc: Encoders, bytes: Uint8Array, name: string, o: PrepareOptions): Promise<Float32Array> {
  const img = centerCropResize(await o.decode(bytes, name), o.resolution);
  const image = Tensor.from(enc.gpu, imageToCHW(img), [1, 3, o.resolution, o.resolution]);
  const moments = vaeEncode(enc.vae, image);
  image.release();
  const values = await moments.read();
  moments.release();
  // Mean = the first latent_channels channels of the moments; the sample's noise is left out, as the
  // trainer's latents are the distribution's mean.
  const mean = values.slice(0, values.length / 2);
  const scale = enc.vae.config.scaling_factor;
  for (let i = 0; i < mean.length; i++) mean[i] *= scale;
  return mean;
}

/** Text-encoder states [n, maxLength, hidden] of captions, as SD1.5 conditions on them. */
export async function encodeCaptions(enc: Pick<Encoders, 'text' | 'tokenizer'>, captions: readonly string[]): Promise<Float32Array> {
  const ids = captions.map((c) => enc.tokenizer.encodeForModel(c));
  const states = clipTextForward(enc.text, ids);
  const values = await states.read();
  states.release();
  return values;
}
