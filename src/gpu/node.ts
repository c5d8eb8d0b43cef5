// Node entry point: WebGPU through Dawn (the `webgpu` npm package). Used by the CLI, tests and benchmarks.
// On a machine without a GPU, Dawn can run on SwiftShader's Vulkan driver (shipped by Debian's chromium
// package): when no adapter is found and no Vulkan driver was chosen (VK_ICD_FILENAMES), we retry with it.

import { existsSync } from 'node:fs';
import { openGpu, WebGpuUnavailableError } from './device';
import type { Gpu } from './gpu';

export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

export async function openNodeGpu(dawnOptions: string[] = []): Promise<Gpu> {
  const webgpu = await import('webgpu');
  Object.assign(globalThis, webgpu.globals);
  try {
    return await openGpu(webgpu.create(dawnOptions));
  } catch (e) {
    if (!(e instanceof WebGpuUnavailableError) || process.env.VK_ICD_FILENAMES || !existsSync(SWIFTSHADER_ICD)) {
      if (e instanceof WebGpuUnavailableError && !existsSync(SWIFTSHADER_ICD)) {
        throw new WebGpuUnavailableError(
          'no GPU adapter was found; on a machine without a GPU install Debian\'s chromium package, whose SwiftShader ' +
            `driver (${SWIFTSHADER_ICD}) runs WebGPU on the CPU`,
        );
      }
      throw e;
    }
    // The Vulkan loader reads these when Dawn creates its next instance.
    process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
    process.env.XDG_RUNTIME_DIR ??= '/tmp';
    return openGpu(webgpu.create(dawnOptions));
  }
}
