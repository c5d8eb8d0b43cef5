// CLIPImageProcessor's preprocessing (transformers), from its preprocessor_config.json:
//   1. convert to RGB: PIL's convert('RGB') drops the alpha channel (no compositing), so this does too;
//   2. resize so the shortest side is `size.shortest_edge` (the long side int(size * long / short)), with
//      Pillow's resampling filter (`resample`, 3 = bicubic, the CLIP default);
//   3. centre crop to `crop_size` (top = (h - crop_h) // 2, left likewise; zero padding if the image is smaller);
//   4. rescale by `rescale_factor` (1/255), normalise with `image_mean` / `image_std`, channels first.
// The resize is Pillow's ImagingResample for 8-bit images, written from its source: separable convolution
// (horizontal pass, then vertical), the filter stretched by the scale factor when shrinking (antialiasing),
// weights normalised per output pixel then turned into 22-bit fixed point, each pass rounded and clamped
// to 0..255. Done the same way, the result matches Pillow's byte for byte (tested against Pillow 12.3).

import type { RgbaImage } from '../data/pixels';

export interface ClipImageConfig {
  doResize: boolean;
  /** Target of the shortest side. */
  shortestEdge: number;
  /** Pillow filter id: 2 = bilinear, 3 = bicubic. */
  resample: 2 | 3;
  doCenterCrop: boolean;
  cropHeight: number;
  cropWidth: number;
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  mean: [number, number, number];
  std: [number, number, number];
}

/** The values transformers' CLIPImageProcessor uses when preprocessor_config.json leaves a field out. */
export const CLIP_IMAGE_DEFAULTS: ClipImageConfig = {
  doResize: true,
  shortestEdge: 224,
  resample: 3,
  doCenterCrop: true,
  cropHeight: 224,
  cropWidth: 224,
  doRescale: true,
  rescaleFactor: 1 / 255,
  doNormalize: true,
  mean: [0.48145466, 0.4578275, 0.40821073],
  std: [0.26862954, 0.26130258, 0.27577711],
};

/** preprocessor_config.json read into a ClipImageConfig; throws an Error naming `file` and the bad field. */
export function parseClipImageConfig(text: string, file = 'preprocessor_config.json'): ClipImageConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${file}: expected a JSON object`);
  const o = raw as Record<string, unknown>;
  const c: ClipImageConfig = { ...CLIP_IMAGE_DEFAULTS, mean: [...CLIP_IMAGE_DEFAULTS.mean], std: [...CLIP_IMAGE_DEFAULTS.std] };
  const bad = (field: string, want: string) => new Error(`${file}: "${field}" must be ${want}, got ${JSON.stringify(o[field])}`);
  const bool = (field: string, fallback: boolean) => {
    if (o[field] === undefined) return fallback;
    if (typeof o[field] !== 'boolean') throw bad(field, 'true or false');
    return o[field];
  };
  const positiveInt = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v > 0;
  c.doResize = bool('do_resize', c.doResize);
  c.doCenterCrop = bool('do_center_crop', c.doCenterCrop);
  c.doRescale = bool('do_rescale', c.doRescale);
  c.doNormalize = bool('do_normalize', c.doNormalize);
  // `size`: {"shortest_edge": N} (current exports) or a bare N (older ones).
  if (o.size !== undefined) {
    const s = o.size;
    if (positiveInt(s)) c.shortestEdge = s as number;
    else if (s && typeof s === 'object' && positiveInt((s as Record<string, unknown>).shortest_edge)) c.shortestEdge = (s as { shortest_edge: number }).shortest_edge;
    else throw bad('size', 'a positive integer or {"shortest_edge": N}');
  }
  // `crop_size`: {"height": H, "width": W} or a bare N (square).
  if (o.crop_size !== undefined) {
    const s = o.crop_size as Record<string, unknown>;
    if (positiveInt(s)) c.cropHeight = c.cropWidth = o.crop_size as number;
    else if (s && typeof s === 'object' && positiveInt(s.height) && positiveInt(s.width)) {
      c.cropHeight = s.height as number;
      c.cropWidth = s.width as number;
    } else throw bad('crop_size', 'a positive integer or {"height": H, "width": W}');
  }
  if (o.resample !== undefined) {
    if (o.resample !== 2 && o.resample !== 3) throw bad('resample', '2 (bilinear) or 3 (bicubic); other Pillow filters are not implemented');
    c.resample = o.resample;
  }
  if (o.rescale_factor !== undefined) {
    if (typeof o.rescale_factor !== 'number' || !(o.rescale_factor > 0)) throw bad('rescale_factor', 'a positive number');
    c.rescaleFactor = o.rescale_factor;
  }
  const triple = (field: 'image_mean' | 'image_std', positive: boolean): [number, number, number] | undefined => {
    const v = o[field];
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0))) {
      throw bad(field, `a list of 3 ${positive ? 'positive ' : ''}numbers (R, G, B)`);
    }
    return [v[0], v[1], v[2]];
  };
  c.mean = triple('image_mean', false) ?? c.mean;
  c.std = triple('image_std', true) ?? c.std;
  return c;
}

// Pillow's filters (src/libImaging/Resample.c).
function bicubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}
function bilinear(x: number): number {
  if (x < 0) x = -x;
  return x < 1 ? 1 - x : 0;
}

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output pixel, its first input pixel and fixed-point weights. */
function coefficients(inSize: number, outSize: number, resample: 2 | 3): { first: Int32Array; weights: Int32Array[] } {
  const filter = resample === 3 ? bicubic : bilinear;
  const filterSupport = resample === 3 ? 2 : 1;
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterSupport * filterScale;
  const first = new Int32Array(outSize);
  const weights: Int32Array[] = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    // C's (int) cast truncates toward zero; Math.trunc does the same.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const k = new Float64Array(xmax);
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      k[x] = filter((x + xmin - center + 0.5) / filterScale);
      ww += k[x];
    }
    const fixed = new Int32Array(xmax);
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? k[x] / ww : k[x];
      fixed[x] = Math.trunc(w < 0 ? -0.5 + w * ONE : 0.5 + w * ONE);
    }
    first[xx] = xmin;
    weights.push(fixed);
  }
  return { first, weights };
}

/** One separable pass over an interleaved 8-bit image with `channels` channels, along x (horizontal) or y. */
function resamplePass(src: Uint8Array, w: number, h: number, channels: number, outSize: number, horizontal: boolean, resample: 2 | 3): Uint8Array {
  const inSize = horizontal ? w : h;
  const { first, weights } = coefficients(inSize, outSize, resample);
  const ow = horizontal ? outSize : w;
  const oh = horizontal ? h : outSize;
  const out = new Uint8Array(ow * oh * channels);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      const i = horizontal ? x : y;
      const k = weights[i];
      for (let c = 0; c < channels; c++) {
        let ss = ONE / 2;
        for (let t = 0; t < k.length; t++) {
          const sx = horizontal ? first[i] + t : x;
          const sy = horizontal ? y : first[i] + t;
          ss += src[(sy * w + sx) * channels + c] * k[t];
        }
        const v = Math.floor(ss / ONE);
        out[(y * ow + x) * channels + c] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    }
  }
  return out;
}

/** Pillow's Image.resize((width, height), resample) of an 8-bit RGB image (interleaved, 3 bytes a pixel). */
export function pillowResizeRgb(rgb: Uint8Array, w: number, h: number, width: number, height: number, resample: 2 | 3 = 3): Uint8Array {
  if (rgb.length !== w * h * 3) throw new RangeError(`pillowResizeRgb: a ${w}x${h} image needs ${w * h * 3} bytes, got ${rgb.length}`);
  let data = rgb;
  let cw = w;
  // Pillow skips a pass whose size does not change, and runs the horizontal one first.
  if (width !== w) {
    data = resamplePass(data, cw, h, 3, width, true, resample);
    cw = width;
  }
  if (height !== h) data = resamplePass(data, cw, h, 3, height, false, resample);
  return data === rgb ? rgb.slice() : data;
}

/** The size CLIPImageProcessor resizes a w x h image to: shortest side `edge`, long side int(edge * long / short). */
export function shortestEdgeSize(w: number, h: number, edge: number): { width: number; height: number } {
  if (w <= h) return { width: edge, height: Math.trunc((edge * h) / w) };
  return { width: Math.trunc((edge * w) / h), height: edge };
}

/** The model's `pixel_values` for one image: float32 [3, cropHeight, cropWidth] (or the resized size without a crop). */
export function clipPixelValues(img: RgbaImage, c: ClipImageConfig): { data: Float32Array; height: number; width: number } {
  let w = img.width;
  let h = img.height;
  let rgb: Uint8Array = new Uint8Array(w * h * 3);
  for (let p = 0; p < w * h; p++) {
    rgb[p * 3] = img.data[p * 4];
    rgb[p * 3 + 1] = img.data[p * 4 + 1];
    rgb[p * 3 + 2] = img.data[p * 4 + 2];
  }
  if (c.doResize) {
    const size = shortestEdgeSize(w, h, c.shortestEdge);
    rgb = pillowResizeRgb(rgb, w, h, size.width, size.height, c.resample);
    w = size.width;
    h = size.height;
  }
  const oh = c.doCenterCrop ? c.cropHeight : h;
  const ow = c.doCenterCrop ? c.cropWidth : w;
  // Python's floor division; negative offsets (image smaller than the crop) read zeros, as transformers' padding gives.
  const top = Math.floor((h - oh) / 2);
  const left = Math.floor((w - ow) / 2);
  const plane = oh * ow;
  const out = new Float32Array(3 * plane);
  for (let y = 0; y < oh; y++) {
    for (let x = 0; x < ow; x++) {
      const sy = y + top;
      const sx = x + left;
      const inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
      for (let ch = 0; ch < 3; ch++) {
        let v = inside ? rgb[(sy * w + sx) * 3 + ch] : 0;
        // As transformers rounds: rescale in float64 then to float32; normalise in float32 (mean and std as float32).
        if (c.doRescale) v = Math.fround(v * c.rescaleFactor);
        if (c.doNormalize) v = Math.fround(Math.fround(v - Math.fround(c.mean[ch])) / Math.fround(c.std[ch]));
        out[ch * plane + y * ow + x] = v;
      }
    }
  }
  return { data: out, height: oh, width: ow };
}
