// Embedding lookup (CLIP's token embedding): forward gathers rows of a table by integer id, backward
// scatter-adds the output gradient back into the rows, without atomics.
//   forward   out[r, d] = table[ids[r], d]                         r < rows, d < dim
//   backward  dtable[v, d] = sum over r with ids[r] == v of dy[r, d]
// The backward is a gather too: the CPU, which owns the ids, sorts the positions by id (ops/embedding.ts)
// into `uniq` (the distinct ids), `offsets` (where each id's run starts in `positions`, plus the end) and
// `positions`, all packed into one u32 buffer `meta` = [uniq (U), offsets (U + 1), positions (rows)].
// One thread per (distinct id, column) then sums its run in ascending position order: deterministic, and
// no two threads ever write the same element. Rows of ids that never occur are zero (cleared beforehand).

struct Params {
  rows: u32,     // forward: number of ids / backward: number of distinct ids U
  dim: u32,      // row width D
  vocab: u32,    // table rows V
  total: u32,    // backward: number of positions (rows of dy)
}

@group(0) @binding(0) var<uniform> p: Params;

// ---- forward: one thread per output element; an out-of-range id (refused on the CPU) reads as zeros ----
@group(0) @binding(1) var<storage, read> fw_table: array<f32>;
@group(0) @binding(2) var<storage, read> fw_ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> fw_out: array<f32>;

@compute @workgroup_size(256)
fn embedding_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  if (i >= p.rows * p.dim) { return; }
  let r = i / p.dim;
  let d = i % p.dim;
  let id = fw_ids[r];
  fw_out[i] = select(0.0, fw_table[id * p.dim + d], id < p.vocab);
}

// ---- backward: one thread per (distinct id u, column d) ----
@group(0) @binding(1) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(2) var<storage, read> bw_meta: array<u32>;
@group(0) @binding(3) var<storage, read_write> bw_dtable: array<f32>;

@compute @workgroup_size(256)
fn embedding_backward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                      @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wg, nwg, lid);
  let distinct = p.rows;
  if (i >= distinct * p.dim) { return; }
  let u = i / p.dim;
  let d = i % p.dim;
  let id = bw_meta[u];
  let begin = bw_meta[distinct + u];
  let end = bw_meta[distinct + u + 1u];
  let positions = 2u * distinct + 1u;
  var acc = 0.0;
  for (var j = begin; j < end; j = j + 1u) {
    acc = acc + bw_dy[bw_meta[positions + j] * p.dim + d];
  }
  bw_dtable[id * p.dim + d] = acc;
}
