// 2-D convolution on NCHW, weight [Cout, Cin, KH, KW], stride S, padding top/left/bottom/right (may be
// asymmetric: the VAE's Downsample2D pads right and bottom only). Output Ho = (H + top + bottom - KH) / S + 1,
// Wo likewise. Forward and both backward kernels side by side, each an implicit GEMM: the im2col matrix is
// never built; each tile loader computes which input pixel (or zero padding) an element of it stands for.
//
//   forward          Y[n] [Cout, Ho*Wo]  = W [Cout, Cin*KH*KW]      @ cols(X[n]) [Cin*KH*KW, Ho*Wo]
//   backward_input   dX[n] [Cin, H*W]    = W' [Cin, Cout*KH*KW]     @ rows(dY[n]) [Cout*KH*KW, H*W]
//   backward_weight  dW [Cout, Cin*KH*KW] = dY [Cout, N*Ho*Wo]      @ cols(X)^T [N*Ho*Wo, Cin*KH*KW]
//
// backward_input is the gather form: dX[ci, iy, ix] = sum over (co, r, s) of W[co, ci, r, s] *
// dY[co, oy, ox] with oy * S - top + r = iy, so every output is owned by one thread and needs no atomics;
// terms whose (iy + top - r) is not a multiple of S, or falls outside dY, are zeros of the gathered matrix.
// backward_weight sums over the batch and the positions inside its K loop. The bias gradient is a reduction
// (sumBroadcast in reduce.wgsl).
//
// Tiling is matmul.wgsl's (gemm-tile.wgsl): SIDE x SIDE threads, a TILE x TILE output tile, 4x4 outputs per
// thread at rows ty + SIDE i and columns tx + SIDE j, K walked TK at a time through workgroup memory,
// out-of-range elements loaded as zeros. Each kernel reads its two GEMM operands through a pair of element
// functions (*_a, *_b), shared by its tiled entry point and its `_direct` twin, which reads them straight
// from memory with no workgroup memory or barriers, for K <= TK (see gemmPlan in matmul.ts).

struct Params {
  c_in: u32,
  h: u32,
  w: u32,
  c_out: u32,
  ho: u32,
  wo: u32,
  kh: u32,
  kw: u32,
  stride: u32,
  pad_top: u32,
  pad_left: u32,
  batch: u32,
  tiles_n: u32,   // ceil(GEMM N / TILE); workgroups are numbered N tile fastest, then M tile, then batch
  tiles_m: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override HAS_BIAS: bool = false;
// The (frozen) weight stored as float16 (see load_weight in common.wgsl).
override W_F16: bool = false;

// SIDE, TILE, TK, the staged tiles, acc, multiply_tiles and multiply_add come from gemm-tile.wgsl.

struct TileIds {
  m0: u32,
  n0: u32,
  z: u32,       // batch element (forward, backward_input); always 0 for backward_weight
  valid: bool,  // false for the spare workgroups of the last grid row
}

// Same numbering as matmul.wgsl: tiles over a 2-D grid, since one dimension holds at most 65535 workgroups.
fn tile_ids(wg: vec3u, nwg: vec3u, batches: u32) -> TileIds {
  let tile = wg.y * nwg.x + wg.x;
  let n0 = (tile % p.tiles_n) * TILE;
  let m0 = ((tile / p.tiles_n) % p.tiles_m) * TILE;
  let z = tile / (p.tiles_n * p.tiles_m);
  return TileIds(m0, n0, z, z < batches);
}

// The input pixel X[ci, iy, ix] that output position (oy, ox) sees through kernel tap (r, s), as an index
// into one image's [Cin, H, W], or -1 where that tap lands in the padding.
fn input_index(ci: u32, oy: u32, ox: u32, r: u32, s: u32) -> i32 {
  let iy = i32(oy * p.stride + r) - i32(p.pad_top);
  let ix = i32(ox * p.stride + s) - i32(p.pad_left);
  if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) { return -1; }
  return i32((ci * p.h + u32(iy)) * p.w + u32(ix));
}

// ---- forward: Y[z, co, oy, ox] = bias[co] + sum_{ci, r, s} W[co, ci, r, s] X[z, ci, oy S - top + r, ox S - left + s]
//      GEMM M = Cout, N = Ho*Wo, K = Cin*KH*KW; one batch element per output tile row of the grid ----
@group(0) @binding(1) var<storage, read> fwd_x: array<f32>;
@group(0) @binding(2) var<storage, read> fwd_w: array<u32>;  // f32, or packed f16 when W_F16 (common.wgsl)
@group(0) @binding(3) var<storage, read_write> fwd_y: array<f32>;
// Always bound; without HAS_BIAS a stand-in buffer sits here and is never read.
@group(0) @binding(4) var<storage, read> fwd_bias: array<f32>;

// GEMM A[co, k] = W[co, k] (W is [Cout, Cin*KH*KW] row-major).
fn fwd_a(co: u32, ka: u32) -> f32 {
  let gm_k = p.c_in * p.kh * p.kw;
  if (co >= p.c_out || ka >= gm_k) { return 0.0; }
  let iw = co * gm_k + ka;
  return load_weight(fwd_w[weight_word(iw, W_F16)], iw, W_F16);
}

// GEMM B[k, pos] = the input pixel that output position pos sees through tap k = (ci, r, s), or 0.
fn fwd_b(z: u32, kb: u32, pos: u32) -> f32 {
  let khw = p.kh * p.kw;
  if (pos >= p.ho * p.wo || kb >= p.c_in * khw) { return 0.0; }
  let rs = kb % khw;
  let idx = input_index(kb / khw, pos / p.wo, pos % p.wo, rs / p.kw, rs % p.kw);
  if (idx < 0) { return 0.0; }
  return fwd_x[z * p.c_in * p.h * p.w + u32(idx)];
}

fn fwd_store(t: TileIds, tx: u32, ty: u32) {
  let gm_n = p.ho * p.wo;
  for (var i = 0u; i < 4u; i = i + 1u) {
    let co = t.m0 + ty + SIDE * i;
    if (co >= p.c_out) { continue; }
    for (var j = 0u; j < 4u; j = j + 1u) {
      let pos = t.n0 + tx + SIDE * j;
      if (pos >= gm_n) { continue; }
      var v = acc[i][j];
      if (HAS_BIAS) { v = v + fwd_bias[co]; }
      fwd_y[(t.z * p.c_out + co) * gm_n + pos] = v;
    }
  }
}

@compute @workgroup_size(SIDE, SIDE)
fn conv_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) local: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = tile_ids(wg, nwg, p.batch);
  if (!t.valid) { return; }  // uniform across the workgroup, so the barriers below stay uniform
  let gm_k = p.c_in * p.kh * p.kw;
  for (var k0 = 0u; k0 < gm_k; k0 = k0 + TK) {
    for (var r = 0u; r < LOADS; r = r + 1u) {
      let e = lid + THREADS * r;
      // Weight slice, rows co, k fastest (contiguous in W).
      let am = e / TK;
      let ak = e % TK;
      tile_a[ak * PITCH + am] = fwd_a(t.m0 + am, k0 + ak);
      // Column slice, positions fastest (neighbouring ox read neighbouring pixels).
      let bn = e % TILE;
      let bk = e / TILE;
      tile_b[bk * PITCH + bn] = fwd_b(t.z, k0 + bk, t.n0 + bn);
    }
    workgroupBarrier();
    multiply_tiles(local.x, local.y);
    workgroupBarrier();
  }
  fwd_store(t, local.x, local.y);
}

@compute @workgroup_size(SIDE, SIDE)
fn conv_forward_direct(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                       @builtin(local_invocation_id) local: vec3u) {
  let t = tile_ids(wg, nwg, p.batch);
  // No barriers here, so threads without outputs simply leave.
  if (!t.valid || t.m0 + local.y >= p.c_out || t.n0 + local.x >= p.ho * p.wo) { return; }
  let m = t.m0 + local.y;
  let n = t.n0 + local.x;
  for (var k = 0u; k < p.c_in * p.kh * p.kw; k = k + 1u) {
    let a = vec4f(fwd_a(m, k), fwd_a(m + SIDE, k),
                fwd_a(m + 2u * SIDE, k), fwd_a(m + 3u * SIDE, k));
    let b = vec4f(fwd_b(t.z, k, n), fwd_b(t.z, k, n + SIDE),
                fwd_b(t.z, k, n + 2u * SIDE), fwd_b(t.z, k, n + 3u * SIDE));
    multiply_add(a, b);
  }
  fwd_store(t, local.x, local.y);
}

// ---- backward_input: dX[z, ci, iy, ix] = sum_{co, r, s} W[co, ci, r, s] dY[z, co, oy, ox]
//      over the (oy, ox) with oy S - top + r = iy and ox S - left + s = ix.
//      GEMM M = Cin, N = H*W, K = Cout*KH*KW ----
@group(0) @binding(1) var<storage, read> bwi_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bwi_w: array<u32>;  // f32, or packed f16 when W_F16
@group(0) @binding(3) var<storage, read_write> bwi_dx: array<f32>;

// The output coordinate that reaches input coordinate `i` through tap `r`, or -1 if none does:
// o S - pad + r = i has a solution only when i + pad - r is a non-negative multiple of S below `count`.
fn source_coord(i: u32, pad: u32, r: u32, count: u32) -> i32 {
  let t = i32(i + pad) - i32(r);
  if (t < 0 || u32(t) % p.stride != 0u) { return -1; }
  let o = u32(t) / p.stride;
  return select(-1, i32(o), o < count);
}

// GEMM A[ci, k] = W[co, ci, r, s] with k = (co, r, s): runs of KH*KW are contiguous in W.
fn bwi_a(ci: u32, ka: u32) -> f32 {
  let khw = p.kh * p.kw;
  if (ci >= p.c_in || ka >= p.c_out * khw) { return 0.0; }
  let iw = ((ka / khw) * p.c_in + ci) * khw + ka % khw;
  return load_weight(bwi_w[weight_word(iw, W_F16)], iw, W_F16);
}

// GEMM B[k, pos] = dY[z, co, oy, ox] for the output that reaches input position pos through tap k, or 0.
fn bwi_b(z: u32, kb: u32, pos: u32) -> f32 {
  let khw = p.kh * p.kw;
  if (pos >= p.h * p.w || kb >= p.c_out * khw) { return 0.0; }
  let co = kb / khw;
  let rs = kb % khw;
  let oy = source_coord(pos / p.w, p.pad_top, rs / p.kw, p.ho);
  let ox = source_coord(pos % p.w, p.pad_left, rs % p.kw, p.wo);
  if (oy < 0 || ox < 0) { return 0.0; }
  return bwi_dy[((z * p.c_out + co) * p.ho + u32(oy)) * p.wo + u32(ox)];
}

fn bwi_store(t: TileIds, tx: u32, ty: u32) {
  let gm_n = p.h * p.w;
  for (var i = 0u; i < 4u; i = i + 1u) {
    let ci = t.m0 + ty + SIDE * i;
    if (ci >= p.c_in) { continue; }
    for (var j = 0u; j < 4u; j = j + 1u) {
      let pos = t.n0 + tx + SIDE * j;
      if (pos >= gm_n) { continue; }
      bwi_dx[(t.z * p.c_in + ci) * gm_n + pos] = acc[i][j];
    }
  }
}

@compute @workgroup_size(SIDE, SIDE)
fn conv_backward_input(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                       @builtin(local_invocation_id) local: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = tile_ids(wg, nwg, p.batch);
  if (!t.valid) { return; }
  let gm_k = p.c_out * p.kh * p.kw;
  for (var k0 = 0u; k0 < gm_k; k0 = k0 + TK) {
    for (var r = 0u; r < LOADS; r = r + 1u) {
      let e = lid + THREADS * r;
      // Weight slice, rows ci, k fastest.
      let am = e / TK;
      let ak = e % TK;
      tile_a[ak * PITCH + am] = bwi_a(t.m0 + am, k0 + ak);
      // Gathered dY slice, input positions fastest.
      let bn = e % TILE;
      let bk = e / TILE;
      tile_b[bk * PITCH + bn] = bwi_b(t.z, k0 + bk, t.n0 + bn);
    }
    workgroupBarrier();
    multiply_tiles(local.x, local.y);
    workgroupBarrier();
  }
  bwi_store(t, local.x, local.y);
}

@compute @workgroup_size(SIDE, SIDE)
fn conv_backward_input_direct(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                              @builtin(local_invocation_id) local: vec3u) {
  let t = tile_ids(wg, nwg, p.batch);
  if (!t.valid || t.m0 + local.y >= p.c_in || t.n0 + local.x >= p.h * p.w) { return; }
  let m = t.m0 + local.y;
  let n = t.n0 + local.x;
  for (var k = 0u; k < p.c_out * p.kh * p.kw; k = k + 1u) {
    let a = vec4f(bwi_a(m, k), bwi_a(m + SIDE, k),
                bwi_a(m + 2u * SIDE, k), bwi_a(m + 3u * SIDE, k));
    let b = vec4f(bwi_b(t.z, k, n), bwi_b(t.z, k, n + SIDE),
                bwi_b(t.z, k, n + 2u * SIDE), bwi_b(t.z, k, n + 3u * SIDE));
    multiply_add(a, b);
  }
  bwi_store(t, local.x, local.y);
}

// ---- backward_weight: dW[co, ci, r, s] = sum_{z, oy, ox} dY[z, co, oy, ox] X[z, ci, oy S - top + r, ox S - left + s]
//      GEMM M = Cout, N = Cin*KH*KW, K = N_batch*Ho*Wo (the batch folds into K) ----
@group(0) @binding(1) var<storage, read> bww_x: array<f32>;
@group(0) @binding(2) var<storage, read> bww_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bww_dw: array<f32>;

// GEMM A[co, k] = dY[z, co, pos] with k = (z, pos).
fn bww_a(co: u32, ka: u32) -> f32 {
  let hw_out = p.ho * p.wo;
  if (co >= p.c_out || ka >= p.batch * hw_out) { return 0.0; }
  return bww_dy[((ka / hw_out) * p.c_out + co) * hw_out + ka % hw_out];
}

// GEMM B[k, col] = the input pixel that output position k = (z, pos) sees through tap col = (ci, r, s), or 0.
fn bww_b(kb: u32, col: u32) -> f32 {
  let khw = p.kh * p.kw;
  let hw_out = p.ho * p.wo;
  if (col >= p.c_in * khw || kb >= p.batch * hw_out) { return 0.0; }
  let z = kb / hw_out;
  let pos = kb % hw_out;
  let rs = col % khw;
  let idx = input_index(col / khw, pos / p.wo, pos % p.wo, rs / p.kw, rs % p.kw);
  if (idx < 0) { return 0.0; }
  return bww_x[z * p.c_in * p.h * p.w + u32(idx)];
}

fn bww_store(t: TileIds, tx: u32, ty: u32) {
  let gm_n = p.c_in * p.kh * p.kw;
  for (var i = 0u; i < 4u; i = i + 1u) {
    let co = t.m0 + ty + SIDE * i;
    if (co >= p.c_out) { continue; }
    for (var j = 0u; j < 4u; j = j + 1u) {
      let col = t.n0 + tx + SIDE * j;
      if (col >= gm_n) { continue; }
      bww_dw[co * gm_n + col] = acc[i][j];
    }
  }
}

@compute @workgroup_size(SIDE, SIDE)
fn conv_backward_weight(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                        @builtin(local_invocation_id) local: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = tile_ids(wg, nwg, 1u);
  if (!t.valid) { return; }
  let gm_k = p.batch * p.ho * p.wo;
  for (var k0 = 0u; k0 < gm_k; k0 = k0 + TK) {
    for (var r = 0u; r < LOADS; r = r + 1u) {
      let e = lid + THREADS * r;
      // Both slices with k (output positions) fastest: contiguous in dY, near-contiguous in X.
      let ak = e % TK;
      let am = e / TK;
      tile_a[ak * PITCH + am] = bww_a(t.m0 + am, k0 + ak);
      let bk = e % TK;
      let bn = e / TK;
      tile_b[bk * PITCH + bn] = bww_b(k0 + bk, t.n0 + bn);
    }
    workgroupBarrier();
    multiply_tiles(local.x, local.y);
    workgroupBarrier();
  }
  bww_store(t, local.x, local.y);
}

@compute @workgroup_size(SIDE, SIDE)
fn conv_backward_weight_direct(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                               @builtin(local_invocation_id) local: vec3u) {
  let t = tile_ids(wg, nwg, 1u);
  if (!t.valid || t.m0 + local.y >= p.c_out || t.n0 + local.x >= p.c_in * p.kh * p.kw) { return; }
  let m = t.m0 + local.y;
  let n = t.n0 + local.x;
  for (var k = 0u; k < p.batch * p.ho * p.wo; k = k + 1u) {
    let a = vec4f(bww_a(m, k), bww_a(m + SIDE, k),
                bww_a(m + 2u * SIDE, k), bww_a(m + 3u * SIDE, k));
    let b = vec4f(bww_b(k, n), bww_b(k, n + SIDE),
                bww_b(k, n + 2u * SIDE), bww_b(k, n + 3u * SIDE));
    multiply_add(a, b);
  }
  bww_store(t, local.x, local.y);
}
