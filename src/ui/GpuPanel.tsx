// The GPU panel: what the engine worker found (adapter, features, limits), or why there is no WebGPU,
// and the self-test. All GPU work happens in the worker; this component only renders the store.

import { useEffect } from 'react';
import type { EngineErrorKind } from '../worker/api';
import { AdapterDetails } from './AdapterDetails';
import { SelfTest } from './SelfTest';
import { useGpuStore } from './store';
import { WebGpuHelp } from './WebGpuHelp';

const ERROR_TITLES: Record<EngineErrorKind, string> = {
  unavailable: 'The GPU could not be opened',
  'device-lost': 'The GPU device was lost',
  input: 'The GPU could not be opened',
  'storage-full': 'The GPU could not be opened',
  timeout: 'The GPU did not answer',
  worker: 'The GPU engine stopped',
  error: 'The GPU could not be opened',
};

export function GpuPanel() {
  const probe = useGpuStore((s) => s.probe);
  const runProbe = useGpuStore((s) => s.runProbe);

  useEffect(() => {
    if (useGpuStore.getState().probe.status === 'idle') void runProbe();
  }, [runProbe]);

  return (
    <section className="card gpu-panel" aria-labelledby="gpu-heading" aria-busy={probe.status === 'loading'} data-state={probe.status}>
      <h2 id="gpu-heading">GPU</h2>

      {(probe.status === 'idle' || probe.status === 'loading') && (
        <p className="muted" role="status">
          <span className="spinner" aria-hidden="true" /> Looking for a WebGPU adapter…
        </p>
      )}

      {probe.status === 'ready' && (
        <>
          <AdapterDetails adapter={probe.adapter} />
          <SelfTest />
        </>
      )}

      {probe.status === 'unavailable' && <WebGpuHelp reason={probe.message} onRetry={runProbe} />}

      {probe.status === 'error' && (
        <div className="notice notice-error" role="alert">
          <h3>{ERROR_TITLES[probe.kind]}</h3>
          <p>{probe.message}</p>
          <button type="button" onClick={() => void runProbe()}>
            Try again
          </button>
        </div>
      )}
    </section>
  );
}
