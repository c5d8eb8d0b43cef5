// Layout changes. Batched 2-D transpose: x [B, R, C] -> y [B, C, R], y[b, c, r] = x[b, r, c]. Its
// backward is the same kernel with R and C swapped (the transpose back). Used to turn NCHW feature maps
// ([B, C, HW]) into token rows ([B, HW, C]) for the VAE's attention and back.
// One 16 x 16 workgroup per tile: it reads the tile row by row and writes it column by column through
// shared memory, so both the reads and the writes of neighbouring threads touch neighbouring addresses.
// The tile row is padded to 17 so the column-wise reads of shared memory hit different banks.

const T: u32 = 16u;

struct Params {
  rows: u32,        // R
  cols: u32,        // C
  tiles_c: u32,     // ceil(C / 16)
  tiles_r: u32,     // ceil(R / 16)
  batch: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

var<workgroup> tile: array<f32, 272>;  // 16 x 17

@group(0) @binding(1) var<storage, read> tr_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> tr_y: array<f32>;

@compute @workgroup_size(16, 16)
fn transpose(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_id) l: vec3u) {
  // Tiles are numbered ((b * tiles_r + tr) * tiles_c + tc) over a 2-D grid; spare workgroups leave.
  let t = wg.y * nwg.x + wg.x;
  let per_batch = p.tiles_c * p.tiles_r;
  if (t >= per_batch * p.batch) { return; }  // uniform across the workgroup
  let b = t / per_batch;
  let tr = (t % per_batch) / p.tiles_c;
  let tc = t % p.tiles_c;
  let base = b * p.rows * p.cols;
  let r_in = tr * T + l.y;
  let c_in = tc * T + l.x;
  if (r_in < p.rows && c_in < p.cols) { tile[l.y * 17u + l.x] = tr_x[base + r_in * p.cols + c_in]; }
  workgroupBarrier();
  let c_out = tc * T + l.y;
  let r_out = tr * T + l.x;
  if (c_out < p.cols && r_out < p.rows) { tr_y[base + c_out * p.rows + r_out] = tile[l.x * 17u + l.y]; }
}
