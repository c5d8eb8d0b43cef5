// Helpers shared by every kernel family; prepended to each family's source by src/nn/ops/kernels.ts.

// Element-wise kernels run 256 threads per workgroup on a 2-D grid, since one dimension holds at most
// 65535 workgroups and SD1.5 tensors hold far more than 65535 * 256 elements.
const WG: u32 = 256u;

fn flat_index(wg: vec3u, nwg: vec3u, lid: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + lid;
}

fn sigmoid(x: f32) -> f32 {
  return 1.0 / (1.0 + exp(-x));
}

// WGSL has no erf. Numerical Recipes' erfc approximation (fractional error below 1.2e-7) is accurate to
// f32 precision over the whole real line.
fn erf_f32(x: f32) -> f32 {
  let z = abs(x);
  let t = 1.0 / (1.0 + 0.5 * z);
  let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
          t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
          t * (-0.82215223 + t * 0.17087277)))))))));
  return select(r - 1.0, 1.0 - r, x >= 0.0);
}

// Frozen weights may be stored as float16, two to a 32-bit word (element 2i in the low half), read with
// unpack2x16float, which needs no shader-f16 extension. Kernels that read weights declare those buffers as
// array<u32> and read element i through this, with `half` an override of the pipeline: a float32 tensor
// is the same words reinterpreted (bitcast, exact).
fn load_weight(word: u32, i: u32, half: bool) -> f32 {
  if (half) { return unpack2x16float(word)[i & 1u]; }
  return bitcast<f32>(word);
}

fn weight_word(i: u32, half: bool) -> u32 {
  return select(i, i >> 1u, half);
}
