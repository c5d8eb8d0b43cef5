// AdamW with global gradient-norm clipping and a NaN/Inf guard, entirely on the GPU (no readback per step).
// norm_sq[0] holds the sum of squared gradients over every parameter tensor (reduce.wgsl's
// sum_squares_accumulate). The clip factor is PyTorch's clip_grad_norm_: min(1, max_norm / (norm + 1e-6)).
// A non-finite norm means some gradient is NaN or Inf: the step is skipped for every tensor, so weights and
// moments are never corrupted; the trainer reads norm_sq later to report it.
//   g = grad * grad_scale * clip
//   p = p - lr * weight_decay * p                 (decoupled weight decay)
//   m = beta1 m + (1 - beta1) g,  v = beta2 v + (1 - beta2) g^2
//   p = p - lr * (m / bc1) / (sqrt(v / bc2) + eps),  bc_i = 1 - beta_i^step

struct Params {
  n: u32,
  lr: f32,
  beta1: f32,
  beta2: f32,
  eps: f32,
  weight_decay: f32,
  bc1: f32,
  bc2: f32,
  max_norm: f32,    // 0: no clipping
  grad_scale: f32,  // e.g. 1 / accumulation steps
  // 1 - beta from float64: 1.0 - 0.999 in f32 is off by 1.3e-5 relative, which would bias v.
  one_minus_beta1: f32,
  one_minus_beta2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> norm_sq: array<f32>;

@compute @workgroup_size(256)
fn adamw_step(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  let sq = norm_sq[0];
  // NaN fails every comparison, and Inf is above the largest f32.
  if (!(sq <= 3.4028234e38)) { return; }
  let norm = sqrt(sq) * p.grad_scale;
  var clip = 1.0;
  if (p.max_norm > 0.0) { clip = min(1.0, p.max_norm / (norm + 1e-6)); }
  let g = grad[i] * p.grad_scale * clip;
  var w = param[i];
  w = w - p.lr * p.weight_decay * w;
  let mi = p.beta1 * m[i] + p.one_minus_beta1 * g;
  let vi = p.beta2 * v[i] + p.one_minus_beta2 * g * g;
  m[i] = mi;
  v[i] = vi;
  param[i] = w - p.lr * (mi / p.bc1) / (sqrt(vi / p.bc2) + p.eps);
}
