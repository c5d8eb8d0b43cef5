// WGSL sources, imported as text by Vite (browser, worker) and Vitest (Node), and the grid helpers ops share.

import common from '../../../shaders/common.wgsl?raw';
import type { Gpu, Kernel, KernelSpec } from '../../gpu/gpu';

export type ShaderFamily = { name: string; code: string };

/** A kernel family's source with the shared helpers prepended, and any shared pieces it uses. */
export function family(name: string, ...code: string[]): ShaderFamily {
  return { name, code: [common, ...code].join('\n') };
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
