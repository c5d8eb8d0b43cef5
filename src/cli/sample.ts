// tpo-lab sample: text to image with a model folder (and a LoRA), headless. Writes one PNG per prompt and
// seed, named <prompt index>-<seed>.png, with the parameters in PNG text chunks (Automatic1111's
// "parameters" and a JSON "tpo-lab" chunk), and OUT/index.json listing them all. --compare draws the base
// model and the LoRA from the same seeds and adds one grid per prompt (top row base, bottom row LoRA).

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pngjs from 'pngjs';
import { addPngText } from '../data/png-text';
import { a1111Parameters, DEFAULT_SAMPLE_SETTINGS, imageGrid, type SampledImage, type SampleRecord, type SampleSettings, TextToImage, validateSampleSettings } from '../diffusion/pipeline';
import { SAMPLERS, type SamplerName } from '../diffusion/samplers';
import type { Gpu } from '../gpu/gpu';
import { readLora } from '../models/lora-io';
import { dirModelFiles } from '../models/model-files-node';
import { openSafetensorsFile } from '../models/safetensors-node';
import { loadUNet, type UNet } from '../models/unet';
import { preferHalfWeights } from '../models/weights';
import { formatHelp, intOpt, numberOpt, type OptionTable, parseOptions, stringOpt, UsageError } from './args';
import type { Command } from './command';
import { resolveModelArg } from './demo-model';
import { type CliIO, commandGpu, ProgressBar } from './io';

const OPTIONS: OptionTable = {
  model: { type: 'string', value: 'PATH', description: 'diffusers model folder (SD1.x layout), or demo: the built-in demo model' },
  prompt: { type: 'string', value: 'TEXT', multiple: true, description: 'a prompt (repeat for several)' },
  prompts: { type: 'string', value: 'FILE.txt', description: 'prompts, one per line (blank lines and lines starting with # are skipped)' },
  'negative-prompt': { type: 'string', value: 'TEXT', description: 'the unconditional branch of guidance (default: empty)' },
  lora: { type: 'string', value: 'FILE', description: 'a LoRA (kohya or diffusers format) applied at --lora-scale' },
  'lora-scale': { type: 'string', value: 'X', description: 'LoRA multiplier (0: the base model)', default: '1' },
  compare: { type: 'boolean', description: 'also draw the base model from the same seeds, and a base-vs-LoRA grid per prompt' },
  steps: { type: 'string', value: 'N', description: 'sampling steps', default: String(DEFAULT_SAMPLE_SETTINGS.steps) },
  guidance: { type: 'string', value: 'G', description: 'classifier-free guidance scale (1: no guidance, half the work)', default: String(DEFAULT_SAMPLE_SETTINGS.guidance) },
  sampler: { type: 'string', value: 'NAME', description: SAMPLERS.join(', '), default: DEFAULT_SAMPLE_SETTINGS.sampler },
  eta: { type: 'string', value: 'X', description: 'DDIM eta (0: deterministic)', default: '0' },
  seed: { type: 'string', value: 'S', description: 'seed of the first image of each prompt; the others take S+1, S+2, ... (default: random, printed)' },
  width: { type: 'string', value: 'PX', description: 'image width, a multiple of 8 (default: the model\'s sample size)' },
  height: { type: 'string', value: 'PX', description: 'image height, a multiple of 8 (default: the model\'s sample size)' },
  batch: { type: 'string', value: 'B', description: 'images per prompt, sampled together', default: '1' },
  precision: { type: 'string', value: 'auto|f16|f32', description: 'storage of the frozen UNet weights', default: 'auto' },
  out: { type: 'string', value: 'DIR', description: 'output folder (PNGs and index.json)' },
  quiet: { type: 'boolean', short: 'q', description: 'no progress bar' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const USAGE =
  'tpo-lab sample --model PATH --prompt TEXT [--prompt TEXT ...] [--prompts FILE.txt] [--negative-prompt TEXT]\n' +
  '       [--lora FILE] [--lora-scale X] [--compare] [--steps N] [--guidance G] [--sampler NAME] [--seed S]\n' +
  '       [--width W --height H] [--batch B] --out DIR';

const DESCRIPTION = `Draws images from prompts with a Stable Diffusion 1.x model folder, as diffusers'
StableDiffusionPipeline does: classifier-free guidance with the negative (or empty) prompt, the folder's
scheduler config, the VAE decoder. Each image's seed, prompt and settings are written into its PNG (the
"parameters" text that Automatic1111 reads) and into OUT/index.json, so any image can be made again.`;

export const sampleCommand: Command = {
  name: 'sample',
  summary: 'draw images from prompts (DDIM, Euler, DPM++ 2M; guidance; base beside LoRA with --compare)',
  help: () => formatHelp(USAGE, DESCRIPTION, OPTIONS),
  run: runSample,
};

/** Encodes RGBA pixels as a PNG with text chunks. */
export function encodePng(rgba: Uint8Array, width: number, height: number, text: Record<string, string>): Uint8Array {
  const png = pngjs.PNG.sync.write({ width, height, data: Buffer.from(rgba.buffer, rgba.byteOffset, rgba.byteLength) } as pngjs.PNG, { colorType: 2 });
  return addPngText(new Uint8Array(png), text);
}

/** The adapter in one line, as the benchmarks and timings print it ('' when the browser or Dawn tells nothing). */
export function adapterName(gpu: Gpu): string {
  return `${gpu.adapter.vendor} ${gpu.adapter.architecture} ${gpu.adapter.description}`.replace(/\s+/g, ' ').trim();
}

/** The PNG of a sampled image with its parameters (A1111's text and the lab's JSON). */
export function samplePng(image: SampledImage, record: SampleRecord): Uint8Array {
  return encodePng(image.rgba, image.width, image.height, {
    parameters: a1111Parameters(record),
    'tpo-lab': JSON.stringify({ prompt: record.prompt, seed: record.seed, model: record.model, lora: record.lora ?? null, ...record.settings }),
  });
}

async function readPromptsFile(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new UsageError(`--prompts ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
}

async function runSample(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseOptions(argv, OPTIONS);
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}' (prompts go after --prompt)`);
  const at = (p: string) => path.resolve(io.cwd, p);
  const modelArg = stringOpt(values, 'model');
  const outArg = stringOpt(values, 'out');
  if (!modelArg) throw new UsageError('--model is required');
  if (!outArg) throw new UsageError('--out is required');
  const prompts = [...((values.prompt as string[] | undefined) ?? [])];
  const promptsFile = stringOpt(values, 'prompts');
  if (promptsFile) prompts.push(...(await readPromptsFile(at(promptsFile))));
  if (prompts.length === 0) throw new UsageError('give at least one --prompt (or --prompts FILE.txt)');
  const loraArg = stringOpt(values, 'lora');
  const compare = values.compare === true;
  if (compare && !loraArg) throw new UsageError('--compare draws base and LoRA side by side: give --lora FILE');
  const sampler = stringOpt(values, 'sampler') ?? DEFAULT_SAMPLE_SETTINGS.sampler;
  if (!(SAMPLERS as readonly string[]).includes(sampler)) throw new UsageError(`--sampler must be one of ${SAMPLERS.join(', ')}, not ${JSON.stringify(sampler)}`);
  const precision = stringOpt(values, 'precision') ?? 'auto';
  if (!['auto', 'f16', 'f32'].includes(precision)) throw new UsageError(`--precision must be auto, f16 or f32, not ${JSON.stringify(precision)}`);
  const batch = intOpt(values, 'batch', 1, 1);
  const seedText = stringOpt(values, 'seed');
  const seed = seedText === undefined ? Math.floor(Math.random() * 2 ** 31) : intOpt(values, 'seed', 0, 0);
  const modelDir = resolveModelArg(modelArg, io);
  const files = dirModelFiles(modelDir);
  const settings: SampleSettings = {
    sampler: sampler as SamplerName,
    steps: intOpt(values, 'steps', 1, DEFAULT_SAMPLE_SETTINGS.steps),
    guidance: numberOpt(values, 'guidance', 0, DEFAULT_SAMPLE_SETTINGS.guidance),
    eta: numberOpt(values, 'eta', 0, 0),
    width: 0,
    height: 0,
    negativePrompt: stringOpt(values, 'negative-prompt') ?? '',
    loraScale: loraArg ? numberOpt(values, 'lora-scale', -Infinity, 1) : 0,
  };

  const out = at(outArg);
  const { gpu, release } = await commandGpu(io);
  let unet: UNet | null = null;
  let t2i: TextToImage | null = null;
  try {
    const half = precision === 'auto' ? preferHalfWeights(gpu) : precision === 'f16';
    unet = await loadUNet(gpu, files, { halfWeights: half });
    t2i = await TextToImage.load(unet, files);
    const side = (unet.config.sample_size ?? 64) * 2 ** (t2i.vae.config.block_out_channels.length - 1);
    settings.width = intOpt(values, 'width', 1, side);
    settings.height = intOpt(values, 'height', 1, side);
    try {
      validateSampleSettings(settings, t2i);
    } catch (e) {
      throw new UsageError((e as Error).message.replace(/^sampling: /, ''));
    }
    const loraName = loraArg ? path.basename(loraArg).replace(/\.safetensors$/, '') : undefined;
    if (loraArg) {
      const { file, close } = await openSafetensorsFile(at(loraArg));
      try {
        unet.lora = await readLora(gpu, file, unet.config);
      } finally {
        await close();
      }
    }
    if (seedText === undefined) io.stderr.write(`seed ${seed}\n`);
    await mkdir(out, { recursive: true });
    const index: { file: string; prompt: string; promptIndex: number; seed: number; variant: 'base' | 'lora' | null }[] = [];
    const timings: NonNullable<TextToImage['lastTiming']>[] = [];
    const grids: { file: string; promptIndex: number }[] = [];
    const variants: { name: 'base' | 'lora' | null; scale: number }[] = compare
      ? [
          { name: 'base', scale: 0 },
          { name: 'lora', scale: settings.loraScale },
        ]
      : [{ name: null, scale: settings.loraScale }];
    const quiet = values.quiet === true;
    for (const [p, prompt] of prompts.entries()) {
      const items = Array.from({ length: batch }, (_, j) => ({ prompt, seed: seed + j }));
      const rows: Uint8Array[][] = [];
      for (const variant of variants) {
        const label = `prompt ${p + 1}/${prompts.length}${variant.name ? ` ${variant.name}` : ''}`;
        const bar = new ProgressBar(io.stderr, settings.steps, label, !quiet);
        const variantSettings = { ...settings, loraScale: variant.scale };
        const images = await t2i.sample(items, variantSettings, () => bar.tick());
        bar.finish();
        if (t2i.lastTiming) timings.push(t2i.lastTiming);
        rows.push(images.map((im) => im.rgba));
        for (const image of images) {
          const file = `${String(p).padStart(3, '0')}-${image.seed}${variant.name ? `-${variant.name}` : ''}.png`;
          const record: SampleRecord = { prompt, seed: image.seed, settings: variantSettings, model: path.basename(modelDir), lora: variant.scale !== 0 ? loraName : undefined };
          await writeFile(path.join(out, file), samplePng(image, record));
          index.push({ file, prompt, promptIndex: p, seed: image.seed, variant: variant.name });
        }
      }
      if (compare) {
        const grid = imageGrid(rows, settings.width, settings.height);
        const file = `${String(p).padStart(3, '0')}-grid.png`;
        await writeFile(path.join(out, file), encodePng(grid.rgba, grid.width, grid.height, { Description: `${prompt}\ntop: base model, bottom: ${loraName} at ${settings.loraScale}; seeds ${seed}..${seed + batch - 1}` }));
        grids.push({ file, promptIndex: p });
      }
    }
    const mean = (f: (t: (typeof timings)[number]) => number) => timings.reduce((a, t) => a + f(t), 0) / timings.length;
    const timing = {
      adapter: adapterName(gpu),
      unetMsPerStep: mean((t) => t.unetMsPerStep),
      msPerImage: mean((t) => t.totalMs) / batch,
      encodeMs: mean((t) => t.encodeMs),
      decodeMs: mean((t) => t.decodeMs),
    };
    const summary = { model: modelDir, lora: loraArg ? at(loraArg) : null, ...settings, seed, batch, images: index, grids, timing };
    await writeFile(path.join(out, 'index.json'), `${JSON.stringify(summary, null, 2)}\n`);
    io.stdout.write(`wrote ${index.length} image${index.length === 1 ? '' : 's'}${grids.length ? ` and ${grids.length} grid${grids.length === 1 ? '' : 's'}` : ''} to ${out} (index.json lists them)\n`);
    io.stdout.write(
      `time: ${(timing.unetMsPerStep / 1000).toFixed(2)} s per UNet evaluation (${batch * (settings.guidance !== 1 ? 2 : 1)} rows), ${(timing.msPerImage / 1000).toFixed(2)} s per image, on ${timing.adapter || 'this GPU'}\n`,
    );
    return 0;
  } finally {
    t2i?.release();
    unet?.lora?.release();
    unet?.release();
    await files.close?.();
    release();
  }
}
