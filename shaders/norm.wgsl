// Group norm and layer norm share one set of kernels. The input is seen as `segments` contiguous runs of
// `seg_len` elements, each normalised on its own:
//   layer norm  x [R, D]:        segments R,      seg_len D,            affine index of element e: e
//   group norm  x [N, C, H*W]:   segments N * G,  seg_len (C / G) * HW, affine index: ((s % G) * seg_len + e) / HW
// In both cases, with `inner` = HW (1 for layer norm) and `groups` = G (1 for layer norm), the affine index
// is ((s % groups) * seg_len + e) / inner. Forward saves mean and rstd per segment for the backward.
//   y = (x - mean) * rstd * gamma + beta,   rstd = 1 / sqrt(var + eps)   (biased variance, as PyTorch)
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),   g = dy * gamma,   xhat = (x - mean) * rstd
//   dgamma[c] = sum dy * xhat,   dbeta[c] = sum dy   over every element that uses parameter c

struct Params {
  segments: u32,
  seg_len: u32,
  groups: u32,
  inner: u32,
  channels: u32,   // number of affine parameters (C or D)
  eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

// Sums two values across the workgroup at once (used for mean(g) and mean(g * xhat) together).
fn workgroup_sum2(lid: u32, a: f32, b: f32) -> vec2f {
  red_a[lid] = a;
  red_b[lid] = b;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride / 2u) {
    if (lid < stride) {
      red_a[lid] = red_a[lid] + red_a[lid + stride];
      red_b[lid] = red_b[lid] + red_b[lid + stride];
    }
    workgroupBarrier();
  }
  let r = vec2f(red_a[0], red_b[0]);
  workgroupBarrier();  // everyone has read the result before the arrays are reused
  return r;
}

fn param_index(s: u32, e: u32) -> u32 {
  return ((s % p.groups) * p.seg_len + e) / p.inner;
}

fn segment_index(wg: vec3u, nwg: vec3u) -> u32 {
  return wg.y * nwg.x + wg.x;
}

// ---- forward: one workgroup per segment; two passes (mean, then variance) for accuracy ----
@group(0) @binding(1) var<storage, read> fw_x: array<f32>;
@group(0) @binding(2) var<storage, read> fw_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> fw_beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> fw_y: array<f32>;
@group(0) @binding(5) var<storage, read_write> fw_stats: array<f32>;  // [segments, 2]: mean, rstd

@compute @workgroup_size(256)
fn norm_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let s = segment_index(wg, nwg);
  if (s >= p.segments) { return; }
  let base = s * p.seg_len;
  var sum = 0.0;
  for (var e = lid; e < p.seg_len; e = e + 256u) { sum = sum + fw_x[base + e]; }
  let mean = workgroup_sum2(lid, sum, 0.0).x / f32(p.seg_len);
  var sq = 0.0;
  for (var e = lid; e < p.seg_len; e = e + 256u) {
    let d = fw_x[base + e] - mean;
    sq = sq + d * d;
  }
  let rstd = inverseSqrt(workgroup_sum2(lid, sq, 0.0).x / f32(p.seg_len) + p.eps);
  for (var e = lid; e < p.seg_len; e = e + 256u) {
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

@compute @workgroup_size(256)
fn norm_backward_input(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                       @builtin(local_invocation_index) lid: u32) {
  let s = segment_index(wg, nwg);
  if (s >= p.segments) { return; }
  let base = s * p.seg_len;
  let mean = bx_stats[2u * s];
  let rstd = bx_stats[2u * s + 1u];
  var sum_g = 0.0;
  var sum_gx = 0.0;
  for (var e = lid; e < p.seg_len; e = e + 256u) {
    let g = bx_dy[base + e] * bx_gamma[param_index(s, e)];
    sum_g = sum_g + g;
    sum_gx = sum_gx + g * (bx_x[base + e] - mean) * rstd;
  }
  let sums = workgroup_sum2(lid, sum_g, sum_gx) / f32(p.seg_len);
  for (var e = lid; e < p.seg_len; e = e + 256u) {
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

@compute @workgroup_size(256)
fn norm_backward_affine(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                        @builtin(local_invocation_index) lid: u32) {
  let c = segment_index(wg, nwg);
  if (c >= p.channels) { return; }
  let outer = (p.segments * p.seg_len) / (p.channels * p.inner);
  var dg = 0.0;
  var db = 0.0;
  for (var t = lid; t < outer * p.inner; t = t + 256u) {
    let idx = ((t / p.inner) * p.channels + c) * p.inner + t % p.inner;
    let s = idx / p.seg_len;
    let xhat = (ba_x[idx] - ba_stats[2u * s]) * ba_stats[2u * s + 1u];
    dg = dg + ba_dy[idx] * xhat;
    db = db + ba_dy[idx];
  }
  let sums = workgroup_sum2(lid, dg, db);
  if (lid == 0u) {
    ba_dgamma[c] = sums.x;
    ba_dbeta[c] = sums.y;
  }
}
