// Loading model weights onto the GPU. Each network declares the exact parameters its config implies
// (name -> shape, names as in diffusers' state dicts); a file is checked against that list before anything
// is uploaded, so a wrong or damaged model fails with one message listing every missing, unexpected and
// mis-shaped tensor. Sources: a diffusers-layout folder (any of its weight-file variants) or a single-file
// LDM checkpoint (keys renamed by ldm-keys.ts).

import type { Gpu } from '../gpu/gpu';
import { Tensor } from '../nn/tensor';
import { isIgnorableLdmKey, mapLdmKey, type Component, type LdmLayout } from './ldm-keys';
import { fromFloat32, SafetensorsFile, writeSafetensors, type ByteSource } from './safetensors';

import type { ParamShapes } from '../nn/layers/layer';

export type { ParamShapes };

/** Read access to a model folder: a directory on disk (Node) or the files of a picked folder (browser). */
export interface ModelFiles {
  /** Display name for messages. */
  name: string;
  /** Paths relative to the folder, '/'-separated. */
  list(): string[];
  open(path: string): Promise<ByteSource>;
  readText(path: string): Promise<string>;
  /** Closes what open() opened (files on disk); weights already loaded stay on the GPU. */
  close?(): Promise<void>;
}

export class ModelLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelLoadError';
  }
}

/** Where one parameter's values come from. */
export interface TensorRef {
  file: SafetensorsFile;
  key: string;
  shape: number[];
}

const shapeText = (s: readonly number[]) => `[${s.join(', ')}]`;

/** Compares what a network expects with what a file offers; throws listing every problem at once. */
export function checkParams(label: string, expected: ParamShapes, found: Map<string, number[]>): void {
  const missing: string[] = [];
  const misShaped: string[] = [];
  for (const [name, shape] of expected) {
    const got = found.get(name);
    if (!got) missing.push(name);
    else if (shapeText(got) !== shapeText(shape)) misShaped.push(`${name}: file has ${shapeText(got)}, the config needs ${shapeText(shape)}`);
  }
  const unexpected = [...found.keys()].filter((k) => !expected.has(k));
  if (missing.length + misShaped.length + unexpected.length === 0) return;
  const list = (title: string, items: string[]) =>
    items.length ? `\n  ${title} (${items.length}): ${items.slice(0, 12).join('; ')}${items.length > 12 ? `; and ${items.length - 12} more` : ''}` : '';
  throw new ModelLoadError(
    `${label} does not match its config:` +
      list('missing', missing) +
      list('mis-shaped', misShaped) +
      list('unexpected', unexpected) +
      '\nCheck that the weights and config.json belong to the same Stable Diffusion 1.x model.',
  );
}

export interface UploadOptions {
  onProgress?: (done: number, total: number) => void;
  /**
   * Store every matrix and conv kernel (parameters of 2 or more dimensions) as float16, half the memory;
   * vectors (biases, norms) stay float32. Only for networks whose matrices feed matmul and conv2d alone
   * (the UNet); float16 values are rounded to nearest. 'as-stored': float16 where the file stores float16.
   */
  halfWeights?: boolean | 'as-stored';
}

/**
 * Whether frozen UNet weights should be stored as float16 on this GPU: where the adapter has
 * 'shader-f16' (the kernels themselves read them with unpack2x16float, which any adapter has).
 */
export function preferHalfWeights(gpu: Gpu): boolean {
  return gpu.features.has('shader-f16');
}

/**
 * Tensors of the given shapes holding nothing yet, stored as `upload` stores them (half: float16 matrices):
 * the weights of a model run on a counting device (gpu/counting.ts) for a memory plan.
 */
export function placeholderWeights(gpu: Gpu, shapes: ParamShapes, half: boolean): Map<string, Tensor> {
  return new Map(
    [...shapes].map(([name, shape]) => {
      const n = shape.reduce((a, b) => a * b, 1);
      return [name, half && shape.length >= 2 ? new Tensor(gpu, gpu.buffer(Math.ceil(n / 2) * 4), shape, true, 'f16') : Tensor.empty(gpu, shape)];
    }),
  );
}

/** Uploads every expected parameter as a GPU tensor, float32 or (halfWeights) float16 matrices. */
async function upload(gpu: Gpu, expected: ParamShapes, refs: Map<string, TensorRef>, options: UploadOptions = {}) {
  const out = new Map<string, Tensor>();
  let done = 0;
  const onProgress = options.onProgress;
  try {
    for (const [name, shape] of expected) {
      const ref = refs.get(name)!;
      const values = await ref.file.readF32(ref.key);
      const half = options.halfWeights === 'as-stored' ? ref.file.info(ref.key).dtype === 'F16' : options.halfWeights;
      out.set(name, half && shape.length >= 2 ? Tensor.fromHalf(gpu, values, shape) : Tensor.from(gpu, values, shape));
      onProgress?.(++done, expected.size);
    }
  } catch (e) {
    for (const t of out.values()) t.release();
    throw e;
  }
  return out;
}

/**
 * A network's weights as a diffusers weight file (diffusion_pytorch_model.safetensors): the state-dict
 * names the loaders read, so a trained UNet or VAE placed in a diffusers folder beside its config.json
 * loads like any other. float32 by default (exact); 'F16' halves the file.
 */
export async function encodeStateDict(weights: ReadonlyMap<string, Tensor>, dtype: 'F32' | 'F16' = 'F32', metadata?: Record<string, string>): Promise<Uint8Array> {
  const tensors = [];
  for (const [name, t] of weights) tensors.push({ name, dtype, shape: [...t.shape], data: fromFloat32(await t.read(), dtype) });
  return writeSafetensors(tensors, { format: 'pt', ...metadata });
}

/** Weight-file names of a diffusers component, preferred first. */
const WEIGHT_FILES: Record<Component, string[]> = {
  unet: ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors'],
  vae: ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors'],
  text_encoder: ['model.safetensors', 'model.fp16.safetensors'],
};

/** Reads a component's config.json from a diffusers folder. */
export async function readConfig<T>(files: ModelFiles, component: Component | 'scheduler' | 'tokenizer', file = 'config.json'): Promise<T> {
  const path = `${component}/${component === 'scheduler' ? 'scheduler_config.json' : file}`;
  if (!files.list().includes(path)) {
    throw new ModelLoadError(`${files.name}: ${path} is missing; a diffusers Stable Diffusion folder has one per component.`);
  }
  try {
    return JSON.parse(await files.readText(path)) as T;
  } catch (e) {
    throw new ModelLoadError(`${files.name}: ${path} is not valid JSON (${(e as Error).message}).`);
  }
}

/**
 * diffusers before 0.14 named the VAE's mid-block attention query / key / value / proj_attn, and many SD1.5
 * folders still ship those names; today's loader renames them to to_q / to_k / to_v / to_out.0.
 */
function legacyFolderKey(component: Component, key: string): string {
  if (component !== 'vae') return key;
  const legacy: Record<string, string> = { query: 'to_q', key: 'to_k', value: 'to_v', proj_attn: 'to_out.0' };
  return key.replace(/(mid_block\.attentions\.0\.)(query|key|value|proj_attn)\./, (_, head: string, name: string) => `${head}${legacy[name]}.`);
}

/**
 * Loads one component of a diffusers folder. `variant: 'fp16'` prefers the *.fp16.safetensors file; either
 * way the other file is used when only it exists.
 */
export async function loadFolderComponent(
  gpu: Gpu,
  files: ModelFiles,
  component: Component,
  expected: ParamShapes,
  options: UploadOptions & { variant?: 'fp16' } = {},
): Promise<Map<string, Tensor>> {
  const { refs, source } = await folderComponentRefs(files, component, expected, options.variant);
  try {
    return await upload(gpu, expected, refs, options);
  } finally {
    await source.close?.(); // everything is on the GPU now (or failed): the file is not needed
  }
}

/**
 * Checks a component's weight file against its config without reading any weight: the file is there, its
 * safetensors header is sound and names every expected tensor with its shape. Cheap (headers only), so
 * the CLI runs it before opening the GPU.
 */
export async function checkFolderComponent(files: ModelFiles, component: Component, expected: ParamShapes, variant?: 'fp16'): Promise<void> {
  const { source } = await folderComponentRefs(files, component, expected, variant);
  await source.close?.();
}

/**
 * Opens the component's weight file and maps every expected parameter to its tensor (checked). On a
 * problem the file is closed before the error leaves; otherwise the caller closes `source`.
 */
async function folderComponentRefs(
  files: ModelFiles,
  component: Component,
  expected: ParamShapes,
  variant?: 'fp16',
): Promise<{ refs: Map<string, TensorRef>; source: ByteSource }> {
  const names = WEIGHT_FILES[component];
  const order = variant === 'fp16' ? [names[1], names[0]] : names;
  const present = order.map((f) => `${component}/${f}`).filter((p) => files.list().includes(p));
  if (present.length === 0) {
    throw new ModelLoadError(
      `${files.name}: no weights for ${component} (looked for ${names.map((n) => `${component}/${n}`).join(', ')}). ` +
        'Only .safetensors weights are read; convert .bin/.ckpt files first.',
    );
  }
  const source = await files.open(present[0]);
  try {
    const file = await SafetensorsFile.open(source);
    const refs = new Map<string, TensorRef>();
    for (const [key, info] of file.tensors) {
      if (key.endsWith('embeddings.position_ids')) continue; // a buffer older transformers saved, not a weight
      refs.set(legacyFolderKey(component, key), { file, key, shape: info.shape });
    }
    checkParams(`${files.name}/${present[0]}`, expected, new Map([...refs].map(([k, r]) => [k, r.shape])));
    return { refs, source };
  } catch (e) {
    await source.close?.();
    throw e;
  }
}

/**
 * Loads one component from a single-file checkpoint (LDM keys). Keys of the other components, and known
 * non-weight buffers, are ignored; a key that belongs to no component is reported as unexpected.
 */
export async function loadSingleFileComponent(
  gpu: Gpu,
  file: SafetensorsFile,
  component: Component,
  expected: ParamShapes,
  layout: LdmLayout,
  options: UploadOptions | ((done: number, total: number) => void) = {},
): Promise<Map<string, Tensor>> {
  const uploadOptions = typeof options === 'function' ? { onProgress: options } : options;
  return upload(gpu, expected, singleFileComponentRefs(file, component, expected, layout), uploadOptions);
}

/**
 * Checks one component of a single-file checkpoint against its config without reading any weight: every
 * expected tensor is there with its shape (headers only, like checkFolderComponent).
 */
export function checkSingleFileComponent(file: SafetensorsFile, component: Component, expected: ParamShapes, layout: LdmLayout): void {
  singleFileComponentRefs(file, component, expected, layout);
}

/** The first name of every tensor in a diffusers UNet, VAE or CLIP text encoder weight file. */
const DIFFUSERS_TOP_LEVEL = /^(text_model|encoder|decoder|quant_conv|post_quant_conv|conv_in|conv_out|conv_norm_out|time_embedding|down_blocks|up_blocks|mid_block)\./;

/**
 * The single file's tensors of one component under their diffusers names (checked against `expected`). The
 * file's own names map through ldm-keys.ts; `key` keeps the name in the file.
 */
export function singleFileComponentRefs(file: SafetensorsFile, component: Component, expected: ParamShapes, layout: LdmLayout): Map<string, TensorRef> {
  const refs = new Map<string, TensorRef>();
  const unknown: string[] = [];
  let mapped = 0;
  for (const [key, info] of file.tensors) {
    if (isIgnorableLdmKey(key)) continue;
    const m = mapLdmKey(key, layout);
    if (!m) {
      unknown.push(key);
      continue;
    }
    mapped++;
    if (m.component !== component) continue;
    const squeezed = m.squeeze1x1 && info.shape.length === 4 && info.shape[2] === 1 && info.shape[3] === 1;
    refs.set(m.key, { file, key, shape: squeezed ? info.shape.slice(0, 2) : info.shape });
  }
  if (mapped === 0 && unknown.length > 0 && unknown.every((k) => DIFFUSERS_TOP_LEVEL.test(k))) {
    // Nothing in LDM naming, everything in diffusers naming: one weight file of a diffusers folder.
    throw new ModelLoadError(
      `${file.source.name}: none of its ${file.tensors.size} tensors is named like a single-file Stable Diffusion checkpoint's ` +
        '(model.diffusion_model.*, first_stage_model.*, cond_stage_model.transformer.*). If it is one file of a diffusers ' +
        'folder (unet/, vae/, text_encoder/), open the whole folder instead.',
    );
  }
  if (unknown.length > 0) {
    throw new ModelLoadError(
      `${file.source.name}: ${unknown.length} tensors belong to no Stable Diffusion 1.x component ` +
        `(${unknown.slice(0, 8).join(', ')}${unknown.length > 8 ? ', ...' : ''}). Is this an SDXL, SD2 or inpainting checkpoint?`,
    );
  }
  checkParams(`${file.source.name} (${component})`, expected, new Map([...refs].map(([k, r]) => [k, r.shape])));
  return refs;
}

/**
 * A model folder picked in the browser (<input webkitdirectory>, a directory handle, drag and drop): Files
 * with paths relative to the model folder itself (the caller drops the picked folder's own name).
 */
export function browserModelFiles(name: string, files: { path: string; file: Blob }[]): ModelFiles {
  const strip = (p: string) => p.replace(/^\/+/, '');
  const map = new Map(files.map((f) => [strip(f.path), f.file]));
  const get = (path: string) => {
    const blob = map.get(path);
    if (!blob) throw new ModelLoadError(`${name}: ${path} is missing.`);
    return blob;
  };
  return {
    name,
    list: () => [...map.keys()],
    open: async (path) => {
      const blob = get(path);
      return {
        name: path,
        size: blob.size,
        read: async (offset, length) => new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer()),
      };
    },
    readText: (path) => get(path).text(),
  };
}
