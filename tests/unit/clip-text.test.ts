import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Gpu } from '../../src/gpu/gpu';
import {
  clipTextConfig,
  clipTextForward,
  clipTextParamShapes,
  loadClipTextModel,
  loadClipTextModelFromSingleFile,
  ClipTextModel,
} from '../../src/models/clip-text';
import { ModelLoadError } from '../../src/models/weights';
import { expectClose, relError, rng } from '../helpers/check';
import { dirModelFiles, openSafetensorsFile, readEncoderGoldens, TINY_FOLDER, TINY_SINGLE, withReplacedText, type GoldenTensor } from '../helpers/encoders';
import { testGpu } from '../helpers/gpu';
import { randomWeights } from '../helpers/random-model';
import * as ref from '../helpers/reference/encoders';

const TOL = 1e-4;

describe('CLIP text encoder against the goldens', () => {
  let gpu: Gpu;
  let goldens: Map<string, GoldenTensor>;
  let ids: number[][];
  const closers: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    gpu = await testGpu();
    goldens = await readEncoderGoldens();
    const t = goldens.get('text.input_ids')!;
    const [batch, n] = t.shape;
    ids = Array.from({ length: batch }, (_, b) => Array.from(t.data.subarray(b * n, (b + 1) * n)));
  });
  afterAll(async () => {
    for (const close of closers) await close();
  });

  async function check(model: ClipTextModel, source: string) {
    const want = goldens.get('text.last_hidden_state')!;
    const y = await gpu.checked(() => clipTextForward(model, ids));
    expect(y.shape).toEqual(want.shape);
    const got = await y.read();
    console.log(`clip text (${source}): last_hidden_state relative L2 error ${relError(got, want.data).toExponential(2)}`);
    expectClose(got, want.data, TOL, `last_hidden_state (${source})`);
    // One prompt alone gives its row of the batch: nothing leaks between examples.
    const one = clipTextForward(model, [ids[2]]);
    const n = want.shape[1] * want.shape[2];
    expectClose(await one.read(), want.data.subarray(2 * n, 3 * n), TOL, `prompt 2 alone (${source})`);
    y.release();
    one.release();
  }

  it('folder weights: input_ids -> last_hidden_state', async () => {
    const inUse = gpu.pool.bytesInUse;
    const model = await loadClipTextModel(gpu, dirModelFiles(TINY_FOLDER));
    expect(model.config.hidden_act).toBe('quick_gelu');
    await check(model, 'folder');
    model.release();
    expect(gpu.pool.bytesInUse, 'forward and release leave nothing behind').toBe(inUse);
  });

  it('single-file checkpoint: the same result', async () => {
    const { file, close } = await openSafetensorsFile(TINY_SINGLE);
    closers.push(close);
    const model = await loadClipTextModelFromSingleFile(gpu, file, dirModelFiles(TINY_FOLDER));
    await check(model, 'single file');
    model.release();
  });

  it('a config that does not match the weights fails with the list of missing and mis-shaped tensors', async () => {
    const files = dirModelFiles(TINY_FOLDER);
    const raw = JSON.parse(readFileSync(join(TINY_FOLDER, 'text_encoder/config.json'), 'utf8'));
    const wrong = withReplacedText(files, {
      'text_encoder/config.json': JSON.stringify({ ...raw, num_hidden_layers: 3, intermediate_size: 100 }),
    });
    const before = gpu.pool.bytesInUse;
    const err = await loadClipTextModel(gpu, wrong).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelLoadError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/text_encoder\/model\.safetensors does not match its config/);
    expect(msg).toMatch(/missing \(16\): text_model\.encoder\.layers\.2\.layer_norm1\.weight/);
    expect(msg).toMatch(/mis-shaped \(6\): text_model\.encoder\.layers\.0\.mlp\.fc1\.weight: file has \[192, 48\], the config needs \[100, 48\]/);
    expect(gpu.pool.bytesInUse, 'nothing uploaded').toBe(before);
  });

  it('param shapes follow the config (other width, one layer)', () => {
    const config = clipTextConfig({ hidden_size: 64, intermediate_size: 80, num_attention_heads: 2, num_hidden_layers: 1, vocab_size: 100, max_position_embeddings: 20, hidden_act: 'gelu' });
    const shapes = clipTextParamShapes(config);
    expect(shapes.size).toBe(2 + 16 + 2);
    expect(shapes.get('text_model.embeddings.token_embedding.weight')).toEqual([100, 64]);
    expect(shapes.get('text_model.embeddings.position_embedding.weight')).toEqual([20, 64]);
    expect(shapes.get('text_model.encoder.layers.0.mlp.fc2.weight')).toEqual([64, 80]);
    expect(() => clipTextConfig({ hidden_size: 48, num_attention_heads: 5 })).toThrow(/5 heads do not divide/);
    expect(() => clipTextConfig({ hidden_act: 'relu' })).toThrow(ModelLoadError);
  });
});

describe('CLIP text encoder on other configs, against the float64 reference', () => {
  it('width 40, 5 heads, one layer, gelu, batch 3 of 11 tokens', async () => {
    const gpu = await testGpu();
    const config = clipTextConfig({
      hidden_size: 40,
      intermediate_size: 56,
      num_attention_heads: 5,
      num_hidden_layers: 1,
      max_position_embeddings: 16,
      vocab_size: 300,
      hidden_act: 'gelu',
      layer_norm_eps: 1e-5,
    });
    const w = randomWeights(gpu, clipTextParamShapes(config), 10);
    const model = new ClipTextModel(config, w.gpu);
    const r = rng(3);
    const ids = Array.from({ length: 3 }, () => Array.from({ length: 11 }, () => Math.floor(r() * 300)));
    const y = await gpu.checked(() => clipTextForward(model, ids));
    expect(y.shape).toEqual([3, 11, 40]);
    expectClose(await y.read(), ref.clipText(w.f64, config, ids), TOL, 'last_hidden_state');
    y.release();
    model.release();
    expect(() => clipTextForward(model, ids)).toThrow(/released/);
  });

  it('three quick_gelu layers of width 24 (head dim 12), 16 tokens, batch 1', async () => {
    const gpu = await testGpu();
    const config = clipTextConfig({ hidden_size: 24, intermediate_size: 40, num_attention_heads: 2, num_hidden_layers: 3, max_position_embeddings: 16, vocab_size: 50 });
    const w = randomWeights(gpu, clipTextParamShapes(config), 20);
    const model = new ClipTextModel(config, w.gpu);
    const ids = [Array.from({ length: 16 }, (_, i) => (i * 7) % 50)];
    const y = clipTextForward(model, ids);
    expectClose(await y.read(), ref.clipText(w.f64, config, ids), TOL, 'last_hidden_state');
    expect(() => clipTextForward(model, [[1, 2], [3]])).toThrow(/prompt 1 has 1 ids/);
    expect(() => clipTextForward(model, [Array(17).fill(0)])).toThrow(/1 to 16/);
    expect(() => clipTextForward(model, [[50]])).toThrow(/not in \[0, 50\)/);
    y.release();
    model.release();
  });
});
