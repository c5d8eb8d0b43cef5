// Group norm and layer norm share one set of kernels. The input is seen as `segments` contiguous runs of
// `seg_len` elements, each normalised on its own:
//   layer norm  x [R, D]:        segments R,      seg_len D,            affine index of element e: e
//   group norm  x [N, C, H*W]:   segments N * G,  seg_len (C / G) * HW, affine index: ((s % G) * seg_len + e) / HW
// In both cases, with `inner` = HW (1 for layer norm) and `groups` = G (1 for layer norm), the affine index
// is ((s % groups) * seg_len + e) / inner. Forward saves mean and rstd per segment for the backward.
//   y = (x - mean) * rstd * gamma + beta,   rstd = 1 / sqrt(var + eps)   (biased variance, as PyTorch)
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),   g = dy * gamma,   xhat = (x - mean) * rstd
//   dgamma[c] = sum dy * xhat,   dbeta[c] = sum dy   over every element that uses parameter c
//
// Workgroup size: NORM_WG threads share one segment (or, for the affine backward, one parameter), a power
// of two from 32 to 256 that norm.ts picks from the element count so that each thread has several. Short
// rows (a layer norm of a few dozen features) then do not leave most of a 256-thread workgroup idle at
// every barrier, which on a CPU driver such as SwiftShader costs in proportion to the threads waiting there.

struct Params {
  segments: u32,
  seg_len: u32,
  groups: u32,
  inner: u32,
  channels: u32,   // number of affine parameters (C or D)
  eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

override NORM_WG: u32 = 256u;

// Workgroup reductions: a halving tree while more than FOLD partials remain, then every thread folds the
// last FOLD (or NORM_WG, if fewer) partials itself in the same order, so all get the same result. That is
// 2 + log2(NORM_WG / FOLD) barriers instead of 2 + log2(NORM_WG); the fold's reads all hit one address at
// a time, which workgroup memory broadcasts.
const FOLD: u32 = 32u;
var<workgroup> red: array<vec3f, NORM_WG>;

// Sums two values across the workgroup at once (mean(g) and mean(g * xhat); dgamma and dbeta).
fn workgroup_sum2(lid: u32, v: vec2f) -> vec2f {
  red[lid] = vec3f(v, 0.0);
  workgroupBarrier();
  for (var stride = NORM_WG / 2u; stride >= FOLD; stride = stride / 2u) {
    if (lid < stride) { red[lid] = red[lid] + red[lid + stride]; }
    workgroupBarrier();
  }
  var total = vec2f(0.0);
  for (var i = 0u; i < min(NORM_WG, FOLD); i = i + 1u) { total = total + red[i].xy; }
  workgroupBarrier();  // everyone has read the partials before `red` is reused
  return total;
}

// Count, mean and sum of squared deviations (M2) of two disjoint sets combined (Chan et al.): exact in
// exact arithmetic and, unlike E[x^2] - E[x]^2, free of cancellation when the mean is large next to the
// spread, since every term is already relative to a mean.
fn merge_moments(a: vec3f, b: vec3f) -> vec3f {
  let n = a.x + b.x;
  if (b.x == 0.0) { return a; }
  let delta = b.y - a.y;
  let wb = b.x / n;
  return vec3f(n, a.y + delta * wb, a.z + b.z + delta * delta * a.x * wb);
}

fn workgroup_moments(lid: u32, m: vec3f) -> vec3f {
  red[lid] = m;
  workgroupBarrier();
  for (var stride = NORM_WG / 2u; stride >= FOLD; stride = stride / 2u) {
    if (lid < stride) { red[lid] = merge_moments(red[lid], red[lid + stride]); }
    workgroupBarrier();
  }
  var total = red[0];
  for (var i = 1u; i < min(NORM_WG, FOLD); i = i + 1u) { total = merge_moments(total, red[i]); }
  workgroupBarrier();
  return total;
}

fn param_index(s: u32, e: u32) -> u32 {
  return ((s % p.groups) * p.seg_len + e) / p.inner;
}

fn segment_index(wg: vec3u, nwg: vec3u) -> u32 {
  return wg.y * nwg.x + wg.x;
}

// ---- forward: one workgroup per segment. One pass over x for the statistics: each thread sums its
//      elements relative to its own first one (the shift keeps the sum of squares from cancelling), turns
//      that into its (count, mean, M2), and the workgroup merges those. ----
@group(0) @binding(1) var<storage, read> fw_x: array<f32>;
@group(0) @binding(2) var<storage, read> fw_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> fw_beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> fw_y: array<f32>;
@group(0) @binding(5) var<storage, read_write> fw_stats: array<f32>;  // [segments, 2]: mean, rstd

@compute @workgroup_size(NORM_WG)
fn norm_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let s = segment_index(wg, nwg);
  if (s >= p.segments) { return; }  // uniform across the workgroup, so the barriers below stay uniform
  let base = s * p.seg_len;
  var shift = 0.0;
  if (lid < p.seg_len) { shift = fw_x[base + lid]; }
  var count = 0u;
  var s1 = 0.0;
  var s2 = 0.0;
  for (var e = lid; e < p.seg_len; e = e + NORM_WG) {
    let d = fw_x[base + e] - shift;
    s1 = s1 + d;
    s2 = s2 + d * d;
    count = count + 1u;
  }
  var mine = vec3f(0.0);
  if (count > 0u) {
    let n = f32(count);
    mine = vec3f(n, shift + s1 / n, max(s2 - s1 * s1 / n, 0.0));
  }
  let moments = workgroup_moments(lid, mine);
  let mean = moments.y;
  let rstd = inverseSqrt(moments.z / f32(p.seg_len) + p.eps);
  for (var e = lid; e < p.seg_len; e = e + NORM_WG) {
    let c = param_index(s, e);
    fw_y[base + e] = (fw_x[base + e] - mean) * rstd * fw_gamma[c] + fw_beta[c];
  }
  if (lid == 0u) {
    fw_stats[2u * s] = mean;
    fw_stats[2u * s + 1u] = rstd;
  }
}

// ---- backward for the input: one workgroup per segment ----
@group(0) @binding(1) var<storage, read> bx_x: array<f32>;
@group(0) @binding(2) var<storage, read> bx_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> bx_stats: array<f32>;
@group(0) @binding(4) var<storage, read> bx_dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> bx_dx: array<f32>;

@compute @workgroup_size(NORM_WG)
fn norm_backward_input(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                       @builtin(local_invocation_index) lid: u32) {
  let s = segment_index(wg, nwg);
  if (s >= p.segments) { return; }
  let base = s * p.seg_len;
  let mean = bx_stats[2u * s];
  let rstd = bx_stats[2u * s + 1u];
  var sum_g = 0.0;
  var sum_gx = 0.0;
  for (var e = lid; e < p.seg_len; e = e + NORM_WG) {
    let g = bx_dy[base + e] * bx_gamma[param_index(s, e)];
    sum_g = sum_g + g;
    sum_gx = sum_gx + g * (bx_x[base + e] - mean) * rstd;
  }
  let sums = workgroup_sum2(lid, vec2f(sum_g, sum_gx)) / f32(p.seg_len);
  for (var e = lid; e < p.seg_len; e = e + NORM_WG) {
    let g = bx_dy[base + e] * bx_gamma[param_index(s, e)];
    let xhat = (bx_x[base + e] - mean) * rstd;
    bx_dx[base + e] = rstd * (g - sums.x - xhat * sums.y);
  }
}

// ---- backward for gamma and beta: one workgroup per parameter c, summing over every element using it.
//      Those elements are x[(o * channels + c) * inner + k] for o < outer, k < inner. ----
@group(0) @binding(1) var<storage, read> ba_x: array<f32>;
@group(0) @binding(2) var<storage, read> ba_stats: array<f32>;
@group(0) @binding(3) var<storage, read> ba_dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> ba_dgamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> ba_dbeta: array<f32>;

@compute @workgroup_size(NORM_WG)
fn norm_backward_affine(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                        @builtin(local_invocation_index) lid: u32) {
  let c = segment_index(wg, nwg);
  if (c >= p.channels) { return; }
  let outer = (p.segments * p.seg_len) / (p.channels * p.inner);
  var dg = 0.0;
  var db = 0.0;
  for (var t = lid; t < outer * p.inner; t = t + NORM_WG) {
    let idx = ((t / p.inner) * p.channels + c) * p.inner + t % p.inner;
    let s = idx / p.seg_len;
    let xhat = (ba_x[idx] - ba_stats[2u * s]) * ba_stats[2u * s + 1u];
    dg = dg + ba_dy[idx] * xhat;
    db = db + ba_dy[idx];
  }
  let sums = workgroup_sum2(lid, vec2f(dg, db));
  if (lid == 0u) {
    ba_dgamma[c] = sums.x;
    ba_dbeta[c] = sums.y;
  }
}

// ---- The same three kernels for a CPU adapter (SwiftShader), `_serial`: one thread per segment (or per
//      parameter, for the affine backward), so no workgroup memory and no barriers, which on a CPU driver
//      cost far more than the arithmetic of these small tensors; and, walking a segment parameter by
//      parameter (`span` = inner elements each), no division per element. Same bindings and results, up to
//      the order of the sums. ----
const SERIAL_WG: u32 = 64u;

// A long float32 sum kept in blocks of SUM_BLOCK terms, each block's total then added to the running sum:
// rounding grows with the number of additions each value goes through, so this keeps a serial sum over a
// segment of thousands of elements about as exact as the workgroup kernels' tree.
const SUM_BLOCK: u32 = 64u;
struct BlockedSum {
  total: vec2f,
  block: vec2f,
  count: u32,
}

fn blocked_add(acc: ptr<function, BlockedSum>, v: vec2f) {
  (*acc).block = (*acc).block + v;
  (*acc).count = (*acc).count + 1u;
  if ((*acc).count == SUM_BLOCK) {
    (*acc).total = (*acc).total + (*acc).block;
    (*acc).block = vec2f(0.0);
    (*acc).count = 0u;
  }
}

fn blocked_total(acc: BlockedSum) -> vec2f {
  return acc.total + acc.block;
}

fn serial_index(wg: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * SERIAL_WG + lid;
}

@compute @workgroup_size(SERIAL_WG)
fn norm_forward_serial(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                       @builtin(local_invocation_index) lid: u32) {
  let s = serial_index(wg, nwg, lid);
  if (s >= p.segments) { return; }
  let base = s * p.seg_len;
  // Sums relative to the first element, as the tiled kernel's threads do (no cancellation).
  let shift = fw_x[base];
  var sums = BlockedSum(vec2f(0.0), vec2f(0.0), 0u);
  for (var e = 0u; e < p.seg_len; e = e + 1u) {
    let d = fw_x[base + e] - shift;
    blocked_add(&sums, vec2f(d, d * d));
  }
  let s1 = blocked_total(sums).x;
  let s2 = blocked_total(sums).y;
  let n = f32(p.seg_len);
  let mean = shift + s1 / n;
  let rstd = inverseSqrt(max(s2 - s1 * s1 / n, 0.0) / n + p.eps);
  let c0 = param_index(s, 0u);
  var e = base;
  for (var c = c0; c < c0 + p.seg_len / p.inner; c = c + 1u) {
    let scale = rstd * fw_gamma[c];
    let beta = fw_beta[c];
    for (var k = 0u; k < p.inner; k = k + 1u) {
      fw_y[e] = (fw_x[e] - mean) * scale + beta;
      e = e + 1u;
    }
  }
  fw_stats[2u * s] = mean;
  fw_stats[2u * s + 1u] = rstd;
}

@compute @workgroup_size(SERIAL_WG)
fn norm_backward_input_serial(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                              @builtin(local_invocation_index) lid: u32) {
  let s = serial_index(wg, nwg, lid);
  if (s >= p.segments) { return; }
  let base = s * p.seg_len;
  let mean = bx_stats[2u * s];
  let rstd = bx_stats[2u * s + 1u];
  let c0 = param_index(s, 0u);
  let c_end = c0 + p.seg_len / p.inner;
  var sums = BlockedSum(vec2f(0.0), vec2f(0.0), 0u);
  var e = base;
  for (var c = c0; c < c_end; c = c + 1u) {
    let gamma = bx_gamma[c];
    for (var k = 0u; k < p.inner; k = k + 1u) {
      let g = bx_dy[e] * gamma;
      blocked_add(&sums, vec2f(g, g * (bx_x[e] - mean) * rstd));
      e = e + 1u;
    }
  }
  let mean_g = blocked_total(sums).x / f32(p.seg_len);
  let mean_gx = blocked_total(sums).y / f32(p.seg_len);
  e = base;
  for (var c = c0; c < c_end; c = c + 1u) {
    let gamma = bx_gamma[c];
    for (var k = 0u; k < p.inner; k = k + 1u) {
      let xhat = (bx_x[e] - mean) * rstd;
      bx_dx[e] = rstd * (bx_dy[e] * gamma - mean_g - xhat * mean_gx);
      e = e + 1u;
    }
  }
}

@compute @workgroup_size(SERIAL_WG)
fn norm_backward_affine_serial(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                               @builtin(local_invocation_index) lid: u32) {
  let c = serial_index(wg, nwg, lid);
  if (c >= p.channels) { return; }
  let outer = (p.segments * p.seg_len) / (p.channels * p.inner);
  var sums = BlockedSum(vec2f(0.0), vec2f(0.0), 0u);
  for (var o = 0u; o < outer; o = o + 1u) {
    let start = (o * p.channels + c) * p.inner;
    // A parameter's run of `inner` elements lies in one segment.
    let s = start / p.seg_len;
    let mean = ba_stats[2u * s];
    let rstd = ba_stats[2u * s + 1u];
    for (var idx = start; idx < start + p.inner; idx = idx + 1u) {
      blocked_add(&sums, vec2f(ba_dy[idx] * (ba_x[idx] - mean) * rstd, ba_dy[idx]));
    }
  }
  ba_dgamma[c] = blocked_total(sums).x;
  ba_dbeta[c] = blocked_total(sums).y;
}
