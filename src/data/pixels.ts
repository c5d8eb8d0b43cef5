// Images as training inputs: decoded RGBA pixels, the size check that runs before decoding, EXIF
// orientation, the centre crop and resize to the training resolution, and the [-1, 1] CHW tensor the VAE
// encoder takes. Platform-free: the decoders live in decode-node.ts (pngjs, jpeg-js) and decode-browser.ts
// (createImageBitmap), and both return an RgbaImage.

import { sniffImage } from './image';

/** Decoded pixels: RGBA8, row-major, top row first, `data.length === width * height * 4`, alpha not premultiplied. */
export interface RgbaImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** A decoder (Node's or the browser's); throws ImageDecodeError. */
export type DecodeImage = (bytes: Uint8Array, file: string) => Promise<RgbaImage>;

/**
 * Largest image accepted, in pixels (8192 x 8192 = 67 MP, 256 MiB as RGBA8). Larger ones are refused
 * from their header, before any pixel is decoded: a photo this size is far above any training resolution,
 * and decoding it (a pure-JS JPEG decoder needs about 20 bytes a pixel) could exhaust a tab's memory.
 */
export const MAX_IMAGE_PIXELS = 8192 * 8192;

/** Training resolutions accepted by checkResolution: a multiple of 8 (the VAE's downsampling) from 8 to 4096. */
export const MIN_RESOLUTION = 8;
export const MAX_RESOLUTION = 4096;

/** An image that cannot be used, with the file it came from; the message says what is wrong and what to do. */
export class ImageDecodeError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = 'ImageDecodeError';
  }
}

/**
 * Throws unless `px` is a usable training resolution: an integer multiple of 8 (the VAE turns 8x8 pixels
 * into one latent) from 8 (tiny test models) to 4096 (SD1.5 is trained at 512; 4096 is far past any
 * memory budget in a browser but kept as the bound for experiments).
 */
export function checkResolution(px: number): void {
  if (!Number.isInteger(px) || px < MIN_RESOLUTION || px > MAX_RESOLUTION || px % 8 !== 0) {
    const near = Number.isFinite(px) ? Math.min(MAX_RESOLUTION, Math.max(MIN_RESOLUTION, Math.round(px / 8) * 8)) : 512;
    throw new RangeError(
      `training resolution ${px} is not usable: it must be a whole multiple of 8 pixels from ${MIN_RESOLUTION} to ${MAX_RESOLUTION} (SD1.5 uses 512); try ${near}`,
    );
  }
}

/** Throws ImageDecodeError when an image of this size is too large (or empty) to decode. */
export function checkImageSize(width: number, height: number, file: string): void {
  if (!(width > 0 && height > 0)) throw new ImageDecodeError(file, `the image says it is ${width}x${height} pixels: the file is damaged; re-save it as PNG or JPEG`);
  if (width * height > MAX_IMAGE_PIXELS) {
    throw new ImageDecodeError(
      file,
      `the image is ${width}x${height} pixels (${((width * height) / 1e6).toFixed(0)} MP), more than the ${Math.floor(MAX_IMAGE_PIXELS / 1e6)} MP this tool decodes; scale it down (to 2048 px on the long side, say) before importing it`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------
// Header reading: width and height without decoding, for the size check.

const u16be = (b: Uint8Array, i: number) => (b[i] << 8) | b[i + 1];
const u16le = (b: Uint8Array, i: number) => b[i] | (b[i + 1] << 8);
const u24le = (b: Uint8Array, i: number) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16);
const u32be = (b: Uint8Array, i: number) => ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
const i32le = (b: Uint8Array, i: number) => b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);

/** JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic). */
const JPEG_SOF = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

/** Each JPEG marker segment before the image data: marker byte and the offset and length of its payload. */
function* jpegSegments(b: Uint8Array): Generator<{ marker: number; start: number; length: number }> {
  let i = 2; // after SOI
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) return; // not a marker where one must be: damaged
    while (i < b.length && b[i] === 0xff) i++; // fill bytes
    if (i >= b.length) return;
    const marker = b[i++];
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue; // no payload
    if (marker === 0xd9 || i + 2 > b.length) return; // EOI
    const length = u16be(b, i);
    if (length < 2) return;
    yield { marker, start: i + 2, length: length - 2 };
    if (marker === 0xda) return; // start of scan: entropy-coded data follows, no more headers
    i += length;
  }
}

/**
 * Width and height from a PNG (IHDR), JPEG (SOF), GIF (logical screen), BMP (DIB header) or WebP
 * (VP8, VP8L or VP8X) header, without decoding; null when the bytes are none of those or too short.
 * For JPEG these are the stored dimensions, before any EXIF rotation (same pixel count).
 */
export function imageSize(bytes: Uint8Array): { width: number; height: number } | null {
  const b = bytes;
  switch (sniffImage(b)) {
    case 'png':
      // Signature (8), IHDR length (4) and type (4), then width and height.
      if (b.length < 24 || String.fromCharCode(b[12], b[13], b[14], b[15]) !== 'IHDR') return null;
      return { width: u32be(b, 16), height: u32be(b, 20) };
    case 'jpeg':
      for (const s of jpegSegments(b)) {
        if (JPEG_SOF.has(s.marker)) {
          if (s.start + 5 > b.length) return null;
          return { width: u16be(b, s.start + 3), height: u16be(b, s.start + 1) };
        }
      }
      return null;
    case 'gif':
      if (b.length < 10) return null;
      return { width: u16le(b, 6), height: u16le(b, 8) };
    case 'bmp': {
      const dib = i32le(b, 14);
      if (dib === 12) return b.length < 22 ? null : { width: u16le(b, 18), height: u16le(b, 20) };
      if (b.length < 26) return null;
      // Height is negative for top-down bitmaps.
      return { width: Math.abs(i32le(b, 18)), height: Math.abs(i32le(b, 22)) };
    }
    case 'webp': {
      if (b.length < 30) return null;
      const chunk = String.fromCharCode(b[12], b[13], b[14], b[15]);
      if (chunk === 'VP8 ') {
        // Frame tag (3 bytes), start code 9d 01 2a, then 14-bit width and height (2 bits of scale above).
        if (b[23] !== 0x9d || b[24] !== 0x01 || b[25] !== 0x2a) return null;
        return { width: u16le(b, 26) & 0x3fff, height: u16le(b, 28) & 0x3fff };
      }
      if (chunk === 'VP8L') {
        // Signature 0x2f, then width-1 and height-1 in 14 bits each, little-endian bit order.
        if (b[20] !== 0x2f) return null;
        const bits = (b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24)) >>> 0;
        return { width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 };
      }
      if (chunk === 'VP8X') {
        // Flags (1 byte), reserved (3), canvas width-1 and height-1 in 24 bits each.
        return { width: u24le(b, 24) + 1, height: u24le(b, 27) + 1 };
      }
      return null;
    }
    default:
      return null;
  }
}

// ---------------------------------------------------------------------------------------------------
// EXIF orientation.

/**
 * The EXIF orientation (1..8) of a JPEG: tag 0x0112 of IFD0 in its APP1 "Exif" segment; 1 (as stored)
 * when there is none, when it is out of range, or when the bytes are not a JPEG.
 */
export function jpegOrientation(bytes: Uint8Array): number {
  const b = bytes;
  if (sniffImage(b) !== 'jpeg') return 1;
  for (const s of jpegSegments(b)) {
    if (s.marker !== 0xe1 || s.length < 14) continue;
    const end = Math.min(b.length, s.start + s.length);
    // "Exif\0\0", then a TIFF header: byte order, 42, offset of IFD0 (from the TIFF header).
    if (String.fromCharCode(b[s.start], b[s.start + 1], b[s.start + 2], b[s.start + 3]) !== 'Exif' || b[s.start + 4] !== 0 || b[s.start + 5] !== 0) continue;
    const tiff = s.start + 6;
    const order = String.fromCharCode(b[tiff], b[tiff + 1]);
    if (order !== 'II' && order !== 'MM') continue;
    const le = order === 'II';
    const r16 = (i: number) => (le ? u16le(b, i) : u16be(b, i));
    const r32 = (i: number) => (le ? (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)) >>> 0 : u32be(b, i));
    if (r16(tiff + 2) !== 42) continue;
    const ifd = tiff + r32(tiff + 4);
    if (ifd + 2 > end) continue;
    const count = r16(ifd);
    for (let k = 0; k < count; k++) {
      const entry = ifd + 2 + k * 12;
      if (entry + 12 > end) break;
      if (r16(entry) !== 0x0112) continue;
      const type = r16(entry + 2);
      // SHORT (3) as it should be; a LONG (4) seen in the wild is read too.
      const value = type === 3 ? r16(entry + 8) : type === 4 ? r32(entry + 8) : 0;
      return value >= 1 && value <= 8 ? value : 1;
    }
    return 1;
  }
  return 1;
}

/**
 * The image as it should be displayed under an EXIF orientation: 2 mirrors left-right, 3 turns 180°,
 * 4 mirrors top-bottom, 5 transposes, 6 turns 90° clockwise, 7 transverses, 8 turns 90° anticlockwise.
 * 5..8 swap width and height. 1 (or anything outside 1..8) returns the image as it is.
 */
export function applyOrientation(img: RgbaImage, orientation: number): RgbaImage {
  if (!Number.isInteger(orientation) || orientation < 2 || orientation > 8) return img;
  const { width: w, height: h, data } = img;
  const swap = orientation >= 5;
  const ow = swap ? h : w;
  const oh = swap ? w : h;
  const out = new Uint8Array(ow * oh * 4);
  // For each output pixel (x, y), the stored pixel (sx, sy) it shows.
  const source: (x: number, y: number) => number = {
    2: (x: number, y: number) => y * w + (w - 1 - x),
    3: (x: number, y: number) => (h - 1 - y) * w + (w - 1 - x),
    4: (x: number, y: number) => (h - 1 - y) * w + x,
    5: (x: number, y: number) => x * w + y,
    6: (x: number, y: number) => (h - 1 - x) * w + y,
    7: (x: number, y: number) => (h - 1 - x) * w + (w - 1 - y),
    8: (x: number, y: number) => x * w + (w - 1 - y),
  }[orientation as 2 | 3 | 4 | 5 | 6 | 7 | 8];
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      const s = source(x, y) * 4;
      const d = (y * ow + x) * 4;
      out[d] = data[s];
      out[d + 1] = data[s + 1];
      out[d + 2] = data[s + 2];
      out[d + 3] = data[s + 3];
    }
  }
  return { width: ow, height: oh, data: out };
}

// ---------------------------------------------------------------------------------------------------
// Centre crop and resize.

/** The triangle (tent) kernel of bilinear interpolation, support 1. */
const triangle = (x: number) => {
  const a = Math.abs(x);
  return a < 1 ? 1 - a : 0;
};

interface Coefficients {
  /** First input index of each output sample. */
  first: Int32Array;
  /** Number of taps of each output sample. */
  taps: Int32Array;
  /** Normalised weights, `maxTaps` per output sample. */
  weights: Float64Array;
  maxTaps: number;
}

/**
 * Weights that resample the input range [start, start + length) of an axis `inLength` long onto `outLength`
 * samples, as Pillow's ImagingResample does (precompute_coeffs): output i is centred at
 * start + (i + 0.5) * scale; when shrinking (scale > 1) the kernel is stretched by the scale, so every
 * input pixel contributes (antialiasing); taps past the image's edge are dropped and the rest renormalised.
 */
function coefficients(inLength: number, start: number, length: number, outLength: number): Coefficients {
  const scale = length / outLength;
  const filterScale = Math.max(scale, 1);
  const support = filterScale; // triangle support 1, stretched
  const maxTaps = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(outLength);
  const taps = new Int32Array(outLength);
  const weights = new Float64Array(outLength * maxTaps);
  for (let i = 0; i < outLength; i++) {
    const center = start + (i + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(center - support + 0.5));
    const hi = Math.min(inLength, Math.trunc(center + support + 0.5));
    let total = 0;
    const n = Math.min(hi - lo, maxTaps);
    for (let k = 0; k < n; k++) {
      const w = triangle((lo + k + 0.5 - center) / filterScale);
      weights[i * maxTaps + k] = w;
      total += w;
    }
    if (total > 0) for (let k = 0; k < n; k++) weights[i * maxTaps + k] /= total;
    first[i] = lo;
    taps[i] = n;
  }
  return { first, taps, weights, maxTaps };
}

/**
 * The image scaled so that its short side is `size` pixels, then cropped to the centre `size` x `size`
 * square: torchvision's Resize(size) + CenterCrop(size) with bilinear interpolation, which diffusers'
 * training scripts use. Done in one resampling of the centre square (Pillow's resize with a box), so no
 * intermediate rounding of the scaled size shifts the crop.
 *
 * Filter: the triangle (bilinear) kernel, separable, stretched by the downscale factor when shrinking
 * (an area-weighted average of every input pixel under it, like Pillow's BILINEAR: no aliasing from
 * large photos) and plain bilinear interpolation when enlarging. Colour is resampled premultiplied by
 * alpha, so transparent pixels' hidden colour does not bleed into visible ones. Float arithmetic, one
 * rounding at the end: deterministic on every platform. On opaque images it agrees with Pillow 9's
 * `resize((size, size), BILINEAR, box=centre square)` to within 1 level (Pillow rounds between its passes).
 */
export function centerCropResize(img: RgbaImage, size: number): RgbaImage {
  checkResolution(size);
  const { width: w, height: h, data } = img;
  if (!(w > 0 && h > 0) || data.length !== w * h * 4) {
    throw new RangeError(`centerCropResize: a ${w}x${h} image needs ${w * h * 4} RGBA bytes, got ${data.length}`);
  }
  if (w === size && h === size) return { width: size, height: size, data: data.slice() };
  const side = Math.min(w, h);
  const cx = coefficients(w, (w - side) / 2, side, size);
  const cy = coefficients(h, (h - side) / 2, side, size);
  // Rows the vertical pass reads.
  const row0 = cy.first[0];
  const row1 = cy.first[size - 1] + cy.taps[size - 1];
  const rows = row1 - row0;

  // Horizontal pass on those rows, premultiplied, into floats: [rows, size, 4] (r*a, g*a, b*a, a) / 255.
  const mid = new Float32Array(rows * size * 4);
  for (let r = 0; r < rows; r++) {
    const inRow = (row0 + r) * w * 4;
    const outRow = r * size * 4;
    for (let i = 0; i < size; i++) {
      let pr = 0;
      let pg = 0;
      let pb = 0;
      let pa = 0;
      const base = i * cx.maxTaps;
      for (let k = 0; k < cx.taps[i]; k++) {
        const wt = cx.weights[base + k];
        const s = inRow + (cx.first[i] + k) * 4;
        const a = data[s + 3] * wt;
        pr += data[s] * a;
        pg += data[s + 1] * a;
        pb += data[s + 2] * a;
        pa += a;
      }
      const o = outRow + i * 4;
      mid[o] = pr / 255;
      mid[o + 1] = pg / 255;
      mid[o + 2] = pb / 255;
      mid[o + 3] = pa;
    }
  }

  // Vertical pass, then back to straight (not premultiplied) alpha.
  const out = new Uint8Array(size * size * 4);
  const clamp = (v: number) => (v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v));
  for (let j = 0; j < size; j++) {
    const base = j * cy.maxTaps;
    for (let i = 0; i < size; i++) {
      let pr = 0;
      let pg = 0;
      let pb = 0;
      let pa = 0;
      for (let k = 0; k < cy.taps[j]; k++) {
        const wt = cy.weights[base + k];
        const s = ((cy.first[j] + k - row0) * size + i) * 4;
        pr += mid[s] * wt;
        pg += mid[s + 1] * wt;
        pb += mid[s + 2] * wt;
        pa += mid[s + 3] * wt;
      }
      const o = (j * size + i) * 4;
      if (pa > 0) {
        const inv = 255 / pa;
        out[o] = clamp(pr * inv);
        out[o + 1] = clamp(pg * inv);
        out[o + 2] = clamp(pb * inv);
      }
      out[o + 3] = clamp(pa);
    }
  }
  return { width: size, height: size, data: out };
}

/**
 * The image as the VAE encoder's input: float32 [3, H, W] (channel planes R, G, B), each value
 * x / 127.5 - 1 in [-1, 1]. Transparent pixels are composited over white first: SD1.5 has no alpha
 * channel, and cut-outs (product shots, stickers, logos) are almost always meant to be seen on a white
 * page, whereas the colour a transparent pixel happens to store is arbitrary (often black, which would
 * turn every cut-out into a dark-background image).
 */
export function imageToCHW(img: RgbaImage): Float32Array {
  const { width: w, height: h, data } = img;
  const plane = w * h;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    const a = data[p * 4 + 3] / 255;
    for (let c = 0; c < 3; c++) {
      const v = data[p * 4 + c] * a + 255 * (1 - a);
      out[c * plane + p] = v / 127.5 - 1;
    }
  }
  return out;
}
