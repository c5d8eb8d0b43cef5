// The page's handle on the engine worker. Whatever happens in the worker (its script fails to load, it
// crashes, the GPU hangs), every call here resolves with a result the UI can show: a comlink call to a dead
// worker would otherwise wait forever. A worker that failed or stopped answering is terminated and replaced
// by a fresh one on the next call.
//
// Long calls (opening a model, preparing features, a run) have no fixed timeout: while one is in flight the
// client sends a heartbeat every few seconds, which a busy worker answers between its GPU waits. Only a
// worker that leaves heartbeats unanswered for `hungAfterMs` is declared hung.

import { proxy, wrap, type Remote } from 'comlink';
import { requestPersistence } from '../app/opfs-storage';
import type { EngineApi, Failure, Heartbeat, ProbeResult, SelfTestResult } from './api';

/** Generous: a software adapter compiles shaders on the CPU, and opening a device can take seconds. */
export const PROBE_TIMEOUT_MS = 60_000;
export const SELF_TEST_TIMEOUT_MS = 120_000;
/** How often a long call checks that the worker still answers. */
export const HEARTBEAT_EVERY_MS = 5_000;
/** A worker that answers no heartbeat for this long is hung (a busy one answers within milliseconds). */
export const HUNG_AFTER_MS = 60_000;

/** The lab's calls, as the worker has them; each resolves with its value or a Failure. */
type LabMethod = Exclude<keyof EngineApi, 'probe' | 'selfTest' | 'heartbeat'>;
export type LabClient = { [K in LabMethod]: (...args: Parameters<EngineApi[K]>) => ReturnType<EngineApi[K]> };

/** Every lab call (a record, so the compiler checks that none is missing). */
const LAB_METHODS = {
  openModel: true,
  forgetModel: true,
  planMemory: true,
  importDataset: true,
  importDemoDataset: true,
  listDatasets: true,
  datasetItems: true,
  saveItems: true,
  datasetRecords: true,
  saveRecords: true,
  deleteDataset: true,
  datasetImage: true,
  exportProject: true,
  importProject: true,
  makeNegatives: true,
  cancelJob: true,
  prepareFeatures: true,
  startRun: true,
  resumeRun: true,
  pauseRun: true,
  continueRun: true,
  cancelRun: true,
  listRuns: true,
  runInfo: true,
  deleteRun: true,
  metrics: true,
  scores: true,
  previews: true,
  runFile: true,
  exportLora: true,
  loraInfo: true,
  sample: true,
  openJudge: true,
  judgeInfo: true,
  judgePairs: true,
  judgeImages: true,
  storage: true,
  simulateDeviceLoss: true,
} satisfies Record<LabMethod, true>;

export interface EngineClient {
  probe(): Promise<ProbeResult>;
  selfTest(): Promise<SelfTestResult>;
  /** Whether the worker answers, and what it is busy with; a Failure when it does not answer in time. */
  heartbeat(timeoutMs?: number): Promise<Heartbeat | Failure>;
  /** The lab: models, datasets, negatives, features, runs, exports. */
  lab: LabClient;
  /** Asks the browser to keep the lab's storage under storage pressure (only the page may ask). */
  persist(): Promise<boolean>;
  /** Stops the worker; its GPU device, and any run in it, go with it (a run resumes from its checkpoint). */
  terminate(): void;
}

export interface EngineClientOptions {
  hungAfterMs?: number;
  heartbeatEveryMs?: number;
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

const timeoutAfter = (ms: number, failure: () => Failure) => {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const promise = new Promise<Failure>((resolve) => {
    timer = setTimeout(() => resolve(failure()), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
};

export function createEngineClient(options: EngineClientOptions = {}): EngineClient {
  const hungAfterMs = options.hungAfterMs ?? HUNG_AFTER_MS;
  const heartbeatEveryMs = options.heartbeatEveryMs ?? HEARTBEAT_EVERY_MS;
  let connection: Connection | null = null;

  const drop = (c: Connection) => {
    c.worker.terminate();
    if (connection === c) connection = null;
  };

  /** Runs a call against the worker; `limit` is either a fixed timeout or the heartbeat watchdog. */
  async function call<T extends { ok: boolean }>(what: string, limit: { timeoutMs: number } | 'heartbeat', run: (remote: Remote<EngineApi>) => Promise<T>): Promise<T | Failure> {
    const c = (connection ??= connect());
    const stops: (() => void)[] = [];
    let stopped: Promise<Failure>;
    if (limit === 'heartbeat') {
      stopped = new Promise<Failure>((resolve) => {
        let answered = performance.now();
        let waiting = false;
        const timer = setInterval(() => {
          if (performance.now() - answered > hungAfterMs) {
            resolve(fail('timeout', `The GPU engine stopped answering for ${Math.round(hungAfterMs / 1000)} s during the ${what}; it was restarted. Reload the page if this happens again.`));
            return;
          }
          if (waiting) return;
          waiting = true;
          void c.remote.heartbeat().then(
            () => {
              answered = performance.now();
              waiting = false;
            },
            () => {},
          );
        }, heartbeatEveryMs);
        stops.push(() => clearInterval(timer));
      });
    } else {
      const t = timeoutAfter(limit.timeoutMs, () => fail('timeout', `The GPU engine did not finish the ${what} within ${Math.round(limit.timeoutMs / 1000)} s.`));
      stops.push(t.cancel);
      stopped = t.promise;
    }
    try {
      const result = await Promise.race([run(c.remote), c.crashed, stopped]);
      // A worker that did not answer may be stuck in a driver call: start afresh next time.
      if (!result.ok && (result as Failure).error.kind === 'timeout') drop(c);
      return result;
    } catch (error) {
      drop(c);
      if (typeof error === 'object' && error !== null && 'ok' in error) return error as Failure;
      return fail('worker', `The engine worker failed during the ${what}: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      for (const stop of stops) stop();
    }
  }

  const lab = {} as Record<LabMethod, (...args: unknown[]) => Promise<unknown>>;
  for (const name of Object.keys(LAB_METHODS) as LabMethod[]) {
    // Callbacks cross as comlink proxies; everything else is cloned (File objects and handles included).
    lab[name] = (...args) => {
      const wrapped = args.map((a) => (typeof a === 'function' ? proxy(a) : a));
      return call(name, 'heartbeat', (remote) => (remote[name] as (...a: unknown[]) => Promise<{ ok: boolean }>)(...wrapped));
    };
  }

  return {
    probe: () => call<ProbeResult>('GPU probe', { timeoutMs: PROBE_TIMEOUT_MS }, (remote) => remote.probe()),
    selfTest: () => call<SelfTestResult>('self-test', { timeoutMs: SELF_TEST_TIMEOUT_MS }, (remote) => remote.selfTest()),
    heartbeat: (timeoutMs = 10_000) =>
      call('heartbeat', { timeoutMs }, async (remote) => ({ ok: true as const, ...(await remote.heartbeat()) })).then((r) => {
        if (!r.ok) return r as Failure;
        const { ok: _ok, ...beat } = r as Heartbeat & { ok: true };
        return beat;
      }),
    lab: lab as unknown as LabClient,
    persist: requestPersistence,
    terminate() {
      if (connection) drop(connection);
    },
  };
}
