// A Tensor is a float32 GPU buffer with a shape (row-major, NCHW for images). Ops allocate their outputs
// from the pool; whoever owns a Tensor releases it when done.

import type { Gpu } from '../gpu/gpu';

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export class Tensor {
  private released = false;

  constructor(
    readonly gpu: Gpu,
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
  ) {}

  get size(): number {
    return numel(this.shape);
  }

  /** An uninitialised tensor (its contents are whatever the pooled buffer held). */
  static empty(gpu: Gpu, shape: readonly number[]): Tensor {
    return new Tensor(gpu, gpu.buffer(numel(shape) * 4), shape);
  }

  static zeros(gpu: Gpu, shape: readonly number[]): Tensor {
    const t = Tensor.empty(gpu, shape);
    gpu.clear(t.buffer, Math.ceil((t.size * 4) / 4) * 4);
    return t;
  }

  static from(gpu: Gpu, data: ArrayLike<number>, shape: readonly number[]): Tensor {
    if (data.length !== numel(shape)) {
      throw new Error(`Tensor.from: ${data.length} values do not fill shape [${shape.join(', ')}]`);
    }
    const t = Tensor.empty(gpu, shape);
    gpu.write(t.buffer, data instanceof Float32Array ? data : Float32Array.from(data));
    return t;
  }

  async read(): Promise<Float32Array> {
    return this.gpu.readF32(this.buffer, this.size);
  }

  /** The same buffer seen with another shape of the same size. */
  view(shape: readonly number[]): Tensor {
    if (numel(shape) !== this.size) throw new Error(`view: [${shape}] does not match [${this.shape}]`);
    return new Tensor(this.gpu, this.buffer, shape);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.gpu.release(this.buffer);
  }
}

export function assertShape(name: string, t: Tensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`${name}: expected shape [${shape.join(', ')}], got [${t.shape.join(', ')}]`);
  }
}
