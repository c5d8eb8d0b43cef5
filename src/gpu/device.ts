// Device acquisition: the same code serves the browser (navigator.gpu) and Node (the `webgpu` package, Dawn).
// We ask for the adapter's real limits, not WebGPU's defaults: SD1.5 needs buffers far larger than the
// 128 MiB default binding size, and the adapter usually offers more.

import { Gpu } from './gpu';

/** Optional features the engine uses when the adapter has them. */
export const WANTED_FEATURES = ['shader-f16', 'timestamp-query', 'subgroups'] as const;

/** Limits that decide what fits; raised to the adapter's maximum. */
export const WANTED_LIMITS = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupsPerDimension',
] as const;

export interface AdapterReport {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  features: string[];
  limits: Record<string, number>;
}

export class WebGpuUnavailableError extends Error {
  constructor(reason: string) {
    super(
      `WebGPU is not available: ${reason}. Use a browser with WebGPU (Chrome or Edge 113+, or Firefox/Safari with ` +
        `WebGPU enabled); on Linux start Chrome with --enable-unsafe-webgpu --enable-features=Vulkan.`,
    );
    this.name = 'WebGpuUnavailableError';
  }
}

export function describeAdapter(adapter: GPUAdapter): AdapterReport {
  const info = adapter.info;
  const limits: Record<string, number> = {};
  for (const name of WANTED_LIMITS) limits[name] = Number(adapter.limits[name]);
  limits.minUniformBufferOffsetAlignment = adapter.limits.minUniformBufferOffsetAlignment;
  return {
    vendor: info?.vendor ?? '',
    architecture: info?.architecture ?? '',
    device: info?.device ?? '',
    description: info?.description ?? '',
    isFallbackAdapter: Boolean((info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter),
    features: [...adapter.features].sort(),
    limits,
  };
}

export async function requestAdapter(gpu: GPU | undefined, powerPreference: GPUPowerPreference = 'high-performance') {
  if (!gpu) throw new WebGpuUnavailableError('this environment has no navigator.gpu');
  const adapter = await gpu.requestAdapter({ powerPreference });
  if (!adapter) throw new WebGpuUnavailableError('no GPU adapter was found (is hardware acceleration disabled?)');
  return adapter;
}

/** Opens a device with every wanted feature the adapter has and its maximum limits. */
export async function openGpu(gpu: GPU | undefined, options: { powerPreference?: GPUPowerPreference } = {}): Promise<Gpu> {
  const adapter = await requestAdapter(gpu, options.powerPreference);
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
  const requiredLimits: Record<string, number> = {};
  for (const name of WANTED_LIMITS) requiredLimits[name] = Number(adapter.limits[name]);
  const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  return new Gpu(device, describeAdapter(adapter), gpu);
}

/** The browser's GPU entry point, or undefined where there is none. */
export function browserGpu(): GPU | undefined {
  return typeof navigator !== 'undefined' && 'gpu' in navigator ? navigator.gpu : undefined;
}
