// Whole training steps, with the CPU adapter's kernels (matmul-vec4, conv2d-vec4, the serial norms) and
// without them, on the same adapter in the same run: the before / after of those kernels. Two steps:
//   - the demo build's UNet (src/demo/build.ts defaults), every weight trainable, a forward and backward of
//     a batch of 8 rows at 16 x 16 latents, random inputs; wall time and dispatches;
//   - a TDPO step of the tiny SD1.5-layout golden model through `tpo-lab train` (batch 4, 64 px: the
//     policy's forward and backward and the reference's forward over 8 rows), its reported step time.
// On a GPU adapter both sides run the same kernels (the CPU kernels are for software adapters only), so
// the ratio is 1 there by construction. Writes tests/bench/results/step.md and step.json.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { it } from 'vitest';
import { demoSettings, demoUNetConfig } from '../../src/demo/build';
import { initWeights } from '../../src/demo/init';
import type { Gpu } from '../../src/gpu/gpu';
import { openNodeGpu } from '../../src/gpu/node';
import { UNet, unetParamShapes } from '../../src/models/unet';
import { cpuKernels, isCpuAdapter } from '../../src/nn/ops/kernels';
import { Ctx, Tape } from '../../src/nn/tape';
import { Tensor } from '../../src/nn/tensor';
import { runCli } from '../helpers/cli';
import { GOLDENS } from '../helpers/goldens';
import { writeTpoSet } from '../helpers/train-data';

interface StepRow {
  step: string;
  dispatches: number | null;
  cpuKernelsMs: number;
  otherKernelsMs: number;
}

/** Runs `fn` with the CPU kernels on or off, restoring the switch after. */
async function withCpuKernels<T>(on: boolean, fn: () => Promise<T>): Promise<T> {
  cpuKernels.enabled = on;
  try {
    return await fn();
  } finally {
    cpuKernels.enabled = true;
  }
}

/** The demo UNet's forward and backward over `rows` rows: best wall ms of `reps` after a warm-up, and dispatches. */
async function demoUNetStep(gpu: Gpu, rows: number, reps: number): Promise<{ ms: number; dispatches: number }> {
  const config = demoUNetConfig(demoSettings());
  const unet = new UNet(gpu, config, initWeights(gpu, 0, 'unet', unetParamShapes(config)));
  unet.trainAllWeights();
  const side = config.sample_size ?? 16;
  const random = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.5);
  const x = Tensor.from(gpu, random(rows * 4 * side * side, 1), [rows, 4, side, side]);
  const t = Tensor.from(gpu, new Float32Array(rows).fill(500), [rows]);
  const context = Tensor.from(gpu, random(rows * 77 * config.cross_attention_dim, 2), [rows, 77, config.cross_attention_dim]);
  const dOut = Tensor.from(gpu, random(rows * 4 * side * side, 3), [rows, 4, side, side]);
  let dispatches = 0;
  const dispatch = gpu.dispatch.bind(gpu);
  gpu.dispatch = (k, a) => (dispatches++, dispatch(k, a));
  const once = async () => {
    const tape = new Tape();
    const out = await unet.forward(new Ctx(gpu, tape), x, t, context);
    const grads = tape.backward(out, dOut);
    await gpu.sync();
    for (const g of grads.values()) g.release();
    tape.dispose();
    out.release();
  };
  try {
    await once();
    let best = Infinity;
    dispatches = 0;
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      await once();
      best = Math.min(best, performance.now() - t0);
    }
    return { ms: best, dispatches: dispatches / reps };
  } finally {
    gpu.dispatch = dispatch;
    for (const tensor of [x, t, context, dOut]) tensor.release();
    unet.release();
  }
}

/** Mean step time (ms) of `tpo-lab train` TDPO on the tiny golden model, past its first step (compiles). */
async function tinyTdpoStep(gpu: Gpu, dir: string, tag: string): Promise<number> {
  const out = join(dir, `run-${tag}`);
  const argv = ['train', '--model', join(GOLDENS, 'tiny-sd15'), '--data', join(dir, 'tpo.jsonl'), '--method', 'tdpo', '--steps', '3', '--batch', '4', '--resolution', '64', '--holdout', '0', '--quiet', '--cache', join(dir, 'cache'), '--out', out];
  const result = await runCli(argv, { cwd: dir, gpu });
  if (result.status !== 0) throw new Error(`tpo-lab train failed: ${result.err}`);
  const steps = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { stepTime: number });
  const later = steps.slice(1);
  return (later.reduce((a, s) => a + s.stepTime, 0) / later.length) * 1000;
}

it('training steps with and without the CPU adapter kernels, same adapter, same run', async () => {
  const gpu = await openNodeGpu();
  const dir = mkdtempSync(join(tmpdir(), 'step-bench-'));
  try {
    writeTpoSet(dir, 8, 64);
    const rows: StepRow[] = [];
    const demoOn = await withCpuKernels(true, () => demoUNetStep(gpu, 8, 3));
    const demoOff = await withCpuKernels(false, () => demoUNetStep(gpu, 8, 3));
    rows.push({ step: 'demo UNet (16/32/32, 16x16 latents), all weights, forward + backward, 8 rows', dispatches: demoOn.dispatches, cpuKernelsMs: demoOn.ms, otherKernelsMs: demoOff.ms });
    const tinyOn = await withCpuKernels(true, () => tinyTdpoStep(gpu, dir, 'on'));
    const tinyOff = await withCpuKernels(false, () => tinyTdpoStep(gpu, dir, 'off'));
    rows.push({ step: 'tiny-sd15 TDPO step (tpo-lab train, batch 4, 64 px, LoRA rank 8)', dispatches: null, cpuKernelsMs: tinyOn, otherKernelsMs: tinyOff });

    const a = gpu.adapter;
    const lines = [
      `Adapter: ${[a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(' / ')}${isCpuAdapter(gpu) ? ' (CPU adapter: the CPU kernels apply)' : ' (GPU: both columns run the same kernels)'}; ${new Date().toISOString().slice(0, 10)}`,
      '',
      '| step | dispatches | with the CPU kernels, ms | without (tiled / workgroup kernels), ms | speed-up |',
      '| --- | ---: | ---: | ---: | ---: |',
      ...rows.map((r) => `| ${r.step} | ${r.dispatches ?? ''} | ${r.cpuKernelsMs.toFixed(0)} | ${r.otherKernelsMs.toFixed(0)} | ${(r.otherKernelsMs / r.cpuKernelsMs).toFixed(2)}x |`),
    ];
    const md = lines.join('\n');
    console.log(`\n${md}\n`);
    const results = join(dirname(fileURLToPath(import.meta.url)), 'results');
    mkdirSync(results, { recursive: true });
    writeFileSync(join(results, 'step.md'), `${md}\n`);
    writeFileSync(join(results, 'step.json'), `${JSON.stringify({ adapter: a, cpuAdapter: isCpuAdapter(gpu), rows }, null, 2)}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
