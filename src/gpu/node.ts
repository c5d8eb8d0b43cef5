// Node entry point: WebGPU through Dawn (the `webgpu` npm package). Used by the CLI, tests and benchmarks.
// On a machine without a GPU, Dawn can run on SwiftShader's Vulkan driver (shipped by Debian's chromium
// package): when no adapter is found and no Vulkan driver was chosen (VK_ICD_FILENAMES), we retry with it.
// When there is still no adapter, the message says which piece is missing (the Vulkan loader, a driver)
// and what to install, instead of a bare "no adapter".

import { existsSync } from 'node:fs';
import { openGpu, WebGpuUnavailableError } from './device';
import type { Gpu } from './gpu';

export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

/** Where distributions put the Vulkan loader that Dawn loads on Linux. */
const VULKAN_LOADER_PATHS = [
  '/usr/lib/x86_64-linux-gnu/libvulkan.so.1',
  '/usr/lib/aarch64-linux-gnu/libvulkan.so.1',
  '/usr/lib64/libvulkan.so.1',
  '/usr/lib/libvulkan.so.1',
  '/lib/x86_64-linux-gnu/libvulkan.so.1',
  '/lib/aarch64-linux-gnu/libvulkan.so.1',
];

/** What this machine has of the pieces Dawn needs on Linux. */
export interface VulkanSetup {
  platform: string;
  /** The Vulkan loader (libvulkan.so.1, Debian's libvulkan1) is installed. */
  loader: boolean;
  /** SwiftShader's Vulkan driver (Debian's chromium package) is installed. */
  swiftshader: boolean;
  /** VK_ICD_FILENAMES as set by the user (a driver chosen by hand), if any. */
  icdFiles?: string;
}

export function vulkanSetup(env: Record<string, string | undefined> = process.env): VulkanSetup {
  return {
    platform: process.platform,
    loader: VULKAN_LOADER_PATHS.some((p) => existsSync(p)),
    swiftshader: existsSync(SWIFTSHADER_ICD),
    icdFiles: env.VK_ICD_FILENAMES,
  };
}

/** Why no adapter was found, in words, with what to install (the reason part of WebGpuUnavailableError). */
export function noAdapterReason(s: VulkanSetup): string {
  if (s.platform !== 'linux') return 'Dawn found no GPU adapter; check that the GPU driver is installed and up to date';
  if (!s.loader) {
    return (
      'Dawn found no GPU adapter because the Vulkan loader (libvulkan.so.1) is not installed; install it ' +
      `(Debian/Ubuntu: apt-get install libvulkan1)${s.swiftshader ? '' : ", and on a machine without a GPU also Debian's chromium package for SwiftShader's CPU driver"}`
    );
  }
  if (s.icdFiles) {
    const missing = s.icdFiles.split(':').filter((f) => f && !existsSync(f));
    return missing.length
      ? `Dawn found no GPU adapter: VK_ICD_FILENAMES names ${missing.join(', ')}, which does not exist; fix or unset it`
      : `Dawn found no GPU adapter with the Vulkan driver VK_ICD_FILENAMES names (${s.icdFiles}); check that driver, or unset the variable`;
  }
  if (!s.swiftshader) {
    return (
      'Dawn found no GPU adapter: no Vulkan driver works on this machine. Install your GPU\'s Vulkan driver ' +
      `(mesa-vulkan-drivers, or the vendor's), or, on a machine without a GPU, Debian's chromium package, whose SwiftShader driver (${SWIFTSHADER_ICD}) runs WebGPU on the CPU`
    );
  }
  return `Dawn found no GPU adapter, even with SwiftShader's driver (${SWIFTSHADER_ICD}); reinstall the chromium package, or check the Vulkan loader (libvulkan1)`;
}

export async function openNodeGpu(dawnOptions: string[] = []): Promise<Gpu> {
  const webgpu = await import('webgpu');
  Object.assign(globalThis, webgpu.globals);
  const chosen = process.env.VK_ICD_FILENAMES;
  try {
    return await openGpu(webgpu.create(dawnOptions));
  } catch (e) {
    if (!(e instanceof WebGpuUnavailableError)) throw e;
  }
  if (!chosen && existsSync(SWIFTSHADER_ICD)) {
    // The Vulkan loader reads these when Dawn creates its next instance.
    process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
    process.env.XDG_RUNTIME_DIR ??= '/tmp';
    try {
      return await openGpu(webgpu.create(dawnOptions));
    } catch (e) {
      if (!(e instanceof WebGpuUnavailableError)) throw e;
    }
  }
  throw new WebGpuUnavailableError(noAdapterReason({ ...vulkanSetup(), icdFiles: chosen }));
}
