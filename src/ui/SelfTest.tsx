// "Run self-test": SiLU on the GPU in the engine worker, compared with the same computed on the CPU.

import { formatError, formatMs } from './format';
import { useGpuStore } from './store';

export function SelfTest() {
  const state = useGpuStore((s) => s.selfTest);
  const runSelfTest = useGpuStore((s) => s.runSelfTest);
  const running = state.status === 'running';

  return (
    <div className="self-test">
      <h3>Self-test</h3>
      <p className="muted">
        Computes the SiLU activation on a few hundred values with the engine's own GPU kernel and compares the result
        with the same function computed on the CPU.
      </p>
      <button type="button" className="primary" onClick={() => void runSelfTest()} disabled={running} aria-busy={running}>
        {running ? 'Running self-test…' : 'Run self-test'}
      </button>

      <div className="self-test-result" role="status" aria-live="polite" data-state={resultState(state)}>
        {running && <p className="muted">Running on the GPU…</p>}
        {state.status === 'done' && (
          <div className={`notice ${state.result.passed ? 'notice-ok' : 'notice-error'}`}>
            <p className="verdict">
              {state.result.passed ? '✓ Passed' : '✗ Failed'}
              <span className="muted">
                {' '}
                — {state.result.op} on {state.result.count} values, {state.result.adapterName}
              </span>
            </p>
            <dl className="facts compact">
              <div>
                <dt>Max abs error</dt>
                <dd>
                  {formatError(state.result.maxAbsError)} <span className="muted">(tolerance {formatError(state.result.tolerance)})</span>
                </dd>
              </div>
              <div>
                <dt>First run</dt>
                <dd>
                  {formatMs(state.result.firstRunMs)}
                  {state.result.firstRunCompiled && <span className="muted"> (includes compiling the shader)</span>}
                </dd>
              </div>
              <div>
                <dt>Repeat run</dt>
                <dd>{formatMs(state.result.repeatRunMs)}</dd>
              </div>
            </dl>
            {!state.result.passed && (
              <p>
                The GPU's results differ from the CPU's. Training on this adapter would give wrong results; try updating
                your browser and graphics driver.
              </p>
            )}
          </div>
        )}
        {state.status === 'error' && (
          <div className="notice notice-error">
            <p className="verdict">✗ The self-test could not run</p>
            <p>{state.message}</p>
          </div>
        )}
      </div>
    </div>
  );
}

function resultState(state: ReturnType<typeof useGpuStore.getState>['selfTest']): string {
  if (state.status === 'done') return state.result.passed ? 'passed' : 'failed';
  return state.status;
}
