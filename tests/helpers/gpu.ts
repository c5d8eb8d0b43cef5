// One Dawn device per test file (each file runs in its own process), opened on first use and destroyed
// after the file's last test. The afterAll hook is registered when a test file imports this module.

import { afterAll } from 'vitest';
import type { Gpu } from '../../src/gpu/gpu';
import { openNodeGpu } from '../../src/gpu/node';

let shared: Promise<Gpu> | null = null;

export function testGpu(): Promise<Gpu> {
  return (shared ??= openNodeGpu());
}

afterAll(async () => {
  if (!shared) return;
  const gpu = await shared;
  shared = null;
  await gpu.sync();
  gpu.destroy();
});
