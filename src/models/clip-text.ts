// SD1.5's text encoder: transformers' CLIPTextModel, forward only. Module names are the state-dict keys
// (text_model.embeddings.token_embedding, text_model.encoder.layers.N.self_attn.q_proj, ...), so every
// weight has one obvious home, and the config is the model's own text_encoder/config.json.
//
//   x = token_embedding[ids] + position_embedding[0 .. N-1]
//   for each layer (pre-LN):  x = x + out_proj(causal_attention(q_proj, k_proj, v_proj of layer_norm1(x)))
//                             x = x + fc2(act(fc1(layer_norm2(x))))
//   last_hidden_state = final_layer_norm(x)            (what SD1.5 feeds the UNet's cross-attention)
//
// SD feeds all 77 positions (BOS, prompt, EOS, EOS padding) with no padding mask: causality alone decides
// what each position sees, so no attention mask is needed. The goldens (text.last_hidden_state, computed
// by openai/CLIP's transformer) match to ~3e-7 relative, which confirms the pre-LN order, the residuals,
// quick_gelu and the causal mask.

import type { Gpu } from '../gpu/gpu';
import { attention } from '../nn/ops/attention';
import { activation, add } from '../nn/ops/elementwise';
import { embedding, IdTensor } from '../nn/ops/embedding';
import { linear } from '../nn/ops/matmul';
import { layerNorm } from '../nn/ops/norm';
import type { Tensor } from '../nn/tensor';
import type { LdmLayout } from './ldm-keys';
import { ldmLayoutFromConfigs, ModelWeights, positiveInt, positiveNumber } from './model-weights';
import type { SafetensorsFile } from './safetensors';
import { loadFolderComponent, loadSingleFileComponent, ModelLoadError, readConfig, type ModelFiles, type ParamShapes } from './weights';

export interface ClipTextConfig {
  hidden_size: number;
  intermediate_size: number;
  num_attention_heads: number;
  num_hidden_layers: number;
  max_position_embeddings: number;
  vocab_size: number;
  /** quick_gelu: x * sigmoid(1.702 x) (CLIP, SD1.5); gelu: the exact erf GELU. */
  hidden_act: 'quick_gelu' | 'gelu';
  layer_norm_eps: number;
}

/** Validates a text_encoder/config.json, filling absent fields with transformers' CLIPTextConfig defaults. */
export function clipTextConfig(raw: Record<string, unknown>, label = 'text_encoder/config.json'): ClipTextConfig {
  const act = raw.hidden_act ?? 'quick_gelu';
  if (act !== 'quick_gelu' && act !== 'gelu') {
    throw new ModelLoadError(`${label}: hidden_act ${JSON.stringify(act)} is not supported (quick_gelu or gelu)`);
  }
  const config: ClipTextConfig = {
    hidden_size: positiveInt(label, raw, 'hidden_size', 512, 8192),
    intermediate_size: positiveInt(label, raw, 'intermediate_size', 2048, 32768),
    num_attention_heads: positiveInt(label, raw, 'num_attention_heads', 8, 256),
    num_hidden_layers: positiveInt(label, raw, 'num_hidden_layers', 12, 96),
    max_position_embeddings: positiveInt(label, raw, 'max_position_embeddings', 77, 4096),
    vocab_size: positiveInt(label, raw, 'vocab_size', 49408, 1_000_000),
    hidden_act: act,
    layer_norm_eps: positiveNumber(label, raw, 'layer_norm_eps', 1e-5, 1),
  };
  if (config.hidden_size % config.num_attention_heads !== 0) {
    throw new ModelLoadError(`${label}: ${config.num_attention_heads} heads do not divide hidden_size ${config.hidden_size}`);
  }
  return config;
}

/** Every parameter the config implies, by state-dict name. */
export function clipTextParamShapes(config: ClipTextConfig): ParamShapes {
  const d = config.hidden_size;
  const ff = config.intermediate_size;
  const shapes: ParamShapes = new Map();
  const norm = (name: string) => {
    shapes.set(`${name}.weight`, [d]);
    shapes.set(`${name}.bias`, [d]);
  };
  const lin = (name: string, out: number, inF: number) => {
    shapes.set(`${name}.weight`, [out, inF]);
    shapes.set(`${name}.bias`, [out]);
  };
  shapes.set('text_model.embeddings.token_embedding.weight', [config.vocab_size, d]);
  shapes.set('text_model.embeddings.position_embedding.weight', [config.max_position_embeddings, d]);
  for (let i = 0; i < config.num_hidden_layers; i++) {
    const p = `text_model.encoder.layers.${i}`;
    norm(`${p}.layer_norm1`);
    for (const proj of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) lin(`${p}.self_attn.${proj}`, d, d);
    norm(`${p}.layer_norm2`);
    lin(`${p}.mlp.fc1`, ff, d);
    lin(`${p}.mlp.fc2`, d, ff);
  }
  norm('text_model.final_layer_norm');
  return shapes;
}

/** A loaded text encoder: its config and GPU weights. release() frees the weights. */
export class ClipTextModel {
  constructor(
    readonly config: ClipTextConfig,
    readonly weights: ModelWeights,
  ) {}

  get gpu(): Gpu {
    return this.weights.get('text_model.final_layer_norm.weight').gpu;
  }

  release(): void {
    this.weights.release();
  }
}

/** y = LayerNorm(x) with the parameters under `name`; the statistics kept for a backward are dropped. */
function norm(model: ClipTextModel, name: string, x: Tensor): Tensor {
  const w = model.weights;
  const { y, saved } = layerNorm(x, w.get(`${name}.weight`), w.get(`${name}.bias`), model.config.layer_norm_eps);
  saved.stats.release();
  return y;
}

function lin(model: ClipTextModel, name: string, x: Tensor): Tensor {
  return linear(x, model.weights.get(`${name}.weight`), model.weights.get(`${name}.bias`));
}

/** One pre-LN transformer layer. Consumes x (released) and returns the new hidden states. */
function encoderLayer(model: ClipTextModel, i: number, x: Tensor): Tensor {
  const p = `text_model.encoder.layers.${i}`;
  const { num_attention_heads: heads, hidden_act } = model.config;

  const h = norm(model, `${p}.layer_norm1`, x);
  const q = lin(model, `${p}.self_attn.q_proj`, h);
  const k = lin(model, `${p}.self_attn.k_proj`, h);
  const v = lin(model, `${p}.self_attn.v_proj`, h);
  h.release();
  // CLIP scales q by head_dim^-0.5 before Q K^T: the fused kernel's default scale.
  const { out, logsumexp } = attention(q, k, v, { heads, causal: true });
  for (const t of [q, k, v, logsumexp]) t.release();
  const o = lin(model, `${p}.self_attn.out_proj`, out);
  out.release();
  const x1 = add(x, o);
  x.release();
  o.release();

  const h2 = norm(model, `${p}.layer_norm2`, x1);
  const f = lin(model, `${p}.mlp.fc1`, h2);
  h2.release();
  const a = activation(f, hidden_act);
  f.release();
  const g = lin(model, `${p}.mlp.fc2`, a);
  a.release();
  const x2 = add(x1, g);
  x1.release();
  g.release();
  return x2;
}

/**
 * input_ids: one array of token ids per prompt, all of the same length N <= max_position_embeddings (77 for
 * SD1.5). Returns last_hidden_state [B, N, hidden_size], after the final layer norm; the caller owns it.
 */
export function clipTextForward(model: ClipTextModel, inputIds: readonly ArrayLike<number>[]): Tensor {
  const { config } = model;
  const batch = inputIds.length;
  if (batch < 1) throw new Error('clipTextForward: no prompts');
  const n = inputIds[0].length;
  if (n < 1 || n > config.max_position_embeddings) {
    throw new Error(`clipTextForward: ${n} tokens per prompt; the model takes 1 to ${config.max_position_embeddings}`);
  }
  const flat = new Array<number>(batch * n);
  inputIds.forEach((row, b) => {
    if (row.length !== n) throw new Error(`clipTextForward: prompt ${b} has ${row.length} ids, prompt 0 has ${n}`);
    for (let j = 0; j < n; j++) flat[b * n + j] = row[j];
  });
  const gpu = model.gpu;
  const ids = IdTensor.from(gpu, flat, [batch, n], config.vocab_size);
  const tokens = embedding(model.weights.get('text_model.embeddings.token_embedding.weight'), ids);
  ids.release();
  // position_ids are 0 .. N-1: the first N rows of the position table, gathered like the tokens and
  // broadcast over the batch by add().
  const positionIds = IdTensor.from(gpu, Array.from({ length: n }, (_, j) => j), [n], config.max_position_embeddings);
  const positions = embedding(model.weights.get('text_model.embeddings.position_embedding.weight'), positionIds);
  positionIds.release();
  let x = add(tokens, positions);
  tokens.release();
  positions.release();
  for (let i = 0; i < config.num_hidden_layers; i++) x = encoderLayer(model, i, x);
  const y = norm(model, 'text_model.final_layer_norm', x);
  x.release();
  return y;
}

export interface LoadOptions {
  onProgress?: (done: number, total: number) => void;
}

/** Loads text_encoder/ of a diffusers folder (model.safetensors, or model.fp16.safetensors with variant 'fp16'). */
export async function loadClipTextModel(
  gpu: Gpu,
  files: ModelFiles,
  options: LoadOptions & { variant?: 'fp16' } = {},
): Promise<ClipTextModel> {
  const config = clipTextConfig(await readConfig(files, 'text_encoder'), `${files.name}/text_encoder/config.json`);
  const tensors = await loadFolderComponent(gpu, files, 'text_encoder', clipTextParamShapes(config), options);
  return new ClipTextModel(config, new ModelWeights('text encoder', tensors));
}

/**
 * Loads the text encoder of a single-file (LDM layout) checkpoint. `configs` is a diffusers folder that
 * supplies text_encoder/config.json, and unet/ and vae/ configs for the key layout (unless `layout` is given).
 */
export async function loadClipTextModelFromSingleFile(
  gpu: Gpu,
  file: SafetensorsFile,
  configs: ModelFiles,
  options: LoadOptions & { layout?: LdmLayout } = {},
): Promise<ClipTextModel> {
  const config = clipTextConfig(await readConfig(configs, 'text_encoder'), `${configs.name}/text_encoder/config.json`);
  const layout = options.layout ?? (await ldmLayoutFromConfigs(configs));
  const tensors = await loadSingleFileComponent(gpu, file, 'text_encoder', clipTextParamShapes(config), layout, options.onProgress);
  return new ClipTextModel(config, new ModelWeights('text encoder', tensors));
}
