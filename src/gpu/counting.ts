// A Gpu over a stand-in device whose buffers hold no memory and whose kernels never run: the buffer pool
// still counts every allocation, so running the engine's real code on it measures what that code would
// allocate (the memory plans), at any model size, on any machine, in seconds. Reads return zeros.

import type { AdapterReport } from './device';
import { Gpu } from './gpu';

export function countingGpu(features: readonly string[] = []): Gpu {
  const g = globalThis as { GPUBufferUsage?: unknown };
  g.GPUBufferUsage ??= { MAP_READ: 1, MAP_WRITE: 2, COPY_SRC: 4, COPY_DST: 8, INDEX: 16, VERTEX: 32, UNIFORM: 64, STORAGE: 128 };
  const device = {
    features: new Set<string>(features),
    limits: { maxBufferSize: 2 ** 40 },
    lost: new Promise(() => {}),
    createBuffer: ({ size }: { size: number }) => ({ size, destroy() {} }),
  };
  const gpu = new Gpu(device as unknown as GPUDevice, {} as AdapterReport);
  const dummy = { key: 'counted', name: 'counted', pipeline: {} as GPUComputePipeline };
  gpu.kernel = () => dummy;
  gpu.dispatch = () => {};
  gpu.copy = () => {};
  gpu.clear = () => {};
  gpu.write = () => {};
  gpu.sync = async () => {};
  gpu.read = async (buffer: GPUBuffer, byteLength = buffer.size) => new ArrayBuffer(byteLength);
  return gpu;
}
