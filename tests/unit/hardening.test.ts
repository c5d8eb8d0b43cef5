// The checks behind issue #12 ("every bad input refused with a clear message"), one by one, on the
// platform-free functions the CLI and the browser app share, plus the LLM-side cases of `pairs`. The CLI
// itself runs over malformed inputs in malformed-inputs.test.ts.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { systemErrorMessage } from '../../src/cli/io';
import { checkTrainingInputs, loadTrainingData } from '../../src/cli/training-data';
import { noAdapterReason } from '../../src/gpu/node';
import { extractCaption } from '../../src/llm/extract';
import { runPool } from '../../src/llm/generate';
import { buildEditMessages } from '../../src/llm/principles';
import { validateNegative } from '../../src/llm/validate';
import { SD15_UNET_CONFIG } from '../../src/models/sd15-configs';
import { checkModelResolution, unetParamShapes, type UNetConfig, validateUNetConfig } from '../../src/models/unet';
import { checkCheckpointTensors, type CheckpointFiles, parseCheckpointState } from '../../src/tpo/checkpoint';
import { longCaptionProblem, smallImageProblem } from '../../src/tpo/input-checks';
import { runCli } from '../helpers/cli';
import { GOLDENS } from '../helpers/goldens';
import { tinyPng, writeFakeRun } from '../helpers/malformed';
import { writeTpoSet } from '../helpers/train-data';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const tmp = mkdtempSync(path.join(tmpdir(), 'hardening-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const tinyUnet = JSON.parse(readFileSync(path.join(TINY, 'unet/config.json'), 'utf8')) as UNetConfig;

describe('1. checkpoints are checked field by field before anything runs', () => {
  it('a consistent checkpoint passes every check, LoRA and moments included', async () => {
    const dir = path.join(tmp, 'ok');
    mkdirSync(dir);
    const run = await writeFakeRun(dir, TINY);
    const files = Object.fromEntries(['lora.safetensors', 'optimizer.safetensors', 'state.json'].map((f) => [f, new Uint8Array(readFileSync(path.join(run.out, 'checkpoint', f)))])) as CheckpointFiles;
    const saved = parseCheckpointState(new TextDecoder().decode(files['state.json']));
    expect(saved.state.step).toBe(2);
    await expect(checkCheckpointTensors(saved, files, tinyUnet)).resolves.toBeUndefined();
  });

  it('refuses a step that is not a number, a negative step, a negative position and an order past the data', () => {
    const dir = path.join(tmp, 'state');
    const base = () => JSON.parse(readFileSync(path.join(dir, 'run', 'checkpoint', 'state.json'), 'utf8')) as Record<string, Record<string, unknown>>;
    return writeFakeRun((mkdirSync(dir), dir), TINY).then(() => {
      const cases: [(s: Record<string, Record<string, unknown>>) => void, RegExp][] = [
        [(s) => (s.state.step = 'abc'), /state\.step must be a whole number >= 0, got "abc"/],
        [(s) => (s.state.step = -1), /state\.step must be a whole number >= 0, got -1/],
        [(s) => (s.state.position = -1), /state\.position must be a whole number from 0 to 4, got -1/],
        [(s) => ((s.state.order as number[])[2] = 4), /state\.order\[2\] must be an example index from 0 to 3, got 4/],
      ];
      for (const [edit, message] of cases) {
        const s = base();
        edit(s);
        expect(() => parseCheckpointState(JSON.stringify(s), 'run/checkpoint/state.json')).toThrow(message);
      }
    });
  });

  it('a refused resume leaves metrics.jsonl and the checkpoint as they were', async () => {
    const dir = path.join(tmp, 'metrics');
    mkdirSync(dir);
    const run = await writeFakeRun(dir, TINY, (s) => void (s.state.step = -1));
    const before = readFileSync(path.join(run.out, 'metrics.jsonl'), 'utf8');
    const r = await runCli(['train', '--resume', run.out, '--quiet'], { cwd: dir });
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/state\.step .* got -1/);
    expect(readFileSync(path.join(run.out, 'metrics.jsonl'), 'utf8')).toBe(before);
  });
});

describe('2. the resolution must suit the model', () => {
  it('says which sizes work', () => {
    expect(() => checkModelResolution(512, SD15_UNET_CONFIG, 4)).not.toThrow();
    expect(() => checkModelResolution(64, tinyUnet, 4)).not.toThrow();
    expect(() => checkModelResolution(32, tinyUnet, 4)).toThrow(/resolution 32 does not fit this model: .*multiple of 64 pixels \(for example 64, 128\)/);
    expect(() => checkModelResolution(520, SD15_UNET_CONFIG, 4)).toThrow(/multiple of 64 pixels \(for example 512, 576, 640\)/);
  });
});

describe('3. every UNet config value is bounded and checked at load', () => {
  it('refuses absurd and inconsistent values at once, naming the key and the range', () => {
    const started = Date.now();
    expect(() => unetParamShapes({ ...tinyUnet, layers_per_block: 1e9 })).toThrow(/layers_per_block must be a whole number from 1 to 16, got 1000000000/);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(() => validateUNetConfig({ ...tinyUnet, attention_head_dim: 5 })).toThrow(/attention_head_dim 5 does not divide the 32 channels of block 0/);
    expect(() => validateUNetConfig({ ...tinyUnet, num_attention_heads: [4, 4, 4, 3] })).toThrow(/num_attention_heads 3 does not divide the 64 channels of block 3/);
    expect(() => validateUNetConfig({ ...tinyUnet, norm_eps: 'x' as unknown as number })).toThrow(/norm_eps must be a number between 0 and 1, got "x"/);
    expect(() => validateUNetConfig(SD15_UNET_CONFIG)).not.toThrow();
  });
});

describe('5. caption answers and an endpoint that is gone', () => {
  it('two JSON objects in one answer are "more than one caption"', () => {
    const answer = extractCaption('{"caption": "a blue cube"}{"caption": "a green cube"}');
    expect(answer.captions).toEqual(['a blue cube', 'a green cube']);
    const verdict = validateNegative('a red cube', answer, { principle: 'attribute' });
    expect(verdict.ok).toBe(false);
    expect(!verdict.ok && verdict.reason).toMatch(/more than one caption/);
    expect(extractCaption('{"caption": "a blue cube"}\n{"caption": "a green cube"}').captions).toHaveLength(2);
    expect(extractCaption('Here: {"caption": "a blue cube"}').captions).toEqual(['a blue cube']);
  });

  it('feedback that ends in a full stop gets no second one', () => {
    const messages = buildEditMessages({ caption: 'a red cube', principle: 'attribute', feedback: "the model refused: I can't help with that." });
    const last = messages.at(-1)!.content;
    expect(last).toContain("can't help with that. Try again");
    expect(last).not.toContain('..');
  });

  it('stops at once and exits non-zero when the endpoint refuses every connection', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const dir = path.join(tmp, 'gone');
    mkdirSync(dir);
    const captions = Array.from({ length: 8 }, (_, i) => `a red cube number ${i}`);
    writeFileSync(path.join(dir, 'list.jsonl'), captions.map((c, i) => JSON.stringify({ image: `${i}.png`, caption: c })).join('\n'));
    for (let i = 0; i < 8; i++) writeFileSync(path.join(dir, `${i}.png`), tinyPng());
    const started = Date.now();
    const r = await runCli(
      ['pairs', '--data', 'list.jsonl', '--out', 'out.jsonl', '--llm-url', `http://127.0.0.1:${port}/v1`, '--llm-model', 'm', '--http-retries', '0', '--concurrency', '1', '--quiet'],
      { cwd: dir },
    );
    expect(r.status).toBe(1);
    expect(r.err).toMatch(/stopped early: .*127\.0\.0\.1.*7 caption\(s\) were not tried; what was made is saved in out\.jsonl/);
    expect(r.out).toMatch(/negatives: 0 made, 1 failed/);
    expect(Date.now() - started).toBeLessThan(10_000);
    // What was there is kept for a rerun to resume from.
    expect(readFileSync(path.join(dir, 'out.jsonl'), 'utf8').trim().split('\n')).toHaveLength(8);
  });

  it('runPool starts nothing after a task fails, and waits for those in flight', async () => {
    const started: number[] = [];
    let finished = 0;
    const run = runPool([0, 1, 2, 3, 4, 5], 2, async (i) => {
      started.push(i);
      await new Promise((r) => setTimeout(r, i === 0 ? 5 : 20));
      if (i === 0) throw new Error('boom');
      finished++;
    });
    await expect(run).rejects.toThrow('boom');
    expect(started).toEqual([0, 1]);
    expect(finished).toBe(1);
  });
});

describe('6. messages in words', () => {
  it('says what a system error means, with its path', () => {
    const e = Object.assign(new Error("EISDIR: illegal operation on a directory, read"), { code: 'EISDIR', syscall: 'read', path: '/data/x' });
    expect(systemErrorMessage(e)).toBe('/data/x: is a folder, where a file was expected (EISDIR in read)');
    const m = Object.assign(new Error('EEXIST: file already exists, mkdir'), { code: 'EEXIST', syscall: 'mkdir', path: '/out' });
    expect(systemErrorMessage(m)).toMatch(/^\/out: already exists as a file, where a folder was expected/);
    expect(systemErrorMessage(new Error('plain'))).toBeNull();
  });

  it('says which Vulkan piece is missing when Dawn finds no adapter', () => {
    expect(noAdapterReason({ platform: 'linux', loader: false, swiftshader: true })).toMatch(/Vulkan loader \(libvulkan\.so\.1\) is not installed; install it \(Debian\/Ubuntu: apt-get install libvulkan1\)/);
    expect(noAdapterReason({ platform: 'linux', loader: false, swiftshader: false })).toMatch(/libvulkan1.*chromium package/);
    expect(noAdapterReason({ platform: 'linux', loader: true, swiftshader: false })).toMatch(/no Vulkan driver works on this machine.*chromium package, whose SwiftShader driver/);
    expect(noAdapterReason({ platform: 'linux', loader: true, swiftshader: false, icdFiles: '/nope/icd.json' })).toMatch(/VK_ICD_FILENAMES names \/nope\/icd\.json, which does not exist/);
    expect(noAdapterReason({ platform: 'linux', loader: true, swiftshader: true })).not.toMatch(/hardware acceleration/);
  });
});

describe('7. images and captions that train badly', () => {
  it('finds images far below the resolution and captions past the 77-token window', () => {
    expect(smallImageProblem(1, 1, 512)).toMatch(/1x1 pixels, far below the 512x512 training resolution/);
    expect(smallImageProblem(300, 400, 512)).toBeNull();
    expect(longCaptionProblem(75)).toBeNull();
    expect(longCaptionProblem(2000)).toMatch(/2000 tokens, longer than the text encoder's 77-token window .* cut/);
  });

  it('with --allow-small-images the small image is warned about instead, and a long caption is said to be cut', async () => {
    const dir = path.join(tmp, 'small');
    mkdirSync(dir);
    const set = writeTpoSet(dir, 2, 64);
    writeFileSync(path.join(dir, set.images[0]), tinyPng());
    writeFileSync(set.file, readFileSync(set.file, 'utf8').replace('a red disc on a yellow background', `a red disc ${'on a table '.repeat(1000)}`));
    const data = await loadTrainingData(set.file, 'tdpo', { skipBadLines: false, negatives: 'all' });
    const said: string[] = [];
    const options = { resolution: 64, modelDir: TINY, allowSmallImages: false };
    await expect(checkTrainingInputs(data.examples, options, (t) => said.push(t))).rejects.toThrow(/img0\.png: 1x1 pixels[\s\S]*--allow-small-images/);
    said.length = 0;
    await checkTrainingInputs(data.examples, { ...options, allowSmallImages: true }, (t) => said.push(t));
    expect(said.join('\n')).toMatch(/caption\(s\) do not fit the text encoder and are cut/);
    expect(said.join('\n')).toMatch(/warning: 1 image\(s\) are far smaller .*\n.*img0\.png: 1x1 pixels/);
  });
});
