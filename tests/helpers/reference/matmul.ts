// Float64 references for matmul.wgsl: the plain triple loop, written for clarity, not speed.

import type { F64 } from './elementwise';

export interface MatmulDims {
  m: number;
  n: number;
  k: number;
  /** Batches of A and B; 1 means one matrix shared by every batch. The output has max(batchA, batchB). */
  batchA: number;
  batchB: number;
  transA?: boolean;
  transB?: boolean;
}

/** C[b] = alpha * op(A[b]) @ op(B[b]) (+ bias[N] on every row) (+ acc[b]). */
export function matmul(a: F64, b: F64, d: MatmulDims, opts: { bias?: F64; alpha?: number; acc?: F64 } = {}): F64 {
  const { m, n, k } = d;
  const batch = Math.max(d.batchA, d.batchB);
  const alpha = opts.alpha ?? 1;
  const c = new Float64Array(batch * m * n);
  for (let t = 0; t < batch; t++) {
    const ao = d.batchA === 1 ? 0 : t * m * k;
    const bo = d.batchB === 1 ? 0 : t * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) {
          const av = d.transA ? a[ao + p * m + i] : a[ao + i * k + p];
          const bv = d.transB ? b[bo + j * k + p] : b[bo + p * n + j];
          s += av * bv;
        }
        const idx = (t * m + i) * n + j;
        c[idx] = alpha * s + (opts.bias ? opts.bias[j] : 0) + (opts.acc ? opts.acc[idx] : 0);
      }
    }
  }
  return c;
}

/** nn.Linear: x [rows, in], w [out, in] -> x w^T + bias. */
export function linear(x: F64, w: F64, bias: F64 | undefined, inF: number, out: number): F64 {
  return matmul(x, w, { m: x.length / inF, n: out, k: inF, batchA: 1, batchB: 1, transB: true }, { bias });
}
