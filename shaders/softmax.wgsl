// Softmax over the last dimension of x [rows, len], forward next to its backward. One workgroup of 256
// threads per row, each thread taking a strided share of the row, combined by workgroup-reduce.wgsl.
//   forward   y = exp(x - max) / sum(exp(x - max))       (max subtracted so exp never overflows)
//   backward  dx = y * (dy - sum(dy * y))                (the Jacobian diag(y) - y y^T applied to dy)
// The backward needs only y, not x.

struct Params {
  rows: u32,
  len: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn row_index(wg: vec3u, nwg: vec3u) -> u32 {
  return wg.y * nwg.x + wg.x;
}

// ---- forward ----
@group(0) @binding(1) var<storage, read> fw_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> fw_y: array<f32>;

@compute @workgroup_size(256)
fn softmax_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let r = row_index(wg, nwg);
  if (r >= p.rows) { return; }  // uniform across the workgroup, so the barriers below stay uniform
  let base = r * p.len;
  var m = fw_x[base];  // every row has at least one element; a start value from the row needs no -inf
  for (var j = lid; j < p.len; j = j + 256u) { m = max(m, fw_x[base + j]); }
  let row_max = workgroup_max(lid, m);
  var s = 0.0;
  for (var j = lid; j < p.len; j = j + 256u) { s = s + exp(fw_x[base + j] - row_max); }
  let inv = 1.0 / workgroup_sum(lid, s);
  for (var j = lid; j < p.len; j = j + 256u) { fw_y[base + j] = exp(fw_x[base + j] - row_max) * inv; }
}

// ---- backward ----
@group(0) @binding(1) var<storage, read> bw_y: array<f32>;
@group(0) @binding(2) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> bw_dx: array<f32>;

@compute @workgroup_size(256)
fn softmax_backward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                    @builtin(local_invocation_index) lid: u32) {
  let r = row_index(wg, nwg);
  if (r >= p.rows) { return; }
  let base = r * p.len;
  var s = 0.0;
  for (var j = lid; j < p.len; j = j + 256u) { s = s + bw_dy[base + j] * bw_y[base + j]; }
  let dot = workgroup_sum(lid, s);
  for (var j = lid; j < p.len; j = j + 256u) { bw_dx[base + j] = bw_y[base + j] * (bw_dy[base + j] - dot); }
}
