// LoRA files in the formats the Stable Diffusion tools load, and back.
//
//   kohya (Automatic1111, ComfyUI, kohya-ss, and diffusers through its kohya converter):
//     lora_unet_<module path, dots as underscores>.lora_down.weight  [r, in]   ([r, in, 1, 1] for a 1x1 conv)
//     lora_unet_<...>.lora_up.weight                                 [out, r]  ([out, r, 1, 1])
//     lora_unet_<...>.alpha                                          0-d
//     __metadata__: kohya's ss_* fields, sshs_model_hash / sshs_legacy_hash, modelspec.*, our tpo_*.
//   diffusers / PEFT (pytorch_lora_weights.safetensors, what pipeline.load_lora_weights reads):
//     unet.<module path>.lora_A.weight / .lora_B.weight, same shapes; no per-module alpha (see encode).
//
// Reading also takes the older diffusers spellings (unet.<path>.lora.down.weight, ...processor.to_q_lora.down
// .weight, ...lora_linear_layer.down.weight) and checks every key and shape against the UNet it is meant for.
// Files for another architecture, text-encoder LoRAs and unknown keys are refused with what was found.
// Plain data and a synchronous SHA-256: runs the same in the browser and in Node.

import type { Gpu } from '../gpu/gpu';
import { Tensor } from '../nn/tensor';
import { DEFAULT_TARGETS, kohyaName, Lora, type LoraModule, loraTargets, OPTIONAL_TARGETS } from './lora';
import { fromFloat32, type SafetensorsFile, type TensorToWrite, writeSafetensors } from './safetensors';
import { sha256HexSync } from '../util/hash';
import { unetParamShapes, type UNetConfig } from './unet';

/** One LoRA module on the host. down is A, [rank, in] row-major; up is B, [out, rank]. */
export interface HostLoraModule {
  down: Float32Array;
  up: Float32Array;
  rank: number;
  alpha: number;
  in: number;
  out: number;
  /** The base layer is a 1x1 conv: both formats store its matrices 4-D. */
  conv1x1: boolean;
}

/** Keyed by diffusers module path, e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q". */
export type HostLora = Map<string, HostLoraModule>;

export type LoraFormat = 'kohya' | 'diffusers';

/** What the trainer knows about a run; every field optional, each written into the file's metadata. */
export interface LoraTrainingInfo {
  title?: string;
  /** What the base model's UNet predicts (its scheduler config): epsilon (SD1.x, the default) or v_prediction. */
  predictionType?: 'epsilon' | 'v_prediction';
  method?: string;
  beta?: number;
  kappa?: number | null;
  principles?: string[];
  datasetSize?: number;
  pairs?: number;
  steps?: number;
  epochs?: number;
  learningRate?: number;
  batchSize?: number;
  gradAccum?: number;
  resolution?: number;
  seed?: number;
  /** Unix seconds. */
  trainingStartedAt?: number;
  trainingEndedAt?: number;
  baseModelName?: string;
  targets?: string[];
  lrScheduler?: string;
  warmupSteps?: number;
  optimizer?: string;
}

export interface EncodeLoraOptions {
  format: LoraFormat;
  /** Storage of the matrices and alphas (default fp16, what kohya's --save_precision fp16 writes). */
  dtype?: 'fp16' | 'fp32';
  info?: LoraTrainingInfo;
  /** Metadata carried over from a source file; our computed fields and `info` take precedence. */
  metadata?: Record<string, string>;
}

export interface DecodedLora {
  lora: HostLora;
  format: 'kohya' | 'diffusers' | 'diffusers-old';
  metadata: Record<string, string>;
}

/** A LoRA file that does not fit the UNet; `shapeMismatch` when the names fit but the widths do not. */
export class LoraFileError extends Error {
  constructor(
    message: string,
    readonly shapeMismatch = false,
  ) {
    super(message);
    this.name = 'LoraFileError';
  }
}


// ---- metadata ----

/** Python's repr of a float, as kohya's str(value) writes numbers into ss_* fields ("2.0", "1e-05"). */
export function pythonFloat(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const abs = Math.abs(x);
  if (abs !== 0 && (abs < 1e-4 || abs >= 1e16)) {
    const [mantissa, exponent] = x.toExponential().split('e');
    const sign = exponent.startsWith('-') ? '-' : '+';
    return `${mantissa}e${sign}${exponent.replace(/^[+-]/, '').padStart(2, '0')}`;
  }
  return Number.isInteger(x) ? `${x === 0 ? 0 : x}.0` : String(x);
}

/** The one value all modules share, or null when they differ. */
function common<T>(values: T[]): T | null {
  return values.length > 0 && values.every((v) => v === values[0]) ? values[0] : null;
}

/** Keys we compute: never carried over from a source file (stale hashes, another format's fields). */
const RECOMPUTED = new Set(['sshs_model_hash', 'sshs_legacy_hash', 'modelspec.hash_sha256', 'lora_adapter_metadata', 'format']);

function isoDate(unixSeconds: number): string {
  return `${new Date(Math.floor(unixSeconds) * 1000).toISOString().slice(0, 19)}+00:00`;
}

function trainingMetadata(lora: HostLora, info: LoraTrainingInfo, carried: Record<string, string>): Record<string, string> {
  const m: Record<string, string> = {};
  const put = (key: string, value: string | undefined) => {
    if (value !== undefined) m[key] = value;
  };
  const int = (v: number | undefined) => (v === undefined ? undefined : String(Math.round(v)));
  const float = (v: number | undefined) => (v === undefined ? undefined : pythonFloat(v));
  const modules = [...lora.values()];
  const rank = common(modules.map((x) => x.rank));
  const alpha = common(modules.map((x) => x.alpha));

  // kohya's own fields (train_network.py), written as its str() writes them. "Dynamic" is what kohya's
  // resize_lora writes when ranks differ between modules.
  for (const [k, v] of Object.entries(carried)) if (k.startsWith('ss_')) m[k] = v;
  put('ss_network_module', 'networks.lora');
  put('ss_network_dim', rank === null ? 'Dynamic' : String(rank));
  put('ss_network_alpha', alpha === null ? 'Dynamic' : pythonFloat(alpha));
  put('ss_v2', 'False');
  put('ss_base_model_version', 'sd_v1');
  put('ss_output_name', info.title);
  put('ss_sd_model_name', info.baseModelName);
  put('ss_training_started_at', float(info.trainingStartedAt));
  put('ss_training_finished_at', float(info.trainingEndedAt));
  put('ss_learning_rate', float(info.learningRate));
  put('ss_unet_lr', float(info.learningRate));
  put('ss_num_train_images', int(info.datasetSize));
  put('ss_num_epochs', int(info.epochs));
  put('ss_epoch', int(info.epochs));
  put('ss_steps', int(info.steps));
  put('ss_max_train_steps', int(info.steps));
  put('ss_batch_size_per_device', int(info.batchSize));
  put('ss_gradient_accumulation_steps', int(info.gradAccum));
  if (info.batchSize !== undefined) put('ss_total_batch_size', int(info.batchSize * (info.gradAccum ?? 1)));
  if (info.resolution !== undefined) put('ss_resolution', `(${info.resolution}, ${info.resolution})`);
  put('ss_seed', int(info.seed));
  put('ss_lr_scheduler', info.lrScheduler);
  put('ss_lr_warmup_steps', int(info.warmupSteps));
  put('ss_optimizer', info.optimizer);

  // Ours.
  for (const [k, v] of Object.entries(carried)) if (k.startsWith('tpo_')) m[k] = v;
  put('tpo_method', info.method);
  put('tpo_beta', info.beta === undefined ? undefined : String(info.beta));
  put('tpo_kappa', info.kappa === undefined ? undefined : JSON.stringify(info.kappa));
  put('tpo_principles', info.principles && JSON.stringify(info.principles));
  put('tpo_dataset_size', int(info.datasetSize));
  put('tpo_pairs', int(info.pairs));
  put('tpo_targets', info.targets && JSON.stringify(info.targets));

  // Stability AI's ModelSpec 1.0.1, as kohya's sai_model_spec.py fills it for an SD1 LoRA.
  for (const [k, v] of Object.entries(carried)) if (k.startsWith('modelspec.')) m[k] = v;
  put('modelspec.sai_model_spec', '1.0.1');
  put('modelspec.architecture', 'stable-diffusion-v1/lora');
  put('modelspec.implementation', 'diffusers');
  if (info.title !== undefined || !m['modelspec.title']) put('modelspec.title', info.title ?? 'TPO Lab LoRA');
  if (info.resolution !== undefined || !m['modelspec.resolution']) put('modelspec.resolution', `${info.resolution ?? 512}x${info.resolution ?? 512}`);
  put('modelspec.prediction_type', info.predictionType ?? 'epsilon');
  const when = info.trainingEndedAt ?? info.trainingStartedAt;
  if (when !== undefined) put('modelspec.date', isoDate(when));

  for (const [k, v] of Object.entries(carried)) if (!(k in m)) m[k] = v;
  return m;
}

// ---- encoding ----

function checkModule(path: string, m: HostLoraModule): void {
  const ok = (n: number) => Number.isSafeInteger(n) && n > 0;
  if (!ok(m.rank) || !ok(m.in) || !ok(m.out)) throw new Error(`LoRA module ${path}: rank ${m.rank}, in ${m.in}, out ${m.out} must be positive integers`);
  if (m.down.length !== m.rank * m.in) throw new Error(`LoRA module ${path}: down holds ${m.down.length} values, [${m.rank}, ${m.in}] needs ${m.rank * m.in}`);
  if (m.up.length !== m.out * m.rank) throw new Error(`LoRA module ${path}: up holds ${m.up.length} values, [${m.out}, ${m.rank}] needs ${m.out * m.rank}`);
  if (!Number.isFinite(m.alpha)) throw new Error(`LoRA module ${path}: alpha ${m.alpha} is not a finite number`);
}

function encodeValues(path: string, what: string, values: Float32Array, dtype: 'F16' | 'F32'): Uint8Array {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isFinite(v)) throw new Error(`LoRA module ${path}: ${what} holds ${v} at index ${i}; refusing to write a broken LoRA`);
    if (dtype === 'F16' && Math.abs(v) > 65504) throw new Error(`LoRA module ${path}: ${what} holds ${v}, beyond float16's range; export with --dtype fp32`);
  }
  return fromFloat32(values, dtype);
}

/**
 * Serialises a LoRA as kohya's or diffusers' safetensors file. Modules are written in path order; 1x1-conv
 * modules 4-D. The kohya hashes are computed as kohya's train_util.precalculate_safetensors_hashes does:
 * over the file serialised with only the ss_* metadata (so editing other metadata keeps them valid).
 */
export function encodeLora(lora: HostLora, options: EncodeLoraOptions): Uint8Array {
  if (lora.size === 0) throw new Error('encodeLora: the LoRA has no modules');
  const dtype = (options.dtype ?? 'fp16') === 'fp16' ? 'F16' : 'F32';
  const tensors: TensorToWrite[] = [];
  const paths = [...lora.keys()].sort();
  for (const path of paths) {
    const m = lora.get(path)!;
    checkModule(path, m);
    const tail = m.conv1x1 ? [1, 1] : [];
    const downShape = [m.rank, m.in, ...tail];
    const upShape = [m.out, m.rank, ...tail];
    const down = encodeValues(path, 'down', m.down, dtype);
    const up = encodeValues(path, 'up', m.up, dtype);
    if (options.format === 'kohya') {
      const name = kohyaName(path);
      tensors.push({ name: `${name}.lora_down.weight`, dtype, shape: downShape, data: down });
      tensors.push({ name: `${name}.lora_up.weight`, dtype, shape: upShape, data: up });
      // kohya registers alpha as a 0-d buffer and casts it with the weights at save time.
      tensors.push({ name: `${name}.alpha`, dtype, shape: [], data: encodeValues(path, 'alpha', Float32Array.of(m.alpha), dtype) });
    } else {
      tensors.push({ name: `unet.${path}.lora_A.weight`, dtype, shape: downShape, data: down });
      tensors.push({ name: `unet.${path}.lora_B.weight`, dtype, shape: upShape, data: up });
    }
  }

  const carried = Object.fromEntries(Object.entries(options.metadata ?? {}).filter(([k]) => !RECOMPUTED.has(k)));
  const metadata = trainingMetadata(lora, options.info ?? {}, carried);
  if (options.format === 'diffusers') {
    // diffusers (loaders/lora_base.py write_lora_layers) marks its files "pt" and keeps the adapter's
    // LoraConfig as JSON under lora_adapter_metadata, keys prefixed by component ("unet.r"). Its loader
    // (load_lora_adapter -> _create_lora_config) builds the LoraConfig from exactly that when present; with
    // no metadata it takes lora_alpha = r, scale 1. A per-module ".alpha" tensor cannot carry it instead:
    // load_lora_weights refuses any key without "lora" in it. So rank and alpha live here.
    const ranks = new Map(paths.map((p) => [p, lora.get(p)!.rank]));
    const alphas = new Map(paths.map((p) => [p, lora.get(p)!.alpha]));
    const r = mostCommon([...ranks.values()]);
    const alpha = mostCommon([...alphas.values()]);
    const config = {
      'unet.alpha_pattern': Object.fromEntries([...alphas].filter(([, a]) => a !== alpha)),
      'unet.lora_alpha': alpha,
      'unet.r': r,
      'unet.rank_pattern': Object.fromEntries([...ranks].filter(([, k]) => k !== r)),
      'unet.target_modules': paths,
    };
    metadata.format = 'pt';
    metadata.lora_adapter_metadata = JSON.stringify(config, null, 2);
  }

  // kohya: hash the file as it would be with the ss_* metadata alone. Both serialisations put the same
  // tensors in the same order, so the data section (what sshs_model_hash covers) is the same bytes; the
  // legacy hash reads a fixed byte range of the whole file and so depends on the ss_-only header's length.
  const ssOnly = Object.fromEntries(Object.entries(metadata).filter(([k]) => k.startsWith('ss_')));
  const forHash = writeSafetensors(tensors, ssOnly);
  const headerEnd = 8 + Number(new DataView(forHash.buffer, forHash.byteOffset, 8).getBigUint64(0, true));
  metadata.sshs_model_hash = sha256HexSync(forHash.subarray(headerEnd));
  metadata.sshs_legacy_hash = sha256HexSync(forHash.subarray(0x100000, 0x110000)).slice(0, 8);
  return writeSafetensors(tensors, metadata);
}

function mostCommon(values: number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best = values[0];
  for (const [v, c] of counts) if (c > counts.get(best)!) best = v;
  return best;
}

// ---- decoding ----

type Part = 'down' | 'up' | 'alpha';
type Spelling = 'kohya' | 'diffusers' | 'diffusers-old';

interface ParsedKey {
  key: string;
  module: string;
  part: Part;
  spelling: Spelling;
}

/** Old diffusers spellings name the attention projections through the processor ("attn1.processor.to_out"). */
function normaliseModule(path: string): string {
  const p = path.replace(/\.processor\./g, '.');
  return p.endsWith('.to_out') ? `${p}.0` : p;
}

/** A diffusers-style key (with or without the "unet." prefix) as module + part, or null. */
function parseDiffusersKey(key: string): ParsedKey | null {
  const k = key.startsWith('unet.') ? key.slice(5) : key;
  let m = /^(.+)\.lora_([AB])\.weight$/.exec(k);
  if (m) return { key, module: normaliseModule(m[1]), part: m[2] === 'A' ? 'down' : 'up', spelling: 'diffusers' };
  m = /^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/.exec(k);
  if (m) return { key, module: normaliseModule(`${m[1]}.${m[2]}`), part: m[3] as Part, spelling: 'diffusers-old' };
  m = /^(.+)\.(?:lora|lora_linear_layer)\.(down|up)\.weight$/.exec(k);
  if (m) return { key, module: normaliseModule(m[1]), part: m[2] as Part, spelling: 'diffusers-old' };
  m = /^(.+)\.alpha$/.exec(k);
  if (m && !k.startsWith('lora_')) return { key, module: normaliseModule(m[1]), part: 'alpha', spelling: 'diffusers' };
  return null;
}

const shapeText = (s: readonly number[]) => `[${s.join(', ')}]`;

function examples(keys: string[], n = 4): string {
  return `${keys.slice(0, n).join(', ')}${keys.length > n ? `, ... (${keys.length} in all)` : ''}`;
}

/** "384 tensors: 256 lora_unet_*, 128 unet.*": what a refused file holds, by key prefix. */
function describeKeys(names: string[]): string {
  const groups = new Map<string, number>();
  for (const n of names) {
    const m = /^(lora_[a-z]+\d*_|[A-Za-z_]+\d*\.)/.exec(n);
    const g = m ? `${m[1]}*` : n.replace(/\d+/g, 'N');
    groups.set(g, (groups.get(g) ?? 0) + 1);
  }
  const parts = [...groups].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([g, c]) => `${c} ${g}`);
  return `${names.length} tensors: ${parts.join(', ')}${groups.size > 6 ? ' and others' : ''}`;
}

/** What the file's metadata says about its base model when that is not SD1.x, for messages ("" otherwise). */
function metadataHint(metadata: Record<string, string>): string {
  const base = metadata.ss_base_model_version;
  const arch = metadata['modelspec.architecture'];
  const other = (base !== undefined && !base.startsWith('sd_v1')) || (arch !== undefined && !arch.startsWith('stable-diffusion-v1')) || metadata.ss_v2 === 'True';
  if (!other) return '';
  const said = ['ss_base_model_version', 'modelspec.architecture', 'ss_v2'].filter((k) => metadata[k] !== undefined).map((k) => `${k}=${metadata[k]}`);
  return ` (its metadata says ${said.join(', ')})`;
}

/** Refusals for files made for other models, by their key names alone. */
function architectureProblems(names: string[]): string[] {
  const problems: string[] = [];
  const te = names.filter((n) => /^(lora_te\d*_|lora_prior_te_|text_encoder(_\d)?\.|te\d?_text_model)/.test(n));
  const sdxlKeys = names.filter(
    (n) =>
      /^(lora_te[12]_|text_encoder_2\.)/.test(n) ||
      /^lora_unet_(input_blocks|output_blocks|middle_block|label_emb)_/.test(n) ||
      /^(unet\.)?(add_embedding|input_blocks|output_blocks|middle_block)\./.test(n) ||
      /transformer_blocks[._][1-9]/.test(n) ||
      /^lora_unet_.*_add_embedding_/.test(n),
  );
  if (sdxlKeys.length) {
    problems.push(
      `it is an SDXL LoRA (keys in SDXL's layout: ${examples(sdxlKeys, 3)}); SDXL has lora_unet_input_blocks_* / lora_te2_* keys ` +
        'or up to 10 transformer_blocks per attention, SD1.x has one',
    );
  }
  const deepTe = te.filter((n) => {
    const m = /encoder_layers_(\d+)_|encoder\.layers\.(\d+)\./.exec(n);
    return m !== null && Number(m[1] ?? m[2]) >= 12;
  });
  if (deepTe.length && !sdxlKeys.length) {
    problems.push(`it is an SD2.x LoRA: its text-encoder keys reach layer 12 or deeper (${examples(deepTe, 2)}); SD1.x's CLIP text encoder has 12 layers, SD2's OpenCLIP-H 23`);
  }
  if (te.length) {
    problems.push(`it holds ${te.length} text-encoder keys (${examples(te, 2)}): text-encoder LoRAs are not supported, only UNet LoRAs`);
  }
  const transformer = names.filter((n) => /^(lora_transformer_|transformer\.|diffusion_model\.(double|single)_blocks)/.test(n));
  if (transformer.length) problems.push(`it is a LoRA for a transformer model such as SD3 or Flux (${examples(transformer, 2)})`);
  return problems;
}

interface AdapterConfig {
  r?: number;
  lora_alpha?: number;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  use_rslora?: boolean;
  use_dora?: boolean;
}

/** diffusers' lora_adapter_metadata: the unet's LoraConfig, keys "unet.*" (pipeline save) or bare (model save). */
function adapterConfig(where: string, metadata: Record<string, string>): AdapterConfig | null {
  const raw = metadata.lora_adapter_metadata;
  if (raw === undefined) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    throw new LoraFileError(`${where}: lora_adapter_metadata is not valid JSON (${(e as Error).message})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new LoraFileError(`${where}: lora_adapter_metadata is not a JSON object`);
  const all = parsed as Record<string, unknown>;
  const prefixed = Object.keys(all).some((k) => k.startsWith('unet.'));
  const pick = (k: string) => (prefixed ? all[`unet.${k}`] : all[k]);
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  const pattern = (v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).filter(([, x]) => num(x) !== undefined)) as Record<string, number> : undefined;
  return {
    r: num(pick('r')),
    lora_alpha: num(pick('lora_alpha')),
    rank_pattern: pattern(pick('rank_pattern')),
    alpha_pattern: pattern(pick('alpha_pattern')),
    use_rslora: pick('use_rslora') === true,
    use_dora: pick('use_dora') === true,
  };
}

/** PEFT's pattern lookup: a key matches a module whose path is it or ends with "." + it (keys may be regexes). */
function patternValue(patterns: Record<string, number> | undefined, module: string): number | undefined {
  if (!patterns) return undefined;
  for (const [key, value] of Object.entries(patterns)) {
    const k = key.startsWith('^') ? key.slice(1) : key;
    if (module === k || module.endsWith(`.${k}`)) return value;
    try {
      if (new RegExp(`^(.*\\.)?(${k})$`).test(module)) return value;
    } catch {
      // not a regex: the plain comparison above decided
    }
  }
  return undefined;
}

/**
 * Reads a LoRA file in any supported spelling and checks it against the UNet: every key must belong to a
 * LoRA module of one of the UNet's attention-block linear or 1x1-conv layers, with that layer's widths.
 * Anything else is refused, naming the keys and saying what the file looks like.
 */
export async function decodeLora(file: SafetensorsFile, unet: UNetConfig): Promise<DecodedLora> {
  const where = file.source.name;
  const names = file.names;
  const metadata: Record<string, string> = { ...file.metadata };
  if (names.length === 0) throw new LoraFileError(`${where}: holds no tensors; not a LoRA`);
  const problems = architectureProblems(names);
  if (problems.length) {
    throw new LoraFileError(`${where}: not a LoRA for this Stable Diffusion 1.x UNet: ${problems.join('; ')}${metadataHint(metadata)}. The file holds ${describeKeys(names)}.`);
  }

  const candidates = loraTargets(unet, [...DEFAULT_TARGETS, ...OPTIONAL_TARGETS]);
  const byKohya = new Map([...candidates.keys()].map((m) => [kohyaName(m), m]));
  // Any UNet weight (resnet convs, time embedding...): named apart from keys that fit nothing at all.
  const unetModules = new Map([...unetParamShapes(unet).keys()].filter((k) => k.endsWith('.weight')).map((k) => [k.slice(0, -'.weight'.length), k]));
  const byKohyaAny = new Map([...unetModules.keys()].map((m) => [kohyaName(m), m]));

  const parsed: ParsedKey[] = [];
  const unknown: string[] = [];
  const untrainable = new Set<string>();
  for (const key of names) {
    const k = /^(lora_unet_[A-Za-z0-9_]+)\.(lora_down\.weight|lora_up\.weight|alpha)$/.exec(key);
    if (k) {
      const module = byKohya.get(k[1]);
      if (module) parsed.push({ key, module, part: k[2] === 'alpha' ? 'alpha' : k[2] === 'lora_down.weight' ? 'down' : 'up', spelling: 'kohya' });
      else if (byKohyaAny.has(k[1])) untrainable.add(byKohyaAny.get(k[1])!);
      else unknown.push(key);
      continue;
    }
    const d = key.startsWith('lora_') ? null : parseDiffusersKey(key);
    if (d && candidates.has(d.module)) parsed.push(d);
    else if (d && unetModules.has(d.module)) untrainable.add(d.module);
    else unknown.push(key);
  }
  const refusals: string[] = [];
  if (untrainable.size) {
    refusals.push(
      `it has LoRA weights for ${untrainable.size} UNet layers this lab does not apply LoRA to (${examples([...untrainable], 3)}; ` +
        `only the attention blocks' ${[...DEFAULT_TARGETS, ...OPTIONAL_TARGETS].join(', ')} are supported, not LoCon/LyCORIS conv or resnet layers)`,
    );
  }
  if (unknown.length) refusals.push(`${unknown.length} keys are not LoRA weights of this SD1.x UNet's layers (${examples(unknown)})`);
  if (!names.some((n) => /lora|\.alpha$/.test(n))) refusals.push('no key looks like a LoRA matrix (lora_down / lora_up / lora_A / lora_B): is this a model rather than a LoRA?');
  const spellings = new Set(parsed.map((p) => (p.spelling === 'kohya' ? 'kohya' : 'diffusers')));
  if (spellings.size > 1) refusals.push('it mixes kohya (lora_unet_*) and diffusers (unet.*) key spellings');
  if (refusals.length) {
    throw new LoraFileError(`${where}: ${refusals.join('; ')}${metadataHint(metadata)}. The file holds ${describeKeys(names)}.`);
  }

  const groups = new Map<string, Partial<Record<Part, string>>>();
  for (const p of parsed) {
    const g = groups.get(p.module) ?? {};
    if (g[p.part]) throw new LoraFileError(`${where}: ${p.module} has two ${p.part} tensors (${g[p.part]} and ${p.key})`);
    g[p.part] = p.key;
    groups.set(p.module, g);
  }
  const format: DecodedLora['format'] = spellings.has('kohya') ? 'kohya' : parsed.some((p) => p.spelling === 'diffusers-old') ? 'diffusers-old' : 'diffusers';
  const config = format === 'kohya' ? null : adapterConfig(where, metadata);
  if (config?.use_dora) throw new LoraFileError(`${where}: a DoRA adapter (lora_adapter_metadata use_dora); only plain LoRA is supported`);

  // Shapes first, all of them, so one message lists every mismatch.
  const mismatched: string[] = [];
  let crossWidth: number | null = null;
  for (const [module, g] of groups) {
    if (!g.down || !g.up) {
      const has = [g.down, g.up, g.alpha].filter(Boolean).join(', ');
      throw new LoraFileError(`${where}: LoRA module ${module} is incomplete: it has ${has} but no ${g.down ? 'up' : 'down'} matrix`);
    }
    const base = candidates.get(module)!;
    const down = file.info(g.down).shape;
    const up = file.info(g.up).shape;
    const trailingOk = (s: number[]) => s.length === 2 || (base.conv1x1 && s.length === 4 && s[2] === 1 && s[3] === 1);
    const ok = trailingOk(down) && trailingOk(up) && down[1] === base.in && up[0] === base.out && up[1] === down[0] && down[0] > 0;
    if (!ok) {
      mismatched.push(`${module}: down ${shapeText(down)}, up ${shapeText(up)}; the UNet's layer is ${base.out}x${base.in}${base.conv1x1 ? ' (1x1 conv)' : ''}`);
      if (/\.attn2\.to_[kv]$/.test(module) && down[1] !== base.in) crossWidth = down[1];
    }
    if (g.alpha) {
      const a = file.info(g.alpha).shape;
      if (a.reduce((x, y) => x * y, 1) !== 1) throw new LoraFileError(`${where}: ${g.alpha} has shape ${shapeText(a)}; alpha must be one number`);
    }
  }
  if (mismatched.length) {
    const cross = unet.cross_attention_dim;
    const arch =
      crossWidth === 1024 ? ` It is an SD2.x LoRA: its cross-attention takes ${crossWidth}-wide text states (SD2's OpenCLIP), this UNet's ${cross}.`
      : crossWidth === 2048 ? ` It is an SDXL LoRA: its cross-attention takes 2048-wide text states, this UNet's ${cross}.`
      : '';
    throw new LoraFileError(
      `${where}: ${mismatched.length} of ${groups.size} LoRA modules do not fit this UNet's layers${metadataHint(metadata)} ` +
        `(${mismatched.slice(0, 3).join('; ')}${mismatched.length > 3 ? `; and ${mismatched.length - 3} more` : ''}).${arch}`,
      true,
    );
  }

  const lora: HostLora = new Map();
  for (const module of [...groups.keys()].sort()) {
    const g = groups.get(module)!;
    const base = candidates.get(module)!;
    const downInfo = file.info(g.down!);
    const rank = downInfo.shape[0];
    let alpha: number;
    if (g.alpha) {
      alpha = (await file.readF32(g.alpha))[0];
    } else if (format === 'kohya') {
      // kohya's LoRAModule: no alpha (or 0) means alpha = rank; A1111 and ComfyUI likewise scale by 1.
      alpha = rank;
    } else {
      // diffusers: alpha from lora_adapter_metadata when present, otherwise lora_alpha = r (scale 1).
      alpha = patternValue(config?.alpha_pattern, module) ?? config?.lora_alpha ?? rank;
      // rsLoRA scales by alpha / sqrt(r); the same scale as a plain alpha / r is alpha * sqrt(r).
      if (config?.use_rslora) alpha *= Math.sqrt(rank);
    }
    const down = await file.readF32(g.down!);
    const up = await file.readF32(g.up!);
    for (const [what, values] of [['down', down], ['up', up], ['alpha', Float32Array.of(alpha)]] as const) {
      if (!values.every(Number.isFinite)) throw new LoraFileError(`${where}: ${module} ${what} holds values that are not finite numbers (NaN or infinity)`);
    }
    lora.set(module, { down, up, rank, alpha, in: base.in, out: base.out, conv1x1: base.conv1x1 });
  }
  return { lora, format, metadata };
}

// ---- host <-> GPU ----

/** The LoRA's matrices read back from the GPU. */
export async function loraToHost(lora: Lora): Promise<HostLora> {
  const host: HostLora = new Map();
  for (const path of [...lora.modules.keys()].sort()) {
    const m = lora.modules.get(path)!;
    host.set(path, {
      down: await m.down.read(),
      up: await m.up.read(),
      rank: m.rank,
      alpha: m.alpha,
      in: m.down.shape[1],
      out: m.up.shape[0],
      conv1x1: m.conv1x1,
    });
  }
  return host;
}

/** Uploads a host LoRA; its matrices are trainable (requiresGrad), ready to continue training. */
export function loraFromHost(gpu: Gpu, host: HostLora): Lora {
  const modules = new Map<string, LoraModule>();
  try {
    for (const path of [...host.keys()].sort()) {
      const m = host.get(path)!;
      checkModule(path, m);
      const down = Tensor.from(gpu, m.down, [m.rank, m.in]);
      const up = Tensor.from(gpu, m.up, [m.out, m.rank]);
      down.requiresGrad = true;
      up.requiresGrad = true;
      modules.set(path, { down, up, rank: m.rank, alpha: m.alpha, scale: m.alpha / m.rank, conv1x1: m.conv1x1 });
    }
  } catch (e) {
    new Lora(modules).release();
    throw e;
  }
  return new Lora(modules);
}

/** Reads a LoRA file (kohya or diffusers, any spelling), checked against the UNet, onto the GPU. */
export async function readLora(gpu: Gpu, file: SafetensorsFile, unet: UNetConfig): Promise<Lora> {
  const { lora } = await decodeLora(file, unet);
  return loraFromHost(gpu, lora);
}
