// conv2d.wgsl's three kernels for a CPU adapter (SwiftShader), for the convolutions a UNet or VAE spends its
// time in: stride 1, a square K x K kernel with K = 1 or 3, "same" padding (K - 1) / 2 on every side, width
// a multiple of 4. As in matmul-vec4.wgsl, each thread reads its operands straight from memory as vec4 and
// keeps its sums in registers with constant indices: no workgroup memory, no barriers, and none of the
// implicit GEMM's per-element divisions. conv2d.ts uses them only where those conditions hold (and the
// channels that a thread takes four at a time are a multiple of 4); the implicit GEMM stays the GPU's.
//
// A row of four pixels x[ix .. ix+3] and its two neighbours give the three taps of a 3-wide kernel:
//   tap s = 0 sees x[ix-1 .. ix+2],  s = 1 sees x[ix .. ix+3],  s = 2 sees x[ix+1 .. ix+4]   (zeros past the edge)
//
//   forward          y[z, o, oy, ox] = bias[o] + sum_{i, r, s} W[o, i, r, s] x[z, i, oy + r - P, ox + s - P]
//   backward_input   dx[z, i, iy, ix] = sum_{o, r, s} W[o, i, r, s] dy[z, o, iy - r + P, ix - s + P]
//                    = the forward's sum over dy with the kernel flipped (r -> K-1-r, s -> K-1-s) and its two
//                      channel axes swapped: one kernel, `conv_same_vec4`, with FLIP choosing the weight index
//   backward_weight  dW[o, i, r, s] = sum_{z, oy, ox} dy[z, o, oy, ox] x[z, i, oy + r - P, ox + s - P]

struct Params {
  c_in: u32,    // channels of the tensor read (x; dy for the input gradient)
  c_out: u32,   // channels of the tensor written (y; dx)
  h: u32,
  w: u32,
  batch: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override KSIZE: u32 = 3u;
override HAS_BIAS: bool = false;
override FLIP: bool = false;
const VEC4_WG: u32 = 64u;

@group(0) @binding(1) var<storage, read> src: array<vec4f>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<vec4f>;
// Always bound; without HAS_BIAS a stand-in buffer sits here and is never read.
@group(0) @binding(4) var<storage, read> bias: array<f32>;

// The three taps of a 3-wide kernel at the row of four pixels `at` (a vec4 index) starting at column ix.
struct Taps {
  t0: vec4f,
  t1: vec4f,
  t2: vec4f,
}

fn taps(at: u32, ix: u32) -> Taps {
  let c = src[at];
  var left = 0.0;
  var right = 0.0;
  if (ix > 0u) { left = src[at - 1u].w; }
  if (ix + 4u < p.w) { right = src[at + 1u].x; }
  return Taps(vec4f(left, c.xyz), c, vec4f(c.yzw, right));
}

// W as the kernel at output channel o, input channel i, tap (r, s) sees it.
fn tap_weight(o: u32, i: u32, r: u32, s: u32) -> f32 {
  let kk = KSIZE * KSIZE;
  if (FLIP) {
    return weight[(i * p.c_out + o) * kk + (KSIZE - 1u - r) * KSIZE + (KSIZE - 1u - s)];
  }
  return weight[(o * p.c_in + i) * kk + r * KSIZE + s];
}

// One output row of four pixels for four output channels: o0 .. o0+3, row oy, columns ox .. ox+3.
@compute @workgroup_size(VEC4_WG)
fn conv_same_vec4(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_index) lid: u32) {
  let quads = p.w / 4u;
  let id = (wg.y * nwg.x + wg.x) * VEC4_WG + lid;
  let ox = (id % quads) * 4u;
  let oy = (id / quads) % p.h;
  let o0 = ((id / (quads * p.h)) % (p.c_out / 4u)) * 4u;
  let z = id / (quads * p.h * (p.c_out / 4u));
  if (z >= p.batch) { return; }
  let pad = (KSIZE - 1u) / 2u;
  var a0 = vec4f(0.0);
  var a1 = vec4f(0.0);
  var a2 = vec4f(0.0);
  var a3 = vec4f(0.0);
  for (var i = 0u; i < p.c_in; i = i + 1u) {
    for (var r = 0u; r < KSIZE; r = r + 1u) {
      let iy = i32(oy + r) - i32(pad);
      if (iy < 0 || iy >= i32(p.h)) { continue; }
      let at = (((z * p.c_in + i) * p.h + u32(iy)) * p.w + ox) / 4u;
      if (KSIZE == 1u) {
        let x = src[at];
        a0 = a0 + tap_weight(o0, i, 0u, 0u) * x;
        a1 = a1 + tap_weight(o0 + 1u, i, 0u, 0u) * x;
        a2 = a2 + tap_weight(o0 + 2u, i, 0u, 0u) * x;
        a3 = a3 + tap_weight(o0 + 3u, i, 0u, 0u) * x;
      } else {
        let t = taps(at, ox);
        a0 = a0 + tap_weight(o0, i, r, 0u) * t.t0 + tap_weight(o0, i, r, 1u) * t.t1 + tap_weight(o0, i, r, 2u) * t.t2;
        a1 = a1 + tap_weight(o0 + 1u, i, r, 0u) * t.t0 + tap_weight(o0 + 1u, i, r, 1u) * t.t1 + tap_weight(o0 + 1u, i, r, 2u) * t.t2;
        a2 = a2 + tap_weight(o0 + 2u, i, r, 0u) * t.t0 + tap_weight(o0 + 2u, i, r, 1u) * t.t1 + tap_weight(o0 + 2u, i, r, 2u) * t.t2;
        a3 = a3 + tap_weight(o0 + 3u, i, r, 0u) * t.t0 + tap_weight(o0 + 3u, i, r, 1u) * t.t1 + tap_weight(o0 + 3u, i, r, 2u) * t.t2;
      }
    }
  }
  if (HAS_BIAS) {
    a0 = a0 + bias[o0];
    a1 = a1 + bias[o0 + 1u];
    a2 = a2 + bias[o0 + 2u];
    a3 = a3 + bias[o0 + 3u];
  }
  let plane = p.h * p.w / 4u;
  let out = ((z * p.c_out + o0) * p.h + oy) * quads + ox / 4u;
  dst[out] = a0;
  dst[out + plane] = a1;
  dst[out + 2u * plane] = a2;
  dst[out + 3u * plane] = a3;
}

// ---- backward_weight: one thread per (four output channels o0 .. o0+3, input channel i, kernel row r),
//      summing over the batch and every row of four positions; bindings: src = x, dy = dy, dst = dW ----
@group(0) @binding(2) var<storage, read> dy: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;

// Params here: c_in and c_out are the weight's Cin and Cout.
@compute @workgroup_size(VEC4_WG)
fn conv_same_vec4_weight(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                         @builtin(local_invocation_index) lid: u32) {
  let id = (wg.y * nwg.x + wg.x) * VEC4_WG + lid;
  let r = id % KSIZE;
  let i = (id / KSIZE) % p.c_in;
  let o0 = (id / (KSIZE * p.c_in)) * 4u;
  if (o0 >= p.c_out) { return; }
  let pad = (KSIZE - 1u) / 2u;
  let quads = p.w / 4u;
  // s[j][t]: partial sums of dW[o0 + j, i, r, t], four lanes each, added up at the end.
  var s00 = vec4f(0.0); var s01 = vec4f(0.0); var s02 = vec4f(0.0);
  var s10 = vec4f(0.0); var s11 = vec4f(0.0); var s12 = vec4f(0.0);
  var s20 = vec4f(0.0); var s21 = vec4f(0.0); var s22 = vec4f(0.0);
  var s30 = vec4f(0.0); var s31 = vec4f(0.0); var s32 = vec4f(0.0);
  for (var z = 0u; z < p.batch; z = z + 1u) {
    for (var oy = 0u; oy < p.h; oy = oy + 1u) {
      let iy = i32(oy + r) - i32(pad);
      if (iy < 0 || iy >= i32(p.h)) { continue; }
      let x_row = (((z * p.c_in + i) * p.h + u32(iy)) * p.w) / 4u;
      let dy_row = ((z * p.c_out + o0) * p.h + oy) * quads;
      let plane = p.h * quads;
      for (var q = 0u; q < quads; q = q + 1u) {
        let g0 = dy[dy_row + q];
        let g1 = dy[dy_row + plane + q];
        let g2 = dy[dy_row + 2u * plane + q];
        let g3 = dy[dy_row + 3u * plane + q];
        if (KSIZE == 1u) {
          let x = src[x_row + q];
          s00 = s00 + g0 * x; s10 = s10 + g1 * x; s20 = s20 + g2 * x; s30 = s30 + g3 * x;
        } else {
          let t = taps(x_row + q, q * 4u);
          s00 = s00 + g0 * t.t0; s01 = s01 + g0 * t.t1; s02 = s02 + g0 * t.t2;
          s10 = s10 + g1 * t.t0; s11 = s11 + g1 * t.t1; s12 = s12 + g1 * t.t2;
          s20 = s20 + g2 * t.t0; s21 = s21 + g2 * t.t1; s22 = s22 + g2 * t.t2;
          s30 = s30 + g3 * t.t0; s31 = s31 + g3 * t.t1; s32 = s32 + g3 * t.t2;
        }
      }
    }
  }
  let kk = KSIZE * KSIZE;
  let one = vec4f(1.0);
  let at = (o0 * p.c_in + i) * kk + r * KSIZE;
  let next = p.c_in * kk;  // from output channel o to o + 1
  if (KSIZE == 1u) {
    dw[at] = dot(s00, one);
    dw[at + next] = dot(s10, one);
    dw[at + 2u * next] = dot(s20, one);
    dw[at + 3u * next] = dot(s30, one);
  } else {
    dw[at] = dot(s00, one); dw[at + 1u] = dot(s01, one); dw[at + 2u] = dot(s02, one);
    dw[at + next] = dot(s10, one); dw[at + next + 1u] = dot(s11, one); dw[at + next + 2u] = dot(s12, one);
    dw[at + 2u * next] = dot(s20, one); dw[at + 2u * next + 1u] = dot(s21, one); dw[at + 2u * next + 2u] = dot(s22, one);
    dw[at + 3u * next] = dot(s30, one); dw[at + 3u * next + 1u] = dot(s31, one); dw[at + 3u * next + 2u] = dot(s32, one);
  }
}
