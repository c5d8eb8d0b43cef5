// Float64 CPU references for every kernel: the plain definitions, written for clarity, not speed.

export type F64 = Float64Array;

/** erf to ~1e-15: Maclaurin series near 0, continued fraction for erfc in the tails. */
export function erf(x: number): number {
  const z = Math.abs(x);
  if (z < 3) {
    let term = z;
    let sum = z;
    for (let n = 1; n < 200; n++) {
      term *= (-z * z) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(z) = exp(-z^2)/sqrt(pi) / (z + (1/2)/(z + 1/(z + (3/2)/(z + 2/(z + ...)))))
  let f = z;
  for (let k = 60; k >= 1; k--) f = z + k / 2 / f;
  const erfc = Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

export const activations = {
  silu: (x: number) => x * sigmoid(x),
  gelu: (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
  quick_gelu: (x: number) => x * sigmoid(1.702 * x),
};

export function map(x: F64, f: (v: number) => number): F64 {
  return x.map(f);
}

export function geglu(x: F64, d: number): F64 {
  const rows = x.length / (2 * d);
  const y = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < d; i++) y[r * d + i] = x[r * 2 * d + i] * activations.gelu(x[r * 2 * d + d + i]);
  }
  return y;
}

export function broadcastBinary(a: F64, b: F64, inner: number, op: (x: number, y: number) => number): F64 {
  return a.map((v, i) => op(v, b[Math.floor(i / inner) % b.length]));
}

export function concatChannels(a: F64, b: F64, n: number, ca: number, cb: number, s: number): F64 {
  const y = new Float64Array(n * (ca + cb) * s);
  for (let i = 0; i < n; i++) {
    y.set(a.subarray(i * ca * s, (i + 1) * ca * s), i * (ca + cb) * s);
    y.set(b.subarray(i * cb * s, (i + 1) * cb * s), (i * (ca + cb) + ca) * s);
  }
  return y;
}

export function upsampleNearest2x(x: F64, nc: number, h: number, w: number): F64 {
  const y = new Float64Array(nc * 4 * h * w);
  for (let c = 0; c < nc; c++) {
    for (let oy = 0; oy < 2 * h; oy++) {
      for (let ox = 0; ox < 2 * w; ox++) {
        y[(c * 2 * h + oy) * 2 * w + ox] = x[(c * h + (oy >> 1)) * w + (ox >> 1)];
      }
    }
  }
  return y;
}

/** PyTorch's F.interpolate(mode="nearest") to [oh, ow]: source index floor(o * in / out). */
export function upsampleNearest(x: F64, nc: number, h: number, w: number, oh: number, ow: number): F64 {
  const y = new Float64Array(nc * oh * ow);
  for (let c = 0; c < nc; c++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) y[(c * oh + oy) * ow + ox] = x[(c * h + Math.floor((oy * h) / oh)) * w + Math.floor((ox * w) / ow)];
    }
  }
  return y;
}

/** out[j] = sum_{o,k} x[(o * size + j) * inner + k] */
export function sumBroadcast(x: F64, size: number, inner: number): F64 {
  const out = new Float64Array(size);
  for (let i = 0; i < x.length; i++) out[Math.floor(i / inner) % size] += x[i];
  return out;
}

export function mseRows(a: F64, b: F64, n: number): F64 {
  const m = a.length / n;
  const out = new Float64Array(n);
  for (let r = 0; r < n; r++) {
    let s = 0;
    for (let i = 0; i < m; i++) s += (a[r * m + i] - b[r * m + i]) ** 2;
    out[r] = s / m;
  }
  return out;
}
