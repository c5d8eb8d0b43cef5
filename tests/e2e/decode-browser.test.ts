// The browser's image decoder (decodeImageBrowser) in headless Chromium, on a page and in a Web Worker:
// Vite bundles src/data/decode-browser.ts as a script, the test feeds it files encoded here. It checks what
// Node cannot: createImageBitmap with the EXIF orientation, OffscreenCanvas read-back, the formats only the
// browser path decodes (BMP here), and the same refusals as the Node decoder.

import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import { chromium, type Browser, type Page } from 'playwright-core';
import { build } from 'vite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';

let outDir = '';
let script = '';
let browser: Browser | null = null;
let page: Page;

/** Chromium's result of decoding each file, on the page or in a worker: pixels as plain arrays, or the error. */
type Decoded = { width: number; height: number; data: number[] } | { error: string; name: string };

async function decode(files: Record<string, Buffer>, inWorker = false): Promise<Record<string, Decoded>> {
  const input = Object.fromEntries(Object.entries(files).map(([k, v]) => [k, [...v]]));
  return page.evaluate(
    async ({ input, script, inWorker }) => {
      // The same routine runs on the page or, as text, inside a worker made from a blob.
      const run = async (files: Record<string, number[]>) => {
        const out: Record<string, unknown> = {};
        for (const [name, bytes] of Object.entries(files)) {
          try {
            const img = await (globalThis as any).Dec.decodeImageBrowser(new Uint8Array(bytes), name);
            out[name] = { width: img.width, height: img.height, data: [...img.data] };
          } catch (e) {
            out[name] = { error: (e as Error).message, name: (e as Error).name };
          }
        }
        return out;
      };
      if (!inWorker) {
        if (!(globalThis as any).Dec) (0, eval)(script);
        return run(input);
      }
      const code = `${script}\nconst run = ${run.toString()};\nonmessage = async (e) => postMessage(await run(e.data));`;
      const worker = new Worker(URL.createObjectURL(new Blob([code], { type: 'text/javascript' })));
      const result = await new Promise((resolve, reject) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => reject(new Error(e.message));
        worker.postMessage(input);
      });
      worker.terminate();
      return result;
    },
    { input, script, inWorker },
  ) as Promise<Record<string, Decoded>>;
}

function rgba(width: number, height: number, f: (x: number, y: number) => number[]): { width: number; height: number; data: Uint8Array } {
  const data = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.set(f(x, y), (y * width + x) * 4);
  return { width, height, data };
}

function png(img: { width: number; height: number; data: Uint8Array }): Buffer {
  const p = new pngjs.PNG({ width: img.width, height: img.height });
  p.data = Buffer.from(img.data);
  return pngjs.PNG.sync.write(p, { colorType: 6 });
}

/** The JPEG with an APP1 Exif segment (big-endian, IFD0 holding only Orientation) after SOI. */
function withOrientation(jpg: Buffer, orientation: number): Buffer {
  const tiff = Buffer.alloc(26);
  tiff.write('MM', 0, 'ascii');
  tiff.writeUInt16BE(42, 2);
  tiff.writeUInt32BE(8, 4);
  tiff.writeUInt16BE(1, 8);
  tiff.writeUInt16BE(0x0112, 10);
  tiff.writeUInt16BE(3, 12);
  tiff.writeUInt32BE(1, 14);
  tiff.writeUInt16BE(orientation, 18);
  const payload = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff]);
  const head = Buffer.from([0xff, 0xe1, 0, 0]);
  head.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([jpg.subarray(0, 2), head, payload, jpg.subarray(2)]);
}

/** A 24-bit bottom-up BMP. */
function bmp(img: { width: number; height: number; data: Uint8Array }): Buffer {
  const stride = Math.ceil((img.width * 3) / 4) * 4;
  const b = Buffer.alloc(54 + stride * img.height);
  b.write('BM', 0, 'ascii');
  b.writeUInt32LE(b.length, 2);
  b.writeUInt32LE(54, 10);
  b.writeUInt32LE(40, 14);
  b.writeInt32LE(img.width, 18);
  b.writeInt32LE(img.height, 22);
  b.writeUInt16LE(1, 26);
  b.writeUInt16LE(24, 28);
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const s = (y * img.width + x) * 4;
      const d = 54 + (img.height - 1 - y) * stride + x * 3;
      b[d] = img.data[s + 2];
      b[d + 1] = img.data[s + 1];
      b[d + 2] = img.data[s];
    }
  }
  return b;
}

const at = (d: Decoded, x: number, y: number) => {
  if (!('data' in d)) throw new Error(`expected pixels, got ${d.name}: ${d.error}`);
  return d.data.slice((y * d.width + x) * 4, (y * d.width + x) * 4 + 4);
};
const near = (got: number[], want: number[], tol = 12) => got.every((v, i) => Math.abs(v - want[i]) <= tol);

const opaque = rgba(5, 3, (x, y) => [x * 50, y * 100, 255 - x * 40, 255]);
const halves = rgba(16, 8, (x) => (x < 8 ? [255, 0, 0, 255] : [0, 0, 255, 255]));
const hugePng = (() => {
  const p = png(rgba(1, 1, () => [0, 0, 0, 255]));
  // IHDR width and height at 16 and 20; the CRC no longer matches, which does not matter: it is refused first.
  p.writeUInt32BE(100000, 16);
  p.writeUInt32BE(100000, 20);
  return p;
})();
const FILES = {
  'opaque.png': png(opaque),
  'alpha.png': png(rgba(2, 1, (x) => (x ? [0, 255, 0, 128] : [255, 0, 0, 255]))),
  'rotated.jpg': withOrientation(jpeg.encode({ ...halves, data: Buffer.from(halves.data) }, 100).data, 6),
  'opaque.bmp': bmp(opaque),
  'notes.png': Buffer.from('just some text, not an image'),
  'cut.png': png(opaque).subarray(0, 40),
  'huge.png': hugePng,
};

function check(r: Record<string, Decoded>): void {
  expect(r['opaque.png']).toEqual({ width: 5, height: 3, data: [...opaque.data] });
  expect(at(r['alpha.png'], 0, 0)).toEqual([255, 0, 0, 255]);
  expect(at(r['alpha.png'], 1, 0)[3]).toBe(128);
  // Stored 16x8, red left; orientation 6 turns it 90° clockwise: 8x16, red on top.
  expect(r['rotated.jpg']).toMatchObject({ width: 8, height: 16 });
  expect(near(at(r['rotated.jpg'], 4, 3), [255, 0, 0, 255])).toBe(true);
  expect(near(at(r['rotated.jpg'], 4, 12), [0, 0, 255, 255])).toBe(true);
  expect(r['opaque.bmp']).toEqual({ width: 5, height: 3, data: [...opaque.data] });
  expect(r['notes.png']).toEqual({ name: 'ImageDecodeError', error: 'notes.png: not an image: its first bytes are not those of a PNG, JPEG, WebP, GIF or BMP file' });
  expect(r['cut.png']).toMatchObject({ name: 'ImageDecodeError', error: expect.stringMatching(/^cut\.png: the PNG file is damaged or cut short/) });
  expect(r['huge.png']).toMatchObject({ name: 'ImageDecodeError', error: expect.stringMatching(/^huge\.png: the image is 100000x100000 pixels/) });
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium is not installed at ${CHROMIUM}; the e2e tests need it. Install it with: apt-get install -y chromium`);
  outDir = await mkdtemp(path.join(tmpdir(), 'tpo-lab-decode-'));
  await build({
    configFile: false,
    root: ROOT,
    logLevel: 'warn',
    publicDir: false,
    build: { outDir, emptyOutDir: true, minify: false, lib: { entry: path.join(ROOT, 'src/data/decode-browser.ts'), formats: ['iife'], name: 'Dec', fileName: 'decode' } },
  });
  script = await readFile(path.join(outDir, 'decode.iife.js'), 'utf8');
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu-sandbox', '--no-first-run'] });
  page = await browser.newPage();
  await page.goto('about:blank');
});

afterAll(async () => {
  await browser?.close().catch(() => undefined);
  if (outDir) await rm(outDir, { recursive: true, force: true });
});

describe('decodeImageBrowser in Chromium', () => {
  it('decodes PNG, JPEG (upright by EXIF) and BMP, and refuses what it must, on the page', async () => {
    check(await decode(FILES));
  });

  it('does the same in a Web Worker (OffscreenCanvas)', async () => {
    check(await decode(FILES, true));
  });
});
