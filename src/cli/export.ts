// tpo-lab export: a LoRA file (or a training run's folder) written in the format another tool loads:
// kohya's for Automatic1111 / ComfyUI / kohya-ss, diffusers' for pipeline.load_lora_weights. It also
// converts one format into the other. Every key and shape is checked against the UNet first.

import { existsSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from '../data/node-fs';
import { decodeLora, encodeLora, LoraFileError, type LoraFormat } from '../models/lora-io';
import { openSafetensorsFile } from '../models/safetensors-node';
import { formatHelp, type OptionTable, parseOptions, stringOpt, UsageError } from './args';
import type { Command } from './command';
import type { CliIO } from './io';
import { resolveModelConfigs } from './plan';

const OPTIONS: OptionTable = {
  from: {
    type: 'string',
    value: 'PATH',
    description: 'a LoRA .safetensors (kohya or diffusers, any spelling), a checkpoint folder, or a training output folder',
  },
  format: { type: 'string', value: 'kohya|diffusers', description: 'the format to write', default: 'kohya' },
  dtype: { type: 'string', value: 'fp16|fp32', description: 'storage of the matrices', default: 'fp16' },
  out: {
    type: 'string',
    value: 'FILE',
    description: 'the .safetensors to write; a folder gets lora.safetensors (kohya) or pytorch_lora_weights.safetensors (diffusers)',
  },
  model: {
    type: 'string',
    value: 'PATH',
    description: 'check shapes against this UNet: a diffusers folder, a unet/config.json, or a single-file SD1.5 checkpoint, or demo; default: SD1.5',
  },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const USAGE = 'tpo-lab export --from FILE_OR_DIR --out FILE [--format kohya|diffusers] [--dtype fp16|fp32] [--model PATH]';

const DESCRIPTION = `Writes a LoRA as
  kohya      lora_unet_<module>.lora_down.weight / .lora_up.weight / .alpha, with kohya's ss_* metadata and
             hashes and ModelSpec fields: Automatic1111, ComfyUI, kohya-ss and diffusers all load it;
  diffusers  unet.<module>.lora_A.weight / .lora_B.weight, rank and alpha in lora_adapter_metadata:
             diffusers' pipeline.load_lora_weights (ComfyUI wants kohya's format for SD1.x attention layers).
--from takes either format (and diffusers' older .lora.down / processor.to_q_lora spellings), a checkpoint
folder (lora.safetensors) or a training output folder (lora.safetensors, else checkpoint/lora.safetensors).
The source's metadata is carried over; hashes are recomputed. Every key and shape is checked against the
UNet first (SD1.5's unless --model says otherwise); SDXL, SD2 and text-encoder LoRAs are refused.`;

export const exportCommand: Command = {
  name: 'export',
  summary: 'write a LoRA in kohya (A1111, ComfyUI) or diffusers format; converts between them',
  help: () => formatHelp(USAGE, DESCRIPTION, OPTIONS),
  run: runExport,
};

const OUT_NAMES: Record<LoraFormat, string> = { kohya: 'lora.safetensors', diffusers: 'pytorch_lora_weights.safetensors' };

/** The LoRA file a --from path names: the file itself, or the one a checkpoint / output folder holds. */
export function resolveLoraSource(from: string, cwd: string): string {
  const p = path.resolve(cwd, from);
  if (!existsSync(p)) throw new UsageError(`--from ${from}: no such file or folder`);
  if (!statSync(p).isDirectory()) return p;
  const candidates = ['lora.safetensors', path.join('checkpoint', 'lora.safetensors'), 'pytorch_lora_weights.safetensors'];
  for (const c of candidates) {
    const f = path.join(p, c);
    if (existsSync(f) && statSync(f).isFile()) return f;
  }
  throw new UsageError(`--from ${from}: a folder without a LoRA (looked for ${candidates.join(', ')})`);
}

function resolveOut(out: string, cwd: string, format: LoraFormat): string {
  const p = path.resolve(cwd, out);
  if ((existsSync(p) && statSync(p).isDirectory()) || /[/\\]$/.test(out)) return path.join(p, OUT_NAMES[format]);
  if (!p.endsWith('.safetensors')) throw new UsageError(`--out ${out}: the file name must end in .safetensors (the tools load LoRAs by that extension)`);
  if (!existsSync(path.dirname(p))) throw new UsageError(`--out ${out}: the folder ${path.dirname(p)} does not exist`);
  return p;
}

function sameFile(a: string, b: string): boolean {
  if (!existsSync(b)) return false;
  return realpathSync(a) === realpathSync(b);
}

async function runExport(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseOptions(argv, OPTIONS);
  if (positionals.length) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  const from = stringOpt(values, 'from');
  const out = stringOpt(values, 'out');
  if (!from) throw new UsageError('--from FILE_OR_DIR is required');
  if (!out) throw new UsageError('--out FILE is required');
  const format = (stringOpt(values, 'format') ?? 'kohya').toLowerCase();
  if (format !== 'kohya' && format !== 'diffusers') throw new UsageError(`--format must be kohya or diffusers, not '${format}'`);
  const dtype = (stringOpt(values, 'dtype') ?? 'fp16').toLowerCase();
  if (dtype !== 'fp16' && dtype !== 'fp32') throw new UsageError(`--dtype must be fp16 or fp32, not '${dtype}'`);

  const source = resolveLoraSource(from, io.cwd);
  const target = resolveOut(out, io.cwd, format);
  if (sameFile(source, target)) throw new UsageError(`--out ${out} is the input file; write the export somewhere else`);
  const modelOpt = stringOpt(values, 'model');
  const model = await resolveModelConfigs(modelOpt, io.cwd, io.env);

  const { file, close } = await openSafetensorsFile(source);
  let decoded;
  try {
    decoded = await decodeLora(file, model.unet);
  } catch (e) {
    if (e instanceof LoraFileError && e.shapeMismatch && modelOpt === undefined) {
      throw new Error(`${e.message} It was checked against SD1.5's UNet: for a LoRA of another SD1.x-layout model, pass --model (its diffusers folder or unet/config.json).`);
    }
    throw e;
  } finally {
    await close();
  }

  const bytes = encodeLora(decoded.lora, { format, dtype, metadata: decoded.metadata });
  // Atomic: a crash or a full disk never leaves half a LoRA under the final name.
  try {
    await writeFileAtomic(target, bytes);
  } catch (e) {
    throw new Error(`${target}: cannot be written (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }

  const modules = [...decoded.lora.values()];
  const range = (xs: number[]) => {
    const lo = Math.min(...xs);
    const hi = Math.max(...xs);
    return lo === hi ? String(lo) : `${lo}-${hi}`;
  };
  io.stdout.write(
    `wrote ${target.startsWith(`${io.cwd}${path.sep}`) ? path.relative(io.cwd, target) : target}: ${modules.length} modules, rank ${range(modules.map((m) => m.rank))}, ` +
      `alpha ${range(modules.map((m) => m.alpha))}, ${format}, ${dtype}, ${bytes.length} bytes (from ${decoded.format} ${path.basename(source)}, checked against ${model.source})\n`,
  );
  return 0;
}
