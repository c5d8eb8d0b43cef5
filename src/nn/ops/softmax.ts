// Row softmax over the last dimension (shaders/softmax.wgsl): forward next to its backward. For attention
// whose head is too wide for the fused kernel (the VAE's single 512-wide head): scores = Q K^T * scale by
// matmul, P = softmax(scores), out = P V by matmul.

import source from '../../../shaders/softmax.wgsl?raw';
import workgroupReduce from '../../../shaders/workgroup-reduce.wgsl?raw';
import { u32, type Gpu } from '../../gpu/gpu';
import { assertShape, Tensor } from '../tensor';
import { family, foldGrid, kernel } from './kernels';

const fam = family('softmax', workgroupReduce, source);

function rowsOf(what: string, t: Tensor): [number, number] {
  if (t.shape.length < 1) throw new Error(`${what}: needs at least one dimension`);
  const len = t.shape[t.shape.length - 1];
  if (len < 1) throw new Error(`${what}: empty rows in [${t.shape.join(', ')}]`);
  return [t.size / len, len];
}

function run(gpu: Gpu, entry: string, rows: number, len: number, buffers: GPUBuffer[]) {
  gpu.dispatch(kernel(gpu, fam, entry), { params: [u32(rows), u32(len)], buffers, workgroups: foldGrid(rows) });
}

/** y = softmax(x) along the last dimension. */
export function softmax(x: Tensor): Tensor {
  const [rows, len] = rowsOf('softmax', x);
  const y = Tensor.empty(x.gpu, x.shape);
  run(x.gpu, 'softmax_forward', rows, len, [x.buffer, y.buffer]);
  return y;
}

/** dx given the forward's output y and dy: dx = y * (dy - sum(dy * y)) per row. */
export function softmaxBackward(y: Tensor, dy: Tensor): Tensor {
  const [rows, len] = rowsOf('softmaxBackward', y);
  assertShape('softmaxBackward: dy', dy, y.shape);
  const dx = Tensor.empty(y.gpu, y.shape);
  run(y.gpu, 'softmax_backward', rows, len, [y.buffer, dy.buffer, dx.buffer]);
  return dx;
}
