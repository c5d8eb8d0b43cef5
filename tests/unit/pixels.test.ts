// Images as training inputs: decoding (PNG of every kind, JPEG with its EXIF orientation), the size check
// before decoding, the centre crop and resize, and the [-1, 1] CHW layout. Test images are encoded here,
// with pngjs and jpeg-js or byte by byte.

import { deflateSync } from 'node:zlib';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import { describe, expect, it } from 'vitest';
import { decodeImageNode } from '../../src/data/decode-node';
import {
  applyOrientation,
  centerCropResize,
  checkResolution,
  ImageDecodeError,
  imageSize,
  imageToCHW,
  jpegOrientation,
  type RgbaImage,
} from '../../src/data/pixels';
import { pngChunk } from '../helpers/llm/files';

// --- encoders -------------------------------------------------------------------------------------

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function ihdr(width: number, height: number, depth: number, colorType: number, interlace = 0): Buffer {
  const b = Buffer.alloc(13);
  b.writeUInt32BE(width, 0);
  b.writeUInt32BE(height, 4);
  b[8] = depth;
  b[9] = colorType;
  b[12] = interlace;
  return pngChunk('IHDR', b);
}

/**
 * A PNG assembled byte by byte. `sample(x, y)` gives the pixel's samples as stored (1 for grey or a palette
 * index, 2 grey+alpha, 3 RGB, 4 RGBA), each `depth` bits (8 or 16). Adam7 interlacing when asked.
 */
function rawPng(o: {
  width: number;
  height: number;
  depth: 8 | 16;
  colorType: 0 | 2 | 3 | 4 | 6;
  sample: (x: number, y: number) => number[];
  interlace?: boolean;
  extra?: Buffer[];
}): Buffer {
  const bytesPer = o.depth / 8;
  const scan = (xs: number[], y: number) => {
    const row: number[] = [0]; // filter: none
    for (const x of xs) {
      for (const v of o.sample(x, y)) {
        if (bytesPer === 2) row.push(v >> 8, v & 0xff);
        else row.push(v);
      }
    }
    return row;
  };
  const range = (start: number, end: number, step: number) => {
    const r: number[] = [];
    for (let i = start; i < end; i += step) r.push(i);
    return r;
  };
  const raw: number[] = [];
  if (o.interlace) {
    // Adam7 passes: x0, y0, dx, dy.
    const passes = [
      [0, 0, 8, 8],
      [4, 0, 8, 8],
      [0, 4, 4, 8],
      [2, 0, 4, 4],
      [0, 2, 2, 4],
      [1, 0, 2, 2],
      [0, 1, 1, 2],
    ];
    for (const [x0, y0, dx, dy] of passes) {
      const xs = range(x0, o.width, dx);
      if (xs.length === 0) continue;
      for (const y of range(y0, o.height, dy)) raw.push(...scan(xs, y));
    }
  } else {
    for (let y = 0; y < o.height; y++) raw.push(...scan(range(0, o.width, 1), y));
  }
  return Buffer.concat([
    PNG_SIGNATURE,
    ihdr(o.width, o.height, o.depth, o.colorType, o.interlace ? 1 : 0),
    ...(o.extra ?? []),
    pngChunk('IDAT', deflateSync(Buffer.from(raw))),
    pngChunk('IEND', new Uint8Array(0)),
  ]);
}

/** An RGBA image whose pixel (x, y) is f(x, y). */
function image(width: number, height: number, f: (x: number, y: number) => [number, number, number, number]): RgbaImage {
  const data = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.set(f(x, y), (y * width + x) * 4);
  return { width, height, data };
}

const px = (img: RgbaImage, x: number, y: number) => [...img.data.subarray((y * img.width + x) * 4, (y * img.width + x) * 4 + 4)];

function pngjsEncode(img: RgbaImage, colorType: 0 | 2 | 4 | 6): Buffer {
  const png = new pngjs.PNG({ width: img.width, height: img.height });
  png.data = Buffer.from(img.data);
  return pngjs.PNG.sync.write(png, { colorType });
}

function jpegEncode(img: RgbaImage, quality = 100): Buffer {
  return jpeg.encode({ width: img.width, height: img.height, data: img.data }, quality).data;
}

/** An APP1 Exif segment holding only IFD0's orientation tag, big- or little-endian. */
function exifSegment(orientation: number, littleEndian: boolean): Buffer {
  const tiff = Buffer.alloc(8 + 2 + 12 + 4);
  const w16 = (v: number, at: number) => (littleEndian ? tiff.writeUInt16LE(v, at) : tiff.writeUInt16BE(v, at));
  const w32 = (v: number, at: number) => (littleEndian ? tiff.writeUInt32LE(v, at) : tiff.writeUInt32BE(v, at));
  tiff.write(littleEndian ? 'II' : 'MM', 0, 'ascii');
  w16(42, 2);
  w32(8, 4); // IFD0 right after the header
  w16(1, 8); // one entry
  w16(0x0112, 10); // Orientation
  w16(3, 12); // SHORT
  w32(1, 14); // count
  w16(orientation, 18); // value, left-justified in the 4-byte field
  w32(0, 22); // no next IFD
  const payload = Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff]);
  const head = Buffer.from([0xff, 0xe1, 0, 0]);
  head.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([head, payload]);
}

/** The JPEG with an EXIF segment inserted right after SOI. */
const withExif = (jpg: Buffer, orientation: number, littleEndian = false) => Buffer.concat([jpg.subarray(0, 2), exifSegment(orientation, littleEndian), jpg.subarray(2)]);

async function decodeError(bytes: Uint8Array, file = 'img.bin'): Promise<ImageDecodeError> {
  try {
    await decodeImageNode(bytes, file);
  } catch (e) {
    expect(e).toBeInstanceOf(ImageDecodeError);
    expect((e as ImageDecodeError).file).toBe(file);
    return e as ImageDecodeError;
  }
  throw new Error('expected ImageDecodeError');
}

// --- decoding -------------------------------------------------------------------------------------

const pattern = image(5, 3, (x, y) => [x * 50, y * 100, 255 - x * 40, 255]);

describe('decodeImageNode: PNG', () => {
  it('decodes RGB, RGBA (alpha kept) and grey PNGs written by pngjs', async () => {
    const rgb = await decodeImageNode(pngjsEncode(pattern, 2), 'rgb.png');
    expect(rgb).toMatchObject({ width: 5, height: 3 });
    expect([...rgb.data]).toEqual([...pattern.data]);

    const alpha = image(4, 2, (x, y) => [10 * x, 20 * y, 30, x * 80]);
    const rgba = await decodeImageNode(pngjsEncode(alpha, 6), 'rgba.png');
    expect([...rgba.data]).toEqual([...alpha.data]);

    const grey = image(3, 2, (x, y) => [x * 100 + y, x * 100 + y, x * 100 + y, 255]);
    const g = await decodeImageNode(pngjsEncode(grey, 0), 'grey.png');
    expect([...g.data]).toEqual([...grey.data]);
  });

  it('decodes grey, grey+alpha, 16-bit, palette (with tRNS) and interlaced PNGs', async () => {
    const grey = await decodeImageNode(rawPng({ width: 3, height: 2, depth: 8, colorType: 0, sample: (x, y) => [x * 10 + y] }), 'g.png');
    expect(px(grey, 2, 1)).toEqual([21, 21, 21, 255]);

    const ga = await decodeImageNode(rawPng({ width: 2, height: 2, depth: 8, colorType: 4, sample: (x, y) => [100 + x, 50 * y] }), 'ga.png');
    expect(px(ga, 1, 1)).toEqual([101, 101, 101, 50]);

    // 16-bit samples are scaled to 8 bits: round(v * 255 / 65535).
    const deep = await decodeImageNode(rawPng({ width: 2, height: 1, depth: 16, colorType: 2, sample: (x) => [x ? 0xffff : 0x1234, 0x8000, 0] }), 'deep.png');
    expect(px(deep, 0, 0)).toEqual([Math.round((0x1234 * 255) / 65535), 128, 0, 255]);
    expect(px(deep, 1, 0)).toEqual([255, 128, 0, 255]);
    const deepAlpha = await decodeImageNode(rawPng({ width: 1, height: 1, depth: 16, colorType: 6, sample: () => [0, 0xffff, 0, 0x7fff] }), 'da.png');
    expect(px(deepAlpha, 0, 0)).toEqual([0, 255, 0, 127]);

    const palette = Buffer.from([255, 0, 0, 0, 255, 0, 0, 0, 255]);
    const pal = await decodeImageNode(
      rawPng({ width: 3, height: 1, depth: 8, colorType: 3, sample: (x) => [x], extra: [pngChunk('PLTE', palette), pngChunk('tRNS', Buffer.from([255, 128]))] }),
      'pal.png',
    );
    expect([px(pal, 0, 0), px(pal, 1, 0), px(pal, 2, 0)]).toEqual([
      [255, 0, 0, 255],
      [0, 255, 0, 128],
      [0, 0, 255, 255],
    ]);

    const f = (x: number, y: number) => [x * 20, y * 20, (x * 7 + y * 13) % 256];
    const inter = await decodeImageNode(rawPng({ width: 11, height: 9, depth: 8, colorType: 2, sample: f, interlace: true }), 'adam7.png');
    expect(inter).toMatchObject({ width: 11, height: 9 });
    for (let y = 0; y < 9; y++) for (let x = 0; x < 11; x++) expect(px(inter, x, y)).toEqual([...f(x, y), 255]);
  });
});

describe('decodeImageNode: JPEG', () => {
  const quadrants = image(16, 16, (x, y) => (y < 8 ? (x < 8 ? [255, 0, 0, 255] : [0, 255, 0, 255]) : x < 8 ? [0, 0, 255, 255] : [255, 255, 255, 255]));
  const near = (got: number[], want: number[], tol = 12) => got.every((v, i) => Math.abs(v - want[i]) <= tol);

  it('decodes a JPEG written by jpeg-js (opaque RGBA, close to the original)', async () => {
    const img = await decodeImageNode(jpegEncode(quadrants), 'q.jpg');
    expect(img).toMatchObject({ width: 16, height: 16 });
    expect(near(px(img, 3, 3), [255, 0, 0, 255])).toBe(true);
    expect(near(px(img, 12, 3), [0, 255, 0, 255])).toBe(true);
    expect(near(px(img, 3, 12), [0, 0, 255, 255])).toBe(true);
    expect(near(px(img, 12, 12), [255, 255, 255, 255])).toBe(true);
  });

  it('reads the EXIF orientation (big- and little-endian) and turns the image upright', async () => {
    const jpg = jpegEncode(image(16, 8, (x) => (x < 8 ? [255, 0, 0, 255] : [0, 0, 255, 255])));
    expect(jpegOrientation(jpg)).toBe(1);
    for (const o of [1, 2, 3, 4, 5, 6, 7, 8]) {
      expect(jpegOrientation(withExif(jpg, o))).toBe(o);
      expect(jpegOrientation(withExif(jpg, o, true))).toBe(o);
    }
    expect(jpegOrientation(withExif(jpg, 9))).toBe(1);
    expect(jpegOrientation(pngjsEncode(pattern, 2))).toBe(1);

    // Stored: red left half, blue right half, 16 wide. Orientation 6 (turn 90° clockwise): 8 wide, 16
    // tall, the left half (red) now on top.
    const upright = await decodeImageNode(withExif(jpg, 6), 'rot.jpg');
    expect(upright).toMatchObject({ width: 8, height: 16 });
    expect(near(px(upright, 4, 3), [255, 0, 0, 255])).toBe(true);
    expect(near(px(upright, 4, 12), [0, 0, 255, 255])).toBe(true);
    // Orientation 8 (90° anticlockwise): red at the bottom.
    const ccw = await decodeImageNode(withExif(jpg, 8, true), 'rot.jpg');
    expect(near(px(ccw, 4, 12), [255, 0, 0, 255])).toBe(true);
    // Orientation 3 (180°): red on the right.
    const flipped = await decodeImageNode(withExif(jpg, 3), 'rot.jpg');
    expect(flipped).toMatchObject({ width: 16, height: 8 });
    expect(near(px(flipped, 12, 4), [255, 0, 0, 255])).toBe(true);
  });
});

describe('applyOrientation', () => {
  // Stored 3x2:  A B C / D E F  (pixel values 0..5 in red).
  const stored = image(3, 2, (x, y) => [y * 3 + x, 0, 0, 255]);
  const rows = (img: RgbaImage) => Array.from({ length: img.height }, (_, y) => Array.from({ length: img.width }, (_, x) => 'ABCDEF'[px(img, x, y)[0]]).join(''));

  it('follows the EXIF meaning of each orientation', () => {
    expect(rows(applyOrientation(stored, 1))).toEqual(['ABC', 'DEF']);
    expect(rows(applyOrientation(stored, 2))).toEqual(['CBA', 'FED']);
    expect(rows(applyOrientation(stored, 3))).toEqual(['FED', 'CBA']);
    expect(rows(applyOrientation(stored, 4))).toEqual(['DEF', 'ABC']);
    expect(rows(applyOrientation(stored, 5))).toEqual(['AD', 'BE', 'CF']);
    expect(rows(applyOrientation(stored, 6))).toEqual(['DA', 'EB', 'FC']);
    expect(rows(applyOrientation(stored, 7))).toEqual(['FC', 'EB', 'DA']);
    expect(rows(applyOrientation(stored, 8))).toEqual(['CF', 'BE', 'AD']);
    expect(rows(applyOrientation(stored, 0))).toEqual(['ABC', 'DEF']);
  });
});

// --- sizes and refusals ---------------------------------------------------------------------------

describe('imageSize (headers only)', () => {
  it('reads PNG, JPEG, GIF, BMP and WebP headers', () => {
    expect(imageSize(pngjsEncode(pattern, 2))).toEqual({ width: 5, height: 3 });
    const jpg = jpegEncode(image(24, 10, () => [1, 2, 3, 255]), 50);
    expect(imageSize(jpg)).toEqual({ width: 24, height: 10 });
    expect(imageSize(withExif(jpg, 6))).toEqual({ width: 24, height: 10 }); // stored size, past other segments

    const gif = Buffer.from('GIF89a\x40\x01\xf0\x00\x80\x00\x00', 'latin1');
    expect(imageSize(gif)).toEqual({ width: 320, height: 240 });

    const bmp = Buffer.alloc(54);
    bmp.write('BM', 0, 'ascii');
    bmp.writeUInt32LE(54, 10);
    bmp.writeUInt32LE(40, 14);
    bmp.writeInt32LE(640, 18);
    bmp.writeInt32LE(-480, 22); // top-down
    expect(imageSize(bmp)).toEqual({ width: 640, height: 480 });
    const core = Buffer.alloc(26);
    core.write('BM', 0, 'ascii');
    core.writeUInt32LE(12, 14);
    core.writeUInt16LE(33, 18);
    core.writeUInt16LE(17, 20);
    expect(imageSize(core)).toEqual({ width: 33, height: 17 });

    const riff = (fourcc: string, payload: number[]) => {
      const body = Buffer.concat([Buffer.from(fourcc, 'ascii'), Buffer.alloc(4), Buffer.from(payload), Buffer.alloc(16)]);
      return Buffer.concat([Buffer.from('RIFF'), Buffer.alloc(4), Buffer.from('WEBP'), body]);
    };
    // VP8 (lossy): frame tag, start code, 14-bit width and height.
    expect(imageSize(riff('VP8 ', [0, 0, 0, 0x9d, 0x01, 0x2a, 0x20, 0x03, 0x58, 0x02]))).toEqual({ width: 800, height: 600 });
    // VP8L (lossless): 0x2f, then width-1 and height-1 in 14 bits each: 100x50.
    const bits = 99 | (49 << 14);
    expect(imageSize(riff('VP8L', [0x2f, bits & 0xff, (bits >> 8) & 0xff, (bits >> 16) & 0xff, (bits >>> 24) & 0xff]))).toEqual({ width: 100, height: 50 });
    // VP8X (extended): flags, reserved, 24-bit width-1 and height-1: 4000x3000.
    expect(imageSize(riff('VP8X', [0, 0, 0, 0, 0x9f, 0x0f, 0x00, 0xb7, 0x0b, 0x00]))).toEqual({ width: 4000, height: 3000 });
  });

  it('is null for non-images and cut-off headers', () => {
    expect(imageSize(Buffer.from('hello, world, not an image at all'))).toBeNull();
    expect(imageSize(new Uint8Array(0))).toBeNull();
    expect(imageSize(pngjsEncode(pattern, 2).subarray(0, 20))).toBeNull();
    expect(imageSize(jpegEncode(pattern).subarray(0, 30))).toBeNull();
  });
});

describe('refusals', () => {
  it('refuses non-images and empty files, naming the file', async () => {
    expect((await decodeError(Buffer.from('just some text'), 'notes.png')).message).toBe(
      'notes.png: not an image: its first bytes are not those of a PNG, JPEG, WebP, GIF or BMP file',
    );
    expect((await decodeError(new Uint8Array(0), 'empty.jpg')).message).toMatch(/empty/);
  });

  it('refuses cut-off and damaged PNG and JPEG files with a clear message', async () => {
    const png = rawPng({ width: 8, height: 8, depth: 8, colorType: 2, sample: (x, y) => [x, y, 0] });
    expect((await decodeError(png.subarray(0, png.length - 20), 'cut.png')).message).toMatch(/^cut\.png: the PNG file is damaged or cut short/);
    expect((await decodeError(png.subarray(0, 30), 'cut.png')).message).toMatch(/^cut\.png: the PNG/);
    const corrupt = Buffer.from(png);
    corrupt[40] ^= 0xff; // inside IDAT: the CRC no longer matches
    expect((await decodeError(corrupt, 'crc.png')).message).toMatch(/damaged/);

    const jpg = jpegEncode(image(32, 32, (x, y) => [x * 8, y * 8, 0, 255]));
    expect((await decodeError(jpg.subarray(0, Math.floor(jpg.length / 2)), 'half.jpg')).message).toMatch(/^half\.jpg: the JPEG file is damaged or cut short/);
    expect((await decodeError(jpg.subarray(0, 12), 'head.jpg')).message).toMatch(/^head\.jpg: the JPEG header is damaged or cut short/);
  });

  it('refuses an image whose header declares a huge size, before decoding it', async () => {
    // Only the header: decoding would fail for want of data, so the size message proves the check came first.
    const huge = Buffer.concat([PNG_SIGNATURE, ihdr(100000, 100000, 8, 2), pngChunk('IEND', new Uint8Array(0))]);
    expect(imageSize(huge)).toEqual({ width: 100000, height: 100000 });
    expect((await decodeError(huge, 'huge.png')).message).toMatch(/^huge\.png: the image is 100000x100000 pixels \(10000 MP\), more than the 67 MP/);

    const jpg = Buffer.from(jpegEncode(image(8, 8, () => [0, 0, 0, 255])));
    const sof = jpg.indexOf(Buffer.from([0xff, 0xc0]));
    jpg.writeUInt16BE(60000, sof + 5); // height
    jpg.writeUInt16BE(60000, sof + 7); // width
    expect((await decodeError(jpg, 'huge.jpg')).message).toMatch(/60000x60000 pixels/);
  });

  it('refuses GIF, BMP and WebP in Node, saying what to do', async () => {
    const gif = Buffer.from('GIF89a\x01\x00\x01\x00\x80\x00\x00', 'latin1');
    expect((await decodeError(gif, 'a.gif')).message).toBe(
      'a.gif: GIF images are not decoded by the command-line tool (only PNG and JPEG): convert it to PNG or JPEG, or use the browser app, which decodes GIF',
    );
  });

  it('accepts only training resolutions that are multiples of 8 from 8 to 4096', () => {
    for (const ok of [8, 64, 512, 768, 4096]) expect(() => checkResolution(ok)).not.toThrow();
    for (const bad of [0, 4, 500, 513, 4104, 7.5, -512, Number.NaN]) expect(() => checkResolution(bad)).toThrow(RangeError);
    expect(() => checkResolution(500)).toThrow(/multiple of 8.*try 504/);
    expect(() => centerCropResize(pattern, 100)).toThrow(/multiple of 8/);
  });
});

// --- crop, resize and tensor layout ---------------------------------------------------------------

describe('centerCropResize', () => {
  it('returns the image unchanged at its own size', () => {
    const img = image(16, 16, (x, y) => [x * 16, y * 16, (x * y) % 256, 255 - x]);
    const out = centerCropResize(img, 16);
    expect(out).toMatchObject({ width: 16, height: 16 });
    expect([...out.data]).toEqual([...img.data]);
    expect(out.data).not.toBe(img.data);
  });

  it('crops the centre of wide and tall images', () => {
    // Three 16-px bands: red | green | blue. The centre square is the green band, exactly.
    const band = (i: number): [number, number, number, number] => (i < 16 ? [255, 0, 0, 255] : i < 32 ? [0, 255, 0, 255] : [0, 0, 255, 255]);
    const wide = centerCropResize(image(48, 16, (x) => band(x)), 16);
    expect(wide).toMatchObject({ width: 16, height: 16 });
    for (let i = 0; i < 16 * 16; i++) expect([...wide.data.subarray(i * 4, i * 4 + 4)]).toEqual([0, 255, 0, 255]);
    // Shrunk 2x, the crop is resampled from the whole image, as resizing it first and cropping after
    // would: the triangle filter (2 px each side) reaches one source row past the crop, so the outer
    // output rows take a quarter-weight tap of the neighbouring band; the rows inside are exact.
    const tall = centerCropResize(image(16, 48, (_, y) => band(y)), 8);
    expect(tall).toMatchObject({ width: 8, height: 8 });
    for (let y = 1; y < 7; y++) for (let x = 0; x < 8; x++) expect(px(tall, x, y)).toEqual([0, 255, 0, 255]);
    expect(px(tall, 3, 0)).toEqual([Math.round((255 * 0.25) / 2), Math.round(255 * (1 - 0.25 / 2)), 0, 255]);
    expect(px(tall, 3, 7)).toEqual([0, Math.round(255 * (1 - 0.25 / 2)), Math.round((255 * 0.25) / 2), 255]);
    // A 96x32 image shrunk to 16 keeps the middle third: green, red only leaking into the left column.
    const wide2 = centerCropResize(image(96, 32, (x) => band(Math.floor(x / 2))), 16);
    for (let y = 0; y < 16; y++) for (let x = 1; x < 15; x++) expect(px(wide2, x, y)).toEqual([0, 255, 0, 255]);
    expect(px(wide2, 0, 8)[0]).toBeGreaterThan(0);
    expect(px(wide2, 15, 8)[2]).toBeGreaterThan(0);
  });

  it('keeps a constant image constant, opaque or not, at any scale', () => {
    for (const [w, h, size] of [
      [640, 480, 64],
      [37, 91, 16],
      [5, 3, 24],
    ]) {
      const out = centerCropResize(image(w, h, () => [12, 200, 77, 255]), size);
      expect(out).toMatchObject({ width: size, height: size });
      expect(new Set(Array.from({ length: size * size }, (_, i) => px(out, i % size, Math.floor(i / size)).join()))).toEqual(new Set(['12,200,77,255']));
    }
    const half = centerCropResize(image(50, 40, () => [90, 10, 200, 128]), 16);
    expect(px(half, 7, 7)).toEqual([90, 10, 200, 128]);
  });

  it('keeps a linear ramp a ramp (within 1), shrinking and enlarging', () => {
    // Value = x across a 256-px ramp: the output sample i covers input centre (i + 0.5) * scale.
    const ramp = image(256, 256, (x) => [x, 255 - x, 128, 255]);
    for (const size of [64, 200, 512]) {
      const out = centerCropResize(ramp, size);
      const scale = 256 / size;
      for (let i = 0; i < size; i++) {
        const want = Math.min(255, Math.max(0, (i + 0.5) * scale - 0.5));
        const [r, g, b, a] = px(out, i, size >> 1);
        expect(Math.abs(r - want)).toBeLessThanOrEqual(1);
        expect(Math.abs(g - (255 - want))).toBeLessThanOrEqual(1);
        expect([b, a]).toEqual([128, 255]);
      }
    }
  });

  it('does not bleed the colour of transparent pixels into visible ones', () => {
    // Left half opaque white, right half fully transparent "black": the visible colour stays white.
    const img = image(32, 32, (x) => (x < 16 ? [255, 255, 255, 255] : [0, 0, 0, 0]));
    const out = centerCropResize(img, 8);
    const row = Array.from({ length: 8 }, (_, x) => px(out, x, 4));
    expect(row.map((p) => p[3])).toEqual([255, 255, 255, 223, 32, 0, 0, 0]) // 3.5 / 4 and 0.5 / 4 of the stretched triangle on the opaque side;
    for (const p of row) if (p[3] > 0) expect(p.slice(0, 3)).toEqual([255, 255, 255]);
  });

  it('is deterministic', () => {
    const img = image(123, 77, (x, y) => [(x * 31 + y * 17) % 256, (x * y) % 256, (x ^ y) & 255, 255]);
    expect([...centerCropResize(img, 32).data]).toEqual([...centerCropResize(img, 32).data]);
  });
});

describe('imageToCHW', () => {
  it('lays out [3, H, W] planes in [-1, 1], transparent pixels over white', () => {
    const img = image(3, 2, (x, y) => (x === 2 && y === 1 ? [0, 0, 0, 0] : [x * 127.5, y * 255, 255, 255]));
    const t = imageToCHW(img);
    expect(t).toBeInstanceOf(Float32Array);
    expect(t).toHaveLength(3 * 2 * 3);
    const at = (c: number, y: number, x: number) => t[c * 6 + y * 3 + x];
    expect(at(0, 0, 0)).toBe(-1);
    expect(at(0, 0, 1)).toBeCloseTo(0, 2); // 127 -> -0.004
    expect(at(1, 1, 0)).toBe(1);
    expect(at(2, 0, 0)).toBe(1);
    // Fully transparent black is white.
    expect([at(0, 1, 2), at(1, 1, 2), at(2, 1, 2)]).toEqual([1, 1, 1]);
    // Half-transparent black is mid grey.
    const half = imageToCHW(image(1, 1, () => [0, 0, 0, 128]));
    expect(half[0]).toBeCloseTo(127 / 127.5 - 1, 5);
    expect(Math.min(...t)).toBeGreaterThanOrEqual(-1);
    expect(Math.max(...t)).toBeLessThanOrEqual(1);
  });
});
