// The demo model's build (src/demo/build.ts, `tpo-lab build-demo`): its tokenizer gives every shapes-world
// word one token; a --quick build writes a diffusers folder that the lab's own loaders and checks accept,
// with the config keys diffusers writes; a stopped build continues from its checkpoints; and
// `tpo-lab sample --model demo` draws from the result.

import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { servedFolderModel } from '../../src/app/model-sources';
import { DEMO_MODEL_FILES } from '../../src/demo/files';
import { demoTokenizerFiles, mergesText } from '../../src/demo/tokenizer-files';
import { shapesDataset, shapesWords } from '../../src/demo/shapes';
import { checkModelForTraining } from '../../src/models/model-check';
import { dirModelFiles } from '../../src/models/model-files-node';
import { loadClipTokenizer } from '../../src/models/tokenizer-node';
import { ClipTokenizer } from '../../src/models/tokenizer';
import { runCli } from '../helpers/cli';
import { GOLDENS } from '../helpers/goldens';
import { testGpu } from '../helpers/gpu';

const tmp = mkdtempSync(path.join(tmpdir(), 'demo-build-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const TINY = path.join(GOLDENS, 'tiny-sd15');
const json = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;

/** A caption's tokens as words again: '</w>' marks a word's end, so whole-word tokens read back as the words. */
function wordsOf(tokenizer: ClipTokenizer, text: string): string[] {
  return tokenizer.idsToTokens(tokenizer.encode(text)).map((t) => t.replace(/<\/w>$/, ''));
}

describe('demo tokenizer', () => {
  it('gives every shapes-world word one token and reads captions back word for word', () => {
    const files = demoTokenizerFiles();
    const tokenizer = new ClipTokenizer({ vocab: JSON.stringify(files.vocab), merges: mergesText(files.merges) });
    // CLIP's layout: 256 byte tokens, the same with </w>, the merges, then the two special tokens last.
    const ids = Object.values(files.vocab);
    expect(new Set(ids).size).toBe(ids.length);
    expect(Math.max(...ids)).toBe(ids.length - 1);
    expect(files.vocab['!']).toBe(0);
    expect(files.vocab['!</w>']).toBe(256);
    expect([tokenizer.bosId, tokenizer.eosId]).toEqual([ids.length - 2, ids.length - 1]);
    for (const word of shapesWords()) expect(tokenizer.encode(word), word).toHaveLength(1);
    const captions = [...shapesDataset({ seed: 3, count: 40 }), ...shapesDataset({ seed: 3, count: 40, split: 'heldout' })].map((it) => it.caption);
    for (const caption of captions) expect(wordsOf(tokenizer, caption), caption).toEqual(tokenizer.pieces(caption));
    // Text outside the world still tokenizes (byte by byte), as CLIP does with a rare word.
    expect(wordsOf(tokenizer, 'a pink star').join('')).toBe('apinkstar');
    // The same files every time.
    expect(demoTokenizerFiles()).toEqual(files);
  });
});

describe('tpo-lab build-demo --quick', () => {
  const out = path.join(tmp, 'demo');
  const work = path.join(tmp, 'work');
  const build = async (args: string[]) => runCli(['build-demo', '--quick', ...args], { cwd: tmp, gpu: await testGpu() });

  it('continues a stopped build from its checkpoints; the folder loads with the lab\'s loaders and samples with --model demo', async () => {
    // A build stopped after its first UNet step is the same build run with --unet-steps 1 (its checkpoint
    // is the full run's first); the full build on the same work folder continues from there. That resume
    // is exact is the trainers' own test (full-weights.test.ts); here, that the build takes it up.
    let started = performance.now();
    const part = await build(['--out', path.join(tmp, 'part'), '--work', work, '--unet-steps', '1']);
    expect(part.status, part.err).toBe(0);
    console.log(`quick build, stopped after 1 UNet step: ${((performance.now() - started) / 1000).toFixed(1)} s`);
    started = performance.now();
    const r = await build(['--out', out, '--work', work]);
    expect(r.status, r.err).toBe(0);
    console.log(`quick build, continued: ${((performance.now() - started) / 1000).toFixed(1)} s\n${r.err}`);
    expect(r.err).toMatch(/unet: resumed at step 1 of 2/);

    // Exactly the files the app fetches when it serves the folder (a server lists no folders).
    const written = readdirSync(out, { recursive: true }).map(String).filter((f) => statSync(path.join(out, f)).isFile());
    expect(written.sort()).toEqual([...DEMO_MODEL_FILES].sort());
    expect(readdirSync(out, { recursive: true }).some((f) => String(f).endsWith('.tmp'))).toBe(false);
    // Every config has at least the keys diffusers / transformers wrote into the tiny golden folder.
    for (const file of ['model_index.json', 'text_encoder/config.json', 'unet/config.json', 'vae/config.json', 'tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json']) {
      const missing = Object.keys(json(path.join(TINY, file))).filter((k) => !(k in json(path.join(out, file))));
      expect(missing, file).toEqual([]);
    }
    // SD1.5's schedule as a DDIMScheduler (PNDM's skip_prk_steps dropped), with a v head, zero terminal SNR and
    // sampling from t = 999.
    const { skip_prk_steps: _pndmOnly, ...sd15 } = json(path.join(TINY, 'scheduler/scheduler_config.json')) as Record<string, unknown>;
    expect(json(path.join(out, 'scheduler/scheduler_config.json'))).toEqual({ ...sd15, _class_name: 'DDIMScheduler', prediction_type: 'v_prediction', rescale_betas_zero_snr: true, timestep_spacing: 'trailing' });
    expect(json(path.join(out, 'model_index.json')).scheduler).toEqual(['diffusers', 'DDIMScheduler']);
    // The text encoder is fixed from the seed and the tokenizer from the words: the stopped build wrote the same.
    for (const file of ['text_encoder/model.safetensors', 'tokenizer/vocab.json', 'tokenizer/merges.txt']) {
      expect(readFileSync(path.join(out, file)).equals(readFileSync(path.join(tmp, 'part', file))), file).toBe(true);
    }

    // The lab's own folder check (configs agree, every tensor present and shaped), and its tokenizer loader.
    const files = dirModelFiles(out);
    await checkModelForTraining(files, { resolution: 64 });
    await files.close?.();
    const tokenizer = await loadClipTokenizer(out);
    const caption = shapesDataset({ seed: 0, count: 1, split: 'heldout' })[0].caption;
    expect(wordsOf(tokenizer, caption)).toEqual(tokenizer.pieces(caption));

    // As the app opens it: each file fetched from where it is served, the folder checked by the lab.
    const served = (url: string) => {
      const file = path.join(out, url.slice('/demo/'.length));
      return Promise.resolve(existsSync(file) ? new Response(readFileSync(file)) : new Response('not found', { status: 404 }));
    };
    const model = await servedFolderModel('demo', '/demo/', DEMO_MODEL_FILES, served);
    expect((await model.check()).unet.block_out_channels).toEqual(json(path.join(out, 'unet/config.json')).block_out_channels);
    await model.close();
    await expect(servedFolderModel('demo', '/demo/', [...DEMO_MODEL_FILES, 'unet/missing.bin'], served)).rejects.toThrow(
      /demo: the app's server has no \/demo\/unet\/missing\.bin, so the demo model is not built\. Build it with npm run build:demo/,
    );

    const samples = path.join(tmp, 'samples');
    const s = await runCli(['sample', '--model', 'demo', '--prompt', caption, '--steps', '2', '--seed', '1', '--quiet', '--out', samples], { cwd: tmp, gpu: await testGpu(), env: { TPO_LAB_DEMO: out } });
    expect(s.status, s.err).toBe(0);
    expect(readdirSync(samples).sort()).toEqual(['000-1.png', 'index.json']);
  }, 300_000);

  it('--model demo says how to build the demo when it is not there', async () => {
    const empty = path.join(tmp, 'empty');
    mkdirSync(empty);
    const r = await runCli(['sample', '--model', 'demo', '--prompt', 'a red circle', '--out', path.join(tmp, 'x')], { cwd: tmp, env: { TPO_LAB_DEMO: empty } });
    expect(r.status).toBe(2);
    expect(r.err).toMatch(/demo model is not built.*run npm run build:demo/);
  });
});
