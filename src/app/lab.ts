// The lab: what the app's screens ask the engine for, over one Storage (the browser's OPFS, or a folder in
// Node) and one GPU. Models, datasets (images copied in, captions, negatives with their review status),
// the pairs job, feature preparation, training runs with pause / resume / cancel and recovery from a lost
// device, scores, and LoRA export. Platform-free: the engine worker is a thin shell over this (it turns
// results and errors into plain values), and tests drive it directly in Node.
//
// Storage layout: datasets/<id>/{dataset.json, items.jsonl, images/...}, runs/<id>/ (see training-run.ts),
// features/ (the feature cache, shared by every run of every dataset: keys hash the inputs and the model).

import { datasetStats, type DatasetStats } from '../data/dataset';
import { exportTrainerJsonl } from '../data/export';
import { importDataset, type ImportOptions, parseTrainerJsonl } from '../data/import';
import { importPreferenceData } from '../data/preference-import';
import { formatPreferenceJsonl, parsePreferenceJsonl, type PreferenceRecords, preferenceImages } from '../data/preference-records';
import type { RgbaImage } from '../data/pixels';
import { bytesSource, type DatasetSource } from '../data/source';
import type { DatasetItem, ImportProblem } from '../data/types';
import type { PrincipleChoice } from '../data/vocabulary';
import { DEMO_DATASET_NAME, DEMO_DATASET_SEED, DEMO_DATASET_SIZE } from '../demo/files';
import { shapesDataset, shapesFileName, shapesWorldWords } from '../demo/shapes';
import { type Gpu, GpuDeviceLostError } from '../gpu/gpu';
import { type Correlation, parseImplicitScores } from '../judges/agreement';
import { ClipJudge, type JudgeKind } from '../judges/clip-judge';
import { readJudgeFiles, type JudgeSource } from '../judges/judge-files';
import { compareWithImplicit, embedAll, judgeCaptionPairs, type JudgedPair, judgeSummary, principleOf } from '../judges/judge-pairs';
import type { JudgeBackend } from '../judges/ort-session';
import { type DecodedLora, decodeLora, encodeLora, type LoraFormat, loraFromHost } from '../models/lora-io';
import { SafetensorsFile, memorySource } from '../models/safetensors';
import { type MemoryPlan, planMemory } from '../models/memory-plan';
import { unetParamShapes } from '../models/unet';
import { preferHalfWeights } from '../models/weights';
import { type DataKind, METHODS_FOR, splitExamples } from '../tpo/examples';
import type { FeatureStore } from '../tpo/features';
import { defaultTrainConfig, type TrainConfig, TrainControl, validateTrainConfig } from '../tpo/trainer';
import { DEFAULT_SCORE_DRAWS } from '../tpo/scores';
import { type FailureKind, failureKind, InputError } from './errors';
import type { ModelHandle } from './model';
import { type PairsEditorSettings, type PairsEvent, type PairsJobResult, pairsEditor, runPairsJob } from './pairs-job';
import { exportProject, readProject, writeProject } from './project';
import { readText, type Storage } from './storage';
import { storageFeatureStore } from './feature-store';
import { checkSampleRequest, ModelSampler, type SampleRequest, type SampleResult } from './sampling';
import { parseTrainingData, prepareTrainingFeatures } from './training-data';
import {
  CHECKPOINT_FOLDER,
  LORA_FILE,
  METRICS_FILE,
  type PngEncoder,
  readSavedRun,
  RUN_SETTINGS_FILE,
  type RunEvent,
  type RunResult,
  type RunSettings,
  SCORES_FILE,
  type SavedRun,
  trainRun,
} from './training-run';

/** What differs between platforms. */
export interface LabPlatform {
  /** The lab's own folder. */
  root: Storage;
  /** The GPU, opened on first use and kept; a lost device is replaced by a new one on the next call. */
  gpu(): Promise<Gpu>;
  decode(bytes: Uint8Array, name: string): Promise<RgbaImage>;
  formats?: readonly string[];
  encodePng: PngEncoder;
}

export interface ModelInfo {
  name: string;
  kind: 'folder' | 'single-file';
  unet: { blockOutChannels: number[]; layersPerBlock: number; crossAttentionDim: number; sampleSize: number; inChannels: number; parameters: number };
  textEncoder: { hiddenSize: number; layers: number };
  vae: { latentChannels: number; downsample: number; scalingFactor: number };
}

export interface DatasetInfo {
  id: string;
  name: string;
  createdAt: string;
  /** tpo: captioned images (negatives are written for them); dpo: preferred / rejected image pairs; kto: labelled images. */
  kind: DataKind;
  /** Captioned images (tpo), pairs (dpo) or labelled images (kto). */
  items: number;
  /** Image files the dataset holds. */
  images: number;
  /** The negatives' counts (all zero for dpo and kto data). */
  stats: DatasetStats;
}

/** What dataset.json holds. */
interface DatasetMeta {
  id: string;
  name: string;
  createdAt: string;
  /** Absent in datasets made before preference data could be imported: those are tpo. */
  kind?: DataKind;
}

const DATA_NAMES: Record<DataKind, string> = {
  tpo: 'captioned images (with negatives)',
  dpo: 'Diffusion-DPO pairs (a preferred and a rejected image per prompt)',
  kto: 'Diffusion-KTO images labelled desirable or undesirable',
};

export interface DatasetImport {
  dataset: DatasetInfo;
  /** Records left out (with onInvalid 'skip'). */
  problems: ImportProblem[];
}

/** A training run as the lab lists it. */
export interface RunInfo {
  id: string;
  method: string;
  dataset: string;
  /** running / paused: in this session; stopped: has a checkpoint to resume from; done: has its LoRA. */
  status: 'running' | 'paused' | 'stopped' | 'done' | 'failed';
  step: number;
  steps: number;
  startedAt: number;
  /** The settings that shape the run (null when its checkpoint cannot be read). */
  config: Pick<TrainConfig, 'lr' | 'lrSchedule' | 'batchSize' | 'gradAccum' | 'rank' | 'alpha' | 'resolution' | 'beta'> | null;
  /** Bytes the run keeps in storage: checkpoint, LoRA, logs, previews. */
  bytes: number;
  /** Why it failed or stopped, when it did. */
  error?: string;
}

export interface RunRequest {
  dataset: string;
  /** Training hyper-parameters; the rest from defaultTrainConfig(method). */
  config: Partial<TrainConfig> & { method: TrainConfig['method'] };
  /** Run settings; defaults as the CLI's. */
  settings?: Partial<Pick<RunSettings, 'negatives' | 'holdout' | 'precision' | 'scoreDraws' | 'scoreEvery' | 'scoreLimit' | 'checkpointEvery' | 'dtype' | 'title' | 'allowSmallImages' | 'previews'>>;
}

/** Events of a run as the lab reports them: the run's own, its status, and recoveries. */
export type LabRunEvent =
  | (RunEvent & { run: string })
  | { type: 'status'; run: string; status: RunInfo['status']; step: number; error?: string; errorKind?: FailureKind }
  | { type: 'device-lost'; run: string; message: string; resumeFrom: number };

/** What an exported LoRA file would carry: its metadata (kohya's ss_* keys, ours), tensors and size. */
export interface LoraInfo {
  name: string;
  step: number;
  /** Where the weights come from: the finished run's LoRA, or the last checkpoint of an unfinished one. */
  source: 'final' | 'checkpoint';
  format: LoraFormat;
  dtype: 'fp16' | 'fp32';
  metadata: Record<string, string>;
  tensors: number;
  modules: number;
  bytes: number;
}

export interface NegativesRequest extends PairsEditorSettings {
  principles: PrincipleChoice[];
  perCaption: number;
}

/** The independent judge the lab has open (a CLIP model or a CLIP-shaped reward model). */
export interface JudgeInfo {
  /** The picked folder's name. */
  name: string;
  kind: JudgeKind;
  /** The ONNX Runtime provider the towers run on. */
  backend: JudgeBackend;
  /** What happened on the way, e.g. the WebGPU provider failing and wasm taking over. */
  notices: string[];
}

/** One TPO pair as the judge scored it, with the run's implicit margin when the run scored it. */
export interface JudgePairRow {
  image: string;
  caption: string;
  negative: string;
  principle: string;
  scoreW: number;
  scoreL: number;
  margin: number;
  implicitMargin: number | null;
}

export interface JudgePairsResult {
  judge: JudgeInfo;
  dataset: string;
  run: string | null;
  /** The run's step the implicit margins are from (its last scored one); null without a run or its scores. */
  step: number | null;
  rows: JudgePairRow[];
  /** Share of pairs with score_w > score_l (a tie counts half), and the mean judge margin. */
  accuracy: number;
  meanMargin: number;
  /** Pairs with an implicit margin: what the correlations are over. */
  matched: number;
  /** Pearson and Spearman of judge against implicit margins; null without a run. */
  overall: Correlation | null;
  byPrinciple: Record<string, Correlation>;
}

/** The trainer's method names as the memory plan spells them. */

/** How many times a run reopens a lost device and resumes from its checkpoint before it gives up. */
const DEVICE_LOSS_RETRIES = 2;

const DATASETS = 'datasets';
const RUNS = 'runs';
const IMAGES = 'images';
const ITEMS_FILE = 'items.jsonl';
const DATASET_FILE = 'dataset.json';

/** A short id that sorts by time: yyyymmdd-hhmmss-xxxx. */
function newId(): string {
  const d = new Date();
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  const stamp = `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}-${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}`;
  return `${stamp}-${Math.floor(Math.random() * 0x10000).toString(16).padStart(4, '0')}`;
}

function checkId(id: string, what: string): string {
  if (!/^[0-9a-z-]{1,64}$/.test(id)) throw new InputError(`${what} ${JSON.stringify(id)} is not a valid id`);
  return id;
}

interface ActiveRun {
  control: TrainControl;
  status: 'running' | 'paused';
  step: number;
  steps: number;
  done: Promise<void>;
}

export class Lab {
  private model: ModelHandle | null = null;
  private readonly active = new Map<string, ActiveRun>();
  /** Runs that failed in this session, with why (a stopped run's checkpoint is still there). */
  private readonly failed = new Map<string, string>();
  /** The open model's networks for sampling, kept between sample() calls; null until the first. */
  private sampler: ModelSampler | null = null;
  /** sample() calls, one after the other: they share the cached networks and the UNet's LoRA slot. */
  private sampling: Promise<unknown> = Promise.resolve();
  /** The open judge; one at a time (its ONNX sessions hold the model's weights). */
  private judge: { judge: ClipJudge; info: JudgeInfo } | null = null;
  /**
   * The open judge's scores of each dataset's pairs, with the items they were computed from: scores do not
   * depend on the run, so switching runs or views reuses them; edited negatives are judged again.
   */
  private judged = new Map<string, { itemsText: string; rows: JudgedPair[] }>();
  /** Judge calls, one after the other: an ONNX Runtime session runs one inference at a time. */
  private judging: Promise<unknown> = Promise.resolve();
  readonly features: FeatureStore;

  constructor(private readonly platform: LabPlatform) {
    this.features = storageFeatureStore(platform.root.folder('features'));
  }

  // ---------------------------------------------------------------------------------------------
  // Model

  /** Opens a model (checking its configs and weight headers) and makes it the lab's model. */
  async openModel(model: ModelHandle): Promise<ModelInfo> {
    const checked = await model.check();
    if (this.active.size) throw new InputError('a training run is in progress; pause or cancel it before changing the model');
    await this.releaseSampler();
    await this.model?.close();
    this.model = model;
    const u = checked.unet;
    return {
      name: model.name,
      kind: model.kind,
      unet: {
        blockOutChannels: [...u.block_out_channels],
        layersPerBlock: u.layers_per_block,
        crossAttentionDim: u.cross_attention_dim,
        sampleSize: u.sample_size ?? 64,
        inChannels: u.in_channels,
        parameters: [...unetParamShapes(u).values()].reduce((sum, shape) => sum + shape.reduce((a, b) => a * b, 1), 0),
      },
      textEncoder: { hiddenSize: checked.text.hidden_size, layers: checked.text.num_hidden_layers },
      vae: { latentChannels: checked.vae.latent_channels, downsample: 2 ** (checked.vae.block_out_channels.length - 1), scalingFactor: checked.vae.scaling_factor },
    };
  }

  /**
   * The GPU memory a training step on the open model needs, with gradient checkpointing and without, and
   * whether the weights would be stored as float16 on this GPU (precision 'auto').
   */
  async planMemory(request: { method: TrainConfig['method']; resolution: number; rank: number; alpha?: number; batch: number; targets?: string[]; precision?: RunSettings['precision'] }): Promise<{ weightBytes: 2 | 4; checkpointing: MemoryPlan; noCheckpointing: MemoryPlan }> {
    const checked = await this.requireModel().check({ resolution: request.resolution });
    const precision = request.precision ?? 'auto';
    const half = precision === 'auto' ? preferHalfWeights(await this.platform.gpu()) : precision === 'f16';
    const weightBytes = half ? 2 : 4;
    const plan = async (checkpointing: boolean) => {
      try {
        return await planMemory({ unet: checked.unet, textEncoder: checked.text, vae: checked.vae, resolution: request.resolution, rank: request.rank, alpha: request.alpha, targets: request.targets, batch: request.batch, method: request.method, weightBytes, checkpointing });
      } catch (e) {
        throw new InputError((e as Error).message);
      }
    };
    return { weightBytes, checkpointing: await plan(true), noCheckpointing: await plan(false) };
  }

  private requireModel(): ModelHandle {
    if (!this.model) throw new InputError('no model is open: open a model folder or checkpoint first');
    return this.model;
  }

  // ---------------------------------------------------------------------------------------------
  // Datasets

  private datasetFolder(id: string): Storage {
    return this.platform.root.folder(`${DATASETS}/${checkId(id, 'dataset')}`);
  }

  /**
   * Imports a dataset (any layout `tpo-lab pairs` reads) and copies its images into the lab's storage, so
   * it stays usable when the picked files are gone. Nothing is kept when any step fails.
   */
  async importDataset(source: DatasetSource, name: string, options: ImportOptions = {}, onProgress?: (done: number, total: number) => void): Promise<DatasetImport> {
    if (!source.readFile) throw new Error(`${source.name}: this source cannot read whole files, so its images cannot be copied`);
    // The trainer's DPO / KTO JSONL first: the captioned-image layouts would read it as captions.
    const preference = await importPreferenceData(source, options);
    const result = preference ? null : await importDataset(source, options);
    if (result?.items.length === 0) throw new InputError(`${source.name}: no captioned images found`);
    if (preference?.records.length === 0) throw new InputError(`${source.name}: no usable records in ${preference.file}`);
    const id = newId();
    const folder = this.datasetFolder(id);
    try {
      const images = preference ? preferenceImages(preference) : [...new Set(result!.items.map((i) => i.image))];
      for (const [i, image] of images.entries()) {
        const bytes = await source.readFile!(image);
        if (!bytes) throw new InputError(`${source.name}: ${image} disappeared during the import`);
        await folder.write(`${IMAGES}/${image}`, bytes);
        onProgress?.(i + 1, images.length);
      }
      if (preference) await folder.write(ITEMS_FILE, formatPreferenceJsonl(preference));
      else await folder.write(ITEMS_FILE, exportTrainerJsonl(result!.items));
      const meta: DatasetMeta = { id, name, createdAt: new Date().toISOString(), kind: preference?.kind ?? 'tpo' };
      await folder.write(DATASET_FILE, `${JSON.stringify(meta, null, 2)}\n`);
      return { dataset: await this.datasetInfo(meta), problems: preference?.problems ?? result!.problems };
    } catch (e) {
      await this.platform.root.remove(`${DATASETS}/${id}`);
      throw e;
    }
  }

  /**
   * The shapes world's demo data set (src/demo/shapes.ts): `count` images of the demo model's training
   * split with their captions, made here and imported like a picked folder, ready for negatives.
   */
  async importDemoDataset(count = DEMO_DATASET_SIZE, onProgress?: (done: number, total: number) => void): Promise<DatasetImport> {
    const files = new Map<string, Uint8Array>();
    const encoder = new TextEncoder();
    for (const [k, item] of shapesDataset({ seed: DEMO_DATASET_SEED, count }).entries()) {
      const name = shapesFileName(k, count);
      files.set(`${name}.png`, await this.platform.encodePng(item.image.data, item.image.width, item.image.height, {}));
      files.set(`${name}.txt`, encoder.encode(`${item.caption}\n`));
    }
    return this.importDataset(bytesSource('the shapes demo', files), DEMO_DATASET_NAME, {}, onProgress);
  }

  /**
   * The dataset and every run trained on it as one zip file (see project.ts), to move or back up a project.
   * Runs still training are refused: their files change while they are read.
   */
  async exportProject(id: string): Promise<{ bytes: Uint8Array; name: string }> {
    const text = await readText(this.datasetFolder(id), DATASET_FILE);
    if (!text) throw new InputError(`there is no dataset ${id}`);
    const info = JSON.parse(text) as { name: string; createdAt: string };
    const runPaths: Record<string, string> = {};
    for (const run of await this.platform.root.list(RUNS)) {
      const settings = await readText(this.runFolder(run), RUN_SETTINGS_FILE);
      if (!settings || (JSON.parse(settings) as { data?: string }).data !== id) continue;
      if (this.active.has(run)) throw new InputError(`run ${run} of this dataset is training: pause it is not enough, cancel it (it keeps its checkpoint) or let it finish, then export`);
      runPaths[run] = `${RUNS}/${run}`;
    }
    const bytes = await exportProject(this.platform.root, `${DATASETS}/${id}`, info, runPaths);
    const slug = info.name.replace(/[^\p{L}\p{N}]+/gu, '-').replace(/^-|-$/g, '').slice(0, 60) || 'project';
    return { bytes, name: `${slug}.tpo-lab.zip` };
  }

  /** Imports a project file as a new dataset with its runs (new ids); nothing is kept when it fails. */
  async importProject(bytes: Uint8Array, name?: string): Promise<{ dataset: DatasetInfo; runs: string[] }> {
    const contents = readProject(bytes, name);
    const datasetId = newId();
    const runPaths: Record<string, string> = {};
    const runIds: string[] = [];
    for (const old of contents.manifest.runs) {
      let id = newId();
      while (runIds.includes(id)) id = newId();
      runIds.push(id);
      runPaths[old] = `${RUNS}/${id}`;
    }
    try {
      await writeProject(this.platform.root, contents, `${DATASETS}/${datasetId}`, datasetId, runPaths);
    } catch (e) {
      await this.platform.root.remove(`${DATASETS}/${datasetId}`).catch(() => {});
      for (const path of Object.values(runPaths)) await this.platform.root.remove(path).catch(() => {});
      throw e;
    }
    const meta = await this.datasetMeta(datasetId);
    if (!meta) throw new InputError(`the project's dataset could not be read back after the import`);
    return { dataset: await this.datasetInfo(meta), runs: runIds };
  }

  async listDatasets(): Promise<DatasetInfo[]> {
    const out: DatasetInfo[] = [];
    for (const id of await this.platform.root.list(DATASETS)) {
      const meta = await this.datasetMeta(id);
      if (meta) out.push(await this.datasetInfo(meta)); // without dataset.json: an import that did not finish
    }
    return out;
  }

  /** dataset.json, or null when the dataset is not there (or its import did not finish). */
  private async datasetMeta(id: string): Promise<DatasetMeta | null> {
    const text = await readText(this.datasetFolder(id), DATASET_FILE);
    return text ? (JSON.parse(text) as DatasetMeta) : null;
  }

  private async datasetInfo(meta: DatasetMeta): Promise<DatasetInfo> {
    const kind = meta.kind ?? 'tpo';
    const base = { id: meta.id, name: meta.name, createdAt: meta.createdAt, kind };
    if (kind === 'tpo') {
      const items = await this.datasetItems(meta.id);
      return { ...base, items: items.length, images: new Set(items.map((i) => i.image)).size, stats: datasetStats(items) };
    }
    const data = await this.datasetRecords(meta.id);
    return { ...base, items: data.records.length, images: preferenceImages(data).length, stats: datasetStats([]) };
  }

  private async datasetKind(id: string): Promise<DataKind> {
    const meta = await this.datasetMeta(id);
    if (!meta) throw new InputError(`there is no dataset ${id}`);
    return meta.kind ?? 'tpo';
  }

  /** A captioned-image dataset's items: captions, negatives with their review status. */
  async datasetItems(id: string): Promise<DatasetItem[]> {
    const kind = await this.datasetKind(id);
    if (kind !== 'tpo') throw new InputError(`dataset ${id} holds ${DATA_NAMES[kind]}, not captioned images: it has no captions to write negatives for`);
    const text = await readText(this.datasetFolder(id), ITEMS_FILE);
    if (text === null) throw new InputError(`there is no dataset ${id}`);
    return parseTrainerJsonl(text, { file: ITEMS_FILE, onInvalid: 'error' }).items;
  }

  /** Replaces a dataset's items (captions, negatives and their review status) as a whole. */
  async saveItems(id: string, items: readonly DatasetItem[]): Promise<void> {
    const kind = await this.datasetKind(id);
    if (kind !== 'tpo') throw new InputError(`dataset ${id} holds ${DATA_NAMES[kind]}, not captioned images`);
    await this.datasetFolder(id).write(ITEMS_FILE, exportTrainerJsonl(items));
  }

  /** A preference dataset's records: Diffusion-DPO pairs or Diffusion-KTO labelled images. */
  async datasetRecords(id: string): Promise<PreferenceRecords> {
    const kind = await this.datasetKind(id);
    if (kind === 'tpo') throw new InputError(`dataset ${id} holds captioned images, not preference pairs or labels`);
    const text = await readText(this.datasetFolder(id), ITEMS_FILE);
    if (text === null) throw new InputError(`there is no dataset ${id}`);
    return parsePreferenceJsonl(text, kind, { file: ITEMS_FILE });
  }

  /** Replaces a preference dataset's records as a whole (after the user removed some). */
  async saveRecords(id: string, data: PreferenceRecords): Promise<void> {
    const kind = await this.datasetKind(id);
    if (kind !== data.kind) throw new InputError(`dataset ${id} holds ${kind} records, not ${data.kind} records`);
    await this.datasetFolder(id).write(ITEMS_FILE, formatPreferenceJsonl(data));
  }

  async deleteDataset(id: string): Promise<void> {
    await this.platform.root.remove(`${DATASETS}/${checkId(id, 'dataset')}`);
  }

  /** Writes negatives for the dataset's captions (resuming: captions that have enough are skipped). */
  async makeNegatives(id: string, request: NegativesRequest, onEvent?: (e: PairsEvent) => void, signal?: AbortSignal): Promise<Omit<PairsJobResult, 'items'>> {
    const items = await this.datasetItems(id);
    const tokenizer = this.model ? await this.model.tokenizer() : null;
    const words = request.words ?? shapesWorldWords(items.map((i) => i.caption));
    const { editor, concurrency } = pairsEditor({ ...request, words }, tokenizer ? (t) => tokenizer.countTokens(t) : undefined);
    const { items: _saved, ...result } = await runPairsJob({
      items,
      editor,
      principles: request.principles,
      perCaption: request.perCaption,
      concurrency,
      signal,
      apiKey: request.llm?.apiKey,
      onEvent,
      save: (next) => this.saveItems(id, next),
    });
    return result;
  }

  /** Prepares (caches) the features a method's training on the dataset needs; returns how many were needed. */
  async prepareFeatures(id: string, options: { method: TrainConfig['method']; resolution: number; negatives?: 'all' | 'accepted' }, onProgress?: (done: number, total: number) => void): Promise<{ features: number }> {
    const model = this.requireModel();
    const data = await this.trainingData(id, options.method, options.negatives ?? 'all');
    await model.check({ resolution: options.resolution });
    const gpu = await this.platform.gpu();
    let total = 0;
    await prepareTrainingFeatures(gpu, model, data.examples, {
      resolution: options.resolution,
      store: this.features,
      readImage: (image) => this.readImage(id, image),
      decode: this.platform.decode,
      onProgress: (done, all) => {
        total = all;
        onProgress?.(done, all);
      },
    });
    return { features: total };
  }

  private async trainingData(id: string, method: TrainConfig['method'], negatives: 'all' | 'accepted') {
    const kind = await this.datasetKind(id);
    if (!METHODS_FOR[kind].includes(method)) {
      throw new InputError(`dataset ${id} holds ${DATA_NAMES[kind]}, which ${method} does not train on: choose ${METHODS_FOR[kind].join(' or ')}`);
    }
    const text = await readText(this.datasetFolder(id), ITEMS_FILE);
    if (text === null) throw new InputError(`there is no dataset ${id}`);
    return parseTrainingData(text, { source: `dataset ${id}`, file: ITEMS_FILE, method, skipBadLines: false, negatives, resolveImage: (p) => p });
  }

  /** A dataset image's file, for showing it. */
  async datasetImage(id: string, image: string): Promise<Uint8Array> {
    return this.readImage(id, image);
  }

  private async readImage(dataset: string, image: string, bytes?: number): Promise<Uint8Array> {
    const all = await this.datasetFolder(dataset).read(`${IMAGES}/${image}`);
    if (!all) throw new InputError(`${image}: the image is missing from dataset ${dataset}`);
    return bytes === undefined ? all : all.subarray(0, bytes);
  }

  // ---------------------------------------------------------------------------------------------
  // Runs

  private runFolder(id: string): Storage {
    return this.platform.root.folder(`${RUNS}/${checkId(id, 'run')}`);
  }

  /** Starts a run in the background; its events go to `onEvent`. Resolves with its id once it has started. */
  async startRun(request: RunRequest, onEvent: (e: LabRunEvent) => void): Promise<string> {
    const model = this.requireModel();
    const config: TrainConfig = { ...defaultTrainConfig(request.config.method), ...request.config };
    try {
      validateTrainConfig(config);
    } catch (e) {
      throw new InputError((e as Error).message);
    }
    const s = request.settings ?? {};
    const settings: RunSettings = {
      model: model.name,
      data: checkId(request.dataset, 'dataset'),
      negatives: s.negatives ?? 'all',
      skipBadLines: false,
      holdout: s.holdout ?? 0.1,
      cache: 'features',
      precision: s.precision ?? 'auto',
      scoreDraws: s.scoreDraws ?? DEFAULT_SCORE_DRAWS,
      scoreEvery: s.scoreEvery ?? 0,
      scoreLimit: s.scoreLimit ?? 256,
      checkpointEvery: s.checkpointEvery ?? 100,
      dtype: s.dtype ?? 'fp16',
      title: s.title,
      startedAt: Math.floor(Date.now() / 1000),
      allowSmallImages: s.allowSmallImages ?? false,
      previews: s.previews,
    };
    if (!(settings.holdout >= 0 && settings.holdout < 1)) throw new InputError('holdout must be from 0 to below 1');
    const data = await this.trainingData(settings.data, config.method, settings.negatives);
    if (splitExamples(data.examples, settings.holdout, config.seed).train.length === 0) throw new InputError('no training examples are left after the held-out split; lower the held-out share');
    // Training loads its own UNet: the sampling copy would only take GPU memory from it.
    await this.releaseSampler();
    const id = newId();
    this.launch(id, { config, settings, data }, onEvent);
    return id;
  }

  /** Continues a stopped run (after a reload, a closed tab, a lost device, a full disk) from its checkpoint. */
  async resumeRun(id: string, onEvent: (e: LabRunEvent) => void, steps?: number): Promise<void> {
    if (this.active.has(id)) throw new InputError(`run ${id} is already running`);
    const model = this.requireModel();
    const saved = await readSavedRun(this.runFolder(id));
    // Continuing on other base weights would silently train a different LoRA. (By name: a renamed copy of
    // the same model has to be opened under its old name.)
    if (saved.settings.model !== model.name) throw new InputError(`run ${id} was trained on the model ${saved.settings.model}, but ${model.name} is open: open ${saved.settings.model} to resume it`);
    const config = { ...saved.saved.config, steps: steps ?? saved.saved.config.steps };
    if (config.steps <= saved.saved.state.step) throw new InputError(`run ${id} is at step ${saved.saved.state.step} of ${saved.saved.config.steps}: nothing to resume (ask for more steps)`);
    const data = await this.trainingData(saved.settings.data, config.method, saved.settings.negatives);
    await this.releaseSampler();
    this.failed.delete(id);
    this.launch(id, { config, settings: saved.settings, data, resume: saved }, onEvent);
  }

  private launch(id: string, setup: Parameters<typeof trainRun>[0], onEvent: (e: LabRunEvent) => void): void {
    const control = new TrainControl();
    const run: ActiveRun = { control, status: 'running', step: setup.resume?.saved.state.step ?? 0, steps: setup.config.steps, done: Promise.resolve() };
    this.active.set(id, run);
    const status = (s: RunInfo['status'], error?: unknown) =>
      onEvent({ type: 'status', run: id, status: s, step: run.step, ...(error === undefined ? {} : { error: error instanceof Error ? error.message : String(error), errorKind: failureKind(error) }) });
    const storage = this.runFolder(id);
    const model = this.requireModel();
    /** The device the run's current attempt trains on. */
    let used: Gpu | null = null;
    const env = {
      model,
      storage,
      features: this.features,
      readImage: (image: string, bytes?: number) => this.readImage(setup.settings.data, image, bytes),
      decode: this.platform.decode,
      formats: this.platform.formats,
      encodePng: this.platform.encodePng,
      openGpu: async () => {
        used = await this.platform.gpu();
        return { gpu: used, release: () => {} };
      },
      onEvent: (e: RunEvent) => {
        if (e.type === 'step') run.step = e.report.step;
        onEvent({ ...e, run: id });
      },
    };
    run.done = (async () => {
      status('running');
      let current = setup;
      for (let attempt = 0; ; attempt++) {
        let result: RunResult;
        try {
          result = await trainRun(current, env, control);
        } catch (e) {
          const lost = e instanceof GpuDeviceLostError || (used !== null && (await wasLost(used)));
          if (lost && attempt < DEVICE_LOSS_RETRIES && !control.isCancelled) {
            // The engine opens a new device (platform.gpu replaces a lost one) and continues from the
            // last checkpoint, or from the start when there is none yet: the result is the same.
            const resume = await readSavedRun(storage).catch(() => undefined);
            current = { ...setup, resume };
            run.step = resume?.saved.state.step ?? 0;
            onEvent({ type: 'device-lost', run: id, message: (e as Error).message, resumeFrom: run.step });
            continue;
          }
          this.failed.set(id, e instanceof Error ? e.message : String(e));
          this.active.delete(id);
          status((await storage.exists(CHECKPOINT_FOLDER)) ? 'stopped' : 'failed', e);
          return;
        }
        this.active.delete(id);
        run.step = result.step;
        status(result.outcome === 'done' ? 'done' : 'stopped');
        return;
      }
    })();
  }

  /** Pauses between steps (the GPU memory stays held); continueRun goes on. */
  pauseRun(id: string): void {
    const run = this.activeRun(id);
    run.control.pause();
    run.status = 'paused';
  }

  continueRun(id: string): void {
    const run = this.activeRun(id);
    run.control.resume();
    run.status = 'running';
  }

  /** Stops after the step in flight, with a checkpoint (resumeRun continues it later). */
  async cancelRun(id: string): Promise<void> {
    const run = this.activeRun(id);
    run.control.cancel();
    await run.done;
  }

  /** Resolves when the run (running in this session) has stopped, for whatever reason. */
  async waitForRun(id: string): Promise<void> {
    await this.active.get(id)?.done;
  }

  private activeRun(id: string): ActiveRun {
    const run = this.active.get(id);
    if (!run) throw new InputError(`run ${id} is not running`);
    return run;
  }

  async runInfo(id: string): Promise<RunInfo> {
    const storage = this.runFolder(id);
    const settingsText = await readText(storage, RUN_SETTINGS_FILE);
    if (!settingsText) throw new InputError(`there is no run ${id}`);
    const settings = JSON.parse(settingsText) as RunSettings;
    let saved: SavedRun | null = null;
    try {
      saved = await readSavedRun(storage);
    } catch {
      saved = null;
    }
    const active = this.active.get(id);
    const done = await storage.exists(LORA_FILE);
    const lastStep = saved?.saved.state.step ?? 0;
    const error = this.failed.get(id);
    const c = saved?.saved.config;
    return {
      id,
      method: saved?.saved.config.method ?? '?',
      dataset: settings.data,
      status: active ? active.status : done ? 'done' : saved ? 'stopped' : 'failed',
      step: active ? active.step : lastStep,
      steps: active ? active.steps : (saved?.saved.config.steps ?? 0),
      startedAt: settings.startedAt,
      config: c ? { lr: c.lr, lrSchedule: c.lrSchedule, batchSize: c.batchSize, gradAccum: c.gradAccum, rank: c.rank, alpha: c.alpha, resolution: c.resolution, beta: c.beta } : null,
      bytes: await storage.size(),
      ...(error ? { error } : {}),
    };
  }

  async listRuns(): Promise<RunInfo[]> {
    const out: RunInfo[] = [];
    for (const id of await this.platform.root.list(RUNS)) {
      try {
        out.push(await this.runInfo(id));
      } catch {
        // A run whose first write did not finish has nothing to show or resume.
      }
    }
    return out;
  }

  async deleteRun(id: string): Promise<void> {
    if (this.active.has(id)) throw new InputError(`run ${id} is running; cancel it first`);
    await this.platform.root.remove(`${RUNS}/${checkId(id, 'run')}`);
  }

  /** The run's step metrics, oldest first (a line cut short by a crash is skipped). */
  async metrics(id: string): Promise<Record<string, unknown>[]> {
    return jsonLines(await readText(this.runFolder(id), METRICS_FILE));
  }

  /** The run's implicit scores: per example lines and per split summaries, in the order written. */
  async scores(id: string): Promise<Record<string, unknown>[]> {
    return jsonLines(await readText(this.runFolder(id), SCORES_FILE));
  }

  /** The run's preview samples so far, oldest first: each folder's step and images (files relative to the run). */
  async previews(id: string): Promise<{ step: number; folder: string; images: { file: string; prompt: string; seed: number }[] }[]> {
    const storage = this.runFolder(id);
    const out = [];
    for (const folder of await storage.list('samples')) {
      const text = await readText(storage, `samples/${folder}/index.json`);
      if (!text) continue; // cut short before its index was written
      const index = JSON.parse(text) as { step: number; images: { file: string; prompt: string; seed: number }[] };
      out.push({ step: index.step, folder: `samples/${folder}`, images: index.images.map((i) => ({ ...i, file: `samples/${folder}/${i.file}` })) });
    }
    // 'base' (step 0) first, then by step.
    return out.sort((a, b) => a.step - b.step || (a.folder.endsWith('/base') ? -1 : 1));
  }

  /** A file of the run (a preview PNG, index.json), or null. */
  async runFile(id: string, path: string): Promise<Uint8Array | null> {
    return this.runFolder(id).read(path);
  }

  /**
   * The run's LoRA as stored (the final one, or the last checkpoint's while the run is unfinished), decoded
   * and checked against the open model's UNet: what exporting and sampling start from.
   */
  private async runLora(id: string): Promise<{ decoded: DecodedLora; source: 'final' | 'checkpoint'; info: RunInfo; name: string }> {
    const storage = this.runFolder(id);
    const info = await this.runInfo(id);
    const final = await storage.read(LORA_FILE);
    const bytes = final ?? (await storage.read(`${CHECKPOINT_FOLDER}/${LORA_FILE}`));
    if (!bytes) throw new InputError(`run ${id} has no LoRA yet: it has not reached its first checkpoint`);
    if (!this.model) throw new InputError('open the model the run was trained on first: the LoRA is checked against its UNet before it is used');
    const file = await SafetensorsFile.open(memorySource(bytes, `run ${id}/${LORA_FILE}`));
    const decoded = await decodeLora(file, (await this.model.check()).unet);
    return { decoded, source: final ? 'final' : 'checkpoint', info, name: `tpo-${info.method}-${id}-step${info.step}` };
  }

  /** The exported file's bytes and what it carries. */
  private async encodeRunLora(id: string, options: { format?: LoraFormat; dtype?: 'fp16' | 'fp32' }): Promise<{ bytes: Uint8Array; info: LoraInfo }> {
    const { decoded, source, info, name } = await this.runLora(id);
    const format = options.format ?? 'kohya';
    const saved = await readSavedRun(this.runFolder(id)).catch(() => null);
    const dtype = options.dtype ?? saved?.settings.dtype ?? 'fp16';
    const bytes = encodeLora(decoded.lora, { format, dtype, metadata: decoded.metadata });
    // Read back from the bytes themselves, so what is shown is exactly what the file holds.
    const written = await SafetensorsFile.open(memorySource(bytes, `${name}.safetensors`));
    return {
      bytes,
      info: { name: `${name}.safetensors`, step: info.step, source, format, dtype, metadata: { ...written.metadata }, tensors: written.names.length, modules: decoded.lora.size, bytes: bytes.byteLength },
    };
  }

  /**
   * The run's LoRA as a file for Automatic1111 / ComfyUI (kohya) or diffusers: the final one, or the last
   * checkpoint's while the run is unfinished. Checked against the open model's UNet.
   */
  async exportLora(id: string, options: { format?: LoraFormat; dtype?: 'fp16' | 'fp32' } = {}): Promise<{ bytes: Uint8Array; name: string; step: number }> {
    const { bytes, info } = await this.encodeRunLora(id, options);
    return { bytes, name: info.name, step: info.step };
  }

  /** What exportLora would write with these options: the file's metadata, tensor count and size. */
  async loraInfo(id: string, options: { format?: LoraFormat; dtype?: 'fp16' | 'fp32' } = {}): Promise<LoraInfo> {
    return (await this.encodeRunLora(id, options)).info;
  }

  // ---------------------------------------------------------------------------------------------
  // Independent judge

  /** Runs judge calls one after the other. */
  private queueJudge<T>(work: () => Promise<T>): Promise<T> {
    const next = this.judging.catch(() => undefined).then(work);
    this.judging = next;
    return next;
  }

  /**
   * Opens a judge folder (see judge-files.ts) and makes it the lab's judge, releasing the one before. A
   * folder that fails to open leaves the open judge as it was.
   */
  openJudge(source: JudgeSource, kind: JudgeKind): Promise<JudgeInfo> {
    return this.queueJudge(async () => {
      let files;
      try {
        files = await readJudgeFiles(source, kind);
      } catch (e) {
        // A missing or malformed file of the folder the user picked: what they gave is wrong.
        throw new InputError((e as Error).message);
      }
      const notices: string[] = [];
      const judge = await ClipJudge.create(files, { onNotice: (text) => notices.push(text) });
      await this.judge?.judge.release();
      this.judge = { judge, info: { name: source.name, kind, backend: judge.backend, notices } };
      this.judged.clear();
      return this.judge.info;
    });
  }

  /** The open judge, or null. */
  judgeInfo(): JudgeInfo | null {
    return this.judge?.info ?? null;
  }

  /** Lets go of the judge's sessions. */
  closeJudge(): Promise<void> {
    return this.queueJudge(async () => {
      await this.judge?.judge.release();
      this.judge = null;
      this.judged.clear();
    });
  }

  private requireJudge(): { judge: ClipJudge; info: JudgeInfo } {
    if (!this.judge) throw new InputError('no judge is open: pick a judge folder (a CLIP ONNX export) first');
    return this.judge;
  }

  /**
   * The open judge's scores of every pair of a captioned-image dataset (score_w, score_l, margin) and, with
   * a run trained on it, the run's implicit margins at its last scored step beside them: the correlation of
   * the two margins overall and per principle. `onProgress` counts captions and images embedded.
   */
  judgePairs(dataset: string, run: string | null, onProgress?: (done: number, total: number) => void): Promise<JudgePairsResult> {
    return this.queueJudge(async () => {
      const { judge, info } = this.requireJudge();
      const kind = await this.datasetKind(dataset);
      if (kind !== 'tpo') throw new InputError(`dataset ${dataset} holds ${DATA_NAMES[kind]}: the judge scores images against their captions and the negatives written for them`);
      const data = await this.trainingData(dataset, 'tdpo', 'all');
      const itemsText = (await readText(this.datasetFolder(dataset), ITEMS_FILE)) ?? '';
      let cached = this.judged.get(dataset);
      if (!cached || cached.itemsText !== itemsText) {
        const pairs = data.examples.map((e) => ({ image: e.w.image, caption: e.w.caption, negative: e.l.caption, principle: e.principle ?? null }));
        // One count over both towers: the captions first, then the images.
        const captions = new Set(pairs.flatMap((p) => [p.caption, p.negative])).size;
        const total = captions + new Set(pairs.map((p) => p.image)).size;
        const rows = await judgeCaptionPairs(judge, pairs, async (image) => this.platform.decode(await this.readImage(dataset, image), image), (stage, done) => onProgress?.(stage === 'captions' ? done : captions + done, total));
        cached = { itemsText, rows };
        this.judged.set(dataset, cached);
      }
      const summary = judgeSummary(cached.rows);
      const plain = (r: JudgedPair, implicitMargin: number | undefined): JudgePairRow => ({ ...r, principle: principleOf(r), implicitMargin: implicitMargin ?? null });
      const base = { judge: info, dataset, run, ...summary };
      if (run === null) return { ...base, step: null, rows: cached.rows.map((r) => plain(r, undefined)), matched: 0, overall: null, byPrinciple: {} };
      const settings = await readText(this.runFolder(run), RUN_SETTINGS_FILE);
      if (!settings) throw new InputError(`there is no run ${run}`);
      const trainedOn = (JSON.parse(settings) as RunSettings).data;
      if (trainedOn !== dataset) throw new InputError(`run ${run} was trained on dataset ${trainedOn}, not ${dataset}: its implicit margins are of other pairs`);
      const scores = await readText(this.runFolder(run), SCORES_FILE);
      // A run without scores yet: the judge's margins alone, nothing to correlate with.
      const implicit = scores ? parseImplicitScores(scores, `run ${run}/${SCORES_FILE}`, { runImage: (p) => p, scoreImage: (p) => p }) : { margins: new Map<string, number>(), step: null };
      const compared = compareWithImplicit(cached.rows, implicit);
      return { ...base, step: implicit.step, rows: compared.rows.map((r) => plain(r, r.implicitMargin)), matched: compared.matched, overall: compared.overall, byPrinciple: compared.byPrinciple };
    });
  }

  /** The open judge's score of each image (PNG or JPEG bytes) against its prompt: the Samples screen's base and LoRA images. */
  judgeImages(images: readonly { bytes: Uint8Array; prompt: string }[]): Promise<number[]> {
    return this.queueJudge(async () => {
      const { judge } = this.requireJudge();
      const indices = images.map((_, i) => i);
      const embeds = await embedAll(
        judge,
        indices,
        images.map((i) => i.prompt),
        (i) => this.platform.decode(images[i].bytes, `image ${i + 1}`),
      );
      return indices.map((i) => judge.score(embeds.image(i), embeds.text(images[i].prompt)));
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Sampling

  /**
   * Draws each prompt with each seed on the open model and, when `run` is given, again with that run's LoRA
   * (final, or its last checkpoint's) at `loraScale`: PNGs with their parameters. The networks stay on the
   * GPU for the next call; the LoRA too while the run's file is unchanged. Aborting `signal` stops after the
   * image (pair) in flight, with those drawn so far (`stopped`).
   */
  sample(request: SampleRequest, onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<SampleResult> {
    const next = this.sampling.catch(() => undefined).then(() => this.sampleNow(request, onProgress, signal));
    this.sampling = next;
    return next;
  }

  private async sampleNow(request: SampleRequest, onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<SampleResult> {
    const model = this.requireModel();
    const { prompts, seeds, settings } = checkSampleRequest(request);
    if (this.active.size) {
      throw new InputError('a training run is in progress: sampling beside it would need a second copy of the UNet in GPU memory. Wait until it finishes, or cancel it (it can be resumed).');
    }
    // Configs and weight headers only: sampling takes any multiple of the VAE's factor, not just training sizes.
    await model.check();
    this.sampler ??= new ModelSampler(model, () => this.platform.gpu());
    const sampler = this.sampler;
    let lora: SampleResult['lora'] = null;
    try {
      if (request.run) {
        const run = await this.runLora(checkId(request.run, 'run'));
        // Keyed by the file's identity (run, source, step): a run that trained on since is loaded again.
        const key = `${request.run}/${run.source}/${run.info.step}`;
        // runLora decoded and checked it already: upload those matrices (the second half of readLora).
        await sampler.useLora(key, async (gpu) => loraFromHost(gpu, run.decoded.lora));
        lora = { name: run.name, step: run.info.step };
      }
      // Without a run every image is drawn at scale 0, which switches the UNet's LoRA off: a LoRA kept from an
      // earlier call stays loaded for the next one.
      const images = await sampler.draw({ prompts, seeds, settings, loraName: lora?.name ?? null }, this.platform.encodePng, onProgress, signal);
      const asked = prompts.length * seeds.length;
      return { images, lora, settings, asked, stopped: images.length < asked };
    } catch (e) {
      // A lost device leaves nothing usable: load everything afresh next time.
      if (e instanceof GpuDeviceLostError) await this.releaseSampler(false);
      throw e;
    }
  }

  /** Lets go of the sampling networks (after the sample call in flight, unless called from within one). */
  private async releaseSampler(waitForSampling = true): Promise<void> {
    if (waitForSampling) await this.sampling.catch(() => undefined);
    this.sampler?.release();
    this.sampler = null;
  }
}

/**
 * Whether a failure came from losing `gpu`: a lost device can first surface as some other error (a failed
 * buffer map), with its `lost` promise settling a moment later.
 */
async function wasLost(gpu: Gpu): Promise<boolean> {
  if (gpu.isLost) return true;
  const lost = await Promise.race([gpu.device.lost.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 1000))]);
  return lost || gpu.isLost;
}

function jsonLines(text: string | null): Record<string, unknown>[] {
  if (!text) return [];
  const out: Record<string, unknown>[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // cut short by a crash
    }
  }
  return out;
}
