// Float64 reference for shaders/attention.wgsl: per batch and head, the plain softmax(scale * Q K^T) V with
// the full score matrix, in the [B, N, H * d] layout the kernels use.

export type F64 = Float64Array;

export interface AttentionDims {
  batch: number;
  nq: number;
  nk: number;
  heads: number;
  headDim: number;
  causal?: boolean;
  scale?: number;
}

/** out [B, Nq, H*d] and the log-sum-exp of each row's scaled scores, [B, H, Nq]. */
export function attention(q: F64, k: F64, v: F64, dims: AttentionDims): { out: F64; logsumexp: F64 } {
  const { batch, nq, nk, heads, headDim: d } = dims;
  const scale = dims.scale ?? 1 / Math.sqrt(d);
  const width = heads * d;
  const out = new Float64Array(batch * nq * width);
  const logsumexp = new Float64Array(batch * heads * nq);
  const scores = new Float64Array(nk);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < nq; i++) {
        const seen = dims.causal ? Math.min(i + 1, nk) : nk;
        const qo = (b * nq + i) * width + h * d;
        let max = -Infinity;
        for (let j = 0; j < seen; j++) {
          const ko = (b * nk + j) * width + h * d;
          let s = 0;
          for (let c = 0; c < d; c++) s += q[qo + c] * k[ko + c];
          scores[j] = s * scale;
          max = Math.max(max, scores[j]);
        }
        let sum = 0;
        for (let j = 0; j < seen; j++) sum += Math.exp(scores[j] - max);
        for (let j = 0; j < seen; j++) {
          const pij = Math.exp(scores[j] - max) / sum;
          const vo = (b * nk + j) * width + h * d;
          for (let c = 0; c < d; c++) out[qo + c] += pij * v[vo + c];
        }
        logsumexp[(b * heads + h) * nq + i] = max + Math.log(sum);
      }
    }
  }
  return { out, logsumexp };
}
