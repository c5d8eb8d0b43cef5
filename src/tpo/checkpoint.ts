// Checkpoints: everything a run needs to continue exactly as if it had never stopped.
//   lora.safetensors       the LoRA in kohya's format, float32 (also a usable LoRA file on its own)
//   optimizer.safetensors  AdamW's first and second moments, float32, named after the LoRA tensors
//   state.json             config, step counters, the data order and position, the random generator
// A run that trains every UNet weight (config.trainable 'all') saves unet.safetensors instead of the LoRA:
// every weight, float32, under its diffusers state-dict name (so it is also a usable unet/ weight file);
// its moments are named after those weights.
// The trainer's randomness is counter-based (random.ts), so the step number is the generator's state.
// Storage-agnostic: the files are returned as bytes, the CLI writes them to a folder, the app to OPFS.

import type { Gpu } from '../gpu/gpu';
import { decodeLora, encodeLora, type HostLora, loraFromHost, loraToHost, type LoraTrainingInfo } from '../models/lora-io';
import { sha256HexSync } from '../util/hash';
import { kohyaName, loraTargets } from '../models/lora';
import { memorySource, SafetensorsFile, fromFloat32, writeSafetensors } from '../models/safetensors';
import { unetParamShapes, type UNet, type UNetConfig } from '../models/unet';
import { checkParams, encodeStateDict } from '../models/weights';
import { Tensor } from '../nn/tensor';
import type { TrainExample } from './examples';
import { epochOrder, RNG_ALGORITHM } from './random';
import { type OptimizerMoments, type TrainConfig, type Trainer, type TrainState, validateTrainConfig } from './trainer';
import type { ParamShapes } from '../models/weights';

export const CHECKPOINT_FILES = ['lora.safetensors', 'optimizer.safetensors', 'state.json'] as const;
export type CheckpointFiles = Record<(typeof CHECKPOINT_FILES)[number], Uint8Array>;

export interface CheckpointState {
  format: 'tpo-lab-checkpoint';
  version: 1;
  savedAt: string;
  config: TrainConfig;
  state: TrainState;
  rng: { algorithm: string; seed: number };
  data: { examples: number; fingerprint: string };
  info?: LoraTrainingInfo;
}

/** A hash of the example ids in order: a resumed run must see the same examples. */
export async function dataFingerprint(examples: readonly TrainExample[]): Promise<string> {
  return sha256HexSync(new TextEncoder().encode(examples.map((e) => e.id).join('\u0001'))).slice(0, 32);
}

/** Names of every LoRA matrix, kohya style, paired with the trainer's tensors. */
function namedParams(trainer: Pick<Trainer, 'lora'>): [string, Tensor][] {
  return [...trainer.lora.modules.entries()].flatMap(([module, m]) => [
    [`${kohyaName(module)}.lora_down.weight`, m.down] as [string, Tensor],
    [`${kohyaName(module)}.lora_up.weight`, m.up] as [string, Tensor],
  ]);
}

/** optimizer.safetensors: both AdamW moments of every named parameter. */
export async function encodeMoments(named: [string, Tensor][], moments: OptimizerMoments): Promise<Uint8Array> {
  const tensors = [];
  for (const [name, p] of named) {
    for (const [prefix, map] of [['exp_avg', moments.m], ['exp_avg_sq', moments.v]] as const) {
      tensors.push({ name: `${prefix}.${name}`, dtype: 'F32' as const, shape: [...p.shape], data: fromFloat32(await map.get(p)!.read(), 'F32') });
    }
  }
  return writeSafetensors(tensors, { format: 'tpo-lab AdamW moments' });
}

/** The moments of every named parameter back on the GPU, keyed by the parameter; all or nothing. */
export async function decodeMoments(gpu: Gpu, bytes: Uint8Array, named: [string, Tensor][]): Promise<OptimizerMoments> {
  const opt = await SafetensorsFile.open(memorySource(bytes, 'checkpoint/optimizer.safetensors'));
  const moments: OptimizerMoments = { m: new Map(), v: new Map() };
  try {
    for (const [name, p] of named) {
      for (const [prefix, map] of [['exp_avg', moments.m], ['exp_avg_sq', moments.v]] as const) {
        const key = `${prefix}.${name}`;
        if (!opt.tensors.has(key)) throw new Error(`checkpoint/optimizer.safetensors lacks ${key}; the checkpoint is damaged`);
        const values = await opt.readF32(key);
        if (values.length !== p.size) throw new Error(`checkpoint/optimizer.safetensors: ${key} has ${values.length} values, the trained tensor ${p.size}`);
        map.set(p, Tensor.from(gpu, values, p.shape));
      }
    }
  } catch (e) {
    for (const t of [...moments.m.values(), ...moments.v.values()]) t.release();
    throw e;
  }
  return moments;
}

export async function saveCheckpoint(trainer: Trainer, info: LoraTrainingInfo = {}): Promise<CheckpointFiles> {
  if (trainer.allWeights) throw new Error('saveCheckpoint: this run trains all weights; use saveWeightsCheckpoint');
  const host = await loraToHost(trainer.lora);
  const lora = await encodeLora(host, { format: 'kohya', dtype: 'fp32', info: { ...info, steps: trainer.state.step } });
  return {
    'lora.safetensors': lora,
    'optimizer.safetensors': await encodeMoments(namedParams(trainer), trainer.optimizerMoments),
    'state.json': await encodeState(trainer, info),
  };
}

async function encodeState(trainer: Trainer, info: LoraTrainingInfo): Promise<Uint8Array> {
  const state: CheckpointState = {
    format: 'tpo-lab-checkpoint',
    version: 1,
    savedAt: new Date().toISOString(),
    config: trainer.config,
    state: trainer.state,
    rng: { algorithm: RNG_ALGORITHM, seed: trainer.config.seed },
    data: { examples: trainer.examples.length, fingerprint: await dataFingerprint(trainer.examples) },
    info,
  };
  return new TextEncoder().encode(`${JSON.stringify(state, null, 2)}\n`);
}

export const WEIGHTS_CHECKPOINT_FILES = ['unet.safetensors', 'optimizer.safetensors', 'state.json'] as const;
export type WeightsCheckpointFiles = Record<(typeof WEIGHTS_CHECKPOINT_FILES)[number], Uint8Array>;

/** A checkpoint of a run that trains every UNet weight (see the header). */
export async function saveWeightsCheckpoint(trainer: Trainer, info: LoraTrainingInfo = {}): Promise<WeightsCheckpointFiles> {
  if (!trainer.allWeights) throw new Error('saveWeightsCheckpoint: this run trains a LoRA; use saveCheckpoint');
  const weights = trainer.unet.weights;
  return {
    'unet.safetensors': await encodeStateDict(weights, 'F32', { steps: String(trainer.state.step) }),
    'optimizer.safetensors': await encodeMoments([...weights], trainer.optimizerMoments),
    'state.json': await encodeState(trainer, info),
  };
}

/**
 * Replaces every weight of a network (`weights`, by state-dict name) with a checkpoint's float32 copy,
 * checked against the parameters its config implies; all or nothing. The old tensors are released.
 */
export async function restoreWeights(gpu: Gpu, weights: Map<string, Tensor>, bytes: Uint8Array, expected: ParamShapes, label: string): Promise<void> {
  const file = await SafetensorsFile.open(memorySource(bytes, label));
  try {
    checkParams(label, expected, new Map([...file.tensors].map(([k, t]) => [k, t.shape])));
  } catch (e) {
    throw new Error(`${(e as Error).message}; the checkpoint is damaged`);
  }
  const loaded = new Map<string, Tensor>();
  try {
    for (const [name, shape] of expected) loaded.set(name, Tensor.from(gpu, await file.readF32(name), shape));
  } catch (e) {
    for (const t of loaded.values()) t.release();
    throw e;
  }
  for (const [name, t] of loaded) {
    weights.get(name)?.release();
    weights.set(name, t);
  }
}

/**
 * Restores a full-weight checkpoint onto `unet`: its weights become the saved ones (float32, whatever the
 * UNet was loaded as), and returns what a Trainer needs to continue, as loadCheckpoint does.
 */
export async function loadWeightsCheckpoint(gpu: Gpu, unet: UNet, files: WeightsCheckpointFiles): Promise<{ saved: CheckpointState; moments: OptimizerMoments }> {
  const saved = parseCheckpointState(new TextDecoder().decode(files['state.json']));
  if (saved.config.trainable !== 'all') throw new Error('state.json: this checkpoint trains a LoRA; resume it with loadCheckpoint');
  await restoreWeights(gpu, unet.weights, files['unet.safetensors'], unetParamShapes(unet.config), 'checkpoint/unet.safetensors');
  return { saved, moments: await decodeMoments(gpu, files['optimizer.safetensors'], [...unet.weights]) };
}

export function parseCheckpointState(text: string, where = 'state.json'): CheckpointState {
  let s: CheckpointState;
  try {
    s = JSON.parse(text) as CheckpointState;
  } catch (e) {
    throw new Error(`${where} is not valid JSON (${(e as Error).message}); the checkpoint is damaged`);
  }
  if (s === null || typeof s !== 'object' || s.format !== 'tpo-lab-checkpoint' || s.version !== 1 || !s.config || !s.state) {
    throw new Error(`${where} is not a TPO Lab checkpoint (version 1)`);
  }
  validateCheckpointState(s, where);
  return s;
}

/**
 * Checks every field a resumed run relies on, so that a damaged or hand-edited state.json is refused
 * before anything runs (a step of "abc" or -1, an order entry past the data, a position outside the
 * order would otherwise train on garbage or crash mid-run). Messages name the field and what is wrong.
 */
export function validateCheckpointState(s: CheckpointState, where = 'state.json'): void {
  const bad = (field: string, what: string, value: unknown): never => {
    throw new Error(`${where}: ${field} ${what}, got ${JSON.stringify(value)}; the checkpoint is damaged (resume from an intact copy, or start a new run)`);
  };
  try {
    validateTrainConfig(s.config);
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}; the checkpoint is damaged`);
  }
  const st = s.state as unknown as Record<string, unknown>;
  if (st === null || typeof st !== 'object' || Array.isArray(st)) bad('state', 'must be an object', st);
  const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;
  const data = s.data as unknown as Record<string, unknown> | undefined;
  if (!data || typeof data !== 'object') bad('data', 'must be an object with examples and fingerprint', data);
  const examples = data!.examples;
  if (!isCount(examples) || examples < 1) bad('data.examples', 'must be a whole number >= 1', examples);
  if (typeof data!.fingerprint !== 'string' || !/^[0-9a-f]{32}$/.test(data!.fingerprint)) bad('data.fingerprint', 'must be 32 hex digits', data!.fingerprint);
  const n = examples as number;
  const { step, appliedSteps, epoch, order, position, skipped } = st;
  if (!isCount(step)) bad('state.step', 'must be a whole number >= 0', step);
  if ((step as number) > s.config.steps) bad('state.step', `must be at most the run's ${s.config.steps} steps`, step);
  if (!isCount(appliedSteps) || appliedSteps > (step as number)) bad('state.appliedSteps', `must be a whole number from 0 to the step (${step})`, appliedSteps);
  if (!isCount(epoch)) bad('state.epoch', 'must be a whole number >= 0', epoch);
  // Every step takes batchSize * gradAccum examples, so the epoch cannot run ahead of the steps taken.
  // Each step takes batchSize * gradAccum examples in order, so the step fixes the epoch and position.
  const seen = (step as number) * s.config.batchSize * s.config.gradAccum;
  const wantEpoch = seen === 0 ? 0 : Math.floor((seen - 1) / n);
  const wantPosition = seen - wantEpoch * n;
  if (epoch !== wantEpoch) bad('state.epoch', `must be ${wantEpoch} after ${step} steps of ${s.config.batchSize * s.config.gradAccum} examples over ${n}`, epoch);
  if (!Array.isArray(order) || order.length !== n) bad('state.order', `must list each of the ${n} examples once`, Array.isArray(order) ? `${order.length} entries` : order);
  const hit = new Uint8Array(n);
  for (const [i, v] of (order as unknown[]).entries()) {
    if (!isCount(v) || v >= n) bad(`state.order[${i}]`, `must be an example index from 0 to ${n - 1}`, v);
    if (hit[v as number]++) bad(`state.order[${i}]`, 'repeats an example; the order must be a permutation', v);
  }
  if (!isCount(position) || position > n) bad('state.position', `must be a whole number from 0 to ${n}`, position);
  if (position !== wantPosition) bad('state.position', `must be ${wantPosition} after ${step} steps of ${s.config.batchSize * s.config.gradAccum} examples over ${n}`, position);
  const expected = epochOrder(s.config.seed, wantEpoch, n);
  if (expected.some((v, i) => v !== (order as number[])[i])) bad('state.order', `is not the data order of seed ${s.config.seed}, epoch ${wantEpoch}`, `${(order as number[]).slice(0, 8).join(',')}...`);
  if (!Array.isArray(skipped)) bad('state.skipped', 'must be a list of step numbers', skipped);
  const skippedList = skipped as unknown[];
  if (skippedList.length !== (step as number) - (appliedSteps as number)) {
    bad('state.skipped', `must list the ${(step as number) - (appliedSteps as number)} skipped steps (step ${step} - appliedSteps ${appliedSteps})`, skippedList.length);
  }
  skippedList.forEach((v, i) => {
    if (!isCount(v) || v < 1 || v > (step as number) || (i > 0 && v <= (skippedList[i - 1] as number))) bad(`state.skipped[${i}]`, `must be a step from 1 to ${step}, increasing`, v);
  });
  if (s.rng !== undefined && (s.rng === null || s.rng.seed !== s.config.seed)) bad('rng.seed', `must equal config.seed (${s.config.seed})`, s.rng?.seed);
}

/**
 * Checks a checkpoint's LoRA and optimizer files against its state.json and the UNet, from their headers
 * and the LoRA's values, without a GPU: every module the config's targets name, at the config's rank and
 * alpha, and both AdamW moments of every matrix with its shape.
 */
export async function checkCheckpointTensors(saved: CheckpointState, files: CheckpointFiles, unet: UNetConfig): Promise<void> {
  let lora: HostLora;
  let opt: SafetensorsFile;
  try {
    lora = (await decodeLora(await SafetensorsFile.open(memorySource(files['lora.safetensors'], 'checkpoint/lora.safetensors')), unet)).lora;
    opt = await SafetensorsFile.open(memorySource(files['optimizer.safetensors'], 'checkpoint/optimizer.safetensors'));
  } catch (e) {
    throw new Error(`${(e as Error).message}; the checkpoint is damaged`);
  }
  const c = saved.config;
  const want = loraTargets(unet, c.targets);
  const missing = [...want.keys()].filter((m) => !lora.has(m));
  const extra = [...lora.keys()].filter((m) => !want.has(m));
  if (missing.length || extra.length) {
    throw new Error(
      `checkpoint/lora.safetensors holds ${lora.size} modules, state.json's targets (${c.targets.join(', ')}) name ${want.size}` +
        `${missing.length ? `; missing ${missing.slice(0, 3).join(', ')}` : ''}${extra.length ? `; unexpected ${extra.slice(0, 3).join(', ')}` : ''}; the checkpoint is damaged`,
    );
  }
  for (const [name, m] of lora) {
    if (m.rank !== c.rank) throw new Error(`checkpoint/lora.safetensors: ${name} has rank ${m.rank}, state.json says ${c.rank}; the checkpoint is damaged`);
    if (Math.abs(m.alpha - c.alpha) > 1e-6 * Math.max(1, c.alpha)) throw new Error(`checkpoint/lora.safetensors: ${name} has alpha ${m.alpha}, state.json says ${c.alpha}; the checkpoint is damaged`);
    for (const [part, size] of [['lora_down', m.rank * m.in], ['lora_up', m.out * m.rank]] as const) {
      for (const prefix of ['exp_avg', 'exp_avg_sq']) {
        const key = `${prefix}.${kohyaName(name)}.${part}.weight`;
        const info = opt.tensors.get(key);
        if (!info) throw new Error(`checkpoint/optimizer.safetensors lacks ${key}; the checkpoint is damaged`);
        const got = info.shape.reduce((a, b) => a * b, 1);
        if (got !== size) throw new Error(`checkpoint/optimizer.safetensors: ${key} has ${got} values, the LoRA matrix ${size}; the checkpoint is damaged`);
      }
    }
  }
}

/**
 * Restores a checkpoint onto `unet` (sets unet.lora) and returns what a Trainer needs to continue. The
 * caller checks `state.data` against its examples (resumeCheck).
 */
export async function loadCheckpoint(gpu: Gpu, unet: UNet, files: CheckpointFiles): Promise<{ saved: CheckpointState; moments: OptimizerMoments }> {
  const saved = parseCheckpointState(new TextDecoder().decode(files['state.json']));
  if (saved.config.trainable === 'all') throw new Error('state.json: this checkpoint trains all weights; resume it with loadWeightsCheckpoint');
  const decoded = await decodeLora(await SafetensorsFile.open(memorySource(files['lora.safetensors'], 'checkpoint/lora.safetensors')), unet.config);
  const lora = loraFromHost(gpu, decoded.lora);
  unet.lora?.release();
  unet.lora = lora;
  return { saved, moments: await decodeMoments(gpu, files['optimizer.safetensors'], namedParams({ lora })) };
}

/** Refuses to resume on other data than the checkpoint was trained on. */
export async function resumeCheck(saved: CheckpointState, examples: readonly TrainExample[]): Promise<void> {
  const fp = await dataFingerprint(examples);
  if (saved.data.examples !== examples.length || saved.data.fingerprint !== fp) {
    throw new Error(
      `the checkpoint was trained on ${saved.data.examples} examples (fingerprint ${saved.data.fingerprint}); this data gives ` +
        `${examples.length} (fingerprint ${fp}). Resume with the same data file and negative filter, or start a new run.`,
    );
  }
}
