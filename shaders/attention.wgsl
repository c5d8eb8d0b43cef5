// Fused multi-head scaled-dot-product attention, forward and backward, FlashAttention-2 style: the Nq x Nk
// score matrix is never stored (SD1.5 self-attention at 512 px has N = 4096, 8 heads: 512 MiB of scores).
// Each thread owns one row and keeps it in registers while tiles of the other side stream through workgroup
// memory; scores exist only one tile at a time.
//
// Layout is what diffusers' to_q / to_k / to_v linears produce, so no transposes are needed:
//   q, out [B, Nq, H * d], k, v [B, Nk, H * d], head h in columns h*d .. h*d + d - 1;
//   lse (log-sum-exp of each row's scaled scores) and delta [B, H, Nq].
// With S = scale * Q K^T (per head), P = softmax(S) row-wise, O = P V:
//   forward   O_i = sum_j exp(S_ij - L_i) V_j,  L_i = log sum_j exp(S_ij), by online softmax
//   backward  dV_j = sum_i P_ij dO_i,  dP_ij = dO_i . V_j,  dS_ij = P_ij (dP_ij - delta_i),
//             delta_i = sum_j P_ij dP_ij = dO_i . O_i,  dQ_i = scale sum_j dS_ij K_j,  dK_j = scale sum_i dS_ij Q_i
// P_ij is rebuilt from L_i as exp(S_ij - L_i), so the backward needs neither the scores nor a running max.
// dK, dV (per key block, looping over queries) and dQ (per query block, looping over keys) are separate
// entry points so that every output element has exactly one writer: no atomics, no float races.
// Causal (CLIP's text encoder): query i sees keys j <= i, so whole tiles past the diagonal are skipped.
//
// Compile-time sizes come from `defines` (src/nn/ops/attention.ts):
//   HEAD_DIM     d, the length of the private per-row arrays
//   KEY_TILE     keys staged per step by attention_forward and attention_backward_dq (K and V tiles)
//   QUERY_TILE   queries staged per step by attention_backward_dkdv (Q and dO tiles plus lse and delta)
// both sized from d so that each entry point's workgroup memory stays within 16384 bytes.

struct Params {
  batch: u32,
  nq: u32,      // query rows
  nk: u32,      // key rows
  heads: u32,
  causal: u32,  // 1: query i sees keys j <= i (requires nq == nk)
  scale: f32,   // multiplies Q K^T, usually 1 / sqrt(d)
}

@group(0) @binding(0) var<uniform> p: Params;

// One thread per row (a query row in the forward and dQ, a key row in dK/dV). Must match ROWS in attention.ts.
const ROWS: u32 = 64u;
// Starting running max. Finite, since WGSL has no infinity literal; the first real score replaces it, and
// the first tile's rescale factor exp(NEG_BIG - score) is 0 applied to sums that are still 0.
const NEG_BIG: f32 = -3.0e38;

// Offset of element 0 of head h in row `row` of a [B, n, heads * HEAD_DIM] tensor.
fn head_offset(b: u32, row: u32, n: u32, h: u32) -> u32 {
  return (b * n + row) * p.heads * HEAD_DIM + h * HEAD_DIM;
}

// Keys of the tile [k0, k0 + tile) that query i sees: a prefix of the tile, cut by Nk and, if causal, by i.
fn keys_seen(i: u32, k0: u32, tile: u32) -> u32 {
  let n = min(tile, p.nk - k0);
  if (p.causal == 0u) { return n; }
  if (i < k0) { return 0u; }
  return min(n, i - k0 + 1u);
}

// First query of the tile [q0, q0 + tile) that sees key j: causal hides the queries before j.
fn first_query(j: u32, q0: u32) -> u32 {
  if (p.causal == 0u || j <= q0) { return 0u; }
  return j - q0;
}

// End of the keys a block of queries starting at q0 needs: causal stops after the block's last query.
fn key_end(q0: u32) -> u32 {
  if (p.causal == 0u) { return p.nk; }
  return min(p.nk, q0 + ROWS);
}

// ---- forward: one workgroup per (query block, head, batch); each thread keeps one query row's running
//      max m, sum l and unnormalised output acc in registers while K and V tiles stream through shared memory.
//      Writes out and lse. ----
@group(0) @binding(1) var<storage, read> fwd_q: array<f32>;
@group(0) @binding(2) var<storage, read> fwd_k: array<f32>;
@group(0) @binding(3) var<storage, read> fwd_v: array<f32>;
@group(0) @binding(4) var<storage, read_write> fwd_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> fwd_lse: array<f32>;

var<workgroup> fwd_tile_k: array<f32, KEY_TILE * HEAD_DIM>;
var<workgroup> fwd_tile_v: array<f32, KEY_TILE * HEAD_DIM>;

@compute @workgroup_size(ROWS)
fn attention_forward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wg.z;
  let h = wg.y;
  let q0 = wg.x * ROWS;
  let i = q0 + lid;
  // Threads past the last row still stage tiles and meet every barrier; they just see no keys.
  let in_range = i < p.nq;
  let base = head_offset(b, min(i, p.nq - 1u), p.nq, h);

  // q is pre-multiplied by the scale, so a score is one dot product.
  var q: array<f32, HEAD_DIM>;
  var acc: array<f32, HEAD_DIM>;
  var s: array<f32, KEY_TILE>;
  for (var c = 0u; c < HEAD_DIM; c++) {
    q[c] = fwd_q[base + c] * p.scale;
    acc[c] = 0.0;
  }
  var m = NEG_BIG;
  var l = 0.0;

  let k_end = key_end(q0);
  for (var k0 = 0u; k0 < k_end; k0 += KEY_TILE) {
    workgroupBarrier();  // everyone is done with the previous tile before it is overwritten
    for (var t = lid; t < KEY_TILE * HEAD_DIM; t += ROWS) {
      let key = k0 + t / HEAD_DIM;
      var kv = 0.0;
      var vv = 0.0;
      if (key < p.nk) {
        let o = head_offset(b, key, p.nk, h) + t % HEAD_DIM;
        kv = fwd_k[o];
        vv = fwd_v[o];
      }
      fwd_tile_k[t] = kv;
      fwd_tile_v[t] = vv;
    }
    workgroupBarrier();

    let n = select(0u, keys_seen(i, k0, KEY_TILE), in_range);
    if (n > 0u) {
      // Scores of the tile first, so the running sum and output are rescaled once per tile, not per key.
      var tile_max = m;
      for (var j = 0u; j < n; j++) {
        var dot = 0.0;
        for (var c = 0u; c < HEAD_DIM; c++) { dot += q[c] * fwd_tile_k[j * HEAD_DIM + c]; }
        s[j] = dot;
        tile_max = max(tile_max, dot);
      }
      let rescale = exp(m - tile_max);
      l *= rescale;
      for (var c = 0u; c < HEAD_DIM; c++) { acc[c] *= rescale; }
      for (var j = 0u; j < n; j++) {
        let pj = exp(s[j] - tile_max);
        l += pj;
        for (var c = 0u; c < HEAD_DIM; c++) { acc[c] += pj * fwd_tile_v[j * HEAD_DIM + c]; }
      }
      m = tile_max;
    }
  }

  if (in_range) {
    // The row's largest score contributed exp(0) = 1 to l, so l >= 1: no division by zero, log(l) >= 0.
    let inv = 1.0 / l;
    for (var c = 0u; c < HEAD_DIM; c++) { fwd_out[base + c] = acc[c] * inv; }
    fwd_lse[(b * p.heads + h) * p.nq + i] = m + log(l);
  }
}

// ---- backward, step 1: delta[b, h, i] = dO_i . O_i over the head's d columns. One thread per (b, h, i),
//      the same flat order as delta's [B, H, Nq] layout. ----
@group(0) @binding(1) var<storage, read> bd_dout: array<f32>;
@group(0) @binding(2) var<storage, read> bd_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> bd_delta: array<f32>;

@compute @workgroup_size(256)
fn attention_backward_delta(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                            @builtin(local_invocation_index) lid: u32) {
  let t = flat_index(wg, nwg, lid);
  if (t >= p.batch * p.heads * p.nq) { return; }
  let i = t % p.nq;
  let h = (t / p.nq) % p.heads;
  let b = t / (p.nq * p.heads);
  let base = head_offset(b, i, p.nq, h);
  var acc = 0.0;
  for (var c = 0u; c < HEAD_DIM; c++) { acc += bd_dout[base + c] * bd_out[base + c]; }
  bd_delta[t] = acc;
}

// ---- backward, step 2: dK and dV. One workgroup per (key block, head, batch), one thread per key row j
//      accumulating dK_j and dV_j in registers while tiles of Q (pre-scaled), dO, lse and delta stream
//      through shared memory. Causal: queries before the block's first key see none of it, so the loop
//      starts there. ----
@group(0) @binding(1) var<storage, read> bkv_q: array<f32>;
@group(0) @binding(2) var<storage, read> bkv_k: array<f32>;
@group(0) @binding(3) var<storage, read> bkv_v: array<f32>;
@group(0) @binding(4) var<storage, read> bkv_dout: array<f32>;
@group(0) @binding(5) var<storage, read> bkv_lse: array<f32>;
@group(0) @binding(6) var<storage, read> bkv_delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> bkv_dk: array<f32>;
@group(0) @binding(8) var<storage, read_write> bkv_dv: array<f32>;

var<workgroup> bkv_tile_q: array<f32, QUERY_TILE * HEAD_DIM>;
var<workgroup> bkv_tile_do: array<f32, QUERY_TILE * HEAD_DIM>;
var<workgroup> bkv_tile_lse: array<f32, QUERY_TILE>;
var<workgroup> bkv_tile_delta: array<f32, QUERY_TILE>;

@compute @workgroup_size(ROWS)
fn attention_backward_dkdv(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wg.z;
  let h = wg.y;
  let k0 = wg.x * ROWS;
  let j = k0 + lid;
  let in_range = j < p.nk;
  let base = head_offset(b, min(j, p.nk - 1u), p.nk, h);
  let row_stats = (b * p.heads + h) * p.nq;

  var kj: array<f32, HEAD_DIM>;
  var vj: array<f32, HEAD_DIM>;
  var dk: array<f32, HEAD_DIM>;
  var dv: array<f32, HEAD_DIM>;
  for (var c = 0u; c < HEAD_DIM; c++) {
    kj[c] = bkv_k[base + c];
    vj[c] = bkv_v[base + c];
    dk[c] = 0.0;
    dv[c] = 0.0;
  }

  let q_start = select(0u, k0, p.causal != 0u);
  for (var q0 = q_start; q0 < p.nq; q0 += QUERY_TILE) {
    workgroupBarrier();
    for (var t = lid; t < QUERY_TILE * HEAD_DIM; t += ROWS) {
      let row = q0 + t / HEAD_DIM;
      var qv = 0.0;
      var dov = 0.0;
      if (row < p.nq) {
        let o = head_offset(b, row, p.nq, h) + t % HEAD_DIM;
        qv = bkv_q[o] * p.scale;
        dov = bkv_dout[o];
      }
      bkv_tile_q[t] = qv;
      bkv_tile_do[t] = dov;
    }
    for (var t = lid; t < QUERY_TILE; t += ROWS) {
      let row = q0 + t;
      var lv = 0.0;
      var dl = 0.0;
      if (row < p.nq) {
        lv = bkv_lse[row_stats + row];
        dl = bkv_delta[row_stats + row];
      }
      bkv_tile_lse[t] = lv;
      bkv_tile_delta[t] = dl;
    }
    workgroupBarrier();

    if (in_range) {
      let n = min(QUERY_TILE, p.nq - q0);
      for (var r = first_query(j, q0); r < n; r++) {
        var s = 0.0;
        var dp = 0.0;
        for (var c = 0u; c < HEAD_DIM; c++) {
          s += bkv_tile_q[r * HEAD_DIM + c] * kj[c];
          dp += bkv_tile_do[r * HEAD_DIM + c] * vj[c];
        }
        let pij = exp(s - bkv_tile_lse[r]);
        let ds = pij * (dp - bkv_tile_delta[r]);
        // The staged q already carries the scale, which is exactly dS/dK's factor.
        for (var c = 0u; c < HEAD_DIM; c++) {
          dv[c] += pij * bkv_tile_do[r * HEAD_DIM + c];
          dk[c] += ds * bkv_tile_q[r * HEAD_DIM + c];
        }
      }
    }
  }

  if (in_range) {
    for (var c = 0u; c < HEAD_DIM; c++) {
      bkv_dk[base + c] = dk[c];
      bkv_dv[base + c] = dv[c];
    }
  }
}

// ---- backward, step 3: dQ. One workgroup per (query block, head, batch), one thread per query row i,
//      the forward's loop again over K and V tiles, with P rebuilt from lse instead of a running max. ----
@group(0) @binding(1) var<storage, read> bq_q: array<f32>;
@group(0) @binding(2) var<storage, read> bq_k: array<f32>;
@group(0) @binding(3) var<storage, read> bq_v: array<f32>;
@group(0) @binding(4) var<storage, read> bq_dout: array<f32>;
@group(0) @binding(5) var<storage, read> bq_lse: array<f32>;
@group(0) @binding(6) var<storage, read> bq_delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> bq_dq: array<f32>;

var<workgroup> bq_tile_k: array<f32, KEY_TILE * HEAD_DIM>;
var<workgroup> bq_tile_v: array<f32, KEY_TILE * HEAD_DIM>;

@compute @workgroup_size(ROWS)
fn attention_backward_dq(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wg.z;
  let h = wg.y;
  let q0 = wg.x * ROWS;
  let i = q0 + lid;
  let in_range = i < p.nq;
  let base = head_offset(b, min(i, p.nq - 1u), p.nq, h);
  let stat = (b * p.heads + h) * p.nq + min(i, p.nq - 1u);
  let lse = bq_lse[stat];
  let delta = bq_delta[stat];

  var q: array<f32, HEAD_DIM>;
  var dout: array<f32, HEAD_DIM>;
  var dq: array<f32, HEAD_DIM>;
  for (var c = 0u; c < HEAD_DIM; c++) {
    q[c] = bq_q[base + c] * p.scale;  // scaled exactly as in the forward, so exp(s - lse) matches its P
    dout[c] = bq_dout[base + c];
    dq[c] = 0.0;
  }

  let k_end = key_end(q0);
  for (var k0 = 0u; k0 < k_end; k0 += KEY_TILE) {
    workgroupBarrier();
    for (var t = lid; t < KEY_TILE * HEAD_DIM; t += ROWS) {
      let key = k0 + t / HEAD_DIM;
      var kv = 0.0;
      var vv = 0.0;
      if (key < p.nk) {
        let o = head_offset(b, key, p.nk, h) + t % HEAD_DIM;
        kv = bq_k[o];
        vv = bq_v[o];
      }
      bq_tile_k[t] = kv;
      bq_tile_v[t] = vv;
    }
    workgroupBarrier();

    let n = select(0u, keys_seen(i, k0, KEY_TILE), in_range);
    for (var j = 0u; j < n; j++) {
      var s = 0.0;
      var dp = 0.0;
      for (var c = 0u; c < HEAD_DIM; c++) {
        s += q[c] * bq_tile_k[j * HEAD_DIM + c];
        dp += dout[c] * bq_tile_v[j * HEAD_DIM + c];
      }
      let ds = exp(s - lse) * (dp - delta);
      for (var c = 0u; c < HEAD_DIM; c++) { dq[c] += ds * bq_tile_k[j * HEAD_DIM + c]; }
    }
  }

  if (in_range) {
    for (var c = 0u; c < HEAD_DIM; c++) { bq_dq[base + c] = dq[c] * p.scale; }
  }
}
