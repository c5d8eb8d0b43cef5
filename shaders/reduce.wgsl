// Reductions. Per-example ones (mse, sum of squares): one workgroup of 256 threads reduces one output
// element; each thread sums a strided part of the input, then the workgroup combines the 256 partial sums
// as a tree in shared memory. sum_broadcast (bias gradients, many outputs) has no barriers; see there.

struct Params {
  outer: u32,   // sum_broadcast: outer count / mse: elements per example / sum_squares: length
  size: u32,    // sum_broadcast: elements of the result (b's size)
  inner: u32,   // sum_broadcast: run length of one result element
  scale: f32,   // mse_backward: gradient of the loss w.r.t. the mean (usually 1)
  per: u32,     // sum_broadcast: terms summed by one thread (a chunk of outer * inner)
}

@group(0) @binding(0) var<uniform> p: Params;

override MUL_A: bool = false;


// ---- sum_broadcast: db[j] = sum over o < outer, k < inner of dy[(o * size + j) * inner + k]
//      (times a[...] at the same index when MUL_A). The gradient of a broadcast b, and of biases.
//      One thread per output element j and chunk c (grid z) of its outer * inner terms, summed in order;
//      it writes out[c * size + j]. With one chunk that is the result; with more, the caller sums the
//      [chunks, size] partials by the same kernel (outer = chunks, inner = 1). No workgroup memory and no
//      barriers: a tree of barriers per output was most of a UNet backward's time on SwiftShader, where a
//      barrier switches every invocation of the workgroup. ----
@group(0) @binding(1) var<storage, read> sb_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> sb_out: array<f32>;
@group(0) @binding(3) var<storage, read> sb_a: array<f32>;

@compute @workgroup_size(64)
fn sum_broadcast(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let j = (wg.y * nwg.x + wg.x) * 64u + lid;
  if (j >= p.size) { return; }
  let count = p.outer * p.inner;
  let start = wg.z * p.per;
  let end = min(start + p.per, count);
  // Walk the terms (o, k) from `start` in memory order: k runs along a row of `inner`, then the index
  // jumps over the other outputs' rows to the next o.
  var k = start % p.inner;
  var idx = ((start / p.inner) * p.size + j) * p.inner + k;
  var acc = 0.0;
  for (var t = start; t < end; t = t + 1u) {
    if (MUL_A) { acc = acc + sb_dy[idx] * sb_a[idx]; } else { acc = acc + sb_dy[idx]; }
    k = k + 1u;
    idx = idx + 1u;
    if (k == p.inner) {
      k = 0u;
      idx = idx + (p.size - 1u) * p.inner;
    }
  }
  sb_out[wg.z * p.size + j] = acc;
}

// ---- per-example mean squared error: err[n] = mean_i (a[n, i] - b[n, i])^2, p.outer = elements per example ----
@group(0) @binding(1) var<storage, read> mse_a: array<f32>;
@group(0) @binding(2) var<storage, read> mse_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> mse_err: array<f32>;

@compute @workgroup_size(256)
fn mse_forward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let n = wg.x;
  let base = n * p.outer;
  var acc = 0.0;
  for (var i = lid; i < p.outer; i = i + 256u) {
    let d = mse_a[base + i] - mse_b[base + i];
    acc = acc + d * d;
  }
  let total = workgroup_sum(lid, acc);
  if (lid == 0u) { mse_err[n] = total / f32(p.outer); }
}

// ---- difference of two examples' errors against the same target, without cancellation:
//      d[n] = mean_i (a - c)^2 - (b - c)^2 = mean_i (a - b)(a + b - 2c). For the policy-minus-reference
//      error D of TPO, which is ~1e-3 of either error: subtracting two f32 means would keep only ~4 digits. ----
@group(0) @binding(1) var<storage, read> msd_a: array<f32>;
@group(0) @binding(2) var<storage, read> msd_b: array<f32>;
@group(0) @binding(3) var<storage, read> msd_c: array<f32>;
@group(0) @binding(4) var<storage, read_write> msd_d: array<f32>;

@compute @workgroup_size(256)
fn mse_diff_forward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let n = wg.x;
  let base = n * p.outer;
  var acc = 0.0;
  for (var i = lid; i < p.outer; i = i + 256u) {
    let a = msd_a[base + i];
    let b = msd_b[base + i];
    acc = acc + (a - b) * (a + b - 2.0 * msd_c[base + i]);
  }
  let total = workgroup_sum(lid, acc);
  if (lid == 0u) { msd_d[n] = total / f32(p.outer); }
}

// ---- mse backward: da[n, i] = derr[n] * 2 (a - b) / M; db = -da is left to the caller ----
@group(0) @binding(1) var<storage, read> mseb_a: array<f32>;
@group(0) @binding(2) var<storage, read> mseb_b: array<f32>;
@group(0) @binding(3) var<storage, read> mseb_derr: array<f32>;
@group(0) @binding(4) var<storage, read_write> mseb_da: array<f32>;

@compute @workgroup_size(256)
fn mse_backward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.size) { return; }
  let n = i / p.outer;
  mseb_da[i] = p.scale * mseb_derr[n] * 2.0 * (mseb_a[i] - mseb_b[i]) / f32(p.outer);
}

// ---- sum of squares, added into acc[0]: run once per gradient tensor for the global gradient norm ----
@group(0) @binding(1) var<storage, read> ss_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> ss_acc: array<f32>;

@compute @workgroup_size(256)
fn sum_squares_accumulate(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var i = lid; i < p.outer; i = i + 256u) {
    let v = ss_x[i];
    acc = acc + v * v;
  }
  let total = workgroup_sum(lid, acc);
  if (lid == 0u) { ss_acc[0] = ss_acc[0] + total; }
}
