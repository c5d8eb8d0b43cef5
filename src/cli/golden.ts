// tpo-lab golden: runs every check a goldens folder supports against the engine and prints one line per
// check with the measured relative error, PASS or FAIL; exits 1 if any fails.
//   tpo-lab golden DIR [--single-file FILE]     model, TPO case and encoder checks (DIR = model folder)
//   tpo-lab golden --tokenizer DIR --cases FILE  tokenizer ids, exact
//   tpo-lab golden --schedule FILE               training schedule and DDIM steps

import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { concatBatch, decodeLatents, denoise, imagesToRgba, loadSchedulerConfig } from '../diffusion/pipeline';
import { createSampler } from '../diffusion/samplers';
import { addNoise, alphasCumprod, ddimStep, ddimTimesteps, type SchedulerConfig, SD15_SCHEDULER } from '../diffusion/schedule';
import type { Gpu } from '../gpu/gpu';
import { clipTextForward, loadClipTextModel, loadClipTextModelFromSingleFile } from '../models/clip-text';
import { kohyaName } from '../models/lora';
import { readLora } from '../models/lora-io';
import { dirModelFiles } from '../models/model-files-node';
import { ldmLayoutFromConfigs } from '../models/model-weights';
import type { SafetensorsFile } from '../models/safetensors';
import { openSafetensorsFile } from '../models/safetensors-node';
import { loadClipTokenizer } from '../models/tokenizer-node';
import { loadUNet, loadUNetFromSingleFile, type UNet, type UNetConfig } from '../models/unet';
import { loadVae, loadVaeFromSingleFile, vaeDecode, vaeEncode } from '../models/vae';
import type { ModelFiles } from '../models/weights';
import { mseRows, mseRowsBackward, mseRowsDiff } from '../nn/ops/reduce';
import { Ctx, Tape } from '../nn/tape';
import { Tensor } from '../nn/tensor';
import { parseMetrics, tpoLoss, type LossConfig } from '../tpo/losses';
import { formatHelp, type OptionTable, parseOptions, stringOpt, UsageError } from './args';
import type { Command } from './command';
import { type CliIO, commandGpu } from './io';

const OPTIONS: OptionTable = {
  'single-file': { type: 'string', value: 'FILE', description: 'load the weights from this single-file (LDM keys) checkpoint instead of DIR' },
  tokenizer: { type: 'string', value: 'DIR', description: 'model folder or tokenizer folder to check against --cases' },
  cases: { type: 'string', value: 'FILE', description: 'tokenizer cases (tokenizer-cases.json)' },
  schedule: { type: 'string', value: 'FILE', description: 'schedule goldens (schedule.json with schedule.safetensors beside it)' },
  help: { type: 'boolean', short: 'h', description: 'show this help' },
};

const DESCRIPTION = `Checks the engine against reference outputs (diffusers, openai/CLIP, PyTorch autograd). With DIR, a
diffusers model folder holding the goldens: case.json/case.safetensors (UNet activations and outputs, LoRA,
TPO errors, losses and LoRA gradients), encoders.json/encoders.safetensors (text encoder, VAE) and
sample.json/sample.safetensors (text to image end to end: DDIM with and without guidance and LoRA), each
run when its files are there. Tolerances (relative L2 error): 1e-4 for forward values and losses, 1e-3 for
gradients; tokenizer ids and DDIM timesteps must match exactly.`;

export const goldenCommand: Command = {
  name: 'golden',
  summary: 'check the engine against the reference goldens (relative errors, PASS/FAIL)',
  help: () => formatHelp('tpo-lab golden DIR [--single-file FILE] | --tokenizer DIR --cases FILE | --schedule FILE', DESCRIPTION, OPTIONS),
  run: runGolden,
};

export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = actual[i] - expected[i];
    num += d * d;
    den += expected[i] * expected[i];
  }
  if (!Number.isFinite(num)) return Infinity;
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

class Report {
  failures = 0;
  count = 0;
  constructor(private readonly io: CliIO) {}

  error(name: string, err: number, tol: number, detail = ''): void {
    const ok = err <= tol;
    this.line(ok, name, `rel ${Number.isFinite(err) ? err.toExponential(2) : String(err)} (tol ${tol.toExponential(0)})${detail ? `  ${detail}` : ''}`);
  }

  exact(name: string, ok: boolean, detail: string): void {
    this.line(ok, name, detail);
  }

  private line(ok: boolean, name: string, text: string): void {
    this.count++;
    if (!ok) this.failures++;
    this.io.stdout.write(`${ok ? 'PASS' : 'FAIL'}  ${name.padEnd(34)} ${text}\n`);
  }
}

const FORWARD_TOL = 1e-4;
const GRAD_TOL = 1e-3;

async function runGolden(argv: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseOptions(argv, OPTIONS);
  const tokenizer = stringOpt(values, 'tokenizer');
  const cases = stringOpt(values, 'cases');
  const schedule = stringOpt(values, 'schedule');
  const singleFile = stringOpt(values, 'single-file');
  const dir = positionals[0];
  if (positionals.length > 1) throw new UsageError(`one DIR expected, got ${positionals.join(' ')}`);
  if ((tokenizer === undefined) !== (cases === undefined)) throw new UsageError('--tokenizer and --cases go together');
  if (!dir && !tokenizer && !schedule) throw new UsageError('give DIR, --tokenizer DIR --cases FILE, or --schedule FILE');
  if (singleFile && !dir) throw new UsageError('--single-file needs DIR for the configs and goldens');
  const at = (p: string) => resolve(io.cwd, p);
  const report = new Report(io);

  if (tokenizer && cases) await checkTokenizer(report, at(tokenizer), at(cases));
  if (schedule || dir) {
    const { gpu, release } = await commandGpu(io);
    try {
      if (schedule) await checkSchedule(gpu, report, at(schedule));
      if (dir) await checkModelFolder(gpu, report, at(dir), singleFile ? at(singleFile) : undefined, io);
    } finally {
      release();
    }
  }
  if (report.count === 0) {
    io.stderr.write(`tpo-lab golden: ${dir ?? ''} holds no goldens (case.json, encoders.json) to check\n`);
    return 1;
  }
  io.stdout.write(`${report.count - report.failures} passed, ${report.failures} failed\n`);
  return report.failures === 0 ? 0 : 1;
}

async function checkTokenizer(report: Report, dir: string, casesFile: string): Promise<void> {
  const tok = await loadClipTokenizer(dir);
  const data = JSON.parse(readFileSync(casesFile, 'utf8')) as { cases: { prompt: string; ids: number[]; input_ids_77: number[] }[] };
  data.cases.forEach((c, i) => {
    const ids = tok.encode(c.prompt);
    const full = tok.encodeForModel(c.prompt);
    const same = (a: number[], b: number[]) => a.length === b.length && a.every((v, j) => v === b[j]);
    const ok = same(ids, c.ids) && same(full, c.input_ids_77);
    const shown = c.prompt.length > 40 ? `${c.prompt.slice(0, 37)}...` : c.prompt;
    report.exact(`tokenizer case ${i}`, ok, ok ? `${ids.length} ids  ${JSON.stringify(shown)}` : `ids differ for ${JSON.stringify(c.prompt)}: got ${JSON.stringify(ids)}`);
  });
}

async function checkSchedule(gpu: Gpu, report: Report, jsonFile: string): Promise<void> {
  const meta = JSON.parse(readFileSync(jsonFile, 'utf8')) as {
    scheduler_config?: SchedulerConfig;
    timestep_spacing?: string;
    ddim?: Record<string, number | number[]>;
  };
  const config: SchedulerConfig = { ...SD15_SCHEDULER, ...meta.scheduler_config, timestep_spacing: meta.timestep_spacing ?? 'leading' };
  const { file, close } = await openSafetensorsFile(jsonFile.replace(/\.json$/, '.safetensors'));
  try {
    const abar = alphasCumprod(config);
    // diffusers builds the betas in float32, so its values differ from this float64 schedule by ~4e-7.
    report.error('schedule alphas_cumprod', relativeError(abar, await file.readF64('alphas_cumprod')), FORWARD_TOL);
    for (const [key, timesteps] of Object.entries(meta.ddim ?? {})) {
      if (!Array.isArray(timesteps)) continue;
      const steps = Number(key);
      const got = ddimTimesteps(steps, config);
      const ok = got.length === timesteps.length && got.every((t, i) => t === timesteps[i]);
      report.exact(`ddim${steps} timesteps`, ok, ok ? `${steps} exact` : `got ${got.slice(0, 5).join(',')}..., want ${timesteps.slice(0, 5).join(',')}...`);
      const index = meta.ddim?.[`${key}_step_index`];
      if (typeof index !== 'number' || !file.tensors.has(`ddim${steps}.prev`)) continue;
      const sample = Tensor.from(gpu, await file.readF32(`ddim${steps}.sample`), file.info(`ddim${steps}.sample`).shape);
      const eps = Tensor.from(gpu, await file.readF32(`ddim${steps}.eps`), file.info(`ddim${steps}.eps`).shape);
      const prev = ddimStep(sample, eps, timesteps[index], steps, abar, config);
      report.error(`ddim${steps} step at t=${timesteps[index]}`, relativeError(await prev.read(), await file.readF64(`ddim${steps}.prev`)), FORWARD_TOL);
      for (const t of [sample, eps, prev]) t.release();
    }
  } finally {
    await close();
  }
}

async function checkModelFolder(gpu: Gpu, report: Report, dir: string, singleFile: string | undefined, io: CliIO): Promise<void> {
  const files = dirModelFiles(dir);
  const single = singleFile ? await openSafetensorsFile(singleFile) : null;
  const source = single ? ` (${singleFile!.split('/').pop()})` : '';
  try {
    if (existsSync(join(dir, 'case.json')) && existsSync(join(dir, 'case.safetensors'))) {
      await checkCase(gpu, report, dir, files, single?.file ?? null, source, io);
    }
    if (existsSync(join(dir, 'encoders.json')) && existsSync(join(dir, 'encoders.safetensors'))) {
      await checkEncoders(gpu, report, dir, files, single?.file ?? null, source);
    }
    if (existsSync(join(dir, 'sample.json')) && existsSync(join(dir, 'sample.safetensors'))) {
      await checkSample(gpu, report, dir, files, single?.file ?? null, source, io);
    }
  } finally {
    // Close every file the loaders opened, on every path (a config error leaves the weights file open).
    await files.close?.();
    await single?.close();
  }
}

interface CaseJson {
  beta: number;
  kappa: number | null;
  lambda_d?: number;
  lambda_u?: number;
  weights?: string;
  lora?: string;
  schedule?: Partial<SchedulerConfig>;
}

async function loadGoldenUNet(gpu: Gpu, dir: string, files: ModelFiles, single: SafetensorsFile | null, weightsPath?: string): Promise<UNet> {
  // Weights stored as float16 in the file stay float16 on the GPU (exact); float32 ones stay float32.
  const options = { halfWeights: 'as-stored' as const };
  if (!single) return loadUNet(gpu, files, { ...options, variant: weightsPath?.includes('.fp16.') ? 'fp16' : undefined });
  const config = JSON.parse(readFileSync(join(dir, 'unet/config.json'), 'utf8')) as UNetConfig;
  return loadUNetFromSingleFile(gpu, single, config, await ldmLayoutFromConfigs(files), options);
}

async function checkCase(gpu: Gpu, report: Report, dir: string, files: ModelFiles, single: SafetensorsFile | null, source: string, io: CliIO): Promise<void> {
  const meta = JSON.parse(readFileSync(join(dir, 'case.json'), 'utf8')) as CaseJson;
  const { file: golden, close } = await openSafetensorsFile(join(dir, 'case.safetensors'));
  let unet: UNet;
  try {
    unet = await loadGoldenUNet(gpu, dir, files, single, meta.weights);
  } catch (e) {
    await close(); // a bad model must not leave the goldens file to the garbage collector
    throw e;
  }
  const held: Tensor[] = [];
  const load = async (name: string) => {
    const t = Tensor.from(gpu, await golden.readF32(name), golden.info(name).shape);
    held.push(t);
    return t;
  };
  const want = (name: string) => golden.readF64(name);
  const has = (name: string) => golden.tensors.has(name);
  try {
    const timestepsF = await golden.readF64('in.timesteps');
    const timesteps = await load('in.timesteps');
    const ctxW = await load('in.ctx_w');

    // Forward of the base model, block by block, then with the case's LoRA.
    const sample = has('in.sample') ? await load('in.sample') : null;
    if (sample) {
      const acts: [string, Float32Array][] = [];
      const eps = await unet.forward(new Ctx(gpu), sample, timesteps, ctxW, {
        onActivation: async (name, t) => {
          if (has(`act.${name}`)) acts.push([name, await t.read()]);
        },
      });
      for (const [name, values] of acts) report.error(`unet act.${name}${source}`, relativeError(values, await want(`act.${name}`)), FORWARD_TOL);
      if (has('out.eps_base')) report.error(`unet out.eps_base${source}`, relativeError(await eps.read(), await want('out.eps_base')), FORWARD_TOL);
      eps.release();
    }
    if (!meta.lora || !existsSync(join(dir, meta.lora))) return;
    const { file: loraFile, close: closeLora } = await openSafetensorsFile(join(dir, meta.lora));
    try {
      unet.lora = await readLora(gpu, loraFile, unet.config);
    } finally {
      await closeLora();
    }
    if (sample && has('out.eps_lora')) {
      const eps = await unet.forward(new Ctx(gpu), sample, timesteps, ctxW);
      report.error(`unet out.eps_lora${source}`, relativeError(await eps.read(), await want('out.eps_lora')), FORWARD_TOL);
      eps.release();
    }
    if (!has('in.x0') || !has('in.noise') || !has('in.ctx_l')) return;

    // One TPO batch: x_t from the schedule, then reference and policy errors under c_w and c_l.
    const abar = alphasCumprod({ ...SD15_SCHEDULER, ...meta.schedule });
    const x0 = await load('in.x0');
    const noise = await load('in.noise');
    const ctxL = await load('in.ctx_l');
    const xt = addNoise(x0, noise, Array.from(timestepsF), abar);
    held.push(xt);
    if (has('out.x_t')) report.error('tpo out.x_t', relativeError(await xt.read(), await want('out.x_t')), FORWARD_TOL);
    const b = x0.shape[0];
    const [xt2, t2, ctx2, noise2] = [concatBatch(gpu, [xt, xt]), concatBatch(gpu, [timesteps, timesteps]), concatBatch(gpu, [ctxW, ctxL]), concatBatch(gpu, [noise, noise])];
    held.push(xt2, t2, ctx2, noise2);

    unet.loraEnabled = false;
    const epsRef = await unet.forward(new Ctx(gpu), xt2, t2, ctx2);
    const errRef = mseRows(epsRef, noise2);
    held.push(epsRef, errRef);
    unet.loraEnabled = true;
    for (const p of unet.lora!.params()) p.requiresGrad = true;
    const tape = new Tape();
    const epsPolicy = await unet.forward(new Ctx(gpu, tape), xt2, t2, ctx2);
    const errPolicy = mseRows(epsPolicy, noise2);
    const errDiff = mseRowsDiff(epsPolicy, epsRef, noise2);
    held.push(epsPolicy, errPolicy, errDiff);
    const ep = await errPolicy.read();
    const er = await errRef.read();
    const halves: [string, Float32Array][] = [
      ['out.err_policy_w', ep.subarray(0, b)],
      ['out.err_policy_l', ep.subarray(b)],
      ['out.err_ref_w', er.subarray(0, b)],
      ['out.err_ref_l', er.subarray(b)],
    ];
    for (const [name, values] of halves) if (has(name)) report.error(`tpo ${name}`, relativeError(values, await want(name)), FORWARD_TOL);

    // Each loss, then its gradient into every LoRA matrix (one backward through the same recorded forward).
    const base: Omit<LossConfig, 'method'> = { beta: meta.beta, kappa: meta.kappa, lambdaD: meta.lambda_d ?? 1, lambdaU: meta.lambda_u ?? 1 };
    const losses: { tag: string; config: LossConfig; outputs: [string, (m: ReturnType<typeof parseMetrics>) => number[]][] }[] = [
      { tag: 'tdpo', config: { ...base, method: 'tdpo' }, outputs: [['out.tdpo_loss', (m) => [m.loss]], ['out.tdpo_margin', (m) => m.margins]] },
      { tag: 'tdpo_noclip', config: { ...base, method: 'tdpo', kappa: null }, outputs: [['out.tdpo_noclip_loss', (m) => [m.loss]]] },
      { tag: 'tkto', config: { ...base, method: 'tkto' }, outputs: [['out.tkto_loss', (m) => [m.loss]], ['out.tkto_z', (m) => [m.tktoZ]]] },
      { tag: 'sft', config: { ...base, method: 'sft' }, outputs: [['out.sft_loss', (m) => [m.loss]]] },
    ];
    for (const { tag, config, outputs } of losses) {
      const { dErrPolicy, metrics } = tpoLoss(gpu, errPolicy, errDiff, config);
      const m = parseMetrics(await metrics.read());
      for (const [name, pick] of outputs) if (has(name)) report.error(`tpo ${name}`, relativeError(pick(m), await want(name)), FORWARD_TOL);
      const prefix = `grad_${tag}.`;
      if (golden.names.some((n) => n.startsWith(prefix))) {
        const deps = mseRowsBackward(epsPolicy, noise2, dErrPolicy);
        const grads = tape.backward(epsPolicy, deps);
        let worst = 0;
        let worstName = '';
        let checked = 0;
        let missing = 0;
        for (const [module, lm] of unet.lora!.modules) {
          for (const [part, tensor] of [['lora_down', lm.down], ['lora_up', lm.up]] as const) {
            const key = `${prefix}${kohyaName(module)}.${part}.weight`;
            if (!has(key)) continue;
            const g = grads.get(tensor);
            const e = g ? relativeError(await g.read(), await want(key)) : Infinity;
            if (!g) missing++;
            checked++;
            if (!(e <= worst)) {
              worst = e;
              worstName = `${kohyaName(module)}.${part}`;
            }
          }
        }
        report.error(`tpo grad_${tag} (${checked} tensors)`, worst, GRAD_TOL, missing ? `${missing} without gradient` : `worst ${worstName}`);
        for (const g of grads.values()) g.release();
        deps.release();
      }
      dErrPolicy.release();
      metrics.release();
    }
    tape.dispose();
  } catch (e) {
    io.stderr.write(`golden case stopped: ${(e as Error).message}\n`);
    report.exact('tpo case', false, (e as Error).message);
  } finally {
    for (const t of held) t.release();
    unet.lora?.release();
    unet.release();
    await close();
  }
}

async function checkEncoders(gpu: Gpu, report: Report, dir: string, files: ModelFiles, single: SafetensorsFile | null, source: string): Promise<void> {
  const { file: golden, close } = await openSafetensorsFile(join(dir, 'encoders.safetensors'));
  try {
    if (golden.tensors.has('text.input_ids') && golden.tensors.has('text.last_hidden_state')) {
      const text = single ? await loadClipTextModelFromSingleFile(gpu, single, files) : await loadClipTextModel(gpu, files);
      const ids = await golden.readF64('text.input_ids');
      const [n, len] = golden.info('text.input_ids').shape;
      const rows = Array.from({ length: n }, (_, i) => Array.from(ids.subarray(i * len, (i + 1) * len)));
      const out = clipTextForward(text, rows);
      report.error(`text_encoder last_hidden_state${source}`, relativeError(await out.read(), await golden.readF64('text.last_hidden_state')), FORWARD_TOL);
      out.release();
      text.release();
    }
    const hasVae = ['vae.image', 'vae.moments', 'vae.latent', 'vae.decoded'].some((k) => golden.tensors.has(k));
    if (hasVae) {
      const vae = single ? await loadVaeFromSingleFile(gpu, single, files) : await loadVae(gpu, files);
      const t = async (name: string) => Tensor.from(gpu, await golden.readF32(name), golden.info(name).shape);
      if (golden.tensors.has('vae.image') && golden.tensors.has('vae.moments')) {
        const image = await t('vae.image');
        const moments = vaeEncode(vae, image);
        report.error(`vae encoder moments${source}`, relativeError(await moments.read(), await golden.readF64('vae.moments')), FORWARD_TOL);
        image.release();
        moments.release();
      }
      if (golden.tensors.has('vae.latent') && golden.tensors.has('vae.decoded')) {
        const latent = await t('vae.latent');
        const decoded = vaeDecode(vae, latent);
        report.error(`vae decoder${source}`, relativeError(await decoded.read(), await golden.readF64('vae.decoded')), FORWARD_TOL);
        latent.release();
        decoded.release();
      }
      vae.release();
    }
  } finally {
    await close();
  }
}


interface SampleJson {
  prompts: string[];
  negative_prompt?: string;
  height: number;
  width: number;
  eta?: number;
  runs: Record<string, { steps: number; guidance_scale: number; lora: string | null; timesteps?: number[] }>;
}

/** "lora.safetensors, multiplier 0.5" -> the file and the multiplier (1 when not given). */
function parseLoraSpec(spec: string): { file: string; multiplier: number } {
  const [file, rest] = spec.split(',').map((x) => x.trim());
  const m = rest?.match(/multiplier\s+(-?[\d.]+(?:e-?\d+)?)/);
  return { file, multiplier: m ? Number(m[1]) : 1 };
}

/**
 * sample.json: the prompts' ids, their text states, then each run of the sampler from the given starting
 * latents: intermediate latents (where a mismatch starts), final latents, the decoded image and its bytes.
 */
async function checkSample(gpu: Gpu, report: Report, dir: string, files: ModelFiles, single: SafetensorsFile | null, source: string, io: CliIO): Promise<void> {
  const meta = JSON.parse(readFileSync(join(dir, 'sample.json'), 'utf8')) as SampleJson;
  const { file: golden, close } = await openSafetensorsFile(join(dir, 'sample.safetensors'));
  const has = (name: string) => golden.tensors.has(name);
  const want = (name: string) => golden.readF64(name);
  const load = async (name: string) => Tensor.from(gpu, await golden.readF32(name), golden.info(name).shape);
  const held: Tensor[] = [];
  let unet: UNet | null = null;
  let text: Awaited<ReturnType<typeof loadClipTextModel>> | null = null;
  let vae: Awaited<ReturnType<typeof loadVae>> | null = null;
  try {
    const scheduler = await loadSchedulerConfig(files);
    const tokenizer = await loadClipTokenizer(dir);
    const idRows = async (name: string) => {
      const ids = await golden.readF64(name);
      const [n, len] = golden.info(name).shape;
      return Array.from({ length: n }, (_, i) => Array.from(ids.subarray(i * len, (i + 1) * len)));
    };
    const inputIds = await idRows('in.input_ids');
    const uncondIds = has('in.uncond_input_ids') ? await idRows('in.uncond_input_ids') : null;
    const sameIds = (rows: number[][], prompts: string[]) => rows.every((r, i) => tokenizer.encodeForModel(prompts[i]).every((id, j) => id === r[j]));
    const negative = meta.negative_prompt ?? '';
    report.exact(`sample prompt ids${source}`, sameIds(inputIds, meta.prompts) && (!uncondIds || sameIds(uncondIds, meta.prompts.map(() => negative))), `${meta.prompts.length} prompts and the negative prompt`);

    text = single ? await loadClipTextModelFromSingleFile(gpu, single, files) : await loadClipTextModel(gpu, files);
    const cond = clipTextForward(text, inputIds);
    held.push(cond);
    if (has('text.cond')) report.error(`sample text.cond${source}`, relativeError(await cond.read(), await want('text.cond')), FORWARD_TOL);
    const uncond = uncondIds ? clipTextForward(text, uncondIds) : null;
    if (uncond) held.push(uncond);
    if (uncond && has('text.uncond')) report.error(`sample text.uncond${source}`, relativeError(await uncond.read(), await want('text.uncond')), FORWARD_TOL);
    text.release();
    text = null;

    unet = await loadGoldenUNet(gpu, dir, files, single);
    vae = single ? await loadVaeFromSingleFile(gpu, single, files) : await loadVae(gpu, files);
    const latents = await load('in.latents');
    held.push(latents);
    for (const [name, run] of Object.entries(meta.runs)) {
      const sampler = createSampler('ddim', run.steps, scheduler);
      sampler.release();
      if (run.timesteps) {
        const ok = sampler.timesteps.length === run.timesteps.length && sampler.timesteps.every((t, i) => t === run.timesteps![i]);
        report.exact(`sample ${name} timesteps`, ok, ok ? `${run.steps} exact` : `got ${sampler.timesteps.join(',')}`);
      }
      unet.lora?.release();
      unet.lora = null;
      unet.loraScale = 1;
      if (run.lora) {
        const spec = parseLoraSpec(run.lora);
        const { file, close: closeLora } = await openSafetensorsFile(join(dir, spec.file));
        try {
          unet.lora = await readLora(gpu, file, unet.config);
        } finally {
          await closeLora();
        }
        unet.loraScale = spec.multiplier;
      }
      const steps = new Map<number, Float32Array>();
      const final = await denoise(
        unet,
        { latents, cond, uncond },
        {
          sampler: 'ddim',
          steps: run.steps,
          guidance: run.guidance_scale,
          eta: meta.eta ?? 0,
          scheduler,
          onStep: async (i, x) => {
            if (has(`${name}.step${i}`)) steps.set(i, await x.read());
          },
        },
      );
      for (const [i, values] of steps) report.error(`sample ${name}.step${i}${source}`, relativeError(values, await want(`${name}.step${i}`)), FORWARD_TOL);
      if (has(`${name}.latents`)) report.error(`sample ${name}.latents${source}`, relativeError(await final.read(), await want(`${name}.latents`)), FORWARD_TOL);
      const image = decodeLatents(vae, final);
      final.release();
      const values = await image.read();
      if (has(`${name}.image`)) report.error(`sample ${name}.image${source}`, relativeError(values, await want(`${name}.image`)), FORWARD_TOL);
      if (has(`${name}.image_uint8`)) {
        const expected = await want(`${name}.image_uint8`);
        const rgba = imagesToRgba(values, image.shape);
        const [b, c, h, w] = image.shape;
        let worst = 0;
        for (let i = 0; i < b; i++) {
          for (let ch = 0; ch < c; ch++) {
            for (let p = 0; p < h * w; p++) worst = Math.max(worst, Math.abs(rgba[i][p * 4 + ch] - expected[(i * c + ch) * h * w + p]));
          }
        }
        report.exact(`sample ${name}.image_uint8${source}`, worst <= 1, `largest byte difference ${worst} (tol 1)`);
      }
      image.release();
    }
  } catch (e) {
    io.stderr.write(`golden sample stopped: ${(e as Error).message}\n`);
    report.exact('sample', false, (e as Error).message);
  } finally {
    for (const t of held) t.release();
    text?.release();
    vae?.release();
    unet?.lora?.release();
    unet?.release();
    await close();
  }
}
