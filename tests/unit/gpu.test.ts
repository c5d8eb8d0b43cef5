import { describe, expect, it } from 'vitest';
import { f32, GpuDeviceLostError, u32 } from '../../src/gpu/gpu';
import { openNodeGpu } from '../../src/gpu/node';
import { sizeClass } from '../../src/gpu/pool';
import { testGpu } from '../helpers/gpu';

const AXPY = `
struct Params { n: u32, a: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn axpy(@builtin(global_invocation_id) id: vec3u) {
  if (id.x < p.n) { y[id.x] = p.a * x[id.x] + y[id.x] + f32(SHIFT); }
}`;

describe('GPU runtime', () => {
  it('reports the adapter with its limits and features', async () => {
    const gpu = await testGpu();
    expect(gpu.adapter.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 2 ** 20);
    // Limits are raised to what the adapter offers, not left at WebGPU's defaults.
    expect(gpu.limits.maxStorageBufferBindingSize).toBe(gpu.adapter.limits.maxStorageBufferBindingSize);
    expect(Array.isArray(gpu.adapter.features)).toBe(true);
  });

  it('compiles each kernel variant once, and passes parameters and defines', async () => {
    const gpu = await testGpu();
    const spec = { name: 'axpy', code: AXPY, entryPoint: 'axpy', defines: { SHIFT: 0 } };
    const k1 = gpu.kernel(spec);
    expect(gpu.kernel({ ...spec })).toBe(k1);
    const k2 = gpu.kernel({ ...spec, defines: { SHIFT: 10 } });
    expect(k2).not.toBe(k1);
    const n = 100;
    const x = gpu.upload(Float32Array.from({ length: n }, (_, i) => i));
    const y = gpu.upload(new Float32Array(n).fill(1));
    gpu.dispatch(k1, { params: [u32(n), f32(2)], buffers: [x, y], workgroups: [Math.ceil(n / 64)] });
    gpu.dispatch(k2, { params: [u32(n), f32(-1)], buffers: [x, y], workgroups: [Math.ceil(n / 64)] });
    const out = await gpu.readF32(y, n);
    // y = 1 + 2i, then y = -i + y + 10 = i + 11
    expect(Array.from(out)).toEqual(Array.from({ length: n }, (_, i) => i + 11));
  });

  it('pools storage buffers by size class', async () => {
    const gpu = await testGpu();
    expect(sizeClass(1)).toBe(256);
    expect(sizeClass(1000)).toBe(1024);
    expect(sizeClass(100_001)).toBeLessThanOrEqual(100_004 * 1.125);
    const a = gpu.buffer(5000);
    gpu.release(a);
    const b = gpu.buffer(4900);
    expect(b).toBe(a);
    gpu.release(b);
    expect(() => gpu.release(b)).toThrow(/released twice/);
  });

  it('refuses a tensor larger than the adapter allows, with a message', async () => {
    const gpu = await testGpu();
    expect(() => gpu.buffer(gpu.limits.maxBufferSize * 2)).toThrow(/exceeds this GPU's largest buffer/);
  });

  it('surfaces validation errors from checked()', async () => {
    const gpu = await testGpu();
    const k = gpu.kernel({ name: 'axpy', code: AXPY, entryPoint: 'axpy', defines: { SHIFT: 0 } });
    const x = gpu.buffer(64);
    // Binding 2 missing: the bind group does not match the pipeline's layout.
    await expect(gpu.checked(() => gpu.dispatch(k, { params: [u32(1), f32(1)], buffers: [x], workgroups: [1] }))).rejects.toThrow(
      /validation/i,
    );
  });

  it('times GPU work with timestamp queries where present', async () => {
    const gpu = await testGpu();
    const k = gpu.kernel({ name: 'axpy', code: AXPY, entryPoint: 'axpy', defines: { SHIFT: 0 } });
    const n = 1 << 16;
    const x = gpu.buffer(n * 4);
    const y = gpu.buffer(n * 4);
    const t = await gpu.time(() => gpu.dispatch(k, { params: [u32(n), f32(1)], buffers: [x, y], workgroups: [n / 64] }));
    expect(t.wallMs).toBeGreaterThan(0);
    if (gpu.features.has('timestamp-query')) expect(t.gpuMs).toBeGreaterThanOrEqual(0);
    else expect(t.gpuMs).toBeNull();
  });

  it('turns device loss into an error with its reason, never a hang', async () => {
    const gpu = await openNodeGpu();
    const buffer = gpu.upload(new Float32Array([1, 2, 3]));
    gpu.device.destroy();
    await expect(gpu.read(buffer).then(() => gpu.read(buffer))).rejects.toBeInstanceOf(GpuDeviceLostError);
    expect(gpu.isLost).toBe(true);
    expect(() => gpu.check()).toThrow(/device was lost \(destroyed/);
  });
});
