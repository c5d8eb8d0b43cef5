// Sinusoidal timestep embedding as diffusers builds it (get_timestep_embedding):
//   freq_k = exp(-ln(max_period) * k / (half - freq_shift)),  k < half = dim / 2
//   emb = [sin(t * freq), cos(t * freq)], swapped to [cos, sin] when flip_sin_to_cos (SD1.5), zero-padded
//   to an odd dim.
// t * freq reaches ~1000 radians, where f32 sin() is far from the float64 reference (WGSL only bounds
// sin's error on [-pi, pi], and rounding t * freq alone costs 1e-4). So the CPU passes each frequency in
// turns (freq / 2pi, float64) split as hi + lo, hi with at most 12 significant bits: for integer t < 2048,
// t * hi is exact in f32, fract() of it is exact, and t * lo is tiny. The angle is then reduced to within
// 1/8 turn of a quarter turn and evaluated by Taylor polynomials accurate far beyond f32.
// There is no backward: the input is an integer timestep, and the embedding has no parameters.

struct Params {
  batch: u32,
  dim: u32,
  half: u32,
  flip: u32,   // 1: [cos, sin] (flip_sin_to_cos), 0: [sin, cos]
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> timesteps: array<f32>;
@group(0) @binding(2) var<storage, read> turns: array<f32>;   // [half, 2]: hi, lo
@group(0) @binding(3) var<storage, read_write> emb: array<f32>;  // [batch, dim]

// (sin, cos) of 2 pi r.
fn sincos_turns(r: f32) -> vec2f {
  let q = round(r * 4.0);
  let x = (r - q * 0.25) * 6.283185307179586;  // |x| <= pi / 4
  let x2 = x * x;
  let s = x * (1.0 - x2 / 6.0 * (1.0 - x2 / 20.0 * (1.0 - x2 / 42.0 * (1.0 - x2 / 72.0 * (1.0 - x2 / 110.0)))));
  let c = 1.0 - x2 / 2.0 * (1.0 - x2 / 12.0 * (1.0 - x2 / 30.0 * (1.0 - x2 / 56.0 * (1.0 - x2 / 90.0))));
  switch (i32(q) & 3) {
    case 0: { return vec2f(s, c); }
    case 1: { return vec2f(c, -s); }
    case 2: { return vec2f(-s, -c); }
    default: { return vec2f(-c, s); }
  }
}

@compute @workgroup_size(256)
fn timestep_embedding(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                      @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.batch * p.dim) { return; }
  let b = i / p.dim;
  let j = i % p.dim;
  if (j >= 2u * p.half) {
    emb[i] = 0.0;
    return;
  }
  let k = j % p.half;
  let t = timesteps[b];
  let whole = t * turns[2u * k];
  let r0 = (whole - floor(whole)) + t * turns[2u * k + 1u];
  let sc = sincos_turns(r0 - floor(r0));
  // The first half holds sin unless flipped.
  let first = j < p.half;
  emb[i] = select(sc.y, sc.x, first != (p.flip == 1u));
}
