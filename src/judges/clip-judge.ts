// Independent judges: a CLIP model (or a CLIP-shaped reward model such as PickScore or HPS) run with ONNX
// Runtime, scoring an image against a caption without the lab's own SD1.5 weights. The model comes in the
// layout the common ONNX exports use (e.g. Xenova/clip-vit-base-patch32 on Hugging Face):
//   text_model.onnx    input_ids int64 [B, L] (L usually 77), optional attention_mask; output text_embeds [B, D]
//   vision_model.onnx  pixel_values float32 [B, 3, H, W]; output image_embeds [B, D]
//   preprocessor_config.json, and the tokenizer (vocab.json + merges.txt, or tokenizer.json).
// Scores, from L2-normalised embeddings:
//   CLIP score (torchmetrics' CLIPScore): 100 * max(cos(image_embeds, text_embeds), 0);
//   reward model: exp(logit_scale) * cos(image_embeds, text_embeds), logit_scale from reward.json (PickScore's
//   formula; the value as stored in the checkpoint, e.g. 4.6052 for a scale of 100).
// No file-system access here: the bytes come in, so the browser worker and the CLI share this code
// (clip-judge-node.ts reads a folder).

import type { InferenceSession, Tensor } from 'onnxruntime-web';
import type { RgbaImage } from '../data/pixels';
import { ClipTokenizer, CLIP_MAX_LENGTH, type TokenizerFiles } from '../models/tokenizer';
import { clipPixelValues, type ClipImageConfig } from './preprocess';
import { createJudgeSession, JudgeModelError, ort, type JudgeBackend, type SessionOptions } from './ort-session';

export type JudgeKind = 'clip' | 'reward';

export interface JudgeFiles {
  kind: JudgeKind;
  /** The text tower's bytes and its name for messages (the path the user gave, or the file name). */
  textModel: { bytes: Uint8Array; name: string };
  visionModel: { bytes: Uint8Array; name: string };
  image: ClipImageConfig;
  /** The preprocessor config's name for messages. */
  imageConfigName: string;
  tokenizer: TokenizerFiles;
  /** Reward models: the logit scale as stored (the score multiplies the cosine by its exp). */
  logitScale?: number;
}

export interface JudgeOptions extends SessionOptions {
  /** Images or captions per forward pass; default 8. */
  batchSize?: number;
}

/** Cosine similarity of two vectors (0 when either is all zeros). */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`cosine: lengths ${a.length} and ${b.length} differ`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 0;
}

/** torchmetrics' CLIPScore of one image and caption from their embeddings. */
export function clipScore(imageEmbed: ArrayLike<number>, textEmbed: ArrayLike<number>): number {
  return 100 * Math.max(cosine(imageEmbed, textEmbed), 0);
}

/** A two-tower reward model's score: exp(logit_scale) * cosine. */
export function rewardScore(imageEmbed: ArrayLike<number>, textEmbed: ArrayLike<number>, logitScale: number): number {
  return Math.exp(logitScale) * cosine(imageEmbed, textEmbed);
}

type Dim = number | string;

function describeShape(shape: readonly Dim[]): string {
  return `[${shape.map((d) => (typeof d === 'number' ? String(d) : d)).join(', ')}]`;
}

/** The metadata of input or output `name`, or an error listing what the model has. */
function findValue(list: readonly InferenceSession.ValueMetadata[], name: string, what: 'input' | 'output', file: string): { type: Tensor.Type; shape: readonly Dim[] } {
  const found = list.find((v) => v.name === name);
  if (!found) {
    throw new JudgeModelError(file, `no ${what} named "${name}" (the model's ${what}s: ${list.map((v) => `"${v.name}"`).join(', ') || 'none'}); a CLIP export's ${file.includes('text') ? 'text' : 'vision'} tower has it`);
  }
  if (!found.isTensor) throw new JudgeModelError(file, `${what} "${name}" is not a tensor`);
  return { type: found.type, shape: found.shape };
}

/** Checks a session's inputs: the expected ones present with the right type and rank, no unexpected ones. */
function checkInputs(session: InferenceSession, file: string, expected: Record<string, { type: Tensor.Type; rank: number; optional?: boolean }>): Map<string, readonly Dim[]> {
  const shapes = new Map<string, readonly Dim[]>();
  for (const [name, want] of Object.entries(expected)) {
    if (want.optional && !session.inputNames.includes(name)) continue;
    const v = findValue(session.inputMetadata, name, 'input', file);
    if (v.type !== want.type) throw new JudgeModelError(file, `input "${name}" is ${v.type}, expected ${want.type}`);
    if (v.shape.length !== want.rank) throw new JudgeModelError(file, `input "${name}" has shape ${describeShape(v.shape)}, expected ${want.rank} dimensions`);
    shapes.set(name, v.shape);
  }
  const extra = session.inputNames.filter((n) => !(n in expected));
  if (extra.length) throw new JudgeModelError(file, `unexpected input${extra.length > 1 ? 's' : ''} ${extra.map((n) => `"${n}"`).join(', ')} (expected ${Object.keys(expected).map((n) => `"${n}"`).join(' and ')})`);
  return shapes;
}

function checkOutput(session: InferenceSession, file: string, name: string): void {
  const v = findValue(session.outputMetadata, name, 'output', file);
  if (v.type !== 'float32') throw new JudgeModelError(file, `output "${name}" is ${v.type}, expected float32`);
  if (v.shape.length !== 0 && v.shape.length !== 2) throw new JudgeModelError(file, `output "${name}" has shape ${describeShape(v.shape)}, expected [batch, embedding]`);
}

/** A fixed batch dimension forces that batch size; a named one takes any. */
function fixedBatch(shape: readonly Dim[]): number | null {
  return typeof shape[0] === 'number' && shape[0] > 0 ? shape[0] : null;
}

export class ClipJudge {
  readonly kind: JudgeKind;
  readonly backend: JudgeBackend;
  /** Ids per caption the text tower takes. */
  readonly textLength: number;
  private readonly tokenizer: ClipTokenizer;
  private readonly hasAttentionMask: boolean;
  private readonly textBatch: number | null;
  private readonly visionBatch: number | null;
  private readonly batchSize: number;

  private constructor(
    private readonly files: JudgeFiles,
    private readonly text: InferenceSession,
    private readonly vision: InferenceSession,
    backend: JudgeBackend,
    options: JudgeOptions,
  ) {
    this.kind = files.kind;
    this.backend = backend;
    this.batchSize = options.batchSize ?? 8;
    const textFile = files.textModel.name;
    const visionFile = files.visionModel.name;
    const textShapes = checkInputs(text, textFile, { input_ids: { type: 'int64', rank: 2 }, attention_mask: { type: 'int64', rank: 2, optional: true } });
    checkOutput(text, textFile, 'text_embeds');
    const ids = textShapes.get('input_ids')!;
    this.textLength = typeof ids[1] === 'number' ? ids[1] : CLIP_MAX_LENGTH;
    if (this.textLength < 2) throw new JudgeModelError(textFile, `input "input_ids" has shape ${describeShape(ids)}: no room for the start and end tokens`);
    this.hasAttentionMask = textShapes.has('attention_mask');
    this.textBatch = fixedBatch(ids);

    const pixels = checkInputs(vision, visionFile, { pixel_values: { type: 'float32', rank: 4 } }).get('pixel_values')!;
    checkOutput(vision, visionFile, 'image_embeds');
    const c = files.image;
    const height = c.doCenterCrop ? c.cropHeight : null;
    const width = c.doCenterCrop ? c.cropWidth : null;
    if (typeof pixels[1] === 'number' && pixels[1] !== 3) throw new JudgeModelError(visionFile, `input "pixel_values" has shape ${describeShape(pixels)}: expected 3 colour channels`);
    for (const [axis, want, label] of [[2, height, 'height'], [3, width, 'width']] as const) {
      const got = pixels[axis];
      if (typeof got === 'number' && want !== null && got !== want) {
        throw new JudgeModelError(visionFile, `input "pixel_values" has shape ${describeShape(pixels)} but ${files.imageConfigName} crops images to ${c.cropHeight}x${c.cropWidth} (${label} ${want}); the two files are from different models`);
      }
    }
    this.visionBatch = fixedBatch(pixels);
    this.tokenizer = new ClipTokenizer(files.tokenizer, { maxLength: this.textLength });
    if (files.kind === 'reward' && !(typeof files.logitScale === 'number' && Number.isFinite(files.logitScale))) {
      throw new Error('a reward model needs its logit scale (reward.json: {"logit_scale": number})');
    }
  }

  /** Loads both towers (sessions are made once and reused for every batch) and checks their inputs and outputs. */
  static async create(files: JudgeFiles, options: JudgeOptions = {}): Promise<ClipJudge> {
    const text = await createJudgeSession(files.textModel.bytes, files.textModel.name, options);
    let vision;
    try {
      // The vision tower uses the provider the text tower got, so a fallback notice comes once.
      vision = await createJudgeSession(files.visionModel.bytes, files.visionModel.name, { ...options, backends: [text.backend] });
    } catch (e) {
      await text.session.release();
      throw e;
    }
    try {
      return new ClipJudge(files, text.session, vision.session, text.backend, options);
    } catch (e) {
      await Promise.all([text.session.release(), vision.session.release()]);
      throw e;
    }
  }

  /** The ids (and attention mask) a caption is given to the text tower as: BOS, prompt ids, EOS, EOS padding. */
  tokenize(caption: string): number[] {
    return this.tokenizer.encodeForModel(caption);
  }

  /** Text embeddings of `captions`, in order; `onProgress(done)` after each batch. */
  async embedTexts(captions: readonly string[], onProgress?: (done: number) => void): Promise<Float32Array[]> {
    const L = this.textLength;
    return this.batched(captions, this.textBatch, async (chunk) => {
      const ids = new BigInt64Array(chunk.length * L);
      const mask = new BigInt64Array(chunk.length * L);
      chunk.forEach((caption, b) => {
        const t = this.tokenize(caption);
        // Ids up to the first EOS are the caption; the rest is padding the mask hides.
        const end = t.indexOf(this.tokenizer.eosId);
        for (let i = 0; i < L; i++) {
          ids[b * L + i] = BigInt(t[i]);
          mask[b * L + i] = i <= end ? 1n : 0n;
        }
      });
      const feeds: Record<string, Tensor> = { input_ids: new ort.Tensor('int64', ids, [chunk.length, L]) };
      if (this.hasAttentionMask) feeds.attention_mask = new ort.Tensor('int64', mask, [chunk.length, L]);
      return this.run(this.text, this.files.textModel.name, feeds, 'text_embeds', chunk.length);
    }, onProgress);
  }

  /** Image embeddings of decoded images, in order (preprocessed as preprocessor_config.json says). */
  async embedImages(images: readonly RgbaImage[], onProgress?: (done: number) => void): Promise<Float32Array[]> {
    return this.batched(images, this.visionBatch, async (chunk) => {
      const pixels = chunk.map((img) => clipPixelValues(img, this.files.image));
      const { height, width } = pixels[0];
      const data = new Float32Array(chunk.length * 3 * height * width);
      pixels.forEach((p, b) => data.set(p.data, b * p.data.length));
      return this.run(this.vision, this.files.visionModel.name, { pixel_values: new ort.Tensor('float32', data, [chunk.length, 3, height, width]) }, 'image_embeds', chunk.length);
    }, onProgress);
  }

  /** The judge's score S(x, c) from the two embeddings. */
  score(imageEmbed: ArrayLike<number>, textEmbed: ArrayLike<number>): number {
    if (imageEmbed.length !== textEmbed.length) {
      throw new JudgeModelError(this.files.visionModel.name, `image_embeds has ${imageEmbed.length} values per image but ${this.files.textModel.name}'s text_embeds has ${textEmbed.length}: the towers are from different models`);
    }
    return this.kind === 'clip' ? clipScore(imageEmbed, textEmbed) : rewardScore(imageEmbed, textEmbed, this.files.logitScale!);
  }

  async release(): Promise<void> {
    await Promise.all([this.text.release(), this.vision.release()]);
  }

  private async run(session: InferenceSession, file: string, feeds: Record<string, Tensor>, output: string, count: number): Promise<Float32Array[]> {
    let result;
    try {
      result = await session.run(feeds);
    } catch (e) {
      throw new JudgeModelError(file, `ONNX Runtime failed to run it (${(e as Error).message.trim()})`);
    }
    const t = result[output];
    if (t.dims.length !== 2 || t.dims[0] !== count) throw new JudgeModelError(file, `output "${output}" came out with shape [${t.dims.join(', ')}], expected [${count}, embedding]`);
    const d = t.dims[1];
    const data = t.data as Float32Array;
    const rows: Float32Array[] = [];
    for (let b = 0; b < count; b++) rows.push(data.slice(b * d, (b + 1) * d));
    for (const r of Object.values(result)) r.dispose();
    return rows;
  }

  /**
   * Runs `fn` over chunks of `items`: batchSize at a time, or exactly the model's fixed batch size (the last
   * chunk filled with copies of its last item, whose outputs are dropped).
   */
  private async batched<T>(items: readonly T[], fixed: number | null, fn: (chunk: T[]) => Promise<Float32Array[]>, onProgress?: (done: number) => void): Promise<Float32Array[]> {
    const size = fixed ?? this.batchSize;
    const out: Float32Array[] = [];
    for (let i = 0; i < items.length; i += size) {
      const chunk = items.slice(i, i + size);
      const real = chunk.length;
      while (fixed !== null && chunk.length < fixed) chunk.push(chunk[chunk.length - 1]);
      out.push(...(await fn(chunk)).slice(0, real));
      onProgress?.(out.length);
    }
    return out;
  }
}
