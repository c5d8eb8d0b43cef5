// Workgroup-wide reductions of one value per thread (256 threads), as a tree in workgroup memory; shared
// by reduce.wgsl and softmax.wgsl. Every thread must call them (they hold barriers) and gets the result.

var<workgroup> partial: array<f32, 256>;

fn workgroup_sum(lid: u32, value: f32) -> f32 {
  partial[lid] = value;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride / 2u) {
    if (lid < stride) { partial[lid] = partial[lid] + partial[lid + stride]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier();  // everyone has read the result before `partial` is reused
  return total;
}

fn workgroup_max(lid: u32, value: f32) -> f32 {
  partial[lid] = value;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride = stride / 2u) {
    if (lid < stride) { partial[lid] = max(partial[lid], partial[lid + stride]); }
    workgroupBarrier();
  }
  let top = partial[0];
  workgroupBarrier();
  return top;
}
