// The contract between the page and the engine worker. Only plain, structured-cloneable data crosses it:
// no GPU objects, no class instances, no thrown errors. Every call resolves; failures come back as values.

import type { AdapterReport } from '../gpu/device';

export type { AdapterReport };

/**
 * Why a call could not do its work:
 * - `unavailable`: this browser has no WebGPU (no navigator.gpu) or no usable adapter;
 * - `device-lost`: the GPU device was lost (driver reset, too much memory, tab in the background too long);
 * - `timeout`: the engine did not answer in time;
 * - `worker`: the worker itself failed (its script did not load, or it crashed);
 * - `error`: anything else (a validation error, a bug).
 */
export type EngineErrorKind = 'unavailable' | 'device-lost' | 'timeout' | 'worker' | 'error';

export interface EngineError {
  kind: EngineErrorKind;
  message: string;
}

export interface Failure {
  ok: false;
  error: EngineError;
}

export interface ProbeOk {
  ok: true;
  adapter: AdapterReport;
  /** Optional features the device was opened with (a subset of the adapter's). */
  deviceFeatures: string[];
}

export type ProbeResult = ProbeOk | Failure;

export interface SelfTestOk {
  ok: true;
  /** Whether the GPU's results matched the CPU reference within `tolerance`. */
  passed: boolean;
  op: string;
  /** Number of values computed. */
  count: number;
  /** Largest |gpu - cpu| over all values; NaN if the GPU produced a non-finite value. */
  maxAbsError: number;
  tolerance: number;
  /** Upload, dispatch and readback of the first run, in milliseconds. */
  firstRunMs: number;
  /** Whether the first run also compiled the shader pipeline (only the first self-test does). */
  firstRunCompiled: boolean;
  /** The same again with the pipeline cached, in milliseconds. */
  repeatRunMs: number;
  /** The adapter it ran on, e.g. "google swiftshader" or "nvidia ampere". */
  adapterName: string;
}

export type SelfTestResult = SelfTestOk | Failure;

/** The object the engine worker exposes with comlink. */
export interface EngineApi {
  probe(): Promise<ProbeResult>;
  selfTest(): Promise<SelfTestResult>;
}
