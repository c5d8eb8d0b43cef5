// What the model loaders share: a network's uploaded parameters, looked up by their diffusers names, and
// the LDM key layout that a single-file checkpoint's renaming needs, read from a folder's configs.

import type { Tensor } from '../nn/tensor';
import type { LdmLayout } from './ldm-keys';
import { ModelLoadError, readConfig, type ModelFiles } from './weights';

/** A network's GPU parameters by state-dict name. */
export class ModelWeights {
  private released = false;

  constructor(
    /** Names the network in error messages. */
    readonly label: string,
    readonly tensors: Map<string, Tensor>,
  ) {}

  /** The parameter `name`; a name the network never declared is a bug, so it throws. */
  get(name: string): Tensor {
    if (this.released) throw new Error(`${this.label}: its weights were released`);
    const t = this.tensors.get(name);
    if (!t) throw new Error(`${this.label}: no parameter ${name}`);
    return t;
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Bytes of GPU memory the parameters take (float32). */
  get bytes(): number {
    let n = 0;
    for (const t of this.tensors.values()) n += t.size * 4;
    return n;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    for (const t of this.tensors.values()) t.release();
    this.tensors.clear();
  }
}

/**
 * The structure a single-file checkpoint's key renaming depends on, from a diffusers folder's configs
 * (the folder may hold configs only): the UNet's layers_per_block and the number of VAE blocks.
 */
export async function ldmLayoutFromConfigs(files: ModelFiles): Promise<LdmLayout> {
  const unet = await readConfig<{ layers_per_block?: unknown }>(files, 'unet');
  const vae = await readConfig<{ block_out_channels?: unknown }>(files, 'vae');
  const layers = unet.layers_per_block ?? 2; // diffusers' UNet2DConditionModel default
  if (!Number.isInteger(layers) || (layers as number) < 1 || (layers as number) > 16) {
    throw new ModelLoadError(`${files.name}: unet/config.json has layers_per_block ${JSON.stringify(layers)}, not a whole number from 1 to 16`);
  }
  if (!Array.isArray(vae.block_out_channels) || vae.block_out_channels.length < 1) {
    throw new ModelLoadError(`${files.name}: vae/config.json needs a non-empty block_out_channels list`);
  }
  return { unetLayersPerBlock: layers as number, vaeBlocks: vae.block_out_channels.length };
}

/**
 * Reads a config field that must be a whole number from 1 to `max` (or takes its default). The bound keeps
 * a damaged or absurd value (1e9 layers) from building a model that can only fail, slowly, much later.
 */
export function positiveInt(label: string, raw: Record<string, unknown>, key: string, fallback?: number, max = 1_000_000): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
    throw new ModelLoadError(`${label}: config field ${key} must be a whole number from 1 to ${max}, got ${JSON.stringify(raw[key])}`);
  }
  return v;
}

/** Reads a config field that must be a positive number, at most `max` (or takes its default). */
export function positiveNumber(label: string, raw: Record<string, unknown>, key: string, fallback?: number, max = 1e6): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || v > max) {
    throw new ModelLoadError(`${label}: config field ${key} must be a number above 0 and at most ${max}, got ${JSON.stringify(raw[key])}`);
  }
  return v;
}
