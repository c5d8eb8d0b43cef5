// The contract between the page and the engine worker. Only plain, structured-cloneable data crosses it:
// no GPU objects, no class instances, no thrown errors. Every call resolves; failures come back as values.

import type { DatasetImport, DatasetInfo, JudgeInfo, JudgePairRow, JudgePairsResult, LabRunEvent, LoraInfo, ModelInfo, NegativesRequest, RunInfo, RunRequest } from '../app/lab';
import type { JudgeKind } from '../judges/clip-judge';
import type { SamplePair, SampleRequest, SampleResult } from '../app/sampling';
import type { PairsEvent, PairsJobResult } from '../app/pairs-job';
import type { DatasetItem } from '../data/types';
import type { PreferenceRecords } from '../data/preference-records';
import type { ImportOptions } from '../data/import';
import type { AdapterReport } from '../gpu/device';
import type { LoraFormat } from '../models/lora-io';
import type { MemoryPlan } from '../models/memory-plan';
import type { TrainConfig } from '../tpo/trainer';

export type { AdapterReport, PreferenceRecords, DatasetImport, DatasetInfo, JudgeInfo, JudgeKind, JudgePairRow, JudgePairsResult, LabRunEvent, LoraInfo, ModelInfo, NegativesRequest, PairsEvent, RunInfo, RunRequest, SamplePair, SampleRequest, SampleResult };

/**
 * Why a call could not do its work:
 * - `unavailable`: this browser has no WebGPU (no navigator.gpu) or no usable adapter;
 * - `device-lost`: the GPU device was lost (driver reset, too much memory, tab in the background too long);
 * - `input`: what the user gave is wrong (a damaged model, a bad dataset, settings out of range): the
 *   message says what and what to do;
 * - `storage-full`: the browser's storage quota is used up: the message says how much was needed and what
 *   can be deleted; nothing stored before was lost;
 * - `timeout`: the engine stopped answering (a hung worker; a busy one still answers the heartbeat);
 * - `worker`: the worker itself failed (its script did not load, or it crashed);
 * - `error`: anything else (a bug).
 */
export type EngineErrorKind = 'unavailable' | 'device-lost' | 'input' | 'storage-full' | 'timeout' | 'worker' | 'error';

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

/** A call's value, or why there is none. */
export type Result<T> = { ok: true; value: T } | Failure;

/**
 * A model on the user's disk, as the page hands it over: File objects and directory handles are
 * structured-cloneable and are read lazily in the worker (never copied whole, never uploaded).
 * - `files`: the files of an `<input webkitdirectory>` (paths from webkitRelativePath);
 * - `directory`: a handle from showDirectoryPicker (Chromium), optionally remembered for the next visit;
 * - `single-file`: one SD1.5 `.safetensors` checkpoint (the SD1.5 configs and tokenizer the app ships);
 * - `remembered`: the directory handle remembered last time (read permission is asked again).
 */
export type ModelSource =
  | { kind: 'files'; files: File[] }
  | { kind: 'directory'; handle: FileSystemDirectoryHandle; remember?: boolean }
  | { kind: 'single-file'; file: File }
  | { kind: 'remembered' }
  /** The built-in demo model, fetched from the app's own server (public/demo/). */
  | { kind: 'demo' };

export interface MemoryPlanRequest {
  method: TrainConfig['method'];
  resolution: number;
  rank: number;
  alpha?: number;
  batch: number;
  targets?: string[];
  precision?: 'auto' | 'f16' | 'f32';
}

export interface MemoryPlanResult {
  /** Bytes per frozen UNet weight on this GPU. */
  weightBytes: 2 | 4;
  checkpointing: MemoryPlan;
  noCheckpointing: MemoryPlan;
  /** The device's largest storage buffer, for context (WebGPU does not tell the GPU's memory size). */
  maxBufferBytes: number;
}

export interface StorageReport {
  /** Bytes used and the quota of the origin, where the browser tells. */
  estimate: { usage: number; quota: number } | null;
  /** Whether the browser promised not to evict the lab's storage (asked for on the page: persist() is not in workers). */
  persisted: boolean;
}

export interface Heartbeat {
  /** The worker's clock when it answered. */
  at: number;
  /** The calls in progress, by name. */
  busy: string[];
}

export interface ExportedLora {
  bytes: Uint8Array;
  /** A file name for the download. */
  name: string;
  step: number;
}

/** Progress of a long call: `done` of `total`. */
export type ProgressCallback = (done: number, total: number) => void;

/**
 * The object the engine worker exposes with comlink. Callbacks are comlink proxies (the client wraps
 * them); events come as plain data. Bytes going to the page are transferred, not copied.
 */
export interface EngineApi {
  probe(): Promise<ProbeResult>;
  selfTest(): Promise<SelfTestResult>;
  /** Answers at once, however busy the worker is with GPU work: tells a busy worker from a hung one. */
  heartbeat(): Promise<Heartbeat>;

  /** Opens a model (configs and weight headers checked; weights are read when a step needs them). A model that fails to open leaves the open one as it was. */
  openModel(source: ModelSource): Promise<Result<ModelInfo>>;
  /** Forgets the remembered model folder. */
  forgetModel(): Promise<Result<null>>;
  planMemory(request: MemoryPlanRequest): Promise<Result<MemoryPlanResult>>;

  /** Imports captioned images (a picked folder's files, any layout `tpo-lab pairs` reads), copied into the lab's storage. */
  importDataset(files: File[], name: string, options: ImportOptions, onProgress?: ProgressCallback): Promise<Result<DatasetImport>>;
  /** Makes the shapes world's demo data set (captioned images, ready for negatives) and imports it. */
  importDemoDataset(onProgress?: ProgressCallback): Promise<Result<DatasetImport>>;
  listDatasets(): Promise<Result<DatasetInfo[]>>;
  datasetItems(id: string): Promise<Result<DatasetItem[]>>;
  /** Replaces a dataset's items (after the user reviewed negatives). */
  saveItems(id: string, items: DatasetItem[]): Promise<Result<null>>;
  /** A preference dataset's records (Diffusion-DPO pairs or Diffusion-KTO labelled images). */
  datasetRecords(id: string): Promise<Result<PreferenceRecords>>;
  /** Replaces a preference dataset's records (after the user removed some). */
  saveRecords(id: string, data: PreferenceRecords): Promise<Result<null>>;
  deleteDataset(id: string): Promise<Result<null>>;
  /** The dataset and every run trained on it as one zip file (bytes transferred), to move or back up a project. */
  exportProject(dataset: string): Promise<Result<{ bytes: Uint8Array; name: string }>>;
  /** Imports a project file as a new dataset with its runs (new ids). */
  importProject(file: File): Promise<Result<{ dataset: DatasetInfo; runs: string[] }>>;
  /** A dataset's image, for showing it. */
  datasetImage(id: string, image: string): Promise<Result<Uint8Array>>;
  /**
   * Writes negatives for a dataset's captions (LLM endpoint or rule editor), saving as it goes; `job` names
   * the call for cancelJob. The API key in `request.llm` is used for this call only, never stored.
   */
  makeNegatives(job: string, dataset: string, request: NegativesRequest, onEvent?: (e: PairsEvent) => void): Promise<Result<Omit<PairsJobResult, 'items'>>>;
  /** Stops a makeNegatives call (what it saved stays; running it again resumes) or a sample call. */
  cancelJob(job: string): Promise<Result<null>>;
  prepareFeatures(dataset: string, options: { method: TrainConfig['method']; resolution: number; negatives?: 'all' | 'accepted' }, onProgress?: ProgressCallback): Promise<Result<{ features: number }>>;

  /** Starts a run; its events (steps throttled) go to `onEvent` until its final status event. */
  startRun(request: RunRequest, onEvent: (e: LabRunEvent) => void): Promise<Result<{ run: string }>>;
  /** Continues a stopped run from its last checkpoint (after a reload, a lost device, a full disk). */
  resumeRun(run: string, onEvent: (e: LabRunEvent) => void, steps?: number): Promise<Result<null>>;
  pauseRun(run: string): Promise<Result<null>>;
  continueRun(run: string): Promise<Result<null>>;
  /** Stops after the step in flight, with a checkpoint; resolves when it has stopped. */
  cancelRun(run: string): Promise<Result<null>>;
  listRuns(): Promise<Result<RunInfo[]>>;
  runInfo(run: string): Promise<Result<RunInfo>>;
  deleteRun(run: string): Promise<Result<null>>;
  metrics(run: string): Promise<Result<Record<string, unknown>[]>>;
  scores(run: string): Promise<Result<Record<string, unknown>[]>>;
  /** The run's preview samples so far: step, folder and images (prompt, seed, file) of each. */
  previews(run: string): Promise<Result<{ step: number; folder: string; images: { file: string; prompt: string; seed: number }[] }[]>>;
  /** A file of the run: a preview PNG (transferred), index.json. */
  runFile(run: string, path: string): Promise<Result<Uint8Array | null>>;
  exportLora(run: string, options: { format?: LoraFormat; dtype?: 'fp16' | 'fp32' }): Promise<Result<ExportedLora>>;
  /** What exportLora would write with these options: metadata (kohya's ss_* keys), tensor count, size. */
  loraInfo(run: string, options: { format?: LoraFormat; dtype?: 'fp16' | 'fp32' }): Promise<Result<LoraInfo>>;
  /**
   * Draws each prompt with each seed on the open model, and with a run's LoRA beside it: PNGs with their
   * parameters (transferred). The networks stay loaded for the next call; `onProgress` counts UNet steps.
   * `job` names the call for cancelJob, which stops it after the image in flight (`stopped`, with the
   * images drawn by then).
   */
  sample(request: SampleRequest, onProgress?: ProgressCallback, job?: string): Promise<Result<SampleResult>>;

  /**
   * Opens an independent judge from the files of a picked folder (a CLIP ONNX export, or a reward model in
   * its layout): ONNX Runtime on WebGPU, or wasm when WebGPU fails (said in the notices). Replaces the open
   * judge; a folder that fails to open leaves it as it was (an `input` failure naming the file).
   */
  openJudge(files: File[], kind: JudgeKind): Promise<Result<JudgeInfo>>;
  /** The open judge, or null. */
  judgeInfo(): Promise<Result<JudgeInfo | null>>;
  /**
   * The judge's score of every pair of a captioned-image dataset and, with a run trained on it, the run's
   * implicit margins at its last scored step and their correlation with the judge's, overall and per
   * principle. The judge's scores are kept, so another run or view does not compute them again.
   */
  judgePairs(dataset: string, run: string | null, onProgress?: ProgressCallback): Promise<Result<JudgePairsResult>>;
  /** The judge's score of each image (PNG bytes) against its prompt. */
  judgeImages(images: { bytes: Uint8Array; prompt: string }[]): Promise<Result<number[]>>;

  storage(): Promise<Result<StorageReport>>;
  /**
   * Destroys the GPU device as a driver reset would (for trying recovery, and for tests): a running run
   * reports 'device-lost' and resumes from its checkpoint on a new device.
   */
  simulateDeviceLoss(): Promise<Result<null>>;
}
