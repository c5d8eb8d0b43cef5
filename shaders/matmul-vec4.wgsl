// The same batched product as matmul.wgsl, C[b] = alpha * op(A[b]) @ op(B[b]) (+ bias) (+ C[b]), for a CPU
// adapter (SwiftShader), where workgroup memory and barriers cost more than they save: every thread owns a
// 4 x 4 block of C and reads its operands straight from memory as vec4, four k at a time, with no
// workgroup memory, no barriers and no edge tests. Measured on SwiftShader at the demo UNet's shapes: 2 to 5
// times the tiled kernel's speed (BENCHMARKS.md). matmul.ts uses it only where every dimension (M, N, K) is
// a multiple of 4 and both operands are float32; the tiled kernel stays the one for GPUs.
//
// A thread's block: rows m .. m+3, columns n .. n+3. Per four k it loads
//   op(A) rows as a_r = op(A)[m + r, k .. k+3]   (A stored [M, K]: one vec4 each; stored [K, M]: four vec4
//                                                 along m, transposed in registers)
//   op(B) rows as b_q = op(B)[k + q, n .. n+3]   (B stored [K, N]: one vec4 each; stored [N, K]: four vec4
//                                                 along k, transposed in registers)
// and adds c_r += a_r.x b_0 + a_r.y b_1 + a_r.z b_2 + a_r.w b_3, all with constant indices (see acc in
// gemm-tile.wgsl for why that matters on a CPU driver).

struct Params {
  m: u32,
  n: u32,
  k: u32,
  batches: u32,     // output batches
  batch_sum: u32,   // input batches summed into each output batch (1 for an ordinary product)
  stride_a: u32,    // elements between A's batches, 0 when A is broadcast (a multiple of 4)
  stride_b: u32,
  alpha: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> va: array<vec4f>;
@group(0) @binding(2) var<storage, read> vb: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> vc: array<vec4f>;
// Always bound; without HAS_BIAS a stand-in buffer sits here and is never read.
@group(0) @binding(4) var<storage, read> vbias: array<vec4f>;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;

const VEC4_WG: u32 = 64u;

// The 4 x 4 block of a matrix stored row-major with `cols` columns, at element (row, col): its four rows.
fn block_rows(src_is_a: bool, base: u32, row: u32, col: u32, cols: u32) -> mat4x4f {
  let i = (base + row * cols + col) / 4u;
  let stride = cols / 4u;
  if (src_is_a) {
    return mat4x4f(va[i], va[i + stride], va[i + 2u * stride], va[i + 3u * stride]);
  }
  return mat4x4f(vb[i], vb[i + stride], vb[i + 2u * stride], vb[i + 3u * stride]);
}

@compute @workgroup_size(VEC4_WG)
fn matmul_vec4(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let blocks_n = p.n / 4u;
  let blocks_m = p.m / 4u;
  let block = (wg.y * nwg.x + wg.x) * VEC4_WG + lid;
  let batch = block / (blocks_m * blocks_n);
  if (batch >= p.batches) { return; }
  let m = ((block / blocks_n) % blocks_m) * 4u;
  let n = (block % blocks_n) * 4u;
  var c0 = vec4f(0.0);
  var c1 = vec4f(0.0);
  var c2 = vec4f(0.0);
  var c3 = vec4f(0.0);
  for (var s = 0u; s < p.batch_sum; s = s + 1u) {
    let in_batch = batch * p.batch_sum + s;
    let a_base = in_batch * p.stride_a;
    let b_base = in_batch * p.stride_b;
    for (var k = 0u; k < p.k; k = k + 4u) {
      // a[r] = op(A)[m + r, k .. k+3]; b[q] = op(B)[k + q, n .. n+3]. A matrix's columns are its vec4 rows
      // transposed, so a stored [K, M] (or B stored [N, K]) block is read as rows and transposed.
      var a = block_rows(true, a_base, select(m, k, TRANS_A), select(k, m, TRANS_A), select(p.k, p.m, TRANS_A));
      if (TRANS_A) { a = transpose(a); }
      var b = block_rows(false, b_base, select(k, n, TRANS_B), select(n, k, TRANS_B), select(p.n, p.k, TRANS_B));
      if (TRANS_B) { b = transpose(b); }
      c0 = c0 + a[0].x * b[0] + a[0].y * b[1] + a[0].z * b[2] + a[0].w * b[3];
      c1 = c1 + a[1].x * b[0] + a[1].y * b[1] + a[1].z * b[2] + a[1].w * b[3];
      c2 = c2 + a[2].x * b[0] + a[2].y * b[1] + a[2].z * b[2] + a[2].w * b[3];
      c3 = c3 + a[3].x * b[0] + a[3].y * b[1] + a[3].z * b[2] + a[3].w * b[3];
    }
  }
  let c_base = (batch * p.m * p.n) / 4u;
  store_row(c_base + (m * p.n + n) / 4u, n, c0);
  store_row(c_base + ((m + 1u) * p.n + n) / 4u, n, c1);
  store_row(c_base + ((m + 2u) * p.n + n) / 4u, n, c2);
  store_row(c_base + ((m + 3u) * p.n + n) / 4u, n, c3);
}

fn store_row(i: u32, n: u32, acc: vec4f) {
  var v = p.alpha * acc;
  if (HAS_BIAS) { v = v + vbias[n / 4u]; }
  if (ACCUMULATE) { v = v + vc[i]; }
  vc[i] = v;
}
