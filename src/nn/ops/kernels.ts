// WGSL sources, imported as text by Vite (browser, worker) and Vitest (Node), and the grid helpers ops share.

import common from '../../../shaders/common.wgsl?raw';
import type { Gpu, Kernel, KernelSpec } from '../../gpu/gpu';

export type ShaderFamily = { name: string; code: string };

/** A kernel family's source with the shared helpers prepended, and any shared pieces it uses. */
export function family(name: string, ...code: string[]): ShaderFamily {
  return { name, code: [common, ...code].join('\n') };
}

/**
 * Whether this adapter runs the CPU kernels: matmul-vec4.wgsl, conv2d-vec4.wgsl and norm.wgsl's `_serial`
 * twins, written for a software adapter (SwiftShader, or any the browser marks as a fallback), where
 * workgroup memory and barriers cost far more than they save. GPUs keep the tiled and workgroup kernels.
 * `cpuKernels.enabled` exists only so that a benchmark can time both on the same adapter in one run.
 */
export const cpuKernels = { enabled: true };

export function isCpuAdapter(gpu: Gpu): boolean {
  const a = gpu.adapter;
  return a.isFallbackAdapter === true || /swiftshader/i.test(`${a.architecture} ${a.description} ${a.device}`);
}

export function useCpuKernels(gpu: Gpu): boolean {
  return cpuKernels.enabled && isCpuAdapter(gpu);
}

export function kernel(
  gpu: Gpu,
  fam: ShaderFamily,
  entryPoint: string,
  options: Pick<KernelSpec, 'defines' | 'constants'> = {},
): Kernel {
  return gpu.kernel({ name: fam.name, code: fam.code, entryPoint, ...options });
}

/**
 * `count` workgroups over a 2-D grid, since one grid dimension holds at most 65535: the kernels number them
 * y * nwg.x + x and skip the spare ones of the last row.
 */
export function foldGrid(count: number): [number, number] {
  if (count <= 65535) return [count, 1]; // 0: nothing to do, and dispatch() records nothing
  const x = 32768;
  if (count > x * 65535) throw new Error(`${count} workgroups exceed one dispatch's ${x} x 65535`);
  return [x, Math.ceil(count / x)];
}

/** Workgroups for `n` elements (threads) at `perGroup` per workgroup, folded as foldGrid does. */
export function grid1d(n: number, perGroup = 256): [number, number] {
  return foldGrid(Math.ceil(n / perGroup));
}
