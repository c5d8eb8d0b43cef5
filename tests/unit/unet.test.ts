import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLora, DEFAULT_TARGETS, kohyaName, loraTargets, OPTIONAL_TARGETS } from '../../src/models/lora';
import { readLora } from '../../src/models/lora-io';
import { dirModelFiles as openModelFiles } from '../../src/models/model-files-node';
import { openSafetensorsFile as openFile } from '../../src/models/safetensors-node';
import { UNet, unetParamShapes, type UNetConfig } from '../../src/models/unet';
import { loadFolderComponent } from '../../src/models/weights';
import { mseRows, mseRowsBackward } from '../../src/nn/ops/reduce';
import { Ctx, Tape } from '../../src/nn/tape';
import { Tensor } from '../../src/nn/tensor';
import { relError, rng } from '../helpers/check';
import { GOLDENS } from '../helpers/goldens';
import { testGpu } from '../helpers/gpu';

// Files opened by the tests are closed at the end (left to the garbage collector, Node warns DEP0137).
const opened: (() => Promise<void>)[] = [];
afterAll(() => Promise.all(opened.splice(0).map((close) => close())));
const dirModelFiles = (dir: string) => {
  const files = openModelFiles(dir);
  opened.push(async () => files.close?.());
  return files;
};
const openSafetensorsFile = async (file: string) => {
  const f = await openFile(file);
  opened.push(f.close);
  return f;
};

const DIR = join(GOLDENS, 'tiny-sd15');

describe('UNet backward into the LoRA', () => {
  // `tpo-lab golden` checks every gradient without checkpointing (golden.test.ts); this checks that
  // recomputing each block in the backward gives the same gradients and frees everything. The SFT loss,
  // mean_i mean((eps_theta(x_t, t, c_w) - eps)^2), needs no loss kernel: d loss / d error_i = 1/B.
  for (const checkpoint of [true]) {
    it(`SFT gradients of all 256 LoRA matrices within 1e-3 (checkpointing ${checkpoint ? 'on' : 'off'})`, { timeout: 900_000 }, async () => {
      const gpu = await testGpu();
      const config = JSON.parse(readFileSync(join(DIR, 'unet/config.json'), 'utf8')) as UNetConfig;
      const params = unetParamShapes(config);
      const unet = new UNet(gpu, config, await loadFolderComponent(gpu, dirModelFiles(DIR), 'unet', params));
      const { file: caseFile } = await openSafetensorsFile(join(DIR, 'case.safetensors'));
      const { file: loraFile } = await openSafetensorsFile(join(DIR, 'lora.safetensors'));
      unet.lora = await readLora(gpu, loraFile, config);
      for (const p of unet.lora.params()) p.requiresGrad = true;
      const t = async (name: string) => Tensor.from(gpu, await caseFile.readF32(name), caseFile.info(name).shape);
      const [xt, timesteps, ctxW, noise] = await Promise.all(['out.x_t', 'in.timesteps', 'in.ctx_w', 'in.noise'].map(t));
      const baseline = gpu.pool.bytesInUse;

      const tape = new Tape();
      const eps = await unet.forward(new Ctx(gpu, tape), xt, timesteps, ctxW, { checkpoint });
      const err = mseRows(eps, noise);
      const b = err.size;
      const loss = (await err.read()).reduce((a, v) => a + v, 0) / b;
      expect(relError([loss], await caseFile.readF32('out.sft_loss'))).toBeLessThanOrEqual(1e-4);
      const derr = Tensor.from(gpu, new Float32Array(b).fill(1 / b), [b]);
      const deps = mseRowsBackward(eps, noise, derr);
      const grads = tape.backward(eps, deps);
      let worst = 0;
      for (const [module, m] of unet.lora.modules) {
        for (const [part, tensor] of [['lora_down', m.down], ['lora_up', m.up]] as const) {
          const want = await caseFile.readF32(`grad_sft.${kohyaName(module)}.${part}.weight`);
          const got = grads.get(tensor);
          expect(got, `${module}.${part} has a gradient`).toBeDefined();
          const e = relError(await got!.read(), want);
          worst = Math.max(worst, e);
          expect(e, `${module}.${part}`).toBeLessThanOrEqual(1e-3);
        }
      }
      console.log(`checkpoint ${checkpoint}: worst LoRA gradient relative error ${worst.toExponential(2)}`);
      for (const g of grads.values()) g.release();
      tape.dispose();
      for (const x of [eps, err, derr, deps]) x.release();
      expect(gpu.pool.bytesInUse, 'the step frees everything it allocated').toBe(baseline);
    });
  }
});

describe('UNet with float16 weights', () => {
  it('equals float32 storage of the same rounded values, and stays near the float32 goldens', { timeout: 900_000 }, async () => {
    const gpu = await testGpu();
    const config = JSON.parse(readFileSync(join(DIR, 'unet/config.json'), 'utf8')) as UNetConfig;
    const params = unetParamShapes(config);
    const half = await loadFolderComponent(gpu, dirModelFiles(DIR), 'unet', params, { halfWeights: true });
    // The same numbers in float32: each float16 matrix read back (rounded values), vectors as loaded.
    const rounded = new Map<string, Tensor>();
    for (const [name, t] of half) rounded.set(name, t.dtype === 'f16' ? Tensor.from(gpu, await t.read(), t.shape) : t.ref());
    expect([...half.values()].filter((t) => t.dtype === 'f16').length).toBeGreaterThan(100);
    const { file: caseFile } = await openSafetensorsFile(join(DIR, 'case.safetensors'));
    const t = async (name: string) => Tensor.from(gpu, await caseFile.readF32(name), caseFile.info(name).shape);
    const [sample, timesteps, ctxW] = await Promise.all(['in.sample', 'in.timesteps', 'in.ctx_w'].map(t));
    const out16 = await new UNet(gpu, config, half).forward(new Ctx(gpu), sample, timesteps, ctxW);
    const out32 = await new UNet(gpu, config, rounded).forward(new Ctx(gpu), sample, timesteps, ctxW);
    const got = await out16.read();
    expect(relError(got, await out32.read())).toBeLessThanOrEqual(1e-5);
    const vsGolden = relError(got, await caseFile.readF32('out.eps_base'));
    console.log(`float16 weights: relative error against the float32 golden ${vsGolden.toExponential(2)}`);
    expect(vsGolden).toBeLessThanOrEqual(1e-2);
  });
});

describe('LoRA on the optional targets (proj_in, proj_out, ff.net.0.proj, ff.net.2)', () => {
  it('equals the base UNet with each LoRA merged into its weight, and trains every matrix', { timeout: 900_000 }, async () => {
    const gpu = await testGpu();
    const config = JSON.parse(readFileSync(join(DIR, 'unet/config.json'), 'utf8')) as UNetConfig;
    const params = unetParamShapes(config);
    const weights = await loadFolderComponent(gpu, dirModelFiles(DIR), 'unet', params);
    const unet = new UNet(gpu, config, weights);
    const targets = loraTargets(config, [...DEFAULT_TARGETS, ...OPTIONAL_TARGETS]);
    // 16 transformers x (8 attention + 4 optional) modules; proj_in / proj_out are 1x1 convs here.
    expect(targets.size).toBe(16 * 12);
    expect([...targets.values()].filter((t) => t.conv1x1).length).toBe(32);
    const r = rng(5);
    const lora = createLora(gpu, targets, 2, 3, r);
    // A non-zero B, so the LoRA changes the output (createLora starts B at zero).
    for (const m of lora.modules.values()) {
      m.up.release();
      const up = Tensor.from(gpu, Float32Array.from({ length: m.up.size }, () => (r() - 0.5) * 0.2), m.up.shape);
      up.requiresGrad = true;
      m.up = up;
    }
    unet.lora = lora;
    const { file: caseFile } = await openSafetensorsFile(join(DIR, 'case.safetensors'));
    const t = async (name: string) => Tensor.from(gpu, await caseFile.readF32(name), caseFile.info(name).shape);
    const [sample, timesteps, ctxW, noise] = await Promise.all(['in.sample', 'in.timesteps', 'in.ctx_w', 'in.noise'].map(t));
    const tape = new Tape();
    const withLora = await unet.forward(new Ctx(gpu, tape), sample, timesteps, ctxW);

    // The same model with W' = W + (alpha / r) B A in every targeted layer, and no LoRA.
    const merged = new Map<string, Tensor>();
    for (const [name, w] of weights) {
      const module = name.endsWith('.weight') ? lora.modules.get(name.slice(0, -'.weight'.length)) : undefined;
      if (!module) {
        merged.set(name, w.ref());
        continue;
      }
      const [a, b, base] = [await module.down.read(), await module.up.read(), await w.read()];
      const [rank, inF] = module.down.shape;
      const outF = module.up.shape[0];
      const values = Float32Array.from(base);
      for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) {
        let s = 0;
        for (let k = 0; k < rank; k++) s += b[o * rank + k] * a[k * inF + i];
        values[o * inF + i] += module.scale * s;
      }
      merged.set(name, Tensor.from(gpu, values, w.shape));
    }
    const plain = await new UNet(gpu, config, merged).forward(new Ctx(gpu), sample, timesteps, ctxW);
    const got = await withLora.read();
    expect(relError(got, await plain.read())).toBeLessThanOrEqual(1e-5);
    expect(relError(got, await caseFile.readF32('out.eps_base'))).toBeGreaterThan(1e-3); // the LoRA did something

    const err = mseRows(withLora, noise);
    const derr = Tensor.from(gpu, [0.5, 0.5], [2]);
    const grads = tape.backward(withLora, mseRowsBackward(withLora, noise, derr));
    for (const [name, m] of lora.modules) {
      for (const p of [m.down, m.up]) {
        const g = grads.get(p);
        expect(g, `${name} has a gradient`).toBeDefined();
        expect((await g!.read()).some((v) => v !== 0), `${name} gradient is not zero`).toBe(true);
      }
    }
    err.release();
    tape.dispose();
  });
});
