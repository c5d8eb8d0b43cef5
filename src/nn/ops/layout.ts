// Layout changes (shaders/layout.wgsl). A batched 2-D transpose, and the NCHW <-> token-row views built on
// it: a feature map [B, C, H, W] is [B, C, HW] in memory, its tokens [B, HW, C] are the transpose.

import source from '../../../shaders/layout.wgsl?raw';
import { u32 } from '../../gpu/gpu';
import { numel, Tensor } from '../tensor';
import { family, foldGrid, kernel } from './kernels';

const fam = family('layout', source);
const T = 16;

/** x [..., R, C] -> y [..., C, R]; the leading dimensions are a batch. */
export function transpose(x: Tensor): Tensor {
  if (x.shape.length < 2) throw new Error(`transpose: needs at least 2 dimensions, got [${x.shape.join(', ')}]`);
  const lead = x.shape.slice(0, -2);
  const [rows, cols] = x.shape.slice(-2);
  const batch = numel(lead);
  const y = Tensor.empty(x.gpu, [...lead, cols, rows]);
  const tilesC = Math.ceil(cols / T);
  const tilesR = Math.ceil(rows / T);
  x.gpu.dispatch(kernel(x.gpu, fam, 'transpose'), {
    params: [u32(rows), u32(cols), u32(tilesC), u32(tilesR), u32(batch)],
    buffers: [x.buffer, y.buffer],
    workgroups: foldGrid(tilesC * tilesR * batch),
  });
  return y;
}

/** The backward of transpose: dx = transpose(dy). */
export function transposeBackward(dy: Tensor): Tensor {
  return transpose(dy);
}

/** [B, C, H, W] (or [B, C, ...spatial]) -> tokens [B, H*W, C]. */
export function channelsToTokens(x: Tensor): Tensor {
  const [b, c, ...spatial] = x.shape;
  if (x.shape.length < 3) throw new Error(`channelsToTokens: expected [B, C, ...spatial], got [${x.shape.join(', ')}]`);
  return transpose(x.view([b, c, numel(spatial)]));
}

/** Tokens [B, H*W, C] -> [B, C, ...spatial], spatial given (e.g. [H, W]). */
export function tokensToChannels(x: Tensor, spatial: readonly number[]): Tensor {
  const [b, n, c] = x.shape;
  if (x.shape.length !== 3 || n !== numel(spatial)) {
    throw new Error(`tokensToChannels: [${x.shape.join(', ')}] is not [B, ${numel(spatial)}, C]`);
  }
  return transpose(x).reshape([b, c, ...spatial]);
}
