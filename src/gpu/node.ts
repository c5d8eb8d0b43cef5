// Node entry point: WebGPU through Dawn (the `webgpu` npm package). Used by the CLI, tests and benchmarks.
// On a machine without a GPU, Dawn runs on SwiftShader's Vulkan driver (shipped by Debian's chromium):
// set VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json, as the test set-up does.

import { openGpu } from './device';
import type { Gpu } from './gpu';

export async function openNodeGpu(dawnOptions: string[] = []): Promise<Gpu> {
  const webgpu = await import('webgpu');
  Object.assign(globalThis, webgpu.globals);
  return openGpu(webgpu.create(dawnOptions));
}
