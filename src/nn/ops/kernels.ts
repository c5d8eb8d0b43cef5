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

/** Workgroups for `n` elements at 256 per workgroup, spread over two grid dimensions. */
export function grid1d(n: number): [number, number] {
  const groups = Math.ceil(n / 256);
  if (groups <= 65535) return [Math.max(groups, 1), 1];
  const x = 32768;
  return [x, Math.ceil(groups / x)];
}
