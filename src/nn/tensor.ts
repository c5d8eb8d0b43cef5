// A Tensor is a float32 GPU buffer with a shape (row-major, NCHW for images). Ops allocate their outputs
// from the pool; whoever owns a Tensor releases it when done.

import type { Gpu } from '../gpu/gpu';
import { packHalf, unpackHalf } from './half';

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** A GPU buffer shared by a tensor and its views; back to the pool when the last of them is released. */
class Storage {
  refs = 1;
  constructor(readonly buffer: GPUBuffer) {}
}

export class Tensor {
  private released = false;
  private readonly storage: Storage;
  /** Set on trainable leaves (LoRA matrices) and, by the tape, on everything computed from them. */
  requiresGrad = false;

  constructor(
    readonly gpu: Gpu,
    buffer: GPUBuffer | Storage,
    readonly shape: readonly number[],
    /** False for a borrowed alias (view()), which never releases the buffer. */
    private readonly owning = true,
    /**
     * 'f16': a frozen weight stored as packed float16 pairs, which only the kernels that read weights
     * (matmul operands, conv2d weights) accept; everything else is float32.
     */
    readonly dtype: 'f32' | 'f16' = 'f32',
  ) {
    this.storage = buffer instanceof Storage ? buffer : new Storage(buffer);
  }

  get buffer(): GPUBuffer {
    return this.storage.buffer;
  }

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

  /** A frozen weight as packed float16 (half the memory); values are rounded to the nearest float16. */
  static fromHalf(gpu: Gpu, data: ArrayLike<number>, shape: readonly number[]): Tensor {
    if (data.length !== numel(shape)) {
      throw new Error(`Tensor.fromHalf: ${data.length} values do not fill shape [${shape.join(', ')}]`);
    }
    const words = packHalf(data);
    const t = new Tensor(gpu, gpu.buffer(words.byteLength), shape, true, 'f16');
    gpu.write(t.buffer, words);
    return t;
  }

  async read(): Promise<Float32Array> {
    if (this.dtype === 'f16') return unpackHalf(new Uint32Array(await this.gpu.read(this.buffer, Math.ceil(this.size / 2) * 4)), this.size);
    return this.gpu.readF32(this.buffer, this.size);
  }

  /**
   * The same buffer with another shape of the same size, as a borrowed alias: it owns nothing, its
   * release() does nothing, and it is valid only while its owner lives. For passing a tensor to an op
   * under another shape.
   */
  view(shape: readonly number[] = this.shape): Tensor {
    this.checkSize('view', shape);
    return new Tensor(this.gpu, this.storage, shape, false, this.dtype);
  }

  /** Moves ownership to a tensor of another shape; this one counts as released afterwards. */
  reshape(shape: readonly number[]): Tensor {
    this.checkSize('reshape', shape);
    if (!this.owning) return this.view(shape);
    this.released = true;
    return new Tensor(this.gpu, this.storage, shape, true, this.dtype);
  }

  /** A further owning reference to the same buffer (for example a gradient handed to two holders). */
  ref(shape: readonly number[] = this.shape): Tensor {
    this.checkSize('ref', shape);
    this.storage.refs++;
    return new Tensor(this.gpu, this.storage, shape, true, this.dtype);
  }

  /** Gives this reference up; the buffer returns to the pool when its last owning reference is released. */
  release(): void {
    if (this.released || !this.owning) return;
    this.released = true;
    if (--this.storage.refs === 0) this.gpu.release(this.storage.buffer);
  }

  private checkSize(what: string, shape: readonly number[]): void {
    if (numel(shape) !== this.size) throw new Error(`${what}: [${shape}] does not match [${this.shape}]`);
    if (this.released && this.owning) throw new Error(`${what}: the tensor was released`);
  }
}

export function assertShape(name: string, t: Tensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`${name}: expected shape [${shape.join(', ')}], got [${t.shape.join(', ')}]`);
  }
}
