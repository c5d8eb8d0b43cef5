// Storage buffers are recycled by size class instead of created and destroyed per op: creating GPU buffers
// is slow, and a training step allocates the same shapes every time. Sizes are rounded up to a class (at
// most 1/8 waste above 2 KiB, multiples of 256 bytes below), so a buffer may be larger than asked; kernels
// are always given their true sizes.

import { formatBytes } from '../util/format';

export function sizeClass(byteLength: number): number {
  const size = Math.max(256, Math.ceil(byteLength / 4) * 4);
  const step = 2 ** Math.max(8, Math.floor(Math.log2(size)) - 3);
  return Math.ceil(size / step) * step;
}

export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  private readonly live = new Set<GPUBuffer>();
  /** Bytes currently handed out, and the most ever handed out at once. */
  bytesInUse = 0;
  peakBytesInUse = 0;
  /** Bytes of the buffers the pool holds (in use or idle), and the most it ever held: the device's cost. */
  bytesAllocated = 0;
  peakBytesAllocated = 0;

  constructor(private readonly device: GPUDevice) {}

  acquire(byteLength: number): GPUBuffer {
    const size = sizeClass(byteLength);
    const max = this.device.limits.maxBufferSize;
    if (size > max) {
      throw new Error(
        `A tensor of ${formatBytes(byteLength)} exceeds this GPU's largest buffer ` +
          `(${formatBytes(max)}). Lower the resolution or batch size.`,
      );
    }
    let buffer = this.free.get(size)?.pop();
    if (!buffer) {
      buffer = this.device.createBuffer({
        size,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      });
      this.bytesAllocated += size;
      this.peakBytesAllocated = Math.max(this.peakBytesAllocated, this.bytesAllocated);
    }
    this.live.add(buffer);
    this.bytesInUse += size;
    this.peakBytesInUse = Math.max(this.peakBytesInUse, this.bytesInUse);
    return buffer;
  }

  /** Returns a buffer for reuse. Safe right away: later writes are ordered after earlier reads on the queue. */
  release(buffer: GPUBuffer): void {
    if (!this.live.delete(buffer)) throw new Error('BufferPool.release: buffer is not from this pool or was released twice');
    this.bytesInUse -= buffer.size;
    let list = this.free.get(buffer.size);
    if (!list) this.free.set(buffer.size, (list = []));
    list.push(buffer);
  }

  /** Destroys the idle buffers, giving their memory back to the device. */
  trim(): void {
    for (const list of this.free.values()) {
      for (const b of list) {
        this.bytesAllocated -= b.size;
        b.destroy();
      }
    }
    this.free.clear();
  }

  destroyAll(): void {
    this.trim();
    for (const b of this.live) b.destroy();
    this.live.clear();
    this.bytesInUse = 0;
    this.bytesAllocated = 0;
  }
}
