// The engine worker: the only place in the app that holds a GPUDevice, and the browser's shell over the lab
// (src/app/lab.ts): OPFS for storage, the browser's image decoders, a canvas for PNGs. It opens the device
// once, on first use, and reuses it; a lost device is reported and replaced by a new one on the next use.
// Each call resolves with a result value; errors never cross as throws, so the page always has something
// to show. (navigator.gpu and OPFS exist in dedicated workers in Chromium.)

import { expose, transfer } from 'comlink';
import { failureKind, InputError } from '../app/errors';
import { Lab, type LabRunEvent } from '../app/lab';
import type { ModelHandle } from '../app/model';
import {
  directoryModel,
  forgetModelFolder,
  pickedFolderModel,
  recallModelFolder,
  rememberModelFolder,
  reopenRemembered,
  servedFolderModel,
  shippedSd15Configs,
  singleFileModel,
} from '../app/model-sources';
import { opfsRoot, opfsStorage, storageEstimate } from '../app/opfs-storage';
import { DEMO_MODEL_FILES, DEMO_MODEL_NAME } from '../demo/files';
import { decodeImageBrowser } from '../data/decode-browser';
import { addPngText } from '../data/png-text';
import { filesSource } from '../data/source';
import { browserGpu, openGpu, WebGpuUnavailableError } from '../gpu/device';
import { GpuDeviceLostError, type Gpu } from '../gpu/gpu';
import { judgeSourceFromFiles } from '../judges/judge-files';
import { setOrtWasmUrl } from '../judges/ort-session';
import ortWasmUrl from 'onnxruntime-web/ort-wasm-simd-threaded.jsep.wasm?url';
import type { ModelFiles } from '../models/weights';
import type { EngineApi, EngineError, Failure, ModelSource, ProbeResult, Result, SelfTestResult } from './api';
import { SELF_TEST_COUNT, SELF_TEST_TOLERANCE, selfTestInputs, siluMaxAbsError, siluOnGpu } from './self-test';

/** The folder of the origin's OPFS that holds everything the lab stores. */
const LAB_FOLDER = 'tpo-lab';
/** Step events reach the page at most this often (the last one of a burst always does). */
const STEP_EVENT_INTERVAL_MS = 200;

// ONNX Runtime (the judges) fetches its wasm binary from the URL Vite gave it, in dev and in the build.
setOrtWasmUrl(ortWasmUrl);

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

/** The shared device if it is still alive; a lost one is reported once (as a throw) and replaced on the next call. */
async function liveGpu(): Promise<Gpu> {
  const gpu = await sharedGpu();
  if (gpu.isLost) {
    await forget(gpu);
    gpu.check(); // throws the GpuDeviceLostError with the browser's reason
  }
  return gpu;
}

/** The lab's GPU: the shared device, or a new one when it was lost (the lab reports the loss itself). */
async function labGpu(): Promise<Gpu> {
  const gpu = await sharedGpu();
  if (!gpu.isLost) return gpu;
  await forget(gpu);
  return sharedGpu();
}

/** Drops `gpu` from the cache (if it is still the cached one) so that the next call opens a new device. */
async function forget(gpu: Gpu): Promise<void> {
  const cached = opening;
  const current = await cached?.catch(() => null);
  if (current === gpu && opening === cached) opening = null;
}

/** A PNG from RGBA pixels through the browser's encoder, with the text chunks added. */
async function encodePng(rgba: Uint8Array, width: number, height: number, text: Record<string, string>): Promise<Uint8Array> {
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d');
  if (!context) throw new Error('this browser cannot draw on an OffscreenCanvas in a worker, so previews cannot be saved');
  context.putImageData(new ImageData(new Uint8ClampedArray(rgba.buffer as ArrayBuffer, rgba.byteOffset, rgba.byteLength), width, height), 0, 0);
  const blob = await canvas.convertToBlob({ type: 'image/png' });
  return addPngText(new Uint8Array(await blob.arrayBuffer()), text);
}

let labPromise: Promise<Lab> | null = null;

function lab(): Promise<Lab> {
  labPromise ??= (async () => {
    const root = await (await opfsRoot()).getDirectoryHandle(LAB_FOLDER, { create: true });
    return new Lab({ root: opfsStorage(root, 'the lab storage'), gpu: labGpu, decode: decodeImageBrowser, encodePng });
  })();
  labPromise.catch(() => (labPromise = null));
  return labPromise;
}

// ---------------------------------------------------------------------------------------------
// Failures as values, and what the worker is busy with

/** API keys of calls in progress: a message that quotes one (an endpoint's echo) gets it blanked out. */
const secrets = new Set<string>();

function redact(message: string): string {
  let out = message;
  for (const key of secrets) if (key) out = out.split(key).join('[API key]');
  return out;
}

function failure(error: unknown): Failure {
  let kind: EngineError['kind'] = 'error';
  if (error instanceof WebGpuUnavailableError) kind = 'unavailable';
  else if (error instanceof GpuDeviceLostError) kind = 'device-lost';
  else kind = failureKind(error);
  const message = error instanceof Error ? error.message : String(error);
  return { ok: false, error: { kind, message: redact(message) } };
}

const busy = new Map<number, string>();
let nextCall = 0;

/**
 * Runs a call, returning its value or its failure; the heartbeat lists it while it runs. `moved` names
 * the buffers of the value to transfer to the page rather than copy (bytes for a download or an image).
 */
async function attempt<T>(name: string, work: () => Promise<T>, moved?: (value: T) => (ArrayBufferLike | undefined)[]): Promise<Result<T>> {
  const id = nextCall++;
  busy.set(id, name);
  try {
    const value = await work();
    const result: Result<T> = { ok: true, value };
    const buffers = moved?.(value).filter((b): b is ArrayBuffer => b instanceof ArrayBuffer) ?? [];
    return buffers.length ? transfer(result, buffers) : result;
  } catch (error) {
    return failure(error);
  } finally {
    busy.delete(id);
  }
}

/** Calls a page callback (a comlink proxy) without waiting for it; a page that went away is ignored. */
function notify<A extends unknown[]>(callback: ((...args: A) => unknown) | undefined, ...args: A): void {
  if (!callback) return;
  void Promise.resolve()
    .then(() => callback(...args))
    .catch(() => {});
}

/**
 * A run's events for the page: step events at most every STEP_EVENT_INTERVAL_MS (the newest kept), every
 * other event at once, after the step event held back, so the page sees them in order.
 */
function throttledRunEvents(send: (e: LabRunEvent) => void): (e: LabRunEvent) => void {
  let held: LabRunEvent | null = null;
  let last = 0;
  let timer: ReturnType<typeof setTimeout> | null = null;
  const flush = () => {
    if (timer) clearTimeout(timer);
    timer = null;
    if (held) {
      last = performance.now();
      notify(send, held);
      held = null;
    }
  };
  return (e) => {
    if (e.type !== 'step') {
      flush();
      notify(send, e);
      return;
    }
    held = e;
    const wait = STEP_EVENT_INTERVAL_MS - (performance.now() - last);
    if (wait <= 0) flush();
    else timer ??= setTimeout(flush, wait);
  };
}

let shippedConfigs: ModelFiles | null = null;

/** Opens the model the page handed over (File objects and handles are read lazily, here). */
async function modelFrom(source: ModelSource): Promise<ModelHandle> {
  switch (source.kind) {
    case 'files':
      return pickedFolderModel(source.files);
    case 'directory': {
      const model = await directoryModel(source.handle);
      if (source.remember) await rememberModelFolder(source.handle);
      return model;
    }
    case 'single-file':
      shippedConfigs ??= shippedSd15Configs();
      return singleFileModel(source.file, shippedConfigs);
    case 'demo':
      return servedFolderModel(DEMO_MODEL_NAME, `${import.meta.env.BASE_URL}demo/`, DEMO_MODEL_FILES);
    case 'remembered': {
      const remembered = await recallModelFolder();
      if (!remembered) throw new InputError('no model folder is remembered: pick the model folder');
      const reopened = await reopenRemembered(remembered.handle);
      if (!reopened.model) throw new InputError(reopened.reason);
      return reopened.model;
    }
  }
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
      if (gpu?.isLost) await forget(gpu);
      return failure(error);
    }
  },

  async heartbeat() {
    return { at: Date.now(), busy: [...busy.values()] };
  },

  openModel: (source) => attempt('openModel', async () => (await lab()).openModel(await modelFrom(source))),
  forgetModel: () =>
    attempt('forgetModel', async () => {
      await forgetModelFolder();
      return null;
    }),
  planMemory: (request) =>
    attempt('planMemory', async () => {
      const plans = await (await lab()).planMemory(request);
      return { ...plans, maxBufferBytes: Number((await labGpu()).device.limits.maxStorageBufferBindingSize) };
    }),

  importDataset: (files, name, options, onProgress) =>
    attempt('importDataset', async () => (await lab()).importDataset(filesSource(files, name), name, options, (done, total) => notify(onProgress, done, total))),
  importDemoDataset: (onProgress) =>
    attempt('importDemoDataset', async () => (await lab()).importDemoDataset(undefined, (done, total) => notify(onProgress, done, total))),
  listDatasets: () => attempt('listDatasets', async () => (await lab()).listDatasets()),
  datasetItems: (id) => attempt('datasetItems', async () => (await lab()).datasetItems(id)),
  saveItems: (id, items) =>
    attempt('saveItems', async () => {
      await (await lab()).saveItems(id, items);
      return null;
    }),
  datasetRecords: (id) => attempt('datasetRecords', async () => (await lab()).datasetRecords(id)),
  saveRecords: (id, data) =>
    attempt('saveRecords', async () => {
      await (await lab()).saveRecords(id, data);
      return null;
    }),
  deleteDataset: (id) =>
    attempt('deleteDataset', async () => {
      await (await lab()).deleteDataset(id);
      return null;
    }),
  exportProject: (id) => attempt('exportProject', async () => (await lab()).exportProject(id), (out) => [out.bytes.buffer]),
  importProject: (file) => attempt('importProject', async () => (await lab()).importProject(new Uint8Array(await file.arrayBuffer()), file.name)),
  datasetImage: (id, image) => attempt('datasetImage', async () => (await lab()).datasetImage(id, image), (bytes) => [bytes.buffer]),

  makeNegatives: (job, dataset, request, onEvent) =>
    attempt('makeNegatives', async () => {
      const key = request.llm?.apiKey;
      if (key) secrets.add(key);
      try {
        return await asJob(job, async (signal) => (await lab()).makeNegatives(dataset, request, (e) => notify(onEvent, e), signal));
      } finally {
        if (key) secrets.delete(key);
      }
    }),
  cancelJob: (job) =>
    attempt('cancelJob', async () => {
      jobs.get(job)?.abort();
      return null;
    }),
  prepareFeatures: (dataset, options, onProgress) =>
    attempt('prepareFeatures', async () => (await lab()).prepareFeatures(dataset, options, (done, total) => notify(onProgress, done, total))),

  startRun: (request, onEvent) => attempt('startRun', async () => ({ run: await (await lab()).startRun(request, throttledRunEvents(onEvent)) })),
  resumeRun: (run, onEvent, steps) =>
    attempt('resumeRun', async () => {
      await (await lab()).resumeRun(run, throttledRunEvents(onEvent), steps);
      return null;
    }),
  pauseRun: (run) =>
    attempt('pauseRun', async () => {
      (await lab()).pauseRun(run);
      return null;
    }),
  continueRun: (run) =>
    attempt('continueRun', async () => {
      (await lab()).continueRun(run);
      return null;
    }),
  cancelRun: (run) =>
    attempt('cancelRun', async () => {
      await (await lab()).cancelRun(run);
      return null;
    }),
  listRuns: () => attempt('listRuns', async () => (await lab()).listRuns()),
  runInfo: (run) => attempt('runInfo', async () => (await lab()).runInfo(run)),
  deleteRun: (run) =>
    attempt('deleteRun', async () => {
      await (await lab()).deleteRun(run);
      return null;
    }),
  metrics: (run) => attempt('metrics', async () => (await lab()).metrics(run)),
  scores: (run) => attempt('scores', async () => (await lab()).scores(run)),
  previews: (run) => attempt('previews', async () => (await lab()).previews(run)),
  runFile: (run, path) => attempt('runFile', async () => (await lab()).runFile(run, path), (bytes) => [bytes?.buffer]),
  exportLora: (run, options) => attempt('exportLora', async () => (await lab()).exportLora(run, options), (out) => [out.bytes.buffer]),
  loraInfo: (run, options) => attempt('loraInfo', async () => (await lab()).loraInfo(run, options)),
  sample: (request, onProgress, job) =>
    attempt(
      'sample',
      async () => asJob(job, async (signal) => (await lab()).sample(request, (done, total) => notify(onProgress, done, total), signal)),
      // Each buffer once: a transfer list naming one twice fails the whole message.
      (out) => [...new Set(out.images.flatMap((i) => [i.base.buffer, i.lora?.buffer]))],
    ),

  openJudge: (files, kind) => attempt('openJudge', async () => (await lab()).openJudge(judgeSourceFromFiles(files), kind)),
  judgeInfo: () => attempt('judgeInfo', async () => (await lab()).judgeInfo()),
  judgePairs: (dataset, run, onProgress) => attempt('judgePairs', async () => (await lab()).judgePairs(dataset, run, (done, total) => notify(onProgress, done, total))),
  judgeImages: (images) => attempt('judgeImages', async () => (await lab()).judgeImages(images)),

  storage: () =>
    attempt('storage', async () => ({
      estimate: await storageEstimate(),
      persisted: (await navigator.storage?.persisted?.().catch(() => false)) ?? false,
    })),
  simulateDeviceLoss: () =>
    attempt('simulateDeviceLoss', async () => {
      const gpu = await sharedGpu();
      gpu.device.destroy();
      return null;
    }),
};

/** Cancellable calls in progress, by the name the page gave them. */
const jobs = new Map<string, AbortController>();

/** Runs `work` as the job named `job` (when named), which cancelJob aborts through the signal. */
async function asJob<T>(job: string | undefined, work: (signal?: AbortSignal) => Promise<T>): Promise<T> {
  if (job === undefined) return work();
  if (jobs.has(job)) throw new InputError(`a job named ${job} is already running`);
  const controller = new AbortController();
  jobs.set(job, controller);
  try {
    return await work(controller.signal);
  } finally {
    jobs.delete(job);
  }
}

function adapterName(gpu: Gpu): string {
  const { vendor, architecture, description } = gpu.adapter;
  return [vendor, architecture].filter(Boolean).join(' ') || description || 'unnamed adapter';
}

expose(api);
