// Embedding lookup (shaders/embedding.wgsl): forward gather next to its backward scatter-add.
// Ids live in an IdTensor: a u32 GPU buffer for the kernels plus the host copy they came from, which the
// backward needs to sort positions by id on the CPU (so the GPU side needs no atomics).

import source from '../../../shaders/embedding.wgsl?raw';
import { u32, type Gpu } from '../../gpu/gpu';
import { assertShape, numel, Tensor } from '../tensor';
import { family, grid1d, kernel } from './kernels';

const fam = family('embedding', source);

/** Integer ids on the GPU (as u32) with their host copy. Whoever owns one releases it. */
export class IdTensor {
  private released = false;

  private constructor(
    readonly gpu: Gpu,
    readonly buffer: GPUBuffer,
    readonly data: Uint32Array,
    readonly shape: readonly number[],
  ) {}

  /** Uploads ids; each must be an integer in [0, vocab) when `vocab` is given, else a non-negative integer. */
  static from(gpu: Gpu, ids: ArrayLike<number>, shape: readonly number[], vocab?: number): IdTensor {
    if (ids.length !== numel(shape)) throw new Error(`IdTensor.from: ${ids.length} ids do not fill shape [${shape.join(', ')}]`);
    const data = new Uint32Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || (vocab !== undefined && id >= vocab) || id > 0xffffffff) {
        throw new Error(`IdTensor.from: id ${id} at position ${i} is not in [0, ${vocab ?? 2 ** 32})`);
      }
      data[i] = id;
    }
    // Never an empty binding: a zero-length upload still gets a pooled buffer of the minimum size.
    return new IdTensor(gpu, gpu.upload(data), data, shape);
  }

  get size(): number {
    return this.data.length;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.gpu.release(this.buffer);
  }
}

/** out [...ids.shape, D] = rows of table [V, D] picked by ids. */
export function embedding(table: Tensor, ids: IdTensor): Tensor {
  if (table.shape.length !== 2) throw new Error(`embedding: table must be [vocab, dim], got [${table.shape.join(', ')}]`);
  const [vocab, dim] = table.shape;
  for (let i = 0; i < ids.size; i++) {
    if (ids.data[i] >= vocab) throw new Error(`embedding: id ${ids.data[i]} at position ${i} is outside the table's ${vocab} rows`);
  }
  const gpu = table.gpu;
  const out = Tensor.empty(gpu, [...ids.shape, dim]);
  gpu.dispatch(kernel(gpu, fam, 'embedding_forward'), {
    params: [u32(ids.size), u32(dim), u32(vocab), u32(0)],
    buffers: [table.buffer, ids.buffer, out.buffer],
    workgroups: grid1d(out.size),
  });
  return out;
}

/**
 * The CPU half of the backward: positions grouped by id, ascending within each group, packed as the
 * kernel reads them: [distinct ids (U), offsets (U + 1), positions (rows)].
 */
export function groupPositionsById(ids: Uint32Array): { distinct: number; meta: Uint32Array } {
  const order = Array.from(ids.keys()).sort((a, b) => ids[a] - ids[b] || a - b);
  const uniq: number[] = [];
  const offsets: number[] = [];
  order.forEach((pos, j) => {
    if (j === 0 || ids[pos] !== ids[order[j - 1]]) {
      uniq.push(ids[pos]);
      offsets.push(j);
    }
  });
  offsets.push(order.length);
  return { distinct: uniq.length, meta: Uint32Array.from([...uniq, ...offsets, ...order]) };
}

/** Gradient of embedding w.r.t. the table: dtable [V, D], zero in rows no id picked. */
export function embeddingBackward(ids: IdTensor, dy: Tensor, tableShape: readonly number[]): Tensor {
  const [vocab, dim] = tableShape;
  assertShape('embeddingBackward: dy', dy, [...ids.shape, dim]);
  const gpu = dy.gpu;
  const dtable = Tensor.zeros(gpu, [vocab, dim]);
  if (ids.size === 0) return dtable;
  const { distinct, meta } = groupPositionsById(ids.data);
  const metaBuffer = gpu.upload(meta);
  gpu.dispatch(kernel(gpu, fam, 'embedding_backward'), {
    params: [u32(distinct), u32(dim), u32(vocab), u32(ids.size)],
    buffers: [dy.buffer, metaBuffer, dtable.buffer],
    workgroups: grid1d(distinct * dim),
  });
  // Safe before the dispatch runs: a later write to the buffer is ordered after it on the queue.
  gpu.release(metaBuffer);
  return dtable;
}
