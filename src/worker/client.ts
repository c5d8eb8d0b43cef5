// The page's handle on the engine worker. Whatever happens in the worker (its script fails to load, it
// crashes, the GPU hangs), every call here resolves with a result the UI can show: a comlink call to a dead
// worker would otherwise wait forever. A worker that failed or timed out is terminated and replaced by a
// fresh one on the next call.

import { wrap, type Remote } from 'comlink';
import type { EngineApi, Failure, ProbeResult, SelfTestResult } from './api';

/** Generous: a software adapter compiles shaders on the CPU, and opening a device can take seconds. */
export const PROBE_TIMEOUT_MS = 60_000;
export const SELF_TEST_TIMEOUT_MS = 120_000;

export interface EngineClient {
  probe(): Promise<ProbeResult>;
  selfTest(): Promise<SelfTestResult>;
  /** Stops the worker; its GPU device goes with it. */
  terminate(): void;
}

interface Connection {
  worker: Worker;
  remote: Remote<EngineApi>;
  /** Rejects with a Failure when the worker reports an error outside a call. */
  crashed: Promise<never>;
}

function fail(kind: Failure['error']['kind'], message: string): Failure {
  return { ok: false, error: { kind, message } };
}

function connect(): Connection {
  const worker = new Worker(new URL('./engine.worker.ts', import.meta.url), { type: 'module', name: 'tpo-engine' });
  const crashed = new Promise<never>((_, reject) => {
    worker.addEventListener('error', (event) => {
      event.preventDefault();
      const detail = event instanceof ErrorEvent && event.message ? `: ${event.message}` : '';
      reject(fail('worker', `The engine worker stopped${detail}. Reload the page to start it again.`));
    });
    worker.addEventListener('messageerror', () => {
      reject(fail('worker', 'The engine worker sent a message the page could not read.'));
    });
  });
  crashed.catch(() => undefined); // observed by each call
  return { worker, remote: wrap<EngineApi>(worker), crashed };
}

export function createEngineClient(): EngineClient {
  let connection: Connection | null = null;

  const drop = (c: Connection) => {
    c.worker.terminate();
    if (connection === c) connection = null;
  };

  async function call<T extends ProbeResult | SelfTestResult>(
    what: string,
    timeoutMs: number,
    run: (remote: Remote<EngineApi>) => Promise<T>,
  ): Promise<T | Failure> {
    const c = (connection ??= connect());
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<Failure>((resolve) => {
      timer = setTimeout(
        () => resolve(fail('timeout', `The GPU engine did not finish the ${what} within ${Math.round(timeoutMs / 1000)} s.`)),
        timeoutMs,
      );
    });
    try {
      const result = await Promise.race([run(c.remote), c.crashed, timedOut]);
      // A worker that did not answer may be stuck in a driver call: start afresh next time.
      if (!result.ok && result.error.kind === 'timeout') drop(c);
      return result;
    } catch (error) {
      drop(c);
      if (typeof error === 'object' && error !== null && 'ok' in error) return error as Failure;
      return fail('worker', `The engine worker failed during the ${what}: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      clearTimeout(timer);
    }
  }

  return {
    probe: () => call<ProbeResult>('GPU probe', PROBE_TIMEOUT_MS, (remote) => remote.probe()),
    selfTest: () => call<SelfTestResult>('self-test', SELF_TEST_TIMEOUT_MS, (remote) => remote.selfTest()),
    terminate() {
      if (connection) drop(connection);
    },
  };
}
