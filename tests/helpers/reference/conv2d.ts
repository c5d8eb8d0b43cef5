// Float64 reference for conv2d.wgsl: the definition as nested loops, written for clarity, not speed.

import type { F64 } from './elementwise';

export interface ConvDims {
  n: number;
  cIn: number;
  h: number;
  w: number;
  cOut: number;
  kh: number;
  kw: number;
  stride: number;
  /** [top, left, bottom, right] */
  pad: [number, number, number, number];
}

export function outputSize(d: ConvDims): [number, number] {
  const [top, left, bottom, right] = d.pad;
  return [Math.floor((d.h + top + bottom - d.kh) / d.stride) + 1, Math.floor((d.w + left + right - d.kw) / d.stride) + 1];
}

/** y[n, co, oy, ox] = bias[co] + sum_{ci, r, s} w[co, ci, r, s] x[n, ci, oy S - top + r, ox S - left + s] (0 outside). */
export function conv2d(x: F64, w: F64, bias: F64 | undefined, d: ConvDims): F64 {
  const [ho, wo] = outputSize(d);
  const [top, left] = d.pad;
  const y = new Float64Array(d.n * d.cOut * ho * wo);
  for (let b = 0; b < d.n; b++) {
    for (let co = 0; co < d.cOut; co++) {
      for (let oy = 0; oy < ho; oy++) {
        for (let ox = 0; ox < wo; ox++) {
          let s = bias ? bias[co] : 0;
          for (let ci = 0; ci < d.cIn; ci++) {
            for (let r = 0; r < d.kh; r++) {
              const iy = oy * d.stride - top + r;
              if (iy < 0 || iy >= d.h) continue;
              for (let q = 0; q < d.kw; q++) {
                const ix = ox * d.stride - left + q;
                if (ix < 0 || ix >= d.w) continue;
                s += w[((co * d.cIn + ci) * d.kh + r) * d.kw + q] * x[((b * d.cIn + ci) * d.h + iy) * d.w + ix];
              }
            }
          }
          y[((b * d.cOut + co) * ho + oy) * wo + ox] = s;
        }
      }
    }
  }
  return y;
}
