// The engine worker: the only place in the app that holds a GPUDevice. It opens the device once, on first
// use, and reuses it for every call. Each call resolves with a result value; errors never cross as throws,
// so the page always has something to show. (navigator.gpu exists in dedicated workers in Chromium.)

import { expose } from 'comlink';
import { browserGpu, openGpu, WebGpuUnavailableError } from '../gpu/device';
import { GpuDeviceLostError, type Gpu } from '../gpu/gpu';
import type { EngineApi, EngineError, Failure, ProbeResult, SelfTestResult } from './api';
import { SELF_TEST_COUNT, SELF_TEST_TOLERANCE, selfTestInputs, siluMaxAbsError, siluOnGpu } from './self-test';

let opening: Promise<Gpu> | null = null;
/** Devices on which the self-test's pipeline has been compiled already. */
const compiledOn = new WeakSet<Gpu>();

/** The shared device, opened on first use. A failed open is forgotten so that the next call tries again. */
function sharedGpu(): Promise<Gpu> {
  if (!opening) {
    const attempt = openGpu(browserGpu());
    opening = attempt;
    attempt.catch(() => {
      if (opening === attempt) opening = null;
    });
  }
  return opening;
}

/** The shared device if it is still alive; a lost one is reported once and replaced on the next call. */
async function liveGpu(): Promise<Gpu> {
  const gpu = await sharedGpu();
  if (gpu.isLost) {
    forget(gpu);
    gpu.check(); // throws the GpuDeviceLostError with the browser's reason
  }
  return gpu;
}

/** Drops `gpu` from the cache (if it is still the cached one) so that the next call opens a new device. */
function forget(gpu: Gpu): void {
  const cached = opening;
  void cached?.then((current) => {
    if (current === gpu && opening === cached) opening = null;
  });
}

function failure(error: unknown): Failure {
  let kind: EngineError['kind'] = 'error';
  if (error instanceof WebGpuUnavailableError) kind = 'unavailable';
  else if (error instanceof GpuDeviceLostError) kind = 'device-lost';
  const message = error instanceof Error ? error.message : String(error);
  return { ok: false, error: { kind, message } };
}

function adapterName(gpu: Gpu): string {
  const { vendor, architecture, description } = gpu.adapter;
  return [vendor, architecture].filter(Boolean).join(' ') || description || 'unnamed adapter';
}

const api: EngineApi = {
  async probe(): Promise<ProbeResult> {
    try {
      const gpu = await liveGpu();
      return { ok: true, adapter: gpu.adapter, deviceFeatures: [...gpu.features].sort() };
    } catch (error) {
      return failure(error);
    }
  },

  async selfTest(): Promise<SelfTestResult> {
    let gpu: Gpu | null = null;
    try {
      gpu = await liveGpu();
      const x = selfTestInputs(SELF_TEST_COUNT);
      const firstRunCompiled = !compiledOn.has(gpu);
      const t0 = performance.now();
      const first = await siluOnGpu(gpu, x);
      const t1 = performance.now();
      compiledOn.add(gpu);
      const repeat = await siluOnGpu(gpu, x);
      const t2 = performance.now();
      // Math.max propagates NaN, so a non-finite value in either run fails the test.
      const maxAbsError = Math.max(siluMaxAbsError(x, first), siluMaxAbsError(x, repeat));
      return {
        ok: true,
        passed: maxAbsError <= SELF_TEST_TOLERANCE,
        op: 'SiLU',
        count: x.length,
        maxAbsError,
        tolerance: SELF_TEST_TOLERANCE,
        firstRunMs: t1 - t0,
        firstRunCompiled,
        repeatRunMs: t2 - t1,
        adapterName: adapterName(gpu),
      };
    } catch (error) {
      if (gpu?.isLost) forget(gpu);
      return failure(error);
    }
  },
};

expose(api);
