// Checkpoints: everything a run needs to continue exactly as if it had never stopped.
//   lora.safetensors       the LoRA in kohya's format, float32 (also a usable LoRA file on its own)
//   optimizer.safetensors  AdamW's first and second moments, float32, named after the LoRA tensors
//   state.json             config, step counters, the data order and position, the random generator
// The trainer's randomness is counter-based (random.ts), so the step number is the generator's state.
// Storage-agnostic: the files are returned as bytes, the CLI writes them to a folder, the app to OPFS.

import type { Gpu } from '../gpu/gpu';
import { decodeLora, encodeLora, loraFromHost, loraToHost, type LoraTrainingInfo, sha256HexSync } from '../models/lora-io';
import { kohyaName } from '../models/lora';
import { memorySource, SafetensorsFile, fromFloat32, writeSafetensors } from '../models/safetensors';
import { unetParams, type UNet } from '../models/unet';
import { Tensor } from '../nn/tensor';
import type { TrainExample } from './examples';
import { RNG_ALGORITHM } from './random';
import type { OptimizerMoments, TrainConfig, Trainer, TrainState } from './trainer';

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

export async function saveCheckpoint(trainer: Trainer, info: LoraTrainingInfo = {}): Promise<CheckpointFiles> {
  const host = await loraToHost(trainer.lora);
  const lora = await encodeLora(host, { format: 'kohya', dtype: 'fp32', info: { ...info, steps: trainer.state.step } });
  const moments = trainer.optimizerMoments;
  const tensors = [];
  for (const [name, p] of namedParams(trainer)) {
    for (const [prefix, map] of [['exp_avg', moments.m], ['exp_avg_sq', moments.v]] as const) {
      tensors.push({ name: `${prefix}.${name}`, dtype: 'F32' as const, shape: [...p.shape], data: fromFloat32(await map.get(p)!.read(), 'F32') });
    }
  }
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
  return {
    'lora.safetensors': lora,
    'optimizer.safetensors': writeSafetensors(tensors, { format: 'tpo-lab AdamW moments' }),
    'state.json': new TextEncoder().encode(`${JSON.stringify(state, null, 2)}\n`),
  };
}

export function parseCheckpointState(text: string, where = 'state.json'): CheckpointState {
  let s: CheckpointState;
  try {
    s = JSON.parse(text) as CheckpointState;
  } catch (e) {
    throw new Error(`${where} is not valid JSON (${(e as Error).message}); the checkpoint is damaged`);
  }
  if (s?.format !== 'tpo-lab-checkpoint' || s.version !== 1 || !s.config || !s.state) {
    throw new Error(`${where} is not a TPO Lab checkpoint (version 1)`);
  }
  return s;
}

/**
 * Restores a checkpoint onto `unet` (sets unet.lora) and returns what a Trainer needs to continue. The
 * caller checks `state.data` against its examples (resumeCheck).
 */
export async function loadCheckpoint(gpu: Gpu, unet: UNet, files: CheckpointFiles): Promise<{ saved: CheckpointState; moments: OptimizerMoments }> {
  const saved = parseCheckpointState(new TextDecoder().decode(files['state.json']));
  const decoded = await decodeLora(await SafetensorsFile.open(memorySource(files['lora.safetensors'], 'checkpoint/lora.safetensors')), unetParams(unet.config));
  const lora = loraFromHost(gpu, decoded.lora);
  unet.lora?.release();
  unet.lora = lora;
  const opt = await SafetensorsFile.open(memorySource(files['optimizer.safetensors'], 'checkpoint/optimizer.safetensors'));
  const moments: OptimizerMoments = { m: new Map(), v: new Map() };
  try {
    for (const [name, p] of namedParams({ lora })) {
      for (const [prefix, map] of [['exp_avg', moments.m], ['exp_avg_sq', moments.v]] as const) {
        const key = `${prefix}.${name}`;
        if (!opt.tensors.has(key)) throw new Error(`checkpoint/optimizer.safetensors lacks ${key}; the checkpoint is damaged`);
        const values = await opt.readF32(key);
        if (values.length !== p.size) throw new Error(`checkpoint/optimizer.safetensors: ${key} has ${values.length} values, the LoRA tensor ${p.size}`);
        map.set(p, Tensor.from(gpu, values, p.shape));
      }
    }
  } catch (e) {
    for (const t of [...moments.m.values(), ...moments.v.values()]) t.release();
    throw e;
  }
  return { saved, moments };
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
