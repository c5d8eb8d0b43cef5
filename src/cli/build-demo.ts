// tpo-lab build-demo: builds the demo model (src/demo/build.ts) into a folder: the diffusers layout of
// SD1.5 with the lab's own tokenizer, text encoder, VAE and UNet. `npm run build:demo` runs it into
// public/demo. Training checkpoints go to a work folder (default OUT.work, beside OUT), so an interrupted
// build run again with the same options continues where it stopped; delete the work folder to start over.

import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../data/node-fs';
import { buildDemo, type DemoBuildStorage, demoSettings } from '../demo/build';
import { formatHelp, intOpt, type OptionTable, parseOptions, stringOpt, UsageError } from './args';
import type { Command } from './command';
import { type CliIO, commandGpu } from './io';

const OPTIONS: OptionTable = {
  out: { type: 'string', value: 'DIR', description: 'output folder (the diffusers model folder)' },
  work: { type: 'string', value: 'DIR', description: 'folder for the training checkpoints (default: OUT.work beside OUT; keep it out of public/)' },
  seed: { type: 'string', value: 'S', description: 'seed of the data, the first weights and every draw', default: '0' },
  quick: { type: 'boolean', description: 'tiny networks, 4 images, a step or two of training: a test of the whole path, not a useful model' },
  images: { type: 'string', value: 'N', description: 'training images (default: 256; --quick: 4)' },
  'unet-steps': { type: 'string', value: 'N', description: 'UNet training steps (default: 1000; --quick: 2)' },
  'unet-batch': { type: 'string', value: 'N', description: 'images per UNet step (default: 8; --quick: 1)' },
  'checkpoint-every': { type: 'string', value: 'N', description: 'steps between training checkpoints and progress lines (default: 25; --quick: 1)' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const USAGE = 'tpo-lab build-demo --out DIR [--work DIR] [--seed S] [--quick] [--images N] [--unet-steps N]\n       [--unet-batch N] [--checkpoint-every N]';

const DESCRIPTION = `Builds the lab's demo model from nothing but its seed: a CLIP tokenizer for the shapes
world's words, a CLIP text encoder fixed from the seed, an AutoencoderKL constructed for the shapes world's flat colours
(its weights set by rule, not trained), and a UNet trained on their latents and captions; written as a diffusers folder (model_index.json, scheduler/,
tokenizer/, text_encoder/, unet/, vae/) with a README.md of the settings and the time each stage took.
The same options give the same files. Checkpoints are kept in the work folder: run the same command again
to continue an interrupted build.`;

export const buildDemoCommand: Command = {
  name: 'build-demo',
  summary: 'build the demo model (a small SD1.5-layout model of the shapes world) from its seed',
  help: () => formatHelp(USAGE, DESCRIPTION, OPTIONS),
  run: runBuildDemo,
};

/** Files under a folder, by '/'-separated relative path. */
function folderFiles(root: string) {
  return {
    read: async (p: string): Promise<Uint8Array | null> => {
      try {
        return new Uint8Array(await readFile(path.join(root, p)));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw e;
      }
    },
    write: async (p: string, bytes: Uint8Array) => {
      // Written whole, then renamed: an interrupted build never leaves half a checkpoint file.
      await writeFileAtomic(path.join(root, p), bytes);
    },
  };
}

async function runBuildDemo(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseOptions(argv, OPTIONS);
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const outArg = stringOpt(values, 'out');
  if (!outArg) throw new UsageError('--out is required');
  const out = path.resolve(io.cwd, outArg);
  const work = path.resolve(io.cwd, stringOpt(values, 'work') ?? `${outArg.replace(/[/\\]+$/, '')}.work`);
  const quick = values.quick === true;
  const defaults = demoSettings({ quick });
  const settings = demoSettings({
    quick,
    seed: intOpt(values, 'seed', 0, 0),
    images: intOpt(values, 'images', 1, defaults.images),
    unetSteps: intOpt(values, 'unet-steps', 1, defaults.unet.steps),
    unetBatch: intOpt(values, 'unet-batch', 1, defaults.unet.batch),
    checkpointEvery: intOpt(values, 'checkpoint-every', 1, defaults.checkpointEvery),
  });
  const outFiles = folderFiles(out);
  const workFiles = folderFiles(work);
  const storage: DemoBuildStorage = { writeOut: outFiles.write, readWork: workFiles.read, writeWork: workFiles.write };
  const { gpu, release } = await commandGpu(io);
  try {
    const started = Date.now();
    const log = (line: string) => io.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(5)} s] ${line}\n`);
    log(`building the demo model into ${out} (checkpoints in ${work})`);
    const result = await buildDemo(gpu, settings, storage, log);
    const bytes = Object.values(result.files).reduce((a, v) => a + v, 0);
    io.stdout.write(`wrote the demo model to ${out} (${(bytes / 1e6).toFixed(2)} MB) in ${result.times.total.toFixed(0)} s; ${path.join(out, 'README.md')} records how\n`);
    return 0;
  } finally {
    release();
  }
}
