// The runtime every op goes through: pipelines compiled once and cached, storage buffers from a pool,
// small uniform parameter blocks per dispatch, one command encoder batching many dispatches, readback,
// and device loss turned into an error instead of a hang. It knows nothing about models.

import type { AdapterReport } from './device';
import { BufferPool } from './pool';

export type Param = { type: 'u32' | 'i32' | 'f32'; value: number };
export const u32 = (value: number): Param => ({ type: 'u32', value });
export const i32 = (value: number): Param => ({ type: 'i32', value });
export const f32 = (value: number): Param => ({ type: 'f32', value });

export interface KernelSpec {
  /** Name used in error messages and timings, e.g. "matmul". */
  name: string;
  /** WGSL source of the kernel family. */
  code: string;
  entryPoint: string;
  /** `const NAME = value;` declarations prepended to the source (for sizes that must be compile-time). */
  defines?: Record<string, number>;
  /** Pipeline-overridable constants (`override` in WGSL). */
  constants?: Record<string, number>;
}

export interface Kernel {
  readonly key: string;
  readonly name: string;
  readonly pipeline: GPUComputePipeline;
}

export interface DispatchArgs {
  params?: Param[];
  /** Storage buffers, bound in order at binding 1, 2, ... (binding 0 is the parameter block). */
  buffers: GPUBuffer[];
  workgroups: [number, number?, number?];
}

export class GpuDeviceLostError extends Error {
  constructor(readonly reason: string, message: string) {
    super(
      `The GPU device was lost (${reason}${message ? `: ${message}` : ''}). ` +
        `Your data is kept; reload the model to continue. If this repeats, lower the resolution or batch size.`,
    );
    this.name = 'GpuDeviceLostError';
  }
}

export class Gpu {
  readonly pool: BufferPool;
  readonly features: ReadonlySet<string>;
  private readonly pipelines = new Map<string, Kernel>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private uniformsInFlight: GPUBuffer[] = [];
  private readonly freeUniforms = new Map<number, GPUBuffer[]>();
  private lostInfo: GpuDeviceLostError | null = null;
  private readonly lostPromise: Promise<never>;
  /** Validation errors reported asynchronously by the device, newest last. */
  readonly uncapturedErrors: string[] = [];
  private reportedErrors = 0;

  /**
   * `instance` is the GPU object the device came from. Holding it matters: in Node, Dawn tears down the
   * whole WebGPU instance when that object is garbage-collected, and the next GPU call crashes the process.
   */
  constructor(
    readonly device: GPUDevice,
    readonly adapter: AdapterReport,
    private readonly instance?: GPU,
  ) {
    this.features = new Set(device.features as unknown as Iterable<string>);
    this.pool = new BufferPool(device);
    this.lostPromise = device.lost.then((info) => {
      this.lostInfo = new GpuDeviceLostError(info.reason ?? 'unknown', info.message ?? '');
      throw this.lostInfo;
    });
    this.lostPromise.catch(() => undefined); // observed through read() and check(), never unhandled
    device.addEventListener?.('uncapturederror', (event) => {
      const e = (event as GPUUncapturedErrorEvent).error;
      this.uncapturedErrors.push(e?.message ?? String(e));
    });
  }

  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  get isLost(): boolean {
    return this.lostInfo !== null;
  }

  /** Throws if the device was lost; call before starting work. */
  check(): void {
    if (this.lostInfo) throw this.lostInfo;
  }

  /**
   * Throws the device errors reported since the last call (a shader that failed to compile, a bind group
   * that does not fit its pipeline): such work was skipped, so its results must not be used. Checked at
   * every sync and readback, the points where results are used.
   */
  checkErrors(): void {
    if (this.uncapturedErrors.length === this.reportedErrors) return;
    const fresh = this.uncapturedErrors.slice(this.reportedErrors);
    this.reportedErrors = this.uncapturedErrors.length;
    throw new Error(`WebGPU error (the GPU work was not done): ${fresh.join('\n')}`);
  }

  /** Compiles a kernel variant once; later calls with the same spec return the cached pipeline. */
  kernel(spec: KernelSpec): Kernel {
    const key = `${spec.name}:${spec.entryPoint}:${JSON.stringify(spec.defines ?? {})}:${JSON.stringify(spec.constants ?? {})}`;
    const cached = this.pipelines.get(key);
    if (cached) return cached;
    const prelude = Object.entries(spec.defines ?? {})
      .map(([name, value]) => `const ${name}: u32 = ${value}u;`)
      .join('\n');
    const module = this.device.createShaderModule({ label: spec.name, code: `${prelude}\n${spec.code}` });
    const pipeline = this.device.createComputePipeline({
      label: `${spec.name}.${spec.entryPoint}`,
      layout: 'auto',
      compute: { module, entryPoint: spec.entryPoint, constants: spec.constants },
    });
    const kernel = { key, name: `${spec.name}.${spec.entryPoint}`, pipeline };
    this.pipelines.set(key, kernel);
    return kernel;
  }

  /** Records one dispatch into the current command encoder. Nothing runs until submit() or read(). */
  dispatch(kernel: Kernel, args: DispatchArgs): void {
    this.check();
    const [x, y = 1, z = 1] = args.workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    const max = this.device.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max) {
      throw new Error(`${kernel.name}: grid ${x}x${y}x${z} exceeds the adapter's ${max} workgroups per dimension`);
    }
    const entries: GPUBindGroupEntry[] = [];
    if (args.params && args.params.length > 0) {
      entries.push({ binding: 0, resource: { buffer: this.uniform(args.params) } });
    }
    args.buffers.forEach((buffer, i) => entries.push({ binding: i + 1, resource: { buffer } }));
    const bindGroup = this.device.createBindGroup({ layout: kernel.pipeline.getBindGroupLayout(0), entries });
    const pass = this.computePass();
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
  }

  /** Sends everything recorded so far to the GPU. */
  submit(): void {
    if (!this.encoder) return;
    this.endPass();
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    const used = this.uniformsInFlight;
    this.uniformsInFlight = [];
    // A uniform block may be reused only once the GPU has finished the work that reads it.
    this.device.queue.onSubmittedWorkDone().then(() => {
      for (const buffer of used) this.freeList(buffer.size).push(buffer);
    });
  }

  /** Waits until the GPU has finished all submitted work (or the device is lost). */
  async sync(): Promise<void> {
    this.submit();
    await Promise.race([this.device.queue.onSubmittedWorkDone(), this.lostPromise]);
    this.check();
    this.checkErrors();
  }

  /** A storage buffer of at least `byteLength` bytes from the pool. */
  buffer(byteLength: number): GPUBuffer {
    return this.pool.acquire(byteLength);
  }

  release(buffer: GPUBuffer): void {
    this.pool.release(buffer);
  }

  /**
   * Gives the pool's idle buffers back to the device. Recorded work is submitted first: a destroyed buffer
   * may not appear in a later submit, but work already submitted finishes with it.
   */
  trimPool(): void {
    this.submit();
    this.pool.trim();
  }

  /** A pooled storage buffer holding `data`. */
  upload(data: ArrayBufferView): GPUBuffer {
    const buffer = this.buffer(data.byteLength);
    this.write(buffer, data);
    return buffer;
  }

  write(buffer: GPUBuffer, data: ArrayBufferView, byteOffset = 0): void {
    // writeBuffer is ordered with submits on the queue: recorded work that reads `buffer` must go first.
    this.submit();
    this.device.queue.writeBuffer(buffer, byteOffset, data.buffer, data.byteOffset, data.byteLength);
  }

  /** Records a copy between buffers, ordered with the dispatches around it. */
  copy(src: GPUBuffer, dst: GPUBuffer, byteLength: number, srcOffset = 0, dstOffset = 0): void {
    this.endPass();
    this.commandEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, byteLength);
  }

  /** Records zero-filling a buffer range. */
  clear(buffer: GPUBuffer, byteLength?: number): void {
    this.endPass();
    this.commandEncoder().clearBuffer(buffer, 0, byteLength);
  }

  /** Copies `byteLength` bytes of `buffer` back to the CPU, after all recorded work. */
  async read(buffer: GPUBuffer, byteLength = buffer.size, byteOffset = 0): Promise<ArrayBuffer> {
    this.check();
    const size = Math.ceil(byteLength / 4) * 4;
    const staging = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.endPass();
    this.commandEncoder().copyBufferToBuffer(buffer, byteOffset, staging, 0, size);
    this.submit();
    try {
      await Promise.race([staging.mapAsync(GPUMapMode.READ), this.lostPromise]);
      this.checkErrors();
      return staging.getMappedRange().slice(0, byteLength);
    } finally {
      if (!this.lostInfo) staging.unmap();
      staging.destroy();
    }
  }

  async readF32(buffer: GPUBuffer, length: number, offset = 0): Promise<Float32Array> {
    return new Float32Array(await this.read(buffer, length * 4, offset * 4));
  }

  /**
   * Times the GPU work `fn` records, with timestamp queries where the adapter has them: an empty pass that
   * stamps the start, `fn`'s passes, and an empty pass that stamps the end. `gpuMs` is null without
   * 'timestamp-query'; `wallMs` always covers recording, submission and completion.
   */
  async time(fn: () => void): Promise<{ gpuMs: number | null; wallMs: number }> {
    this.submit();
    const t0 = performance.now();
    const querySet = this.features.has('timestamp-query')
      ? this.device.createQuerySet({ type: 'timestamp', count: 2 })
      : null;
    if (querySet) this.stampPass({ querySet, beginningOfPassWriteIndex: 0 });
    fn();
    let resolved: GPUBuffer | null = null;
    if (querySet) {
      this.stampPass({ querySet, endOfPassWriteIndex: 1 });
      resolved = this.device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      this.commandEncoder().resolveQuerySet(querySet, 0, 2, resolved, 0);
    }
    await this.sync();
    const wallMs = performance.now() - t0;
    if (!querySet || !resolved) return { gpuMs: null, wallMs };
    const stamps = new BigUint64Array(await this.read(resolved, 16));
    resolved.destroy();
    querySet.destroy();
    return { gpuMs: Number(stamps[1] - stamps[0]) / 1e6, wallMs };
  }

  /** Runs `fn` and throws the first validation or out-of-memory error it caused. */
  async checked<T>(fn: () => T): Promise<T> {
    this.device.pushErrorScope('out-of-memory');
    this.device.pushErrorScope('validation');
    const result = fn();
    this.submit();
    const validation = await this.device.popErrorScope();
    const oom = await this.device.popErrorScope();
    if (oom) throw new Error(`GPU out of memory: ${oom.message}. Lower the resolution, batch or rank.`);
    if (validation) throw new Error(`WebGPU validation error: ${validation.message}`);
    return result;
  }

  destroy(): void {
    this.submit();
    this.pool.destroyAll();
    for (const list of this.freeUniforms.values()) for (const b of list) b.destroy();
    this.freeUniforms.clear();
    this.device.destroy();
  }

  private uniform(params: Param[]): GPUBuffer {
    const size = Math.max(16, Math.ceil((params.length * 4) / 16) * 16);
    const data = new ArrayBuffer(size);
    const view = new DataView(data);
    params.forEach((p, i) => {
      if (p.type === 'f32') view.setFloat32(i * 4, p.value, true);
      else if (p.type === 'i32') view.setInt32(i * 4, p.value, true);
      else {
        if (!Number.isInteger(p.value) || p.value < 0 || p.value > 0xffffffff) {
          throw new Error(`u32 parameter ${i} out of range: ${p.value}`);
        }
        view.setUint32(i * 4, p.value, true);
      }
    });
    const buffer =
      this.freeList(size).pop() ??
      this.device.createBuffer({ size, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    // Written before the encoder that reads it is submitted; the queue orders the two.
    this.device.queue.writeBuffer(buffer, 0, data);
    this.uniformsInFlight.push(buffer);
    return buffer;
  }

  private freeList(size: number): GPUBuffer[] {
    let list = this.freeUniforms.get(size);
    if (!list) this.freeUniforms.set(size, (list = []));
    return list;
  }

  private commandEncoder(): GPUCommandEncoder {
    return (this.encoder ??= this.device.createCommandEncoder());
  }

  private computePass(): GPUComputePassEncoder {
    return (this.pass ??= this.commandEncoder().beginComputePass());
  }

  private stampPass(timestampWrites: GPUComputePassTimestampWrites): void {
    this.endPass();
    this.commandEncoder().beginComputePass({ timestampWrites }).end();
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = null;
  }
}
