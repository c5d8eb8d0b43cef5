import { expect, it } from 'vitest';
import { u32 } from '../../src/gpu/gpu';
import { testGpu } from '../helpers/gpu';

it('a kernel that does not compile fails the next readback instead of returning stale data', async () => {
  const gpu = await testGpu();
  const broken = gpu.kernel({
    name: 'broken',
    entryPoint: 'main',
    code: `struct P { n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(1) fn main() { let active = 1.0; y[0] = active + f32(p.n); }`,
  });
  const y = gpu.upload(new Float32Array([7]));
  gpu.dispatch(broken, { params: [u32(1)], buffers: [y], workgroups: [1] });
  await expect(gpu.read(y)).rejects.toThrow(/WebGPU error.*reserved/s);
  // Reported once: later work goes on.
  expect(Array.from(await gpu.readF32(y, 1))).toEqual([7]);
});
