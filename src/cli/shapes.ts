// tpo-lab shapes: writes the shapes-world demo data set (src/demo/shapes.ts) as a folder of PNGs with a
// .txt caption beside each (the kohya layout that `tpo-lab pairs`, `tpo-lab train` via pairs, and the app's
// Data import all read), and optionally the captions alone as a prompts file for `tpo-lab sample --prompts`.

import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { HELD_OUT_PAIRS, SHAPES_IMAGE_SIZE, shapesDataset, shapesFileName, type ShapesSplit } from '../demo/shapes';
import { formatHelp, intOpt, type OptionTable, parseOptions, stringOpt, UsageError } from './args';
import type { Command } from './command';
import type { CliIO } from './io';
import { encodePng } from './sample';

const OPTIONS: OptionTable = {
  out: { type: 'string', value: 'DIR', description: 'output folder (shape-NNNNN.png and shape-NNNNN.txt)' },
  count: { type: 'string', value: 'N', description: 'number of images', default: '100' },
  seed: { type: 'string', value: 'S', description: 'seed of the scenes and their placement', default: '0' },
  split: { type: 'string', value: 'train|heldout', description: 'training scenes, or held-out ones (each with a kind and colour pair training never shows)', default: 'train' },
  size: { type: 'string', value: 'PX', description: 'image side in pixels, a multiple of 8, at least 32', default: String(SHAPES_IMAGE_SIZE) },
  'no-sizes': { type: 'boolean', description: 'leave the shapes\' sizes out of the captions' },
  prompts: { type: 'string', value: 'FILE.txt', description: 'also write the captions, one per line (for tpo-lab sample --prompts)' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const USAGE = 'tpo-lab shapes --out DIR [--count N] [--seed S] [--split train|heldout] [--size PX] [--no-sizes] [--prompts FILE.txt]';

const DESCRIPTION = `Writes the shapes world, the lab's built-in demo data: images of one or two flat shapes
(circle, square, triangle; red, green, blue, yellow, white, black; small or large) on a plain background,
each with a caption that states exactly what is drawn ("a small red circle on the left of a large blue
square, on a white background"). The same seed gives the same images. The held-out split draws only scenes
with a kind and colour pair the training split never has (${HELD_OUT_PAIRS.map(([k, c]) => `${c} ${k}`).join(', ')}).
'tpo-lab judge-shapes' checks generated images against these captions.`;

export const shapesCommand: Command = {
  name: 'shapes',
  summary: 'write the shapes-world demo data set (PNGs with .txt captions)',
  help: () => formatHelp(USAGE, DESCRIPTION, OPTIONS),
  run: runShapes,
};

/** Writes `count` shapes-world images and their .txt captions into `out` (made if missing); returns the captions in order. */
export async function writeShapesFolder(out: string, o: { seed: number; count: number; split: ShapesSplit; size: number; sizes: boolean }): Promise<string[]> {
  await mkdir(out, { recursive: true });
  // In chunks, so a large data set never holds every image in memory at once.
  const captions: string[] = [];
  for (let start = 0; start < o.count; start += 256) {
    const items = shapesDataset({ seed: o.seed, count: Math.min(256, o.count - start), split: o.split, size: o.size, sizes: o.sizes, start });
    for (const [k, item] of items.entries()) {
      const name = shapesFileName(start + k, o.count);
      await writeFile(path.join(out, `${name}.png`), encodePng(item.image.data, item.image.width, item.image.height, {}));
      await writeFile(path.join(out, `${name}.txt`), `${item.caption}\n`);
      captions.push(item.caption);
    }
  }
  return captions;
}

async function runShapes(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseOptions(argv, OPTIONS);
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const outArg = stringOpt(values, 'out');
  if (!outArg) throw new UsageError('--out is required');
  const split = stringOpt(values, 'split') ?? 'train';
  if (split !== 'train' && split !== 'heldout') throw new UsageError(`--split must be train or heldout, not ${JSON.stringify(split)}`);
  const count = intOpt(values, 'count', 1, 100);
  const seed = intOpt(values, 'seed', 0, 0);
  const size = intOpt(values, 'size', 32, SHAPES_IMAGE_SIZE);
  // A multiple of 8, as every image the lab trains on: the VAE turns 8 x 8 pixels into one latent.
  if (size % 8 !== 0) throw new UsageError(`--size must be a multiple of 8, not ${size}`);
  const out = path.resolve(io.cwd, outArg);

  const captions = await writeShapesFolder(out, { seed, count, split: split as ShapesSplit, size, sizes: values['no-sizes'] !== true });
  const promptsArg = stringOpt(values, 'prompts');
  if (promptsArg) await writeFile(path.resolve(io.cwd, promptsArg), `${captions.join('\n')}\n`);
  io.stdout.write(`wrote ${count} ${split === 'heldout' ? 'held-out' : 'training'} image${count === 1 ? '' : 's'} (${size} x ${size}) with captions to ${out}${promptsArg ? `, and their captions to ${promptsArg}` : ''}\n`);
  return 0;
}
