// Batched matrix multiply: C[b] = alpha * op(A[b]) @ op(B[b]) (+ bias[N] on every row) (+ C[b] as it was).
// op(A) is [M, K]: A is stored [M, K], or [K, M] when TRANS_A. op(B) is [K, N]: B is stored [K, N], or
// [N, K] when TRANS_B. Batch strides are in elements; 0 broadcasts one matrix over the batch (a weight
// shared by a batched input). The backward is this same kernel with the transposes swapped (see matmul.ts).
//
// Tiling: a workgroup of 16x16 threads owns a 64x64 tile of C, each thread 4x4 outputs. K is walked 16 at
// a time: the workgroup stages a 64x16 slice of op(A) and a 16x64 slice of op(B) in workgroup memory, then
// every thread does 4x4 multiply-adds per k from registers. A thread's outputs are rows ty + 16i and
// columns tx + 16j (interleaved, not a 4x4 block), so neighbouring threads read neighbouring columns of the
// B tile and write neighbouring columns of C.
//
// Any M, N, K: tile slices past the edge of A or B are loaded as zeros, and outputs past the edge of C are
// not written. Every thread runs every barrier; only the loads and the final store are guarded.
//
// The weight gradient of a broadcast operand needs a sum over the batch. Rather than a batched product
// followed by a reduction, p.batch_sum input batches feed each output batch: the K loop simply continues
// through them, so the sum happens in registers.

struct Params {
  m: u32,
  n: u32,
  k: u32,
  tiles_n: u32,     // ceil(N / 64): workgroups are numbered with the N tile fastest, then M tile, then batch
  tiles_m: u32,
  batches: u32,     // output batches
  batch_sum: u32,   // input batches summed into each output batch (1 for an ordinary product)
  stride_a: u32,    // elements between A's batches, 0 when A is broadcast
  stride_b: u32,
  alpha: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> mm_a: array<u32>;  // f32, or packed f16 when A_F16 (common.wgsl)
@group(0) @binding(2) var<storage, read> mm_b: array<u32>;  // f32, or packed f16 when B_F16
@group(0) @binding(3) var<storage, read_write> mm_c: array<f32>;
// Always bound (layout 'auto' keeps every binding the entry point names); without HAS_BIAS a stand-in
// buffer sits here and is never read.
@group(0) @binding(4) var<storage, read> mm_bias: array<f32>;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
// A frozen weight operand stored as float16 (see load_weight in common.wgsl).
override A_F16: bool = false;
override B_F16: bool = false;

// TILE, TK, the staged tiles, acc and multiply_tiles come from gemm-tile.wgsl.

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_id) local: vec3u, @builtin(local_invocation_index) lid: u32) {
  // Tiles are numbered over a 2-D grid (one dimension holds at most 65535 workgroups); the spare
  // workgroups of the last grid row leave together, so the barriers below stay uniform.
  let tile = wg.y * nwg.x + wg.x;
  if (tile >= p.tiles_n * p.tiles_m * p.batches) { return; }
  let n0 = (tile % p.tiles_n) * TILE;
  let m0 = ((tile / p.tiles_n) % p.tiles_m) * TILE;
  let batch = tile / (p.tiles_n * p.tiles_m);
  let tx = local.x;
  let ty = local.y;

  for (var s = 0u; s < p.batch_sum; s = s + 1u) {
    let in_batch = batch * p.batch_sum + s;
    let a_base = in_batch * p.stride_a;
    let b_base = in_batch * p.stride_b;
    for (var k0 = 0u; k0 < p.k; k0 = k0 + TK) {
      // 256 threads stage 1024 values of each slice, 4 apiece. The thread-to-element map follows the
      // storage order so that neighbouring threads read neighbouring addresses.
      for (var r = 0u; r < 4u; r = r + 1u) {
        let e = lid + 256u * r;
        // op(A) slice, 64 rows x 16 k. Stored [M, K]: k runs fastest in memory; stored [K, M]: m does.
        let am = select(e / TK, e % TILE, TRANS_A);
        let ak = select(e % TK, e / TILE, TRANS_A);
        let gm = m0 + am;
        let gk = k0 + ak;
        var va = 0.0;
        if (gm < p.m && gk < p.k) {
          let ia = a_base + select(gm * p.k + gk, gk * p.m + gm, TRANS_A);
          va = load_weight(mm_a[weight_word(ia, A_F16)], ia, A_F16);
        }
        tile_a[ak * PITCH + am] = va;
        // op(B) slice, 16 k x 64 columns. Stored [K, N]: n runs fastest; stored [N, K]: k does.
        let bn = select(e % TILE, e / TK, TRANS_B);
        let bk = select(e / TILE, e % TK, TRANS_B);
        let gn = n0 + bn;
        let gkb = k0 + bk;
        var vb = 0.0;
        if (gn < p.n && gkb < p.k) {
          let ib = b_base + select(gkb * p.n + gn, gn * p.k + gkb, TRANS_B);
          vb = load_weight(mm_b[weight_word(ib, B_F16)], ib, B_F16);
        }
        tile_b[bk * PITCH + bn] = vb;
      }
      workgroupBarrier();
      multiply_tiles(tx, ty);
      // The next iteration overwrites the tiles: everyone must be done reading them.
      workgroupBarrier();
    }
  }

  let c_base = batch * p.m * p.n;
  for (var i = 0u; i < 4u; i = i + 1u) {
    let gm = m0 + ty + 16u * i;
    if (gm >= p.m) { continue; }
    for (var j = 0u; j < 4u; j = j + 1u) {
      let gn = n0 + tx + 16u * j;
      if (gn >= p.n) { continue; }
      let idx = c_base + gm * p.n + gn;
      var v = p.alpha * acc[i * 4u + j];
      if (HAS_BIAS) { v = v + mm_bias[gn]; }
      if (ACCUMULATE) { v = v + mm_c[idx]; }
      mm_c[idx] = v;
    }
  }
}
