// Batched matrix multiply: C[b] = alpha * op(A[b]) @ op(B[b]) (+ bias[N] on every row) (+ C[b] as it was).
// op(A) is [M, K]: A is stored [M, K], or [K, M] when TRANS_A. op(B) is [K, N]: B is stored [K, N], or
// [N, K] when TRANS_B. Batch strides are in elements; 0 broadcasts one matrix over the batch (a weight
// shared by a batched input). The backward is this same kernel with the transposes swapped (see matmul.ts).
//
// Two entry points, the same product (gemmPlan in matmul.ts picks one per call):
//   matmul         tiled (gemm-tile.wgsl): a workgroup of SIDE x SIDE threads owns a TILE x TILE tile of C,
//                  each thread 4x4 outputs. K is walked TK at a time: the workgroup stages a TILE x TK slice
//                  of op(A) and a TK x TILE slice of op(B) in workgroup memory, then every thread does 4x4
//                  multiply-adds per k from registers.
//   matmul_direct  the same threads and outputs, but every thread reads its operands straight from memory:
//                  no workgroup memory and no barriers. For K <= TK, where each staged value would be used
//                  for a single slice anyway.
// A thread's outputs are rows ty + SIDE i and columns tx + SIDE j (interleaved, not a 4x4 block), so
// neighbouring threads read neighbouring columns of B and write neighbouring columns of C.
//
// Any M, N, K: elements of op(A) or op(B) past their edge read as zeros (op_a, op_b), and outputs past the
// edge of C are not written. In the tiled kernel every thread runs every barrier; only loads and the final
// store are guarded.
//
// The weight gradient of a broadcast operand needs a sum over the batch. Rather than a batched product
// followed by a reduction, p.batch_sum input batches feed each output batch: the K loop simply continues
// through them, so the sum happens in registers.

struct Params {
  m: u32,
  n: u32,
  k: u32,
  tiles_n: u32,     // ceil(N / TILE): workgroups are numbered with the N tile fastest, then M tile, then batch
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

// SIDE, TILE, TK, the staged tiles, acc, multiply_tiles and multiply_direct come from gemm-tile.wgsl.

// op(A)[gm, gk] of the batch at a_base, or 0 past the edge.
fn op_a(a_base: u32, gm: u32, gk: u32) -> f32 {
  if (gm >= p.m || gk >= p.k) { return 0.0; }
  let ia = a_base + select(gm * p.k + gk, gk * p.m + gm, TRANS_A);
  return load_weight(mm_a[weight_word(ia, A_F16)], ia, A_F16);
}

// op(B)[gk, gn] of the batch at b_base, or 0 past the edge.
fn op_b(b_base: u32, gk: u32, gn: u32) -> f32 {
  if (gn >= p.n || gk >= p.k) { return 0.0; }
  let ib = b_base + select(gk * p.n + gn, gn * p.k + gk, TRANS_B);
  return load_weight(mm_b[weight_word(ib, B_F16)], ib, B_F16);
}

struct MmTile {
  m0: u32,
  n0: u32,
  batch: u32,
  valid: bool,  // false for the spare workgroups of the last grid row
}

// Tiles are numbered over a 2-D grid, since one dimension holds at most 65535 workgroups.
fn mm_tile(wg: vec3u, nwg: vec3u) -> MmTile {
  let tile = wg.y * nwg.x + wg.x;
  let n0 = (tile % p.tiles_n) * TILE;
  let m0 = ((tile / p.tiles_n) % p.tiles_m) * TILE;
  let batch = tile / (p.tiles_n * p.tiles_m);
  return MmTile(m0, n0, batch, batch < p.batches);
}

fn mm_store(t: MmTile, tx: u32, ty: u32) {
  let c_base = t.batch * p.m * p.n;
  for (var i = 0u; i < 4u; i = i + 1u) {
    let gm = t.m0 + ty + SIDE * i;
    if (gm >= p.m) { continue; }
    for (var j = 0u; j < 4u; j = j + 1u) {
      let gn = t.n0 + tx + SIDE * j;
      if (gn >= p.n) { continue; }
      let idx = c_base + gm * p.n + gn;
      var v = p.alpha * acc[i][j];
      if (HAS_BIAS) { v = v + mm_bias[gn]; }
      if (ACCUMULATE) { v = v + mm_c[idx]; }
      mm_c[idx] = v;
    }
  }
}

@compute @workgroup_size(SIDE, SIDE)
fn matmul(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_id) local: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = mm_tile(wg, nwg);
  if (!t.valid) { return; }  // uniform across the workgroup, so the barriers below stay uniform
  for (var s = 0u; s < p.batch_sum; s = s + 1u) {
    let in_batch = t.batch * p.batch_sum + s;
    let a_base = in_batch * p.stride_a;
    let b_base = in_batch * p.stride_b;
    for (var k0 = 0u; k0 < p.k; k0 = k0 + TK) {
      // THREADS threads stage TILE * TK values of each slice, LOADS apiece. The thread-to-element map
      // follows the storage order so that neighbouring threads read neighbouring addresses.
      for (var r = 0u; r < LOADS; r = r + 1u) {
        let e = lid + THREADS * r;
        // op(A) slice, TILE rows x TK k. Stored [M, K]: k runs fastest in memory; stored [K, M]: m does.
        let am = select(e / TK, e % TILE, TRANS_A);
        let ak = select(e % TK, e / TILE, TRANS_A);
        tile_a[ak * PITCH + am] = op_a(a_base, t.m0 + am, k0 + ak);
        // op(B) slice, TK k x TILE columns. Stored [K, N]: n runs fastest; stored [N, K]: k does.
        let bn = select(e % TILE, e / TK, TRANS_B);
        let bk = select(e / TILE, e % TK, TRANS_B);
        tile_b[bk * PITCH + bn] = op_b(b_base, k0 + bk, t.n0 + bn);
      }
      workgroupBarrier();
      multiply_tiles(local.x, local.y);
      // The next iteration overwrites the tiles: everyone must be done reading them.
      workgroupBarrier();
    }
  }
  mm_store(t, local.x, local.y);
}

@compute @workgroup_size(SIDE, SIDE)
fn matmul_direct(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_id) local: vec3u) {
  let t = mm_tile(wg, nwg);
  // No barriers here, so threads without outputs simply leave.
  if (!t.valid || t.m0 + local.y >= p.m || t.n0 + local.x >= p.n) { return; }
  for (var s = 0u; s < p.batch_sum; s = s + 1u) {
    let in_batch = t.batch * p.batch_sum + s;
    let a_base = in_batch * p.stride_a;
    let b_base = in_batch * p.stride_b;
    let m = t.m0 + local.y;
    let n = t.n0 + local.x;
    for (var k = 0u; k < p.k; k = k + 1u) {
      let a = vec4f(op_a(a_base, m, k), op_a(a_base, m + SIDE, k),
                    op_a(a_base, m + 2u * SIDE, k), op_a(a_base, m + 3u * SIDE, k));
      let b = vec4f(op_b(b_base, k, n), op_b(b_base, k, n + SIDE),
                    op_b(b_base, k, n + 2u * SIDE), op_b(b_base, k, n + 3u * SIDE));
      multiply_add(a, b);
    }
  }
  mm_store(t, local.x, local.y);
}
