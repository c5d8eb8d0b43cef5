// Element-wise ops, each forward next to its backward.
// Activations: y = f(x), dx = dy * f'(x), with f chosen by the override ACT:
//   0 SiLU        f = x * sigmoid(x)
//   1 GELU (erf)  f = x * Phi(x),  Phi the standard normal CDF
//   2 quick-GELU  f = x * sigmoid(1.702 x)   (CLIP's text encoder)
// GEGLU (diffusers' feed-forward): x = [h, g] split in half along the last dim, y = h * gelu(g).
// Binary ops with b broadcast over a: b's element for a[i] is b[(i / inner) % b_size], which covers
// same-shape (inner 1, b_size n), per-channel bias on NCHW (inner HW, b_size C) and per-example
// vectors on NCHW (inner HW, b_size N*C). The gradient for b is a reduction: see reduce.wgsl.

struct Params {
  n: u32,        // elements of the output
  inner: u32,    // broadcast: run length of one b element / GEGLU: half width D / concat: inner size
  b_size: u32,   // broadcast: elements of b / concat: channels of a
  extra: u32,    // concat: channels of b / upsample: input width
  alpha: f32,    // scale factor
}

@group(0) @binding(0) var<uniform> p: Params;

override ACT: u32 = 0u;
override BINARY_MUL: bool = false;

fn act(x: f32) -> f32 {
  switch ACT {
    case 0u: { return x * sigmoid(x); }
    case 1u: { return 0.5 * x * (1.0 + erf_f32(x * 0.7071067811865476)); }
    default: { return x * sigmoid(1.702 * x); }
  }
}

fn act_grad(x: f32) -> f32 {
  switch ACT {
    case 0u: {
      let s = sigmoid(x);
      return s * (1.0 + x * (1.0 - s));
    }
    case 1u: {
      let cdf = 0.5 * (1.0 + erf_f32(x * 0.7071067811865476));
      let pdf = 0.3989422804014327 * exp(-0.5 * x * x);
      return cdf + x * pdf;
    }
    default: {
      let s = sigmoid(1.702 * x);
      return s * (1.0 + 1.702 * x * (1.0 - s));
    }
  }
}

// ---- activation: y = act(x) ----
@group(0) @binding(1) var<storage, read> act_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> act_y: array<f32>;

@compute @workgroup_size(256)
fn activation_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                      @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  act_y[i] = act(act_x[i]);
}

// ---- activation backward: dx = dy * act'(x) ----
@group(0) @binding(1) var<storage, read> actb_x: array<f32>;
@group(0) @binding(2) var<storage, read> actb_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> actb_dx: array<f32>;

@compute @workgroup_size(256)
fn activation_backward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                       @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  actb_dx[i] = actb_dy[i] * act_grad(actb_x[i]);
}

// ---- GEGLU: y[r, d] = x[r, d] * gelu(x[r, D + d]), p.n = R * D, p.inner = D ----
@group(0) @binding(1) var<storage, read> geglu_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> geglu_y: array<f32>;

@compute @workgroup_size(256)
fn geglu_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  let r = i / p.inner;
  let d = i % p.inner;
  let h = geglu_x[r * 2u * p.inner + d];
  let g = geglu_x[r * 2u * p.inner + p.inner + d];
  geglu_y[i] = h * act(g);
}

// ---- GEGLU backward: dh = dy * gelu(g), dg = dy * h * gelu'(g); one thread per output element ----
@group(0) @binding(1) var<storage, read> gegb_x: array<f32>;
@group(0) @binding(2) var<storage, read> gegb_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> gegb_dx: array<f32>;

@compute @workgroup_size(256)
fn geglu_backward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  let r = i / p.inner;
  let d = i % p.inner;
  let hi = r * 2u * p.inner + d;
  let gi = hi + p.inner;
  let h = gegb_x[hi];
  let g = gegb_x[gi];
  let dy = gegb_dy[i];
  gegb_dx[hi] = dy * act(g);
  gegb_dx[gi] = dy * h * act_grad(g);
}

// ---- binary: y = a + b or a * b (BINARY_MUL), b broadcast ----
@group(0) @binding(1) var<storage, read> bin_a: array<f32>;
@group(0) @binding(2) var<storage, read> bin_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> bin_y: array<f32>;

@compute @workgroup_size(256)
fn binary_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  let b = bin_b[(i / p.inner) % p.b_size];
  bin_y[i] = select(bin_a[i] + b, bin_a[i] * b, BINARY_MUL);
}

// ---- multiply backward for a: da = dy * b (for add, da = dy needs no kernel) ----
@group(0) @binding(1) var<storage, read> mulb_dy: array<f32>;
@group(0) @binding(2) var<storage, read> mulb_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> mulb_da: array<f32>;

@compute @workgroup_size(256)
fn mul_backward_a(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  mulb_da[i] = mulb_dy[i] * mulb_b[(i / p.inner) % p.b_size];
}

// ---- scale: y = alpha * x; its backward is the same kernel on dy ----
@group(0) @binding(1) var<storage, read> scale_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> scale_y: array<f32>;

@compute @workgroup_size(256)
fn scale_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  scale_y[i] = p.alpha * scale_x[i];
}

// ---- concat along channels: a [N, Ca, S], b [N, Cb, S] -> y [N, Ca + Cb, S] ----
// p.inner = S, p.b_size = Ca, p.extra = Cb. One thread per output element.
@group(0) @binding(1) var<storage, read> cat_a: array<f32>;
@group(0) @binding(2) var<storage, read> cat_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> cat_y: array<f32>;

@compute @workgroup_size(256)
fn concat_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  let s = i % p.inner;
  let c = (i / p.inner) % (p.b_size + p.extra);
  let n = i / (p.inner * (p.b_size + p.extra));
  if (c < p.b_size) {
    cat_y[i] = cat_a[(n * p.b_size + c) * p.inner + s];
  } else {
    cat_y[i] = cat_b[(n * p.extra + (c - p.b_size)) * p.inner + s];
  }
}

// ---- concat backward: dy [N, Ca + Cb, S] -> da [N, Ca, S], db [N, Cb, S] ----
@group(0) @binding(1) var<storage, read> split_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> split_da: array<f32>;
@group(0) @binding(3) var<storage, read_write> split_db: array<f32>;

@compute @workgroup_size(256)
fn concat_backward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  let s = i % p.inner;
  let c = (i / p.inner) % (p.b_size + p.extra);
  let n = i / (p.inner * (p.b_size + p.extra));
  if (c < p.b_size) {
    split_da[(n * p.b_size + c) * p.inner + s] = split_dy[i];
  } else {
    split_db[(n * p.extra + (c - p.b_size)) * p.inner + s] = split_dy[i];
  }
}

// ---- nearest upsample: x [NC, H, W] -> y [NC, Ho, Wo]; p.n = output size, p.inner = H, p.extra = W,
// p.b_size = Ho, Wo = the override UP_W_OUT (0: 2W). Output (oy, ox) copies input (oy * H / Ho, ox * W / Wo)
// rounded down, PyTorch's "nearest": exactly x[oy / 2, ox / 2] at twice the size, and diffusers' upsampling
// to a skip connection's odd size when the latent does not divide by 2 at every level.
override UP_W_OUT: u32 = 0u;
@group(0) @binding(1) var<storage, read> up_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> up_y: array<f32>;

@compute @workgroup_size(256)
fn upsample_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                    @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  let w_out = select(UP_W_OUT, 2u * p.extra, UP_W_OUT == 0u);
  let h_out = p.b_size;
  let ox = i % w_out;
  let oy = (i / w_out) % h_out;
  let nc = i / (w_out * h_out);
  up_y[i] = up_x[(nc * p.inner + oy * p.inner / h_out) * p.extra + ox * p.extra / w_out];
}

// ---- upsample backward (2x only): dx is the sum of the 2x2 block of dy it was copied to; p.n = input size ----
@group(0) @binding(1) var<storage, read> upb_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> upb_dx: array<f32>;

@compute @workgroup_size(256)
fn upsample_backward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.n) { return; }
  let x = i % p.extra;
  let y = (i / p.extra) % p.inner;
  let nc = i / (p.extra * p.inner);
  let w_out = 2u * p.extra;
  let base = (nc * 2u * p.inner + 2u * y) * w_out + 2u * x;
  upb_dx[i] = upb_dy[base] + upb_dy[base + 1u] + upb_dy[base + w_out] + upb_dy[base + w_out + 1u];
}
