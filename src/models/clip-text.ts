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
import * as F from '../nn/functional';
import { Embedding, Layer, LayerNorm, type LayerWeights, Linear, paramsOf } from '../nn/layers/layer';
import { embedding, IdTensor } from '../nn/ops/embedding';
import { Ctx } from '../nn/tape';
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

/** One CLIPEncoderLayer: x += self_attn(layer_norm1(x)) (causal); x += mlp(layer_norm2(x)). */
class ClipEncoderLayer extends Layer {
  readonly layer_norm1: LayerNorm;
  readonly self_attn: { q_proj: Linear; k_proj: Linear; v_proj: Linear; out_proj: Linear };
  readonly layer_norm2: LayerNorm;
  readonly mlp: { fc1: Linear; fc2: Linear };

  constructor(
    path: string,
    readonly config: ClipTextConfig,
  ) {
    super(path);
    const d = config.hidden_size;
    const lin = (name: string, inF: number, out: number) => new Linear(this.key(name), inF, out);
    this.layer_norm1 = new LayerNorm(this.key('layer_norm1'), d, config.layer_norm_eps);
    this.self_attn = { q_proj: lin('self_attn.q_proj', d, d), k_proj: lin('self_attn.k_proj', d, d), v_proj: lin('self_attn.v_proj', d, d), out_proj: lin('self_attn.out_proj', d, d) };
    this.layer_norm2 = new LayerNorm(this.key('layer_norm2'), d, config.layer_norm_eps);
    this.mlp = { fc1: lin('mlp.fc1', d, config.intermediate_size), fc2: lin('mlp.fc2', config.intermediate_size, d) };
  }

  override children() {
    const a = this.self_attn;
    return [this.layer_norm1, a.q_proj, a.k_proj, a.v_proj, a.out_proj, this.layer_norm2, this.mlp.fc1, this.mlp.fc2];
  }

  /** Consumes x (freed) and returns the new hidden states. */
  forward(ctx: Ctx, ws: LayerWeights, x: Tensor): Tensor {
    const { num_attention_heads: heads, hidden_act } = this.config;
    const a = this.self_attn;
    const h = this.layer_norm1.forward(ctx, ws, x);
    const q = a.q_proj.forward(ctx, ws, h);
    const k = a.k_proj.forward(ctx, ws, h);
    const v = a.v_proj.forward(ctx, ws, h);
    ctx.free(h);
    // CLIP scales q by head_dim^-0.5 before Q K^T: the fused kernel's default scale.
    const attended = F.attention(ctx, q, k, v, { heads, causal: true });
    ctx.free(q, k, v);
    const o = a.out_proj.forward(ctx, ws, attended);
    ctx.free(attended);
    const x1 = F.add(ctx, x, o);
    ctx.free(x, o);

    const h2 = this.layer_norm2.forward(ctx, ws, x1);
    const f = this.mlp.fc1.forward(ctx, ws, h2);
    ctx.free(h2);
    const g = F.activation(ctx, f, hidden_act);
    ctx.free(f);
    const y = this.mlp.fc2.forward(ctx, ws, g);
    ctx.free(g);
    const x2 = F.add(ctx, x1, y);
    ctx.free(x1, y);
    return x2;
  }
}

/** CLIPTextModel's modules, as transformers nests them (the paths are the state-dict keys). */
export class ClipTextLayers extends Layer {
  readonly embeddings: { token_embedding: Embedding; position_embedding: Embedding };
  readonly encoder: { layers: ClipEncoderLayer[] };
  readonly final_layer_norm: LayerNorm;

  constructor(readonly config: ClipTextConfig) {
    super('text_model');
    const d = config.hidden_size;
    this.embeddings = {
      token_embedding: new Embedding(this.key('embeddings.token_embedding'), config.vocab_size, d),
      position_embedding: new Embedding(this.key('embeddings.position_embedding'), config.max_position_embeddings, d),
    };
    this.encoder = { layers: Array.from({ length: config.num_hidden_layers }, (_, i) => new ClipEncoderLayer(this.key(`encoder.layers.${i}`), config)) };
    this.final_layer_norm = new LayerNorm(this.key('final_layer_norm'), d, config.layer_norm_eps);
  }

  override children() {
    return [this.embeddings.token_embedding, this.embeddings.position_embedding, ...this.encoder.layers, this.final_layer_norm];
  }
}

/** Every parameter the config implies, by state-dict name. */
export function clipTextParamShapes(config: ClipTextConfig): ParamShapes {
  return paramsOf(new ClipTextLayers(config));
}

/** A loaded text encoder: its config and GPU weights. release() frees the weights. */
export class ClipTextModel {
  readonly layers: ClipTextLayers;

  constructor(
    readonly config: ClipTextConfig,
    readonly weights: ModelWeights,
  ) {
    this.layers = new ClipTextLayers(config);
  }

  get gpu(): Gpu {
    return this.layers.final_layer_norm.param(this.weights).gpu;
  }

  release(): void {
    this.weights.release();
  }
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
  const { layers, weights: ws } = model;
  const ctx = new Ctx(gpu);
  const ids = IdTensor.from(gpu, flat, [batch, n], config.vocab_size);
  const tokens = embedding(layers.embeddings.token_embedding.param(ws), ids);
  ids.release();
  // position_ids are 0 .. N-1: the first N rows of the position table, gathered like the tokens and
  // broadcast over the batch by add().
  const positionIds = IdTensor.from(gpu, Array.from({ length: n }, (_, j) => j), [n], config.max_position_embeddings);
  const positions = embedding(layers.embeddings.position_embedding.param(ws), positionIds);
  positionIds.release();
  let x = F.add(ctx, tokens, positions);
  ctx.free(tokens, positions);
  for (const layer of layers.encoder.layers) x = layer.forward(ctx, ws, x);
  const y = layers.final_layer_norm.forward(ctx, ws, x);
  ctx.free(x);
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
