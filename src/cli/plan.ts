// tpo-lab plan: how much GPU memory a training run would take (weights, LoRA, AdamW, activations with and
// without gradient checkpointing, the pool's rounding), printed without allocating anything. The numbers
// come from models/memory-plan.ts, the same code behind the app's "will it fit" message.

import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { clipTextConfig, type ClipTextConfig } from '../models/clip-text';
import { DEFAULT_TARGETS, OPTIONAL_TARGETS } from '../models/lora';
import { planSampling } from '../diffusion/sampling-plan';
import { type MemoryPlan, planMemory } from '../models/memory-plan';
import { LOSS_METHODS, type LossMethod } from '../tpo/methods';
import { formatBytes } from '../util/format';
import { openSafetensorsFile } from '../models/safetensors-node';
import { SD15_TEXT_ENCODER_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG } from '../models/sd15-configs';
import { validateUNetConfig, type UNetConfig } from '../models/unet';
import { vaeConfig, type VaeConfig } from '../models/vae';
import { formatHelp, intOpt, numberOpt, type OptionTable, parseOptions, stringOpt, UsageError } from './args';
import type { Command } from './command';
import { resolveModelArg } from './demo-model';
import type { CliIO } from './io';

const OPTIONS: OptionTable = {
  model: {
    type: 'string',
    value: 'PATH',
    description: 'diffusers folder, a unet/config.json, or a single-file .safetensors (SD1.5 configs); demo (the built-in demo model); default: SD1.5',
  },
  resolution: { type: 'string', value: 'PX', description: 'image side in pixels', default: '512' },
  rank: { type: 'string', value: 'R', description: 'LoRA rank', default: '8' },
  alpha: { type: 'string', value: 'A', description: 'LoRA alpha (scales the update; no memory cost) (default: rank)' },
  batch: { type: 'string', value: 'B', description: 'examples per step', default: '1' },
  targets: { type: 'string', value: 'LIST', description: `comma-separated LoRA targets: ${[...DEFAULT_TARGETS, ...OPTIONAL_TARGETS].join(', ')}`, default: DEFAULT_TARGETS.join(',') },
  method: { type: 'string', value: 'NAME', description: LOSS_METHODS.join(', '), default: 'tdpo' },
  precision: { type: 'string', value: 'f16|f32', description: 'storage of the frozen weights (LoRA, gradients and AdamW stay f32)', default: 'f32' },
  budget: { type: 'string', value: 'GIB', description: 'GPU memory to judge the plan against', default: '4' },
  json: { type: 'boolean', description: 'print the plans as JSON' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const USAGE = 'tpo-lab plan [--model PATH] [--resolution 512] [--rank 8] [--batch 1] [--method tdpo] [--precision f32] [--json]';

const DESCRIPTION = `Prints the GPU memory one training step takes, with gradient checkpointing on and off: frozen
UNet weights, LoRA parameters and gradients, AdamW moments, the batch's cached inputs, the activations the
backward needs, the backward's working set, and the buffer pool's size-class rounding. Nothing is loaded
onto a GPU: the trainer's own step runs on a stand-in device that counts every buffer and allocates none (see
docs/memory-plan.md).
"Peak in use" is the most the step has in use at once; "pool holds" adds the buffers the pool keeps for
reuse, what the device really gives up, and what the verdict is judged on. The last line plans text to
image at the same size: the real sampling code run on a stand-in device that counts every buffer.`;

export const planCommand: Command = {
  name: 'plan',
  summary: 'print the GPU memory a training run needs (with and without checkpointing), allocating nothing',
  help: () => formatHelp(USAGE, DESCRIPTION, OPTIONS),
  run: runPlan,
};

export interface ModelConfigs {
  /** Where the configs came from, for the header line. */
  source: string;
  unet: UNetConfig;
  textEncoder?: ClipTextConfig;
  vae?: VaeConfig;
}

function readJson(file: string): Record<string, unknown> {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new Error(`${file}: expected a JSON object`);
  return data as Record<string, unknown>;
}

function unetConfigFrom(file: string): UNetConfig {
  const raw = readJson(file);
  if (!Array.isArray(raw.block_out_channels)) throw new Error(`${file}: not a UNet config (no block_out_channels)`);
  // diffusers' defaults for fields SD1.x configs may leave out.
  const defaults = { layers_per_block: 2, norm_num_groups: 32, norm_eps: 1e-5, in_channels: 4, out_channels: 4 };
  const config = { ...defaults, ...raw } as unknown as UNetConfig;
  validateUNetConfig(config);
  return config;
}

/** The configs beside a UNet config in a diffusers folder, when present. */
function siblings(root: string): Pick<ModelConfigs, 'textEncoder' | 'vae'> {
  const te = path.join(root, 'text_encoder', 'config.json');
  const vae = path.join(root, 'vae', 'config.json');
  return {
    textEncoder: existsSync(te) ? clipTextConfig(readJson(te), te) : undefined,
    vae: existsSync(vae) ? vaeConfig(readJson(vae), vae) : undefined,
  };
}

/**
 * A single-file checkpoint carries no config: SD1.5's are used, after checking the file's UNet input conv
 * has SD1.5's shape (an SDXL or SD2 file, or a toy model, would be planned wrongly otherwise).
 */
async function singleFileConfigs(file: string): Promise<ModelConfigs> {
  const { file: st, close } = await openSafetensorsFile(file);
  try {
    const key = 'model.diffusion_model.input_blocks.0.0.weight';
    const info = st.tensors.get(key);
    const want = [SD15_UNET_CONFIG.block_out_channels[0], SD15_UNET_CONFIG.in_channels, 3, 3];
    if (!info) throw new Error(`${file}: no ${key}; not a Stable Diffusion 1.x single-file checkpoint`);
    if (info.shape.join(',') !== want.join(',')) {
      throw new Error(
        `${file}: the UNet's input conv is [${info.shape.join(', ')}], SD1.5's is [${want.join(', ')}]; ` +
          'a single file carries no config, so plan it with its diffusers folder or unet/config.json instead',
      );
    }
  } finally {
    await close();
  }
  return { source: `${path.basename(file)} (single file, SD1.5 configs)`, unet: SD15_UNET_CONFIG, textEncoder: SD15_TEXT_ENCODER_CONFIG, vae: SD15_VAE_CONFIG };
}

/** Reads the configs `--model` points at: a diffusers folder, a UNet folder or config.json, or a single file. */
export async function resolveModelConfigs(model: string | undefined, cwd: string, env: Record<string, string | undefined> = {}): Promise<ModelConfigs> {
  if (model === undefined || model.toLowerCase() === 'sd15') {
    return { source: 'Stable Diffusion 1.5 (built-in configs)', unet: SD15_UNET_CONFIG, textEncoder: SD15_TEXT_ENCODER_CONFIG, vae: SD15_VAE_CONFIG };
  }
  const p = resolveModelArg(model, { cwd, env });
  if (!existsSync(p)) throw new UsageError(`--model ${model}: no such file or folder`);
  if (statSync(p).isDirectory()) {
    const inUnet = path.join(p, 'unet', 'config.json');
    if (existsSync(inUnet)) return { source: path.basename(p), unet: unetConfigFrom(inUnet), ...siblings(p) };
    const own = path.join(p, 'config.json');
    if (existsSync(own)) return { source: path.basename(p), unet: unetConfigFrom(own), ...siblings(path.dirname(p)) };
    throw new UsageError(`--model ${model}: a folder without unet/config.json`);
  }
  if (p.endsWith('.safetensors')) return singleFileConfigs(p);
  if (p.endsWith('.json')) {
    // unet/config.json of a diffusers folder: the text encoder and VAE configs sit beside its folder.
    const root = path.dirname(path.dirname(p));
    return { source: path.relative(cwd, p) || path.basename(p), unet: unetConfigFrom(p), ...(path.basename(path.dirname(p)) === 'unet' ? siblings(root) : {}) };
  }
  throw new UsageError(`--model ${model}: expected a diffusers folder, a config.json or a .safetensors file`);
}

function parseTargets(list: string): string[] {
  const allowed = [...DEFAULT_TARGETS, ...OPTIONAL_TARGETS] as string[];
  const parts = list
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);
  if (parts.length === 0) throw new UsageError('--targets is empty');
  for (const t of parts) if (!allowed.includes(t)) throw new UsageError(`unknown LoRA target '${t}' (use ${allowed.join(', ')})`);
  return parts;
}

const pct = (part: number, whole: number) => (whole > 0 ? `${Math.round((100 * part) / whole)}%` : '');

function table(on: MemoryPlan, off: MemoryPlan): string {
  const rows: [string, string, string][] = [];
  for (const line of on.lines) {
    const other = off.lines.find((l) => l.key === line.key)!;
    rows.push([line.label, formatBytes(line.bytes), formatBytes(other.bytes)]);
  }
  const sep: [string, string, string] = ['', '', ''];
  rows.push(sep, ['peak in use', formatBytes(on.peakBytes), formatBytes(off.peakBytes)]);
  rows.push(['pool holds after a step', formatBytes(on.reservedBytes), formatBytes(off.reservedBytes)]);
  const w0 = Math.max(...rows.map((r) => r[0].length), 'at the peak of a step'.length);
  const w = Math.max(18, ...rows.map((r) => Math.max(r[1].length, r[2].length)));
  const fmt = (r: [string, string, string]) => `  ${r[0].padEnd(w0)}  ${r[1].padStart(w)}  ${r[2].padStart(w)}`;
  const head = fmt(['at the peak of a step', 'checkpointing on', 'checkpointing off']);
  const rule = `  ${'-'.repeat(w0)}  ${'-'.repeat(w)}  ${'-'.repeat(w)}`;
  return [head, rule, ...rows.map((r) => (r === sep ? rule : fmt(r)))].join('\n');
}

export function verdict(on: MemoryPlan, off: MemoryPlan, budget: number): string {
  const b = formatBytes(budget);
  if (off.reservedBytes <= budget) return `Verdict: fits in ${b} with or without checkpointing (${formatBytes(off.reservedBytes)} without, ${formatBytes(on.reservedBytes)} with).`;
  if (on.reservedBytes <= budget) {
    return `Verdict: fits in ${b} with checkpointing (${formatBytes(on.reservedBytes)}, ${pct(on.reservedBytes, budget)}); without it ${formatBytes(off.reservedBytes)} does not.`;
  }
  const hints: string[] = [];
  if (on.input.weightBytes === 4) hints.push('--precision f16');
  if (on.input.batch > 1) hints.push('a smaller --batch');
  hints.push('a lower --resolution');
  return `Verdict: does not fit in ${b}: ${formatBytes(on.reservedBytes)} even with checkpointing (over by ${formatBytes(on.reservedBytes - budget)}); try ${hints.join(', ')}.`;
}

async function runPlan(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseOptions(argv, OPTIONS);
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const resolution = intOpt(values, 'resolution', 8, 512);
  const rank = intOpt(values, 'rank', 1, 8);
  const alpha = numberOpt(values, 'alpha', 0, rank);
  const batch = intOpt(values, 'batch', 1, 1);
  const targets = parseTargets(stringOpt(values, 'targets') ?? DEFAULT_TARGETS.join(','));
  const method = (stringOpt(values, 'method') ?? 'tdpo').toLowerCase();
  if (!(LOSS_METHODS as readonly string[]).includes(method)) throw new UsageError(`unknown method '${method}' (use ${LOSS_METHODS.join(', ')})`);
  const precision = (stringOpt(values, 'precision') ?? 'f32').toLowerCase();
  if (precision !== 'f16' && precision !== 'f32') throw new UsageError(`--precision must be f16 or f32, not '${precision}'`);
  const budget = numberOpt(values, 'budget', 0.001, 4) * 2 ** 30;

  const model = await resolveModelConfigs(stringOpt(values, 'model'), io.cwd, io.env);
  const plan = async (checkpointing: boolean) => {
    try {
      return await planMemory({
        unet: model.unet,
        textEncoder: model.textEncoder,
        vae: model.vae,
        resolution,
        rank,
        alpha,
        targets,
        batch,
        method: method as LossMethod,
        weightBytes: precision === 'f16' ? 2 : 4,
        checkpointing,
      });
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  };
  const on = await plan(true);
  const off = await plan(false);
  // Text to image at the same size (batch 1, guidance on): all three networks resident, no tape.
  const sampling =
    model.textEncoder && model.vae
      ? await planSampling({ unet: model.unet, textEncoder: model.textEncoder, vae: model.vae, width: resolution, height: resolution, batch: 1, unetWeightBytes: precision === 'f16' ? 2 : 4 })
      : null;

  if (values.json === true) {
    const fits = (p: MemoryPlan) => p.reservedBytes <= budget;
    io.stdout.write(
      `${JSON.stringify(
        {
          model: model.source,
          budgetBytes: budget,
          fits: { checkpointing: fits(on), noCheckpointing: fits(off), sampling: sampling ? sampling.reservedBytes <= budget : null },
          checkpointing: on,
          noCheckpointing: off,
          sampling,
        },
        null,
        2,
      )}\n`,
    );
    return 0;
  }

  const s = on.sizes;
  const i = on.input;
  const out: string[] = [];
  out.push(`Memory plan for ${model.source}`);
  out.push(
    `  UNet ${(s.unetParamShapes / 1e6).toFixed(1)}M parameters (${precision}), ${resolution}x${resolution} px (latent ${i.latent}x${i.latent}), ` +
      `${method.toUpperCase()} batch ${batch} = ${i.rows} UNet row${i.rows > 1 ? 's' : ''} per forward${i.reference ? ', plus the reference forward' : ''}`,
  );
  out.push(`  LoRA rank ${rank}, alpha ${alpha}, on ${targets.join(', ')}: ${s.loraModules} modules, ${(s.loraParams / 1e6).toFixed(2)}M parameters`);
  out.push('');
  out.push(table(on, off));
  out.push('');
  out.push(
    `Activations kept for the backward: ${formatBytes(s.activationsKept.checkpointing)} with checkpointing, ${formatBytes(s.activationsKept.noCheckpointing)} without (pool-rounded).`,
  );
  out.push(
    `Phase peaks above the persistent buffers (on / off): reference forward ${formatBytes(on.phases.referenceForward)}, ` +
      `policy forward ${formatBytes(on.phases.policyForward)} / ${formatBytes(off.phases.policyForward)}, backward ${formatBytes(on.phases.backward)} / ${formatBytes(off.phases.backward)}.`,
  );
  out.push(`Largest single buffer: ${formatBytes(s.largestBuffer)} (must fit the adapter's maxBufferSize).`);
  if (on.notResident.length) {
    out.push(`Not resident during training (used once to cache inputs): ${on.notResident.map((l) => `${l.label} ${formatBytes(l.bytes)}`).join(', ')}.`);
  }
  if (precision === 'f16') out.push('Note: f16 stores the UNet\'s matrices and conv kernels as float16 (the default on adapters with shader-f16); its biases and norms stay f32, as counted here.');
  out.push(verdict(on, off, budget));
  out.push(
    sampling
      ? `Sampling (text to image at ${resolution}x${resolution}, guidance, batch 1; UNet, text encoder and VAE resident): peak ${formatBytes(sampling.peakBytes)}, ` +
          `of which weights ${formatBytes(sampling.weightBytes)}; the pool holds at most ${formatBytes(sampling.reservedBytes)}: ${sampling.reservedBytes <= budget ? 'fits' : 'does not fit'} in ${formatBytes(budget)}.`
      : 'Sampling: not planned (the text encoder and VAE configs are not beside this UNet config).',
  );
  io.stdout.write(`${out.join('\n')}\n`);
  return 0;
}
