// Small training sets for the trainer tests: PNG images drawn here (so nothing is downloaded) and the
// trainer's JSONL formats beside them.

import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { PNG } from 'pngjs';

/** A size x size PNG: a coloured disc on a coloured background, with a seeded texture. */
export function discPng(size: number, fg: [number, number, number], bg: [number, number, number], seed: number): Buffer {
  const png = new PNG({ width: size, height: size });
  let s = seed >>> 0;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296);
  const c = size / 2;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const inside = (x - c) ** 2 + (y - c) ** 2 < (size / 3) ** 2;
      const col = inside ? fg : bg;
      const i = 4 * (y * size + x);
      for (let k = 0; k < 3; k++) png.data[i + k] = Math.max(0, Math.min(255, col[k] + Math.round((rand() - 0.5) * 40)));
      png.data[i + 3] = 255;
    }
  }
  return PNG.sync.write(png);
}

const COLOURS: Record<string, [number, number, number]> = {
  red: [220, 30, 30],
  blue: [30, 40, 220],
  green: [30, 200, 60],
  yellow: [230, 220, 40],
  white: [240, 240, 240],
  black: [15, 15, 15],
};

export interface TpoSet {
  file: string;
  images: string[];
}

/** n images, each "a <fg> disc on a <bg> background" with one attribute negative (the disc's colour swapped). */
export function writeTpoSet(dir: string, n: number, size: number): TpoSet {
  const names = Object.keys(COLOURS);
  const lines: string[] = [];
  const images: string[] = [];
  for (let i = 0; i < n; i++) {
    const fg = names[i % names.length];
    const bg = names[(i + 3) % names.length];
    const other = names[(i + 1) % names.length];
    const image = `img${i}.png`;
    writeFileSync(path.join(dir, image), discPng(size, COLOURS[fg], COLOURS[bg], i + 1));
    images.push(image);
    lines.push(
      JSON.stringify({
        image,
        caption: `a ${fg} disc on a ${bg} background`,
        negatives: [{ caption: `a ${other} disc on a ${bg} background`, principle: 'attribute', source: 'rule' }],
        note: 'kept',
      }),
    );
  }
  const file = path.join(dir, 'tpo.jsonl');
  writeFileSync(file, `${lines.join('\n')}\n`);
  return { file, images };
}

/** Diffusion-DPO and Diffusion-KTO files over the images of a TPO set. */
export function writePreferenceSets(dir: string, images: string[]): { dpo: string; kto: string } {
  const dpo = path.join(dir, 'dpo.jsonl');
  const kto = path.join(dir, 'kto.jsonl');
  const pairs = [];
  for (let i = 0; i + 1 < images.length; i += 2) pairs.push(JSON.stringify({ prompt: `a disc, picture ${i}`, image_w: images[i], image_l: images[i + 1] }));
  writeFileSync(dpo, `${pairs.join('\n')}\n`);
  writeFileSync(kto, `${images.map((im, i) => JSON.stringify({ image: im, caption: `a disc, picture ${i}`, label: i % 2 === 0 })).join('\n')}\n`);
  return { dpo, kto };
}
