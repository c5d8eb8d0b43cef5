// Float64 references for group norm and layer norm: normalise each segment, then the per-channel affine.

export function groupNorm(x: Float64Array, gamma: Float64Array, beta: Float64Array, n: number, c: number, hw: number, groups: number, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  const per = (c / groups) * hw;
  for (let s = 0; s < n * groups; s++) {
    let mean = 0;
    for (let e = 0; e < per; e++) mean += x[s * per + e];
    mean /= per;
    let v = 0;
    for (let e = 0; e < per; e++) v += (x[s * per + e] - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / per + eps);
    for (let e = 0; e < per; e++) {
      const ch = ((s % groups) * per + e) / hw | 0;
      y[s * per + e] = (x[s * per + e] - mean) * rstd * gamma[ch] + beta[ch];
    }
  }
  return y;
}

export function layerNorm(x: Float64Array, gamma: Float64Array, beta: Float64Array, d: number, eps: number): Float64Array {
  return groupNorm(x, gamma, beta, x.length / d, d, 1, 1, eps);
}
