// Float64 references for shaders/embedding.wgsl, softmax.wgsl and layout.wgsl.

/** out[r, d] = table[ids[r], d]. */
export function embedding(table: Float64Array, ids: ArrayLike<number>, dim: number): Float64Array {
  const out = new Float64Array(ids.length * dim);
  for (let r = 0; r < ids.length; r++) for (let d = 0; d < dim; d++) out[r * dim + d] = table[ids[r] * dim + d];
  return out;
}

/** Softmax of each row of length `len`. */
export function softmax(x: Float64Array, len: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let base = 0; base < x.length; base += len) {
    let max = -Infinity;
    for (let j = 0; j < len; j++) max = Math.max(max, x[base + j]);
    let sum = 0;
    for (let j = 0; j < len; j++) sum += Math.exp(x[base + j] - max);
    for (let j = 0; j < len; j++) y[base + j] = Math.exp(x[base + j] - max) / sum;
  }
  return y;
}

/** x [batch, rows, cols] -> [batch, cols, rows]. */
export function transpose(x: Float64Array, batch: number, rows: number, cols: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let b = 0; b < batch; b++) {
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) y[(b * cols + c) * rows + r] = x[(b * rows + r) * cols + c];
  }
  return y;
}
