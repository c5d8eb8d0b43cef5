// `npm run bench`: GFLOP/s of our matmul, conv2d and attention kernels, forward and backward, against the
// same operations through TensorFlow.js's WebGPU backend on the same GPUDevice in the same run.
// Timings are wall-clock over repeated runs ended by a queue sync, identical for both sides. The printed
// ratio is our speed over the peer's (above 1: we are faster). Results go to tests/bench/results/.
//
// BENCH_SIZE=sd15 uses Stable Diffusion 1.5 shapes at 512 px (64x64 latent); BENCH_SIZE=small a 16x16
// latent, which a software adapter (SwiftShader, the default there) gets through in minutes.

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { it } from 'vitest';
import type { Gpu } from '../../src/gpu/gpu';
import { openNodeGpu } from '../../src/gpu/node';
import { attention, attentionBackward } from '../../src/nn/ops/attention';
import { conv2d, conv2dBackward } from '../../src/nn/ops/conv2d';
import { cpuKernels, isCpuAdapter } from '../../src/nn/ops/kernels';
import { matmul, matmulBackward } from '../../src/nn/ops/matmul';
import { Tensor } from '../../src/nn/tensor';

interface Case {
  op: string;
  shape: string;
  flops: number;
  ours: () => Tensor[];
  peer: () => tf.Tensor[];
}

interface Row {
  op: string;
  shape: string;
  oursMs: number;
  peerMs: number;
  oursGflops: number;
  peerGflops: number;
  ratio: number;
}

function random(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 32 - 0.5;
  }
  return out;
}

/** Mean milliseconds per run: warm-up (compiles pipelines), then enough runs to fill ~minMs. */
async function time(run: () => void, sync: () => Promise<void>, minMs: number): Promise<number> {
  run();
  run();
  await sync();
  let t0 = performance.now();
  run();
  await sync();
  const once = Math.max(performance.now() - t0, 0.01);
  const reps = Math.min(50, Math.max(3, Math.ceil(minMs / once)));
  t0 = performance.now();
  for (let i = 0; i < reps; i++) run();
  await sync();
  return (performance.now() - t0) / reps;
}

function cases(gpu: Gpu, size: 'small' | 'sd15'): Case[] {
  const side = size === 'sd15' ? 64 : 16;
  const tokens = side * side;
  const up = (data: Float32Array, shape: number[]) => Tensor.from(gpu, data, shape);
  const out: Case[] = [];

  // Linear layer of a transformer block (to_q at 320 channels): [tokens, 320] x [320, 320]^T.
  {
    const [m, k, n] = [tokens, 320, 320];
    const a = random(m * k, 1);
    const w = random(n * k, 2);
    const dc = random(m * n, 3);
    const [ta, tw, tdc] = [up(a, [m, k]), up(w, [n, k]), up(dc, [m, n])];
    const [pa, pw, pdc] = [tf.tensor2d(a, [m, k]), tf.tensor2d(w, [n, k]), tf.tensor2d(dc, [m, n])];
    out.push({
      op: 'matmul forward',
      shape: `${m}x${k} @ (${n}x${k})^T`,
      flops: 2 * m * n * k,
      ours: () => [matmul(ta, tw, { transB: true })],
      peer: () => [tf.matMul(pa, pw, false, true)],
    });
    out.push({
      op: 'matmul backward (dA, dB)',
      shape: `${m}x${k} @ (${n}x${k})^T`,
      flops: 4 * m * n * k,
      ours: () => {
        const g = matmulBackward(ta, tw, tdc, { transB: true });
        return [g.da!, g.db!];
      },
      peer: () => [tf.matMul(pdc, pw), tf.matMul(pdc, pa, true, false)],
    });
    // On a CPU adapter the products above run as matmul_vec4; the tiled kernel (the GPU's) beside them, timed
    // in the same run, is the before / after of that change.
    if (isCpuAdapter(gpu)) {
      for (const c of out.slice(-2)) {
        out.push({
          ...c,
          op: `${c.op}, tiled kernel`,
          ours: () => {
            cpuKernels.enabled = false;
            try {
              return c.ours();
            } finally {
              cpuKernels.enabled = true;
            }
          },
        });
      }
    }
  }

  // ResNet conv of the first UNet level: 320 -> 320 channels, 3x3, stride 1, padding 1.
  {
    const [c, h, w, co] = [320, side, side, 320];
    const x = random(c * h * w, 4);
    const wt = random(co * c * 9, 5);
    const dy = random(co * h * w, 6);
    const [tx, tw, tdy] = [up(x, [1, c, h, w]), up(wt, [co, c, 3, 3]), up(dy, [1, co, h, w])];
    // TensorFlow.js convolves NHWC with HWIO filters: its native layout, so the peer runs its best path.
    const px = tf.tensor4d(x, [1, h, w, c]);
    const pw = tf.tensor4d(wt, [3, 3, c, co]);
    const pdy = tf.tensor4d(dy, [1, h, w, co]);
    const flops = 2 * co * c * 9 * h * w;
    out.push({
      op: 'conv2d 3x3 forward',
      shape: `[1,${c},${h},${w}] -> ${co}`,
      flops,
      ours: () => [conv2d(tx, tw, undefined, { stride: 1, padding: 1 })],
      peer: () => [tf.conv2d(px, pw, 1, 'same')],
    });
    out.push({
      op: 'conv2d 3x3 backward (dx, dW)',
      shape: `[1,${c},${h},${w}] -> ${co}`,
      flops: 2 * flops,
      ours: () => {
        const g = conv2dBackward(tx, tw, tdy, { stride: 1, padding: 1 }, { input: true, weight: true });
        return [g.dx!, g.dweight!];
      },
      peer: () => [
        tf.engine().runKernel('Conv2DBackpropInput', { dy: pdy, filter: pw }, {
          strides: 1, pad: 'same', dataFormat: 'NHWC', inputShape: [1, h, w, c],
        }) as tf.Tensor,
        tf.engine().runKernel('Conv2DBackpropFilter', { x: px, dy: pdy }, {
          strides: 1, pad: 'same', dataFormat: 'NHWC', filterShape: [3, 3, c, co],
        }) as tf.Tensor,
      ],
    });
  }

  // Self-attention of the first UNet level (8 heads of 40) and cross-attention to 77 text tokens.
  for (const [kind, nk] of [
    ['self', tokens],
    ['cross', 77],
  ] as const) {
    const [heads, d, nq] = [8, 40, tokens];
    const scale = 1 / Math.sqrt(d);
    const q = random(nq * heads * d, 7);
    const k = random(nk * heads * d, 8);
    const v = random(nk * heads * d, 9);
    const dO = random(nq * heads * d, 10);
    const [tq, tk, tv, tdo] = [up(q, [1, nq, heads * d]), up(k, [1, nk, heads * d]), up(v, [1, nk, heads * d]), up(dO, [1, nq, heads * d])];
    const fwd = attention(tq, tk, tv, { heads });
    // The peer gets heads-major [H, N, d] tensors (its best layout) and keeps the H x Nq x Nk
    // probabilities from its forward for the backward, as its autodiff would.
    const headsMajor = (x: Float32Array, n: number) => tf.tidy(() => tf.transpose(tf.tensor3d(x, [n, heads, d]), [1, 0, 2]));
    const [pq, pk, pv, pdo] = [headsMajor(q, nq), headsMajor(k, nk), headsMajor(v, nk), headsMajor(dO, nq)];
    const peerForward = () => tf.tidy(() => tf.matMul(tf.softmax(tf.mul(tf.matMul(pq, pk, false, true), scale)), pv));
    const probs = tf.tidy(() => tf.softmax(tf.mul(tf.matMul(pq, pk, false, true), scale)));
    const flops = 4 * heads * nq * nk * d;
    out.push({
      op: `attention ${kind} forward`,
      shape: `H${heads} Nq${nq} Nk${nk} d${d}`,
      flops,
      ours: () => {
        const r = attention(tq, tk, tv, { heads });
        return [r.out, r.logsumexp];
      },
      peer: () => [peerForward()],
    });
    out.push({
      op: `attention ${kind} backward`,
      shape: `H${heads} Nq${nq} Nk${nk} d${d}`,
      flops: 2 * flops,
      ours: () => {
        const g = attentionBackward(tq, tk, tv, fwd.out, fwd.logsumexp, tdo, { heads });
        return [g.dq, g.dk, g.dv];
      },
      peer: () =>
        tf.tidy(() => {
          const dv = tf.matMul(probs, pdo, true, false);
          const dp = tf.matMul(pdo, pv, false, true);
          const ds = tf.mul(probs, tf.sub(dp, tf.sum(tf.mul(dp, probs), -1, true)));
          const dq = tf.mul(tf.matMul(ds, pk), scale);
          const dk = tf.mul(tf.matMul(ds, pq, true, false), scale);
          return [dq, dk, dv];
        }),
    });
  }
  return out;
}

function table(rows: Row[], header: string): string {
  const lines = [
    header,
    '',
    '| op | shape | ours ms | ours GFLOP/s | tfjs-webgpu ms | tfjs-webgpu GFLOP/s | ours / tfjs speed |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.op} | ${r.shape} | ${r.oursMs.toFixed(2)} | ${r.oursGflops.toFixed(1)} | ${r.peerMs.toFixed(2)} | ` +
        `${r.peerGflops.toFixed(1)} | ${r.ratio.toFixed(2)} |`,
    ),
  ];
  return lines.join('\n');
}

it('kernel benchmark: ours vs TensorFlow.js WebGPU on the same device', async () => {
  const gpu = await openNodeGpu();
  // tfjs looks for navigator.gpu before it accepts a device; it then uses exactly the device we give it.
  (globalThis as { navigator?: object }).navigator ??= { gpu: {} };
  if (tf.findBackendFactory('webgpu')) tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new WebGPUBackend(gpu.device));
  await tf.setBackend('webgpu');
  const backend = tf.backend() as WebGPUBackend;

  const size = (process.env.BENCH_SIZE as 'small' | 'sd15' | undefined) ?? (gpu.adapter.isFallbackAdapter ? 'small' : 'sd15');
  const minMs = gpu.adapter.isFallbackAdapter ? 300 : 200;
  const rows: Row[] = [];
  for (const c of cases(gpu, size)) {
    const oursMs = await time(
      () => c.ours().forEach((t) => t.release()),
      () => gpu.sync(),
      minMs,
    );
    const peerMs = await time(
      () => tf.dispose(c.peer()),
      async () => {
        // tfjs records into its own open compute pass; close it before submitting, as its own reads do
        // (when it has flushed already, there is nothing to submit).
        if ((backend as unknown as { commandEncoder: unknown }).commandEncoder) {
          backend.endComputePassEncoder();
          backend.submitQueue();
        }
        await gpu.device.queue.onSubmittedWorkDone();
      },
      minMs,
    );
    const row = {
      op: c.op,
      shape: c.shape,
      oursMs,
      peerMs,
      oursGflops: c.flops / oursMs / 1e6,
      peerGflops: c.flops / peerMs / 1e6,
      ratio: peerMs / oursMs,
    };
    rows.push(row);
    console.log(`${row.op.padEnd(34)} ours ${oursMs.toFixed(2).padStart(9)} ms   tfjs ${peerMs.toFixed(2).padStart(9)} ms   ratio ${row.ratio.toFixed(2)}`);
  }

  const a = gpu.adapter;
  const header =
    `Adapter: ${[a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(' / ')}` +
    `${a.isFallbackAdapter ? ' (software fallback)' : ''}; size: ${size}; ${new Date().toISOString().slice(0, 10)}`;
  const md = table(rows, header);
  console.log(`\n${md}\n`);
  const dir = join(dirname(fileURLToPath(import.meta.url)), 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'latest.md'), `${md}\n`);
  writeFileSync(join(dir, 'latest.json'), `${JSON.stringify({ adapter: a, size, rows }, null, 2)}\n`);
});
