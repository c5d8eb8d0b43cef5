// The CLIP judge (src/judges/) on a tiny CLIP-interface model written by the lab's ONNX writer: ONNX
// Runtime's outputs against a plain TypeScript computation of the same graphs, CLIPImageProcessor's
// preprocessing on hand-computed cases, the refusals of malformed judge folders, and the correlations.

import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { RgbaImage } from '../../src/data/pixels';
import { ClipJudge, clipScore, cosine, rewardScore } from '../../src/judges/clip-judge';
import { loadJudgeFolder, readJudgeFolder } from '../../src/judges/clip-judge-node';
import { judgeSourceFromFiles, readJudgeFiles } from '../../src/judges/judge-files';
import { averageRanks, pearson, spearman } from '../../src/judges/correlation';
import { ONNX_FLOAT, writeOnnxModel, type OnnxGraph } from '../../src/judges/onnx-writer';
import { clipPixelValues, parseClipImageConfig, pillowResizeRgb, shortestEdgeSize } from '../../src/judges/preprocess';
import { seededRandom } from '../../src/util/random';
import { fixtureVocab, referenceImageEmbeds, referenceTextEmbeds, textGraph, visionGraph, writeFixtureFolder } from '../helpers/clip-fixture';
import { tempDir } from '../helpers/llm/files';

const dirs: { cleanup: () => void }[] = [];
afterEach(() => {
  while (dirs.length) dirs.pop()!.cleanup();
});
function temp() {
  const d = tempDir('tpo-lab-judge-');
  dirs.push(d);
  return d;
}

function randomImage(seed: number, width: number, height: number): RgbaImage {
  const rand = seededRandom(seed, 'judge-image');
  const data = new Uint8Array(width * height * 4);
  for (let i = 0; i < data.length; i++) data[i] = i % 4 === 3 ? 255 : Math.floor(rand() * 256);
  return { width, height, data };
}

function relErr(got: number, want: number): number {
  return Math.abs(got - want) / Math.max(Math.abs(want), 1e-12);
}

describe('CLIP judge on the tiny fixture', () => {
  for (const layout of [
    { onnxSubfolder: false, tokenizerJson: false, attentionMask: true },
    { onnxSubfolder: true, tokenizerJson: true, attentionMask: false },
  ]) {
    it(`matches the TypeScript reference (${JSON.stringify(layout)})`, async () => {
      const d = temp();
      const w = writeFixtureFolder(d.dir, layout);
      const judge = await loadJudgeFolder(d.dir, 'clip', { batchSize: 2 });
      try {
        expect(judge.backend).toBe('wasm');
        expect(judge.textLength).toBe(77);
        const captions = ['a red cat', 'A dog!', 'cat dog red', ''];
        const texts = await judge.embedTexts(captions);
        // The mask covers BOS .. the first EOS; the rest is EOS padding.
        const reference = (caption: string) => {
          const ids = judge.tokenize(caption);
          const eos = ids.indexOf(ids[ids.length - 1]);
          return referenceTextEmbeds(w, ids, layout.attentionMask ? ids.map((_, t) => (t <= eos ? 1 : 0)) : null);
        };
        for (const [i, caption] of captions.entries()) {
          const want = reference(caption);
          for (let k = 0; k < want.length; k++) expect(relErr(texts[i][k], want[k])).toBeLessThan(1e-5);
        }
        // "cat" and "dog" are single merged tokens of the fixture's vocabulary.
        const vocab = fixtureVocab();
        expect(judge.tokenize('cat').slice(0, 3)).toEqual([vocab['<|startoftext|>'], vocab['cat</w>'], vocab['<|endoftext|>']]);
        const images = [randomImage(1, 13, 10), randomImage(2, 10, 30), randomImage(3, 8, 8)];
        const embeds = await judge.embedImages(images);
        for (const [i, img] of images.entries()) {
          const want = referenceImageEmbeds(w, clipPixelValues(img, parseClipImageConfig(JSON.stringify({ size: { shortest_edge: 10 }, crop_size: 8 }))).data);
          for (let k = 0; k < want.length; k++) expect(relErr(embeds[i][k], want[k])).toBeLessThan(1e-5);
          const s = judge.score(embeds[i], texts[0]);
          expect(relErr(s, clipScore(want, reference(captions[0])))).toBeLessThan(1e-5);
        }
      } finally {
        await judge.release();
      }
    });
  }

  it('scores a reward model as exp(logit_scale) * cosine', async () => {
    const d = temp();
    writeFixtureFolder(d.dir, { logitScale: Math.log(50) });
    const judge = await loadJudgeFolder(d.dir, 'reward');
    try {
      const [t] = await judge.embedTexts(['red dog']);
      const [i] = await judge.embedImages([randomImage(4, 9, 9)]);
      expect(judge.score(i, t)).toBeCloseTo(50 * cosine(i, t), 10);
      expect(rewardScore([1, 0], [1, 0], Math.log(100))).toBeCloseTo(100, 10);
    } finally {
      await judge.release();
    }
  });

  it('runs a model with a fixed batch size in chunks of exactly that size, the last one filled', async () => {
    const d = temp();
    const w = writeFixtureFolder(d.dir);
    const g = visionGraph(w);
    writeFileSync(path.join(d.dir, 'vision_model.onnx'), writeOnnxModel({ ...g, inputs: [{ ...g.inputs[0], shape: [2, 3, 8, 8] }] }));
    const judge = await loadJudgeFolder(d.dir, 'clip', { batchSize: 4 });
    try {
      const progress: number[] = [];
      const images = [randomImage(5, 8, 8), randomImage(6, 9, 8), randomImage(7, 8, 12)];
      const out = await judge.embedImages(images, (n) => progress.push(n));
      expect(progress).toEqual([2, 3]);
      const config = parseClipImageConfig(JSON.stringify({ size: { shortest_edge: 10 }, crop_size: 8 }));
      images.forEach((img, i) => {
        const want = referenceImageEmbeds(w, clipPixelValues(img, config).data);
        for (let k = 0; k < want.length; k++) expect(relErr(out[i][k], want[k])).toBeLessThan(1e-5);
      });
    } finally {
      await judge.release();
    }
  });
});

describe('a judge folder picked in the browser', () => {
  it('reads the same judge from File objects with their webkitRelativePath', async () => {
    const d = temp();
    writeFixtureFolder(path.join(d.dir, 'my-clip'), { onnxSubfolder: true, tokenizerJson: true });
    const files = ['onnx/text_model.onnx', 'onnx/vision_model.onnx', 'preprocessor_config.json', 'tokenizer.json'].map((rel) => {
      const f = new File([readFileSync(path.join(d.dir, 'my-clip', rel))], path.basename(rel));
      Object.defineProperty(f, 'webkitRelativePath', { value: `my-clip/${rel}` });
      return f;
    });
    const fromFiles = await ClipJudge.create(await readJudgeFiles(judgeSourceFromFiles(files), 'clip'));
    const fromDir = await loadJudgeFolder(path.join(d.dir, 'my-clip'), 'clip');
    try {
      const img = randomImage(9, 11, 13);
      expect(Array.from((await fromFiles.embedImages([img]))[0])).toEqual(Array.from((await fromDir.embedImages([img]))[0]));
      expect(Array.from((await fromFiles.embedTexts(['a red dog']))[0])).toEqual(Array.from((await fromDir.embedTexts(['a red dog']))[0]));
    } finally {
      await Promise.all([fromFiles.release(), fromDir.release()]);
    }
    await expect(readJudgeFiles(judgeSourceFromFiles(files.slice(1)), 'clip')).rejects.toThrow(/^my-clip: no text_model\.onnx \(looked in my-clip and my-clip\/onnx\)/);
  });
});

describe('malformed judge folders are refused with named errors', () => {
  async function refusal(prepare: (dir: string) => void, kind: 'clip' | 'reward' = 'clip'): Promise<string> {
    const d = temp();
    writeFixtureFolder(d.dir);
    prepare(d.dir);
    try {
      const judge = await loadJudgeFolder(d.dir, kind);
      await judge.release();
    } catch (e) {
      return (e as Error).message;
    }
    throw new Error('the folder was accepted');
  }
  const w = () => writeFixtureFolder(temp().dir);

  it('names the missing or wrong file and what is wrong', async () => {
    const rm = (f: string) => (dir: string) => writeFileSync(path.join(dir, f), '') as void;
    expect(await loadJudgeFolder('/no/such/judge', 'clip').catch((e: Error) => e.message)).toMatch(/\/no\/such\/judge: no such folder/);
    const { rmSync } = await import('node:fs');
    expect(await refusal((dir) => rmSync(path.join(dir, 'text_model.onnx')))).toMatch(/no text_model\.onnx \(looked in .* and .*onnx\).*Xenova\/clip-vit-base-patch32/);
    expect(await refusal((dir) => rmSync(path.join(dir, 'preprocessor_config.json')))).toMatch(/no preprocessor_config\.json/);
    expect(await refusal((dir) => rmSync(path.join(dir, 'merges.txt')))).toMatch(/no tokenizer \(expected vocab\.json and merges\.txt, or tokenizer\.json\)/);
    expect(await refusal(rm('vision_model.onnx'))).toMatch(/vision_model\.onnx: the file is empty, not an ONNX model/);
    expect(await refusal((dir) => writeFileSync(path.join(dir, 'text_model.onnx'), 'this is not a model'))).toMatch(/text_model\.onnx: not an ONNX model that ONNX Runtime can read/);
    expect(await refusal((dir) => writeFileSync(path.join(dir, 'preprocessor_config.json'), '{"crop_size": "big"}'))).toMatch(/preprocessor_config\.json: "crop_size" must be/);
    expect(await refusal((dir) => writeFileSync(path.join(dir, 'preprocessor_config.json'), '{'))).toMatch(/preprocessor_config\.json: not valid JSON/);
    expect(await refusal(() => undefined, 'reward')).toMatch(/no reward\.json/);
  });

  it('finds inputs and outputs by name and checks their shapes', async () => {
    const weights = w();
    const put = (file: string, bytes: Uint8Array) => (dir: string) => writeFileSync(path.join(dir, file), bytes);
    expect(await refusal(put('text_model.onnx', writeOnnxModel(textGraph(weights, { inputName: 'tokens', attentionMask: false }))))).toMatch(
      /text_model\.onnx: no input named "input_ids" \(the model's inputs: "tokens"\)/,
    );
    const g = textGraph(weights);
    expect(await refusal(put('text_model.onnx', writeOnnxModel({ ...g, outputs: [{ ...g.outputs[0], name: 'pooled_output' }], nodes: g.nodes.map((n) => (n.outputs[0] === 'text_embeds' ? { ...n, outputs: ['pooled_output'] } : n)) })))).toMatch(
      /text_model\.onnx: no output named "text_embeds" \(the model's outputs: "pooled_output"\)/,
    );
    expect(await refusal(put('vision_model.onnx', writeOnnxModel(visionGraph(weights, { size: 12 }))))).toMatch(
      /vision_model\.onnx: input "pixel_values" has shape \[batch, 3, 12, 12\] but .*preprocessor_config\.json crops images to 8x8/,
    );
    // A valid model whose pixel_values has 3 dimensions: [batch, 3, 8] -> mean over the last -> image_embeds [batch, 3].
    const flat: OnnxGraph = {
      name: 'rank3',
      nodes: [{ opType: 'ReduceMean', inputs: ['pixel_values'], outputs: ['image_embeds'], attributes: [{ name: 'axes', ints: [2] }, { name: 'keepdims', int: 0 }] }],
      initializers: [],
      inputs: [{ name: 'pixel_values', elemType: ONNX_FLOAT, shape: ['batch', 3, 8] }],
      outputs: [{ name: 'image_embeds', elemType: ONNX_FLOAT, shape: ['batch', 3] }],
    };
    expect(await refusal(put('vision_model.onnx', writeOnnxModel(flat)))).toMatch(
      /vision_model\.onnx: input "pixel_values" has shape \[batch, 3, 8\], expected 4 dimensions/,
    );
    // Swapped towers.
    const d = temp();
    writeFixtureFolder(d.dir);
    writeFileSync(path.join(d.dir, 'text_model.onnx'), writeOnnxModel(visionGraph(weights)));
    await expect(readJudgeFolder(d.dir, 'clip').then((f) => ClipJudge.create(f))).rejects.toThrow(/text_model\.onnx: no input named "input_ids" \(the model's inputs: "pixel_values"\)/);
  });
});

describe('CLIPImageProcessor preprocessing', () => {
  it('resizes as Pillow does: bicubic a=-0.5, stretched when shrinking (hand-computed 4 -> 2)', () => {
    // Output pixel 0: centre 1, taps x=0..3 at (x - 0.5) / 2 -> bicubic(-0.25, 0.25, 0.75, 1.25) =
    // 0.8671875, 0.8671875, 0.2265625, -0.0703125 (sum 1.890625): 100 * 0.45868 + 200 * 0.11983 - 250 * 0.03719 = 60.54 -> 61.
    // Output pixel 1 mirrors it: 100 * 0.11983 + 200 * 0.45868 + 250 * 0.45868 = 218.39 -> 218.
    const row = [0, 100, 200, 250];
    const rgb = Uint8Array.from(row.flatMap((v) => [v, v, v]));
    expect(Array.from(pillowResizeRgb(rgb, 4, 1, 2, 1, 3))).toEqual([61, 61, 61, 218, 218, 218]);
    // Enlarging 2 -> 4 over pixels [0, 200]: no stretch, centres 0.25, 0.75, 1.25, 1.75, taps beyond the edge
    // dropped and the rest renormalised: centre 0.75 -> 200 * 0.2265625 / 1.09375 = 41.4; centre 1.75 ->
    // 200 * 0.8671875 / 0.796875 = 217.6; centre 0.25 -> -17.6, clamped to 0.
    const up = pillowResizeRgb(Uint8Array.from([0, 0, 0, 200, 200, 200]), 2, 1, 4, 1, 3);
    expect(Array.from(up).filter((_, i) => i % 3 === 0)).toEqual([0, 41, 159, 218]);
    // Same size: a copy.
    expect(Array.from(pillowResizeRgb(rgb, 4, 1, 4, 1))).toEqual(Array.from(rgb));
    expect(shortestEdgeSize(640, 480, 224)).toEqual({ width: 298, height: 224 });
    expect(shortestEdgeSize(480, 641, 224)).toEqual({ width: 224, height: 299 });
  });

  it("gives Pillow's bytes (Pillow 12.3 Image.resize of random RGB images, BICUBIC and BILINEAR)", () => {
    // Inputs and outputs as Pillow gave them (hex RGB, row-major). The same code matched Pillow byte for
    // byte on 12 such cases (37x23 -> 11x7, 23x37 -> 10x16, 40x30 -> 30x22, ... each with both filters).
    const hex = (h: string) => Uint8Array.from(h.match(/../g)!.map((b) => parseInt(b, 16)));
    const cases: [number, number, number, number, 2 | 3, string, string][] = [
      [7, 5, 3, 4, 3,
        '750c3669db92fd8f9c38ee478fa09fad12986482ed7201a0e93821dab48115479cbfafcc5b1aefa75375f553dacb389f2eeb53defb47200ff5437a169ad3ed83b2aabb115cda71febe817c2184951196f4f6532f6519ad922173564adda066ee5e0067190827c6b9df',
        '946f6a8ab0838a51bdbf4b7a79938d7860aeba68a18792935f829481329f7b44b968517b'],
      [5, 3, 11, 7, 3,
        '605202da107d1fc939bdbf44c230a2fa01ef78ce28ddc009b09676cbfecebd191fd0db504aa96148fbd3a003bb',
        '456000674b00be1153dc0687686b660dca3e4dde34b3cb3ccc8762c33192c10ea766501a7d4326b82559ca2a75747d5432c83464d433b4c043c98f6cc4549ac33aafb9269eb72d8ba955699b814593ab2693c518a4ba2cbaa352c5a582c9b1b0cbafc5ff00ffe81bd6a0857279d51eacd504ddc009cea732b2946cb7b89dc7f0c4ceffd6ec00abdf2295b5955d96e62fa0d422a9b52d95b95e81c09a93b4b8b1a1c5be9dccc30632c62f37ce9842c1e04c8bc74d59ab584ad38d4ef5c46eaacd9a38c0ac1abcb40804bd3414d89b38d1e05783c35d3ca7692ddda039ffd65fa6d7900fbfa400b6'],
      [9, 9, 9, 4, 2,
        '121ece1ce7d8ae1de3ff86dbf9562e41a429cb7a197fae9a6cbde2616a3f388bd8d69b7f408f8978073c17ab4530e9a484207398d19a555f947f584872eff4bd05aeca18bd7aa0f30cfdb92721491be12ebe867b4f82b9cbfb5bffa9d4658dcce12c036db82a105dfafdc775d8fdb9e2790b5958ee5f753f18ce146ca3436648c7264be285f7bf7f145cb48640a423fd4a7c786eb475a83fa5448a49e0b28acd16eb86dea411b89973181864876a35b8f931086761b3cf3f6c795d30eb7f7701b10ebf14582bf161951281ee0a745547d3b05ff9e5a92b37c41ab3306ee6d7dd601eca4976b61dbaa89c6d10ace0629803f71b',
        '414c853ca3bbb37dbca070afb828513aa65d62c4757055796fcd9f9f918a7d76749ac8abb86fa17173939c6f5a4cb47d2947b99dd57896877e9088587d35a9667d6c45b68e714a75548d8f7d8ca29e54d19a69646154c66f7d3b8690703ea0a35372735a84b589a5b35c7851'],
    ];
    for (const [w, h, ow, oh, filter, input, output] of cases) {
      expect(Buffer.from(pillowResizeRgb(hex(input), w, h, ow, oh, filter)).toString('hex')).toBe(output);
    }
  });

  it('crops the centre, rescales and normalises to CHW float32', () => {
    // 3 x 2 image, no resize, crop 2 x 1 (top (2-1)//2 = 0, left (3-2)//2 = 0), mean 0.5, std 0.25.
    const img: RgbaImage = { width: 3, height: 2, data: Uint8Array.from([10, 20, 30, 0, 40, 50, 60, 9, 70, 80, 90, 255, 1, 2, 3, 255, 4, 5, 6, 255, 7, 8, 9, 255]) };
    const c = parseClipImageConfig(JSON.stringify({ do_resize: false, crop_size: { height: 1, width: 2 }, image_mean: [0.5, 0.5, 0.5], image_std: [0.25, 0.25, 0.25] }));
    const p = clipPixelValues(img, c);
    expect([p.height, p.width]).toEqual([1, 2]);
    const f = (v: number) => (v / 255 - 0.5) / 0.25;
    // Alpha dropped as PIL's convert('RGB') does (the first pixel has alpha 0 and keeps its colour).
    expect(Array.from(p.data).map((x) => x.toFixed(5))).toEqual([f(10), f(40), f(20), f(50), f(30), f(60)].map((x) => x.toFixed(5)));
    expect(c.shortestEdge).toBe(224);
    expect(parseClipImageConfig('{"size": 336, "crop_size": 336}').cropWidth).toBe(336);
    expect(() => parseClipImageConfig('{"image_std": [1, 0, 1]}', 'x/preprocessor_config.json')).toThrow(/x\/preprocessor_config\.json: "image_std" must be a list of 3 positive numbers/);
    expect(() => parseClipImageConfig('{"resample": 1}')).toThrow(/"resample" must be 2 \(bilinear\) or 3 \(bicubic\)/);
  });
});

describe('correlations', () => {
  it('Pearson and Spearman with average ranks for ties', () => {
    expect(pearson([1, 2, 3], [2, 4, 6])).toBeCloseTo(1, 12);
    expect(pearson([1, 2, 3], [3, 2, 1])).toBeCloseTo(-1, 12);
    // Hand-computed: x mean 2.5, y mean 2.75; sxy = 4.5, sxx = 5, syy = 6.75 -> 4.5 / sqrt(33.75).
    expect(pearson([1, 2, 3, 4], [2, 1, 4, 4])).toBeCloseTo(4.5 / Math.sqrt(33.75), 12);
    expect(averageRanks([10, 20, 20, 5])).toEqual([2, 3.5, 3.5, 1]);
    // Monotone but not linear: Spearman 1, Pearson below 1.
    expect(spearman([1, 2, 3, 4], [1, 8, 27, 1000])).toBeCloseTo(1, 12);
    expect(pearson([1, 2, 3, 4], [1, 8, 27, 1000])!).toBeLessThan(0.9);
    // Ties: ranks [1, 2.5, 2.5, 4] against [1, 2, 3, 4] -> r = 4.5 / sqrt(4.5 * 5).
    expect(spearman([1, 2, 2, 3], [1, 2, 3, 4])).toBeCloseTo(4.5 / Math.sqrt(4.5 * 5), 12);
    expect(pearson([1], [2])).toBeNull();
    expect(spearman([1, 1, 1], [1, 2, 3])).toBeNull();
  });
});
