// A tiny CLIP-interface judge, written by the lab's own ONNX writer, with a plain TypeScript computation of
// the same graphs to check ONNX Runtime's outputs against. Random weights from a seed.
//   text_model.onnx:   input_ids [batch, 77], attention_mask [batch, 77] (optional) ->
//                      masked mean of Gather(embedding, input_ids) -> MatMul -> text_embeds [batch, D]
//   vision_model.onnx: pixel_values [batch, 3, 8, 8] -> Conv 4x4 stride 4 + bias -> Relu ->
//                      GlobalAveragePool -> Flatten -> MatMul -> image_embeds [batch, D]
// Tokenizer: the 256 byte symbols (with and without </w>), the two special tokens and a few merges.

import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ONNX_FLOAT, ONNX_INT64, writeOnnxModel, type OnnxGraph } from '../../src/judges/onnx-writer';
import { seededRandom } from '../../src/util/random';
import { bytesToUnicode, CLIP_BOS, CLIP_EOS } from '../../src/models/tokenizer';

export const FIXTURE_EMBED = 6; // token embedding width
export const FIXTURE_DIM = 4; // joint embedding width
export const FIXTURE_CHANNELS = 5; // conv output channels
export const FIXTURE_CROP = 8;
export const FIXTURE_KERNEL = 4;
export const FIXTURE_SHORTEST_EDGE = 10;
const L = 77;

export const FIXTURE_MERGES = ['c a', 'ca t</w>', 'd o', 'do g</w>', 'r e', 're d</w>'];

export function fixtureVocab(): Record<string, number> {
  const vocab: Record<string, number> = {};
  const chars = bytesToUnicode();
  for (const c of chars) vocab[c] = Object.keys(vocab).length;
  for (const c of chars) vocab[`${c}</w>`] = Object.keys(vocab).length;
  for (const m of FIXTURE_MERGES) vocab[m.replace(' ', '')] = Object.keys(vocab).length;
  vocab[CLIP_BOS] = Object.keys(vocab).length;
  vocab[CLIP_EOS] = Object.keys(vocab).length;
  return vocab;
}

export interface FixtureWeights {
  vocabSize: number;
  embedding: Float32Array; // [V, E]
  textProjection: Float32Array; // [E, D]
  conv: Float32Array; // [C, 3, K, K]
  convBias: Float32Array; // [C]
  visualProjection: Float32Array; // [C, D]
}

/** n values uniform in [lo, hi). */
function randomArray(rand: () => number, n: number, lo = -1, hi = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + rand() * (hi - lo);
  return a;
}

export function fixtureWeights(seed = 7): FixtureWeights {
  const rand = seededRandom(seed, 'clip-fixture');
  const vocabSize = Object.keys(fixtureVocab()).length;
  // Token embeddings are non-negative (as the Relu'd image features are) and the projections mostly
  // positive, so most cosines are positive: CLIP score clamps negative ones to 0, which would hide them.
  return {
    vocabSize,
    embedding: randomArray(rand, vocabSize * FIXTURE_EMBED, 0, 1),
    textProjection: randomArray(rand, FIXTURE_EMBED * FIXTURE_DIM, -0.5, 1),
    conv: randomArray(rand, FIXTURE_CHANNELS * 3 * FIXTURE_KERNEL * FIXTURE_KERNEL),
    convBias: randomArray(rand, FIXTURE_CHANNELS),
    visualProjection: randomArray(rand, FIXTURE_CHANNELS * FIXTURE_DIM, -0.5, 1),
  };
}

export function textGraph(w: FixtureWeights, options: { attentionMask?: boolean; inputName?: string; length?: number | string } = {}): OnnxGraph {
  const withMask = options.attentionMask ?? true;
  const ids = options.inputName ?? 'input_ids';
  const len = options.length ?? L;
  const nodes: OnnxGraph['nodes'][number][] = [{ opType: 'Gather', inputs: ['embedding', ids], outputs: ['emb'] }];
  if (withMask) {
    nodes.push(
      { opType: 'Cast', inputs: ['attention_mask'], outputs: ['maskf'], attributes: [{ name: 'to', int: ONNX_FLOAT }] },
      { opType: 'Unsqueeze', inputs: ['maskf', 'axis2'], outputs: ['mask3'] },
      { opType: 'Mul', inputs: ['emb', 'mask3'], outputs: ['masked'] },
      { opType: 'ReduceMean', inputs: ['masked'], outputs: ['num'], attributes: [{ name: 'axes', ints: [1] }, { name: 'keepdims', int: 0 }] },
      { opType: 'ReduceMean', inputs: ['mask3'], outputs: ['den'], attributes: [{ name: 'axes', ints: [1] }, { name: 'keepdims', int: 0 }] },
      { opType: 'Div', inputs: ['num', 'den'], outputs: ['pooled'] },
    );
  } else {
    nodes.push({ opType: 'ReduceMean', inputs: ['emb'], outputs: ['pooled'], attributes: [{ name: 'axes', ints: [1] }, { name: 'keepdims', int: 0 }] });
  }
  nodes.push({ opType: 'MatMul', inputs: ['pooled', 'text_projection'], outputs: ['text_embeds'] });
  return {
    name: 'tiny_clip_text',
    nodes,
    initializers: [
      { name: 'embedding', dims: [w.vocabSize, FIXTURE_EMBED], data: w.embedding },
      { name: 'text_projection', dims: [FIXTURE_EMBED, FIXTURE_DIM], data: w.textProjection },
      ...(withMask ? [{ name: 'axis2', dims: [1], data: BigInt64Array.from([2n]) }] : []),
    ],
    inputs: [
      { name: ids, elemType: ONNX_INT64, shape: ['batch', len] },
      ...(withMask ? [{ name: 'attention_mask', elemType: ONNX_INT64, shape: ['batch', len] } as const] : []),
    ],
    outputs: [{ name: 'text_embeds', elemType: ONNX_FLOAT, shape: ['batch', FIXTURE_DIM] }],
  };
}

export function visionGraph(w: FixtureWeights, options: { size?: number } = {}): OnnxGraph {
  const size = options.size ?? FIXTURE_CROP;
  return {
    name: 'tiny_clip_vision',
    nodes: [
      {
        opType: 'Conv',
        inputs: ['pixel_values', 'conv_weight', 'conv_bias'],
        outputs: ['conv'],
        attributes: [
          { name: 'kernel_shape', ints: [FIXTURE_KERNEL, FIXTURE_KERNEL] },
          { name: 'strides', ints: [FIXTURE_KERNEL, FIXTURE_KERNEL] },
        ],
      },
      { opType: 'Relu', inputs: ['conv'], outputs: ['act'] },
      { opType: 'GlobalAveragePool', inputs: ['act'], outputs: ['gap'] },
      { opType: 'Flatten', inputs: ['gap'], outputs: ['flat'], attributes: [{ name: 'axis', int: 1 }] },
      { opType: 'MatMul', inputs: ['flat', 'visual_projection'], outputs: ['image_embeds'] },
    ],
    initializers: [
      { name: 'conv_weight', dims: [FIXTURE_CHANNELS, 3, FIXTURE_KERNEL, FIXTURE_KERNEL], data: w.conv },
      { name: 'conv_bias', dims: [FIXTURE_CHANNELS], data: w.convBias },
      { name: 'visual_projection', dims: [FIXTURE_CHANNELS, FIXTURE_DIM], data: w.visualProjection },
    ],
    inputs: [{ name: 'pixel_values', elemType: ONNX_FLOAT, shape: ['batch', 3, size, size] }],
    outputs: [{ name: 'image_embeds', elemType: ONNX_FLOAT, shape: ['batch', FIXTURE_DIM] }],
  };
}

/** The text tower in plain TypeScript (float64): masked mean of the token embeddings, then the projection. */
export function referenceTextEmbeds(w: FixtureWeights, ids: readonly number[], mask: readonly number[] | null): number[] {
  const pooled = new Array<number>(FIXTURE_EMBED).fill(0);
  let count = 0;
  ids.forEach((id, t) => {
    const m = mask ? mask[t] : 1;
    count += m;
    for (let e = 0; e < FIXTURE_EMBED; e++) pooled[e] += m * w.embedding[id * FIXTURE_EMBED + e];
  });
  const out = new Array<number>(FIXTURE_DIM).fill(0);
  for (let e = 0; e < FIXTURE_EMBED; e++) for (let d = 0; d < FIXTURE_DIM; d++) out[d] += (pooled[e] / count) * w.textProjection[e * FIXTURE_DIM + d];
  return out;
}

/** The vision tower in plain TypeScript (float64) on one image's pixel values [3, S, S]. */
export function referenceImageEmbeds(w: FixtureWeights, pixels: Float32Array, size = FIXTURE_CROP): number[] {
  const K = FIXTURE_KERNEL;
  const cells = size / K;
  const pooled = new Array<number>(FIXTURE_CHANNELS).fill(0);
  for (let c = 0; c < FIXTURE_CHANNELS; c++) {
    for (let oy = 0; oy < cells; oy++) {
      for (let ox = 0; ox < cells; ox++) {
        let s = w.convBias[c];
        for (let ch = 0; ch < 3; ch++) {
          for (let ky = 0; ky < K; ky++) {
            for (let kx = 0; kx < K; kx++) s += w.conv[((c * 3 + ch) * K + ky) * K + kx] * pixels[ch * size * size + (oy * K + ky) * size + ox * K + kx];
          }
        }
        pooled[c] += Math.max(s, 0) / (cells * cells);
      }
    }
  }
  const out = new Array<number>(FIXTURE_DIM).fill(0);
  for (let c = 0; c < FIXTURE_CHANNELS; c++) for (let d = 0; d < FIXTURE_DIM; d++) out[d] += pooled[c] * w.visualProjection[c * FIXTURE_DIM + d];
  return out;
}

export const FIXTURE_PREPROCESSOR = {
  do_resize: true,
  size: { shortest_edge: FIXTURE_SHORTEST_EDGE },
  resample: 3,
  do_center_crop: true,
  crop_size: { height: FIXTURE_CROP, width: FIXTURE_CROP },
  do_rescale: true,
  rescale_factor: 1 / 255,
  do_normalize: true,
  image_mean: [0.48145466, 0.4578275, 0.40821073],
  image_std: [0.26862954, 0.26130258, 0.27577711],
  image_processor_type: 'CLIPImageProcessor',
};

export interface FixtureFolderOptions {
  seed?: number;
  /** Put the .onnx files under onnx/ (as Xenova's exports do). */
  onnxSubfolder?: boolean;
  /** Ship tokenizer.json instead of vocab.json + merges.txt. */
  tokenizerJson?: boolean;
  attentionMask?: boolean;
  /** Reward models: the reward.json logit scale. */
  logitScale?: number;
}

/** Writes the tiny judge to `dir`; returns its weights for the reference computation. */
export function writeFixtureFolder(dir: string, options: FixtureFolderOptions = {}): FixtureWeights {
  const w = fixtureWeights(options.seed);
  const onnxDir = options.onnxSubfolder ? path.join(dir, 'onnx') : dir;
  mkdirSync(onnxDir, { recursive: true });
  writeFileSync(path.join(onnxDir, 'text_model.onnx'), writeOnnxModel(textGraph(w, { attentionMask: options.attentionMask })));
  writeFileSync(path.join(onnxDir, 'vision_model.onnx'), writeOnnxModel(visionGraph(w)));
  writeFileSync(path.join(dir, 'preprocessor_config.json'), JSON.stringify(FIXTURE_PREPROCESSOR, null, 2));
  if (options.tokenizerJson) {
    writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ version: '1.0', model: { type: 'BPE', vocab: fixtureVocab(), merges: FIXTURE_MERGES.map((m) => m.split(' ')) } }));
  } else {
    writeFileSync(path.join(dir, 'vocab.json'), JSON.stringify(fixtureVocab()));
    writeFileSync(path.join(dir, 'merges.txt'), `#version: 0.2\n${FIXTURE_MERGES.join('\n')}\n`);
  }
  if (options.logitScale !== undefined) writeFileSync(path.join(dir, 'reward.json'), JSON.stringify({ logit_scale: options.logitScale }));
  return w;
}
