// The tiled multiply that matmul.wgsl and conv2d.wgsl (an implicit GEMM) share: a workgroup of 16x16
// threads computes a 64x64 output tile, each thread 4x4 outputs, reading K in steps of 16 from two tiles
// staged in workgroup memory (2 x 16 x 65 floats = 8320 bytes).

const TILE: u32 = 64u;
const TK: u32 = 16u;
// Row pitch of the staged tiles: 65, not 64, so that the 16 threads storing one k-run of a row-major
// slice (k fastest) land in different banks.
const PITCH: u32 = 65u;

var<workgroup> tile_a: array<f32, 1040>;  // [TK][PITCH]: tile_a[k * PITCH + m] = op(A)[m0 + m, k0 + k]
var<workgroup> tile_b: array<f32, 1040>;  // [TK][PITCH]: tile_b[k * PITCH + n] = op(B)[k0 + k, n0 + n]
var<private> acc: array<f32, 16>;

// acc[i * 4 + j] += sum_k tile_a[k, ty + 16i] * tile_b[k, tx + 16j]
fn multiply_tiles(tx: u32, ty: u32) {
  for (var k = 0u; k < TK; k = k + 1u) {
    var a: array<f32, 4>;
    var b: array<f32, 4>;
    for (var i = 0u; i < 4u; i = i + 1u) {
      a[i] = tile_a[k * PITCH + ty + 16u * i];
      b[i] = tile_b[k * PITCH + tx + 16u * i];
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
      for (var j = 0u; j < 4u; j = j + 1u) {
        acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
      }
    }
  }
}
