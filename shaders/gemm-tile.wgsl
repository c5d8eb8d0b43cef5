// The tiled multiply that matmul.wgsl and conv2d.wgsl (an implicit GEMM) share: a workgroup of SIDE x SIDE
// threads computes a TILE x TILE output tile (TILE = 4 SIDE), each thread 4x4 outputs at rows ty + SIDE i
// and columns tx + SIDE j, reading K in steps of TK = 16 from two tiles staged in workgroup memory.
//
// SIDE is picked per dispatch by gemmPlan() in matmul.ts:
//   16: 256 threads, 64x64 tile, 2 x 16 x 65 floats = 8320 bytes of workgroup memory. For big products.
//    8:  64 threads, 32x32 tile, 2 x 16 x 33 floats = 4224 bytes. When M or N is at most 32 (LoRA ranks,
//        attention heads, single-pixel convolutions), where most of a 64-wide tile would be zeros, and for
//        outputs of at most four 64x64 tiles, which get four times the workgroups this way.
// Each kernel also has a `_direct` twin with the same thread-to-output map and no workgroup memory, for
// K <= TK (a single staged slice would be used once).

override SIDE: u32 = 16u;
const TK: u32 = 16u;
override TILE: u32 = 4u * SIDE;
// Row pitch of the staged tiles: TILE + 1, so that the threads storing one k-run of a row-major slice
// (k fastest) land in different banks.
override PITCH: u32 = TILE + 1u;
// Threads per workgroup, and the tile elements each of them stages per K step (TILE * TK / THREADS).
override THREADS: u32 = SIDE * SIDE;
override LOADS: u32 = 4u * TK / SIDE;
override TILE_FLOATS: u32 = TK * PITCH;

var<workgroup> tile_a: array<f32, TILE_FLOATS>;  // [TK][PITCH]: tile_a[k * PITCH + m] = op(A)[m0 + m, k0 + k]
var<workgroup> tile_b: array<f32, TILE_FLOATS>;  // [TK][PITCH]: tile_b[k * PITCH + n] = op(B)[k0 + k, n0 + n]

// A thread's 4x4 outputs: acc[i][j] for row ty + SIDE i and column tx + SIDE j. multiply_add is written
// out with constant indices only: a loop over i and j would index this array with variables, which a CPU
// driver (SwiftShader, 4 threads to a SIMD register) turns into per-thread gathers and scatters, several
// times slower than the arithmetic itself. GPU compilers unroll such loops either way.
var<private> acc: array<vec4f, 4>;

// acc[i][j] += a[i] * b[j]: one k of a thread's 4x4 outputs.
fn multiply_add(a: vec4f, b: vec4f) {
  acc[0] = fma(vec4f(a.x), b, acc[0]);
  acc[1] = fma(vec4f(a.y), b, acc[1]);
  acc[2] = fma(vec4f(a.z), b, acc[2]);
  acc[3] = fma(vec4f(a.w), b, acc[3]);
}

// acc[i][j] += sum_k tile_a[k, ty + SIDE i] * tile_b[k, tx + SIDE j]
fn multiply_tiles(tx: u32, ty: u32) {
  for (var k = 0u; k < TK; k = k + 1u) {
    let ra = k * PITCH + ty;
    let rb = k * PITCH + tx;
    let a = vec4f(tile_a[ra], tile_a[ra + SIDE], tile_a[ra + 2u * SIDE], tile_a[ra + 3u * SIDE]);
    let b = vec4f(tile_b[rb], tile_b[rb + SIDE], tile_b[rb + 2u * SIDE], tile_b[rb + 3u * SIDE]);
    multiply_add(a, b);
  }
}
