import { defineConfig } from 'vitest/config';

// Tests run WebGPU in Node through Dawn. Without a GPU, Dawn uses SwiftShader's Vulkan driver, which
// Debian's chromium package ships; set it up here unless the caller chose a driver already.
export function useSwiftShaderUnlessSet(): void {
  process.env.VK_ICD_FILENAMES ??= '/usr/lib/chromium/vk_swiftshader_icd.json';
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
}

useSwiftShaderUnlessSet();

export default defineConfig({
  test: {
    include: ['tests/unit/**/*.test.ts', 'tests/e2e/**/*.test.ts'],
    // Each test file gets its own process: Dawn's native device is not shared across worker threads.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
