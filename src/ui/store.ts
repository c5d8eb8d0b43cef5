// UI state for the GPU panel: what the engine worker reported about the adapter, and the self-test.
// The store talks to the engine only through an EngineClient (comlink underneath); it never sees a GPUDevice.

import { create } from 'zustand';
import type { AdapterReport, EngineError, EngineErrorKind, SelfTestOk } from '../worker/api';
import type { EngineClient } from '../worker/client';
import { engine } from './engine';

export type ProbeState =
  | { status: 'idle' }
  | { status: 'loading' }
  | { status: 'ready'; adapter: AdapterReport; deviceFeatures: string[] }
  /** No WebGPU in this browser, or no adapter. */
  | { status: 'unavailable'; message: string }
  /** WebGPU exists but something went wrong: device lost, worker crash, timeout, validation error. */
  | { status: 'error'; kind: EngineErrorKind; message: string };

export type SelfTestState =
  | { status: 'idle' }
  | { status: 'running' }
  | { status: 'done'; result: SelfTestOk }
  | { status: 'error'; kind: EngineErrorKind; message: string };

export interface GpuStore {
  probe: ProbeState;
  selfTest: SelfTestState;
  /** Asks the engine for the adapter; does nothing while a probe is under way. */
  runProbe(): Promise<void>;
  /** Runs the self-test; does nothing while one is running. */
  runSelfTest(): Promise<void>;
}

function probeFailure(error: EngineError): ProbeState {
  return error.kind === 'unavailable'
    ? { status: 'unavailable', message: error.message }
    : { status: 'error', kind: error.kind, message: error.message };
}

export function createGpuStore(engine: () => EngineClient) {
  return create<GpuStore>()((set, get) => ({
    probe: { status: 'idle' },
    selfTest: { status: 'idle' },

    async runProbe() {
      if (get().probe.status === 'loading') return;
      set({ probe: { status: 'loading' }, selfTest: { status: 'idle' } });
      const result = await engine().probe();
      if (result.ok) {
        set({ probe: { status: 'ready', adapter: result.adapter, deviceFeatures: result.deviceFeatures } });
      } else {
        set({ probe: probeFailure(result.error) });
      }
    },

    async runSelfTest() {
      if (get().selfTest.status === 'running') return;
      set({ selfTest: { status: 'running' } });
      const result = await engine().selfTest();
      if (result.ok) {
        set({ selfTest: { status: 'done', result } });
        return;
      }
      set({ selfTest: { status: 'error', ...result.error } });
      // A lost device or a dead worker invalidates what the panel shows about the adapter.
      if (result.error.kind !== 'error') set({ probe: probeFailure(result.error) });
    },
  }));
}

/** The app's store, backed by the app's engine client. */
export const useGpuStore = createGpuStore(engine);
