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
// Tiling is matmul.wgsl's: 16x16 threads, a 64x64 output tile, 4x4 outputs per thread at rows ty + 16i and
// columns tx + 16j, K walked 16 at a time through workgroup memory, out-of-range elements loaded as zeros.

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
  tiles_n: u32,   // ceil(GEMM N / 64); workgroups are numbered N tile fastest, then M tile, then batch
  tiles_m: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override HAS_BIAS: bool = false;
// The (frozen) weight stored as float16 (see load_weight in common.wgsl).
override W_F16: bool = false;

// TILE, TK, the staged tiles, acc and multiply_tiles come from gemm-tile.wgsl.

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

@compute @workgroup_size(16, 16)
fn conv_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) local: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = tile_ids(wg, nwg, p.batch);
  if (!t.valid) { return; }  // uniform across the workgroup, so the barriers below stay uniform
  let khw = p.kh * p.kw;
  let gm_k = p.c_in * khw;
  let gm_n = p.ho * p.wo;
  let x_base = t.z * p.c_in * p.h * p.w;

  for (var k0 = 0u; k0 < gm_k; k0 = k0 + TK) {
    for (var r = 0u; r < 4u; r = r + 1u) {
      let e = lid + 256u * r;
      // Weight slice, rows co, k fastest (contiguous in W).
      let am = e / TK;
      let ak = e % TK;
      let co = t.m0 + am;
      let ka = k0 + ak;
      var va = 0.0;
      if (co < p.c_out && ka < gm_k) {
        let iw = co * gm_k + ka;
        va = load_weight(fwd_w[weight_word(iw, W_F16)], iw, W_F16);
      }
      tile_a[ak * PITCH + am] = va;
      // Column slice, positions fastest (neighbouring ox read neighbouring pixels).
      let bn = e % TILE;
      let bk = e / TILE;
      let pos = t.n0 + bn;
      let kb = k0 + bk;
      var vb = 0.0;
      if (pos < gm_n && kb < gm_k) {
        let rs = kb % khw;
        let idx = input_index(kb / khw, pos / p.wo, pos % p.wo, rs / p.kw, rs % p.kw);
        if (idx >= 0) { vb = fwd_x[x_base + u32(idx)]; }
      }
      tile_b[bk * PITCH + bn] = vb;
    }
    workgroupBarrier();
    multiply_tiles(local.x, local.y);
    workgroupBarrier();
  }

  for (var i = 0u; i < 4u; i = i + 1u) {
    let co = t.m0 + local.y + 16u * i;
    if (co >= p.c_out) { continue; }
    for (var j = 0u; j < 4u; j = j + 1u) {
      let pos = t.n0 + local.x + 16u * j;
      if (pos >= gm_n) { continue; }
      var v = acc[i * 4u + j];
      if (HAS_BIAS) { v = v + fwd_bias[co]; }
      fwd_y[(t.z * p.c_out + co) * gm_n + pos] = v;
    }
  }
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

@compute @workgroup_size(16, 16)
fn conv_backward_input(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                       @builtin(local_invocation_id) local: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = tile_ids(wg, nwg, p.batch);
  if (!t.valid) { return; }
  let khw = p.kh * p.kw;
  let gm_k = p.c_out * khw;
  let gm_n = p.h * p.w;
  let dy_base = t.z * p.c_out * p.ho * p.wo;

  for (var k0 = 0u; k0 < gm_k; k0 = k0 + TK) {
    for (var r = 0u; r < 4u; r = r + 1u) {
      let e = lid + 256u * r;
      // Weight slice, rows ci, k = (co, r, s) fastest: runs of KH*KW are contiguous in W.
      let am = e / TK;
      let ak = e % TK;
      let ci = t.m0 + am;
      let ka = k0 + ak;
      var va = 0.0;
      if (ci < p.c_in && ka < gm_k) {
        let co = ka / khw;
        let iw = (co * p.c_in + ci) * khw + ka % khw;
        va = load_weight(bwi_w[weight_word(iw, W_F16)], iw, W_F16);
      }
      tile_a[ak * PITCH + am] = va;
      // Gathered dY slice, input positions fastest.
      let bn = e % TILE;
      let bk = e / TILE;
      let pos = t.n0 + bn;
      let kb = k0 + bk;
      var vb = 0.0;
      if (pos < gm_n && kb < gm_k) {
        let co = kb / khw;
        let rs = kb % khw;
        let oy = source_coord(pos / p.w, p.pad_top, rs / p.kw, p.ho);
        let ox = source_coord(pos % p.w, p.pad_left, rs % p.kw, p.wo);
        if (oy >= 0 && ox >= 0) { vb = bwi_dy[dy_base + (co * p.ho + u32(oy)) * p.wo + u32(ox)]; }
      }
      tile_b[bk * PITCH + bn] = vb;
    }
    workgroupBarrier();
    multiply_tiles(local.x, local.y);
    workgroupBarrier();
  }

  for (var i = 0u; i < 4u; i = i + 1u) {
    let ci = t.m0 + local.y + 16u * i;
    if (ci >= p.c_in) { continue; }
    for (var j = 0u; j < 4u; j = j + 1u) {
      let pos = t.n0 + local.x + 16u * j;
      if (pos >= gm_n) { continue; }
      bwi_dx[(t.z * p.c_in + ci) * gm_n + pos] = acc[i * 4u + j];
    }
  }
}

// ---- backward_weight: dW[co, ci, r, s] = sum_{z, oy, ox} dY[z, co, oy, ox] X[z, ci, oy S - top + r, ox S - left + s]
//      GEMM M = Cout, N = Cin*KH*KW, K = N_batch*Ho*Wo (the batch folds into K) ----
@group(0) @binding(1) var<storage, read> bww_x: array<f32>;
@group(0) @binding(2) var<storage, read> bww_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bww_dw: array<f32>;

@compute @workgroup_size(16, 16)
fn conv_backward_weight(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                        @builtin(local_invocation_id) local: vec3u, @builtin(local_invocation_index) lid: u32) {
  let t = tile_ids(wg, nwg, 1u);
  if (!t.valid) { return; }
  let khw = p.kh * p.kw;
  let gm_n = p.c_in * khw;
  let hw_out = p.ho * p.wo;
  let gm_k = p.batch * hw_out;

  for (var k0 = 0u; k0 < gm_k; k0 = k0 + TK) {
    for (var r = 0u; r < 4u; r = r + 1u) {
      let e = lid + 256u * r;
      // Both slices with k (output positions) fastest: contiguous in dY, near-contiguous in X.
      let ak = e % TK;
      let am = e / TK;
      let co = t.m0 + am;
      let ka = k0 + ak;
      var va = 0.0;
      if (co < p.c_out && ka < gm_k) {
        let z = ka / hw_out;
        va = bww_dy[(z * p.c_out + co) * hw_out + ka % hw_out];
      }
      tile_a[ak * PITCH + am] = va;
      let bk = e % TK;
      let bn = e / TK;
      let col = t.n0 + bn;
      let kb = k0 + bk;
      var vb = 0.0;
      if (col < gm_n && kb < gm_k) {
        let z = kb / hw_out;
        let pos = kb % hw_out;
        let rs = col % khw;
        let idx = input_index(col / khw, pos / p.wo, pos % p.wo, rs / p.kw, rs % p.kw);
        if (idx >= 0) { vb = bww_x[z * p.c_in * p.h * p.w + u32(idx)]; }
      }
      tile_b[bk * PITCH + bn] = vb;
    }
    workgroupBarrier();
    multiply_tiles(local.x, local.y);
    workgroupBarrier();
  }

  for (var i = 0u; i < 4u; i = i + 1u) {
    let co = t.m0 + local.y + 16u * i;
    if (co >= p.c_out) { continue; }
    for (var j = 0u; j < 4u; j = j + 1u) {
      let col = t.n0 + local.x + 16u * j;
      if (col >= gm_n) { continue; }
      bww_dw[co * gm_n + col] = acc[i * 4u + j];
    }
  }
}
