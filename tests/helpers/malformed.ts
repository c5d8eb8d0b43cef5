// A generator of malformed inputs for every CLI entry point: truncated and corrupted safetensors, absurd
// and broken configs, damaged checkpoints (each state.json field), bad JSONL, bad images, outputs that
// are folders or files. Each case builds its files in a fresh folder and gives the command line; the test
// (malformed-inputs.test.ts) runs it and checks that it is refused cleanly. Most cases fail before the GPU
// opens, so the whole set runs in seconds.

import { copyFileSync, cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { PNG } from 'pngjs';
import { loadTrainingData } from '../../src/cli/training-data';
import { encodeLora, type HostLora } from '../../src/models/lora-io';
import { DEFAULT_TARGETS, kohyaName, loraTargets } from '../../src/models/lora';
import { writeSafetensors } from '../../src/models/safetensors';
import { type UNetConfig } from '../../src/models/unet';
import { type CheckpointState, dataFingerprint } from '../../src/tpo/checkpoint';
import { splitExamples } from '../../src/tpo/examples';
import { RNG_ALGORITHM, epochOrder } from '../../src/tpo/random';
import { defaultTrainConfig, type TrainConfig } from '../../src/tpo/trainer';
import { discPng, writeTpoSet } from './train-data';

export type CliName = 'golden' | 'plan' | 'pairs' | 'train' | 'score' | 'export';

export interface MalformedCase {
  name: string;
  command: CliName;
  /** Writes the case's files under `dir` (empty, its own) and returns the arguments after `tpo-lab`. */
  setup(dir: string): Promise<string[]> | string[];
  /** What stderr (with stdout) must say: the file, line or key, and what is wrong. */
  message: RegExp;
  /** Files (relative to dir) that must be byte-identical afterwards besides every input; e.g. a run's metrics. */
  keep?: string[];
  /** The command opens the GPU before it can fail (slower on SwiftShader). */
  gpu?: boolean;
}

// ---- building blocks ----

/** The parts of a model folder that are not weights (configs, tokenizer): enough for config cases. */
const CONFIG_FILES = ['model_index.json', 'unet/config.json', 'vae/config.json', 'text_encoder/config.json', 'scheduler/scheduler_config.json', 'tokenizer/vocab.json', 'tokenizer/merges.txt', 'tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json'];
const WEIGHT_FILES = ['unet/diffusion_pytorch_model.safetensors', 'vae/diffusion_pytorch_model.safetensors', 'text_encoder/model.safetensors'];

/** A copy of the model folder `src` under dir/model; weights only when asked (config cases fail first). */
export function copyModel(src: string, dir: string, withWeights: boolean): string {
  const dst = path.join(dir, 'model');
  for (const f of [...CONFIG_FILES, ...(withWeights ? WEIGHT_FILES : [])]) {
    mkdirSync(path.dirname(path.join(dst, f)), { recursive: true });
    copyFileSync(path.join(src, f), path.join(dst, f));
  }
  return dst;
}

export function patchJson(file: string, patch: (o: Record<string, unknown>) => unknown): void {
  const o = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  writeFileSync(file, `${JSON.stringify(patch(o) ?? o, null, 2)}\n`);
}

/** Safetensors damage: each returns the damaged bytes of `bytes`. */
export const SAFETENSORS_DAMAGE: Record<string, { damage: (b: Uint8Array) => Uint8Array; message: RegExp }> = {
  'cut in the tensor data': { damage: (b) => b.subarray(0, b.length - 1000), message: /truncated|past the end|cut short|runs? past|beyond/i },
  'cut in the header': { damage: (b) => b.subarray(0, 40), message: /truncated|past the end/i },
  'shorter than 8 bytes': { damage: (b) => b.subarray(0, 5), message: /too short/i },
  'empty': { damage: () => new Uint8Array(0), message: /too short|0 bytes/i },
  'header length absurd': {
    damage: (b) => {
      const c = b.slice();
      new DataView(c.buffer).setUint32(4, 0x7fffffff, true);
      return c;
    },
    message: /header length|limit/i,
  },
  'header not JSON': {
    damage: (b) => {
      const c = b.slice();
      c.set(new TextEncoder().encode('{{{{{{{{{'), 8);
      return c;
    },
    message: /JSON|header/i,
  },
  'header bytes zeroed': {
    damage: (b) => {
      const c = b.slice();
      c.fill(0, 8, 40);
      return c;
    },
    message: /header|JSON|UTF-8/i,
  },
};

export function damageFile(file: string, how: keyof typeof SAFETENSORS_DAMAGE): void {
  writeFileSync(file, SAFETENSORS_DAMAGE[how].damage(new Uint8Array(readFileSync(file))));
}

/** Bad images: bytes and what the refusal must say. */
export const BAD_IMAGES: Record<string, { bytes: () => Uint8Array; message: RegExp }> = {
  'an empty file': { bytes: () => new Uint8Array(0), message: /empty/ },
  'text named .png': { bytes: () => new TextEncoder().encode('not an image at all'), message: /not an image/ },
  'a PNG cut in its header': { bytes: () => discPng(64, [200, 0, 0], [0, 0, 200], 1).subarray(0, 14), message: /header is damaged or cut short/ },
  'a GIF': { bytes: () => new Uint8Array([0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 1, 0, 1, 0, 0, 0, 0, 0x3b]), message: /GIF/ },
  'a PNG that says 0x0 pixels': {
    bytes: () => {
      const b = new Uint8Array(discPng(8, [1, 2, 3], [4, 5, 6], 1)); // a copy at offset 0 (Buffers share a pool)
      new DataView(b.buffer).setUint32(16, 0);
      return b;
    },
    message: /0x8 pixels; the file is damaged/,
  },
};

/** A 1x1 PNG. */
export function tinyPng(): Uint8Array {
  const png = new PNG({ width: 1, height: 1 });
  png.data.set([10, 20, 30, 255]);
  return PNG.sync.write(png);
}

// ---- a run folder with a checkpoint, built without training ----

export interface FakeRun {
  out: string;
  data: string;
  state: CheckpointState;
}

/**
 * A training output folder as `train` leaves it after 2 of 10 steps on a 4-image TPO set: run.json,
 * metrics.jsonl (2 lines), checkpoint/ with a zero LoRA of the default targets, zero AdamW moments and a
 * state.json consistent with all of it. `editState` damages state.json.
 */
export async function writeFakeRun(dir: string, tiny: string, editState?: (s: CheckpointState) => unknown): Promise<FakeRun> {
  const set = writeTpoSet(dir, 4, 64);
  const out = path.join(dir, 'run');
  mkdirSync(path.join(out, 'checkpoint'), { recursive: true });
  const config: TrainConfig = { ...defaultTrainConfig('tdpo'), steps: 10, resolution: 64, rank: 4, alpha: 4 };
  const data = await loadTrainingData(set.file, 'tdpo', { skipBadLines: false, negatives: 'all' });
  const { train } = splitExamples(data.examples, 0, config.seed);
  const state: CheckpointState = {
    format: 'tpo-lab-checkpoint',
    version: 1,
    savedAt: '2026-01-01T00:00:00.000Z',
    config,
    state: { step: 2, appliedSteps: 2, epoch: 0, order: epochOrder(config.seed, 0, train.length), position: 2, skipped: [] },
    rng: { algorithm: RNG_ALGORITHM, seed: config.seed },
    data: { examples: train.length, fingerprint: await dataFingerprint(train) },
  };
  const unetConfig = JSON.parse(readFileSync(path.join(tiny, 'unet/config.json'), 'utf8')) as UNetConfig;
  const host: HostLora = new Map();
  const tensors = [];
  for (const [module, t] of loraTargets(unetConfig, DEFAULT_TARGETS)) {
    host.set(module, { down: new Float32Array(config.rank * t.in), up: new Float32Array(t.out * config.rank), rank: config.rank, alpha: config.alpha, in: t.in, out: t.out, conv1x1: t.conv1x1 });
    for (const prefix of ['exp_avg', 'exp_avg_sq']) {
      tensors.push({ name: `${prefix}.${kohyaName(module)}.lora_down.weight`, dtype: 'F32' as const, shape: [config.rank, t.in], data: new Uint8Array(4 * config.rank * t.in) });
      tensors.push({ name: `${prefix}.${kohyaName(module)}.lora_up.weight`, dtype: 'F32' as const, shape: [t.out, config.rank], data: new Uint8Array(4 * config.rank * t.out) });
    }
  }
  writeFileSync(path.join(out, 'checkpoint', 'lora.safetensors'), encodeLora(host, { format: 'kohya', dtype: 'fp32', info: {} }));
  writeFileSync(path.join(out, 'checkpoint', 'optimizer.safetensors'), writeSafetensors(tensors, { format: 'tpo-lab AdamW moments' }));
  // An edit changes the state in place (returns nothing) or returns the whole text to write instead.
  const clone = structuredClone(state);
  const returned = editState?.(clone);
  const edited = returned === undefined ? clone : returned;
  writeFileSync(path.join(out, 'checkpoint', 'state.json'), typeof edited === 'string' ? edited : `${JSON.stringify(edited, null, 2)}\n`);
  const settings = {
    model: tiny,
    data: set.file,
    negatives: 'all',
    skipBadLines: false,
    holdout: 0,
    cache: path.join(out, 'cache'),
    precision: 'auto',
    scoreDraws: 0,
    scoreEvery: 0,
    scoreLimit: 256,
    checkpointEvery: 100,
    dtype: 'fp16',
    startedAt: 0,
  };
  writeFileSync(path.join(out, 'run.json'), `${JSON.stringify(settings, null, 2)}\n`);
  writeFileSync(path.join(out, 'metrics.jsonl'), '{"step":1,"loss":0.69}\n{"step":2,"loss":0.68}\n{"step":3,"loss":0.67}\n');
  return { out, data: set.file, state };
}

/** Every state.json damage: the edit and what the refusal must name. */
const STATE_DAMAGE: [string, (s: CheckpointState) => unknown, RegExp][] = [
  ['step not a number', (s) => void ((s.state as unknown as Record<string, unknown>).step = 'abc'), /state\.step .*"abc"/],
  ['negative step', (s) => void (s.state.step = -1), /state\.step .*-1/],
  ['fractional step', (s) => void (s.state.step = 1.5), /state\.step/],
  ['step past the run', (s) => void (s.state.step = 11), /state\.step .*at most/],
  ['negative position', (s) => void (s.state.position = -1), /state\.position .*-1/],
  ['position off the step', (s) => void (s.state.position = 3), /state\.position must be 2/],
  ['order entry out of range', (s) => void (s.state.order[1] = 99), /state\.order\[1\] .*99/],
  ['order entry negative', (s) => void (s.state.order[0] = -1), /state\.order\[0\]/],
  ['order repeats', (s) => void (s.state.order[1] = s.state.order[0]), /state\.order\[1\] repeats/],
  ['order too short', (s) => void s.state.order.pop(), /state\.order must list each of the 4/],
  ['order not a list', (s) => void ((s.state as unknown as Record<string, unknown>).order = 'x'), /state\.order/],
  ['order shuffled otherwise', (s) => void s.state.order.reverse(), /state\.order is not the data order/],
  ['epoch ahead', (s) => void (s.state.epoch = 5), /state\.epoch must be 0/],
  ['appliedSteps above step', (s) => void (s.state.appliedSteps = 3), /state\.appliedSteps/],
  ['skipped does not add up', (s) => void (s.state.appliedSteps = 1), /state\.skipped must list the 1/],
  ['skipped step out of range', (s) => {
    s.state.appliedSteps = 1;
    s.state.skipped = [7];
  }, /state\.skipped\[0\]/],
  ['state missing', (s) => void delete (s as unknown as Record<string, unknown>).state, /not a TPO Lab checkpoint/],
  ['data.examples wrong type', (s) => void ((s.data as unknown as Record<string, unknown>).examples = '4'), /data\.examples/],
  ['fingerprint not hex', (s) => void (s.data.fingerprint = 'zz'), /data\.fingerprint/],
  ['fingerprint of other data', (s) => void (s.data.fingerprint = '0'.repeat(32)), /the checkpoint was trained on 4 examples \(fingerprint 0{32}\)/],
  ['examples of other data', (s) => {
    s.data.examples = 5;
    s.state.order = epochOrder(0, 0, 5);
  }, /trained on 5 examples/],
  ['negative lr', (s) => void (s.config.lr = -1), /lr must be > 0/],
  ['zero steps', (s) => void (s.config.steps = 0), /steps must be a whole number from 1/],
  ['batch size 1e12', (s) => void (s.config.batchSize = 1e12), /batchSize must be a whole number from 1 to 4096/],
  ['timesteps out of range', (s) => void (s.config.tMax = 5000), /timestep range 0\.\.5000/],
  ['lr not a number', (s) => void ((s.config as unknown as Record<string, unknown>).lr = 'fast'), /lr must be > 0, got "fast"/],
  ['unknown method', (s) => void ((s.config as unknown as Record<string, unknown>).method = 'magic'), /method must be one of/],
  ['resolution not a multiple of 8', (s) => void (s.config.resolution = 65), /resolution 65/],
  ['rank of another LoRA', (s) => void (s.config.rank = 8), /rank 4, state\.json says 8/],
  ['targets of another LoRA', (s) => void (s.config.targets = ['to_q']), /holds \d+ modules, state\.json's targets \(to_q\)/],
  ['unknown target', (s) => void (s.config.targets = ['to_x']), /unknown LoRA target "to_x"/],
  ['rng seed differs', (s) => void (s.rng.seed = 5), /rng\.seed/],
  ['not JSON', () => '{"format": "tpo-lab-checkpoint", "version": 1, "config": {', /state\.json is not valid JSON/],
  ['a JSON list', () => '[1, 2, 3]', /not a TPO Lab checkpoint/],
  ['null', () => 'null', /not a TPO Lab checkpoint/],
];

// ---- the cases ----

/** Every malformed-input case, for the model folder `tiny` (the goldens' tiny SD1.5-layout model). */
export function malformedCases(tiny: string): MalformedCase[] {
  const cases: MalformedCase[] = [];
  const trainArgs = (dir: string, model: string, data: string, extra: string[] = []) => [
    'train', '--model', model, '--data', data, '--out', path.join(dir, 'out'), '--resolution', '64', '--holdout', '0', '--steps', '2', '--quiet', ...extra,
  ];

  // Configs: absurd, mistyped, inconsistent. Each through train (before the GPU) and plan.
  const unetConfigs: [string, (o: Record<string, unknown>) => unknown, RegExp][] = [
    ['layers_per_block 1e9', (o) => void (o.layers_per_block = 1e9), /layers_per_block must be a whole number from 1 to 16, got 1000000000/],
    ['layers_per_block as text', (o) => void (o.layers_per_block = '2'), /layers_per_block must be a whole number from 1 to 16, got "2"/],
    ['layers_per_block 0', (o) => void (o.layers_per_block = 0), /layers_per_block must be a whole number from 1 to 16, got 0/],
    ['attention_head_dim not dividing the width', (o) => void (o.attention_head_dim = 3), /attention_head_dim 3 does not divide the 32 channels of block 0/],
    ['attention_head_dim list too short', (o) => void (o.attention_head_dim = [4, 4]), /attention_head_dim must be/],
    ['block_out_channels empty', (o) => void (o.block_out_channels = []), /block_out_channels must be a list of 1 to 8/],
    ['block_out_channels huge', (o) => void (o.block_out_channels = [32, 32, 64, 1e9]), /block_out_channels must be a list/],
    ['norm_num_groups not dividing', (o) => void (o.norm_num_groups = 5), /do not split into norm_num_groups 5/],
    ['norm_eps negative', (o) => void (o.norm_eps = -1), /norm_eps must be a number between 0 and 1/],
    ['cross_attention_dim 1e9', (o) => void (o.cross_attention_dim = 1e9), /cross_attention_dim must be a whole number from 1 to 8192/],
    ['in_channels missing', (o) => void delete o.in_channels, /in_channels must be a whole number/],
    ['SDXL transformer layers', (o) => void (o.transformer_layers_per_block = [1, 2, 10, 1]), /SDXL/],
    ['block types of another length', (o) => void (o.down_block_types = ['DownBlock2D']), /down_block_types must be a list as long as block_out_channels/],
    ['downsample_padding 7', (o) => void (o.downsample_padding = 7), /downsample_padding must be 0 or 1/],
    ['a JSON list', () => [1, 2], /not a JSON object|expected a JSON object/],
  ];
  for (const [name, patch, message] of unetConfigs) {
    cases.push({
      name: `unet/config.json: ${name}`,
      command: 'train',
      setup: (dir) => {
        const model = copyModel(tiny, dir, false);
        patchJson(path.join(model, 'unet/config.json'), patch);
        const set = writeTpoSet(dir, 2, 64);
        return trainArgs(dir, model, set.file);
      },
      message: new RegExp(`unet/config\\.json.*${message.source}`),
    });
    // plan fills in diffusers' defaults for absent fields, so an absent one is no error there.
    if (name.endsWith('missing')) continue;
    cases.push({
      name: `unet/config.json: ${name}`,
      command: 'plan',
      setup: (dir) => {
        const model = copyModel(tiny, dir, false);
        patchJson(path.join(model, 'unet/config.json'), patch);
        return ['plan', '--model', model];
      },
      message,
    });
  }
  const otherConfigs: [string, string, (o: Record<string, unknown>) => unknown, RegExp][] = [
    ['vae', 'layers_per_block 1e9', (o) => void (o.layers_per_block = 1e9), /vae\/config\.json: config field layers_per_block must be a whole number from 1 to 16, got 1000000000/],
    ['vae', 'latent_channels not the UNet\'s', (o) => void (o.latent_channels = 8), /latent_channels 8 differs from unet\/config\.json in_channels 4/],
    ['vae', 'scaling_factor as text', (o) => void (o.scaling_factor = 'x'), /scaling_factor must be a number/],
    ['text_encoder', 'heads not dividing', (o) => void (o.num_attention_heads = 5), /text_encoder\/config\.json: 5 heads do not divide hidden_size 48/],
    ['text_encoder', 'num_hidden_layers 1e9', (o) => void (o.num_hidden_layers = 1e9), /num_hidden_layers must be a whole number from 1 to 96/],
    ['text_encoder', 'hidden_size not the UNet\'s', (o) => void (o.hidden_size = 64), /hidden_size 64 differs from unet\/config\.json cross_attention_dim 48/],
  ];
  for (const [component, name, patch, message] of otherConfigs) {
    cases.push({
      name: `${component}/config.json: ${name}`,
      command: 'train',
      setup: (dir) => {
        const model = copyModel(tiny, dir, false);
        patchJson(path.join(model, `${component}/config.json`), patch);
        const set = writeTpoSet(dir, 2, 64);
        return trainArgs(dir, model, set.file);
      },
      message,
    });
  }
  cases.push({
    name: 'unet/config.json not JSON',
    command: 'train',
    setup: (dir) => {
      const model = copyModel(tiny, dir, false);
      writeFileSync(path.join(model, 'unet/config.json'), '{"layers_per_block": 2,');
      return trainArgs(dir, model, writeTpoSet(dir, 2, 64).file);
    },
    message: /unet\/config\.json is not valid JSON/,
  });

  // Resolution against the model: a multiple of 8 the model cannot take.
  for (const command of ['train', 'score'] as const) {
    cases.push({
      name: '--resolution 32 for a model that halves the latent 3 times',
      command,
      setup: (dir) => {
        const set = writeTpoSet(dir, 2, 64);
        return command === 'train'
          ? [...trainArgs(dir, tiny, set.file).filter((a, i, all) => all[i - 1] !== '--resolution' && a !== '--resolution'), '--resolution', '32']
          : ['score', '--model', tiny, '--data', set.file, '--out', path.join(dir, 'scores.jsonl'), '--resolution', '32', '--quiet'];
      },
      message: /resolution 32 does not fit this model: .* multiple of 64 pixels \(for example 64, 128/,
    });
  }

  // Weights: damaged safetensors in the model folder, found from the headers before the GPU opens.
  for (const how of Object.keys(SAFETENSORS_DAMAGE)) {
    cases.push({
      name: `unet weights ${how}`,
      command: 'train',
      setup: (dir) => {
        const model = copyModel(tiny, dir, true);
        damageFile(path.join(model, 'unet/diffusion_pytorch_model.safetensors'), how);
        return trainArgs(dir, model, writeTpoSet(dir, 2, 64).file);
      },
      message: new RegExp(`diffusion_pytorch_model\\.safetensors.*(${SAFETENSORS_DAMAGE[how].message.source})`, 'i'),
    });
  }
  cases.push({
    name: 'unet weights missing',
    command: 'train',
    setup: (dir) => {
      const model = copyModel(tiny, dir, false);
      return trainArgs(dir, model, writeTpoSet(dir, 2, 64).file);
    },
    message: /no weights for unet \(looked for unet\/diffusion_pytorch_model\.safetensors/,
  });
  cases.push({
    name: 'weights of another model',
    command: 'train',
    setup: (dir) => {
      const model = copyModel(tiny, dir, true);
      copyFileSync(path.join(model, 'vae/diffusion_pytorch_model.safetensors'), path.join(model, 'unet/diffusion_pytorch_model.safetensors'));
      return trainArgs(dir, model, writeTpoSet(dir, 2, 64).file);
    },
    message: /unet\/diffusion_pytorch_model\.safetensors does not match its config/,
  });
  for (const how of ['cut in the tensor data', 'header not JSON', 'empty'] as const) {
    cases.push({
      name: `LoRA ${how}`,
      command: 'export',
      setup: (dir) => {
        const file = path.join(dir, 'in.safetensors');
        copyFileSync(path.join(tiny, 'lora.safetensors'), file);
        damageFile(file, how);
        return ['export', '--from', file, '--out', path.join(dir, 'out.safetensors'), '--model', tiny];
      },
      message: new RegExp(`in\\.safetensors.*(${SAFETENSORS_DAMAGE[how].message.source})`, 'i'),
    });
    cases.push({
      name: `--lora ${how}`,
      command: 'score',
      setup: (dir) => {
        const file = path.join(dir, 'in.safetensors');
        copyFileSync(path.join(tiny, 'lora.safetensors'), file);
        damageFile(file, how);
        const set = writeTpoSet(dir, 2, 64);
        return ['score', '--model', tiny, '--lora', file, '--data', set.file, '--out', path.join(dir, 'scores.jsonl'), '--resolution', '64', '--quiet'];
      },
      message: new RegExp(`in\\.safetensors.*(${SAFETENSORS_DAMAGE[how].message.source})`, 'i'),
    });
  }
  cases.push({
    name: 'a model weights file given as the LoRA',
    command: 'export',
    setup: (dir) => ['export', '--from', path.join(tiny, 'vae/diffusion_pytorch_model.safetensors'), '--out', path.join(dir, 'out.safetensors'), '--model', tiny],
    message: /diffusion_pytorch_model\.safetensors: .*is this a model rather than a LoRA/,
  });

  // JSONL: broken lines, wrong fields, wrong kind, garbage.
  const jsonl: [string, string, RegExp][] = [
    ['a line that is not JSON', '{"image": "img0.png", "caption": "a red disc", "negatives": [{"caption": "a blue disc"}]}\n{"image": "img1.png", "caption":\n', /tpo\.jsonl:2/],
    ['a caption that is a number', '{"image": "img0.png", "caption": 5, "negatives": []}\n', /tpo\.jsonl:1.*caption/],
    ['binary garbage', '\u0000\u0001\u0002\u00ff\n', /tpo\.jsonl:1/],
    ['only blank lines', '\n\n  \n', /holds no records/],
    ['a JSON list per line', '[1, 2, 3]\n', /tpo\.jsonl:1/],
  ];
  for (const [name, text, message] of jsonl) {
    cases.push({
      name: `--data ${name}`,
      command: 'train',
      setup: (dir) => {
        writeTpoSet(dir, 2, 64);
        writeFileSync(path.join(dir, 'tpo.jsonl'), text);
        return trainArgs(dir, tiny, path.join(dir, 'tpo.jsonl'));
      },
      message,
    });
  }
  cases.push({
    name: '--data a line that is not JSON',
    command: 'pairs',
    setup: (dir) => {
      writeFileSync(path.join(dir, 'list.jsonl'), '{"image": "a.png", "caption": "a red cube"}\n{"image": "b.png", "caption"\n');
      writeFileSync(path.join(dir, 'a.png'), discPng(8, [1, 2, 3], [4, 5, 6], 1));
      writeFileSync(path.join(dir, 'b.png'), discPng(8, [1, 2, 3], [4, 5, 6], 2));
      return ['pairs', '--data', path.join(dir, 'list.jsonl'), '--out', path.join(dir, 'out.jsonl'), '--quiet'];
    },
    message: /list\.jsonl:2/,
  });
  cases.push({
    name: '--out an earlier output that is damaged',
    command: 'pairs',
    setup: (dir) => {
      writeFileSync(path.join(dir, 'list.jsonl'), '{"image": "a.png", "caption": "a red cube"}\n');
      writeFileSync(path.join(dir, 'a.png'), discPng(8, [1, 2, 3], [4, 5, 6], 1));
      writeFileSync(path.join(dir, 'out.jsonl'), '{"image": "a.png", "caption": "a red cube", "negatives": [\n');
      return ['pairs', '--data', path.join(dir, 'list.jsonl'), '--out', path.join(dir, 'out.jsonl'), '--quiet'];
    },
    message: /out\.jsonl exists but is not a valid trainer JSONL[\s\S]*out\.jsonl:1/,
  });
  cases.push({
    name: '--out a folder',
    command: 'pairs',
    setup: (dir) => {
      writeFileSync(path.join(dir, 'list.jsonl'), '{"image": "a.png", "caption": "a red cube"}\n');
      writeFileSync(path.join(dir, 'a.png'), discPng(8, [1, 2, 3], [4, 5, 6], 1));
      mkdirSync(path.join(dir, 'out'));
      return ['pairs', '--data', path.join(dir, 'list.jsonl'), '--out', path.join(dir, 'out'), '--quiet'];
    },
    message: /--out .*out is a folder/,
  });

  cases.push({
    name: '--method dpo on TPO records',
    command: 'train',
    setup: (dir) => trainArgs(dir, tiny, writeTpoSet(dir, 2, 64).file, ['--method', 'dpo']),
    message: /tpo\.jsonl holds TPO \(image, caption, negatives\) records; --method dpo trains on Diffusion-DPO/,
  });
  cases.push({
    name: '--data a KTO label that is not true or false',
    command: 'train',
    setup: (dir) => {
      writeTpoSet(dir, 2, 64);
      writeFileSync(path.join(dir, 'kto.jsonl'), '{"image": "img0.png", "caption": "a disc", "label": true}\n{"image": "img1.png", "caption": "a disc", "label": "yes"}\n');
      return trainArgs(dir, tiny, path.join(dir, 'kto.jsonl'), ['--method', 'kto']);
    },
    message: /kto\.jsonl:2.*label/,
  });
  cases.push({
    name: '--data a line that is not JSON',
    command: 'score',
    setup: (dir) => {
      writeTpoSet(dir, 2, 64);
      writeFileSync(path.join(dir, 'tpo.jsonl'), '{"image": "img0.png", "caption": "a red disc", "negatives": [{"caption": "a blue disc"}]}\n{oops\n');
      return ['score', '--model', tiny, '--data', path.join(dir, 'tpo.jsonl'), '--out', path.join(dir, 'scores.jsonl'), '--resolution', '64'];
    },
    message: /tpo\.jsonl:2/,
  });
  cases.push({
    name: '--data a file that is not there',
    command: 'pairs',
    setup: (dir) => ['pairs', '--data', path.join(dir, 'nothing.jsonl'), '--out', path.join(dir, 'out.jsonl')],
    message: /no such file or folder: .*nothing\.jsonl/,
  });
  cases.push({
    name: '--out in a folder that is not there',
    command: 'export',
    setup: (dir) => ['export', '--from', path.join(tiny, 'lora.safetensors'), '--out', path.join(dir, 'no', 'out.safetensors'), '--model', tiny],
    message: /--out .*the folder .*no does not exist/,
  });
  cases.push({
    name: 'resume: a folder without a checkpoint',
    command: 'train',
    setup: (dir) => {
      mkdirSync(path.join(dir, 'run'));
      writeFileSync(path.join(dir, 'run', 'metrics.jsonl'), '{"step":1}\n');
      return ['train', '--resume', path.join(dir, 'run')];
    },
    message: /run\/checkpoint has no lora\.safetensors: not a complete checkpoint/,
    keep: ['run/metrics.jsonl'],
  });

  // Images: missing, broken, too small; captions too long (warned, then refused for the small image).
  for (const [name, bad] of Object.entries(BAD_IMAGES)) {
    cases.push({
      name: `an image that is ${name}`,
      command: 'train',
      setup: (dir) => {
        const set = writeTpoSet(dir, 2, 64);
        writeFileSync(path.join(dir, set.images[1]), bad.bytes());
        return trainArgs(dir, tiny, set.file);
      },
      message: new RegExp(`img1\\.png: .*${bad.message.source}`),
    });
  }
  cases.push({
    name: 'a missing image',
    command: 'train',
    setup: (dir) => {
      const set = writeTpoSet(dir, 3, 64);
      writeFileSync(set.file, readFileSync(set.file, 'utf8').replace('img2.png', 'gone.png'));
      return trainArgs(dir, tiny, set.file);
    },
    message: /1 image\(s\) cannot be read:\n\s+.*gone\.png: no such file/,
  });
  cases.push({
    name: 'a 1x1 image and a 10,000-character caption',
    command: 'train',
    setup: (dir) => {
      const set = writeTpoSet(dir, 2, 64);
      writeFileSync(path.join(dir, set.images[0]), tinyPng());
      const long = `a red disc ${'on a very long table '.repeat(500)}`;
      writeFileSync(set.file, readFileSync(set.file, 'utf8').replace('a red disc on a yellow background', long.slice(0, 10_000)));
      return trainArgs(dir, tiny, set.file);
    },
    message: /caption\(s\) do not fit the text encoder and are cut[\s\S]*tokens, longer than the text encoder's 77-token window[\s\S]*img0\.png: 1x1 pixels, far below the 64x64 training resolution[\s\S]*--allow-small-images/,
  });

  // Outputs in the way: a file where a folder goes, a folder where a file goes.
  cases.push({
    name: '--out a file',
    command: 'train',
    setup: (dir) => {
      const set = writeTpoSet(dir, 2, 64);
      writeFileSync(path.join(dir, 'out'), 'some file\n');
      return trainArgs(dir, tiny, set.file);
    },
    message: /--out .*out is a file; the output must be a folder/,
  });
  cases.push({
    name: '--out a folder',
    command: 'score',
    setup: (dir) => {
      const set = writeTpoSet(dir, 2, 64);
      mkdirSync(path.join(dir, 'scores'));
      return ['score', '--model', tiny, '--data', set.file, '--out', path.join(dir, 'scores'), '--resolution', '64'];
    },
    message: /--out .*scores is a folder/,
  });
  cases.push({
    name: '--data a folder',
    command: 'train',
    setup: (dir) => {
      mkdirSync(path.join(dir, 'data'));
      return trainArgs(dir, tiny, path.join(dir, 'data'));
    },
    message: /data: is a folder, where a file was expected/,
  });

  // Checkpoints: every state.json field, run.json, the LoRA and optimizer files; metrics.jsonl must survive.
  for (const [name, edit, message] of STATE_DAMAGE) {
    cases.push({
      name: `resume: state.json ${name}`,
      command: 'train',
      setup: async (dir) => ['train', '--resume', (await writeFakeRun(dir, tiny, edit)).out, '--quiet'],
      message,
      keep: ['run/metrics.jsonl', 'run/checkpoint/state.json'],
    });
  }
  const runJson: [string, (o: Record<string, unknown>) => unknown, RegExp][] = [
    ['model not a path', (o) => void (o.model = 5), /run\.json: model must be a path/],
    ['holdout 2', (o) => void (o.holdout = 2), /run\.json: holdout must be/],
    ['checkpointEvery 0', (o) => void (o.checkpointEvery = 0), /run\.json: checkpointEvery must be/],
    ['model folder gone', (o) => void (o.model = '/nonexistent/model'), /\/nonexistent\/model: no such folder/],
  ];
  for (const [name, patch, message] of runJson) {
    cases.push({
      name: `resume: run.json ${name}`,
      command: 'train',
      setup: async (dir) => {
        const run = await writeFakeRun(dir, tiny);
        patchJson(path.join(run.out, 'run.json'), patch);
        return ['train', '--resume', run.out, '--quiet'];
      },
      message,
      keep: ['run/metrics.jsonl'],
    });
  }
  for (const [file, how, message] of [
    ['lora.safetensors', 'cut in the tensor data', /checkpoint\/lora\.safetensors.*truncated|checkpoint\/lora\.safetensors.*past the end/],
    ['lora.safetensors', 'header not JSON', /checkpoint\/lora\.safetensors/],
    ['optimizer.safetensors', 'cut in the header', /checkpoint\/optimizer\.safetensors/],
  ] as const) {
    cases.push({
      name: `resume: checkpoint/${file} ${how}`,
      command: 'train',
      setup: async (dir) => {
        const run = await writeFakeRun(dir, tiny);
        damageFile(path.join(run.out, 'checkpoint', file), how);
        return ['train', '--resume', run.out, '--quiet'];
      },
      message,
      keep: ['run/metrics.jsonl'],
    });
  }
  cases.push({
    name: 'resume: checkpoint/optimizer.safetensors without a moment',
    command: 'train',
    setup: async (dir) => {
      const run = await writeFakeRun(dir, tiny);
      writeFileSync(path.join(run.out, 'checkpoint', 'optimizer.safetensors'), writeSafetensors([{ name: 'x', dtype: 'F32', shape: [1], data: new Uint8Array(4) }]));
      return ['train', '--resume', run.out, '--quiet'];
    },
    message: /checkpoint\/optimizer\.safetensors lacks exp_avg\./,
    keep: ['run/metrics.jsonl'],
  });
  cases.push({
    name: 'resume: checkpoint/state.json missing',
    command: 'train',
    setup: async (dir) => {
      const run = await writeFakeRun(dir, tiny);
      cpSync(path.join(run.out, 'checkpoint', 'lora.safetensors'), path.join(run.out, 'checkpoint', 'state.json'));
      return ['train', '--resume', run.out, '--quiet'];
    },
    message: /state\.json is not valid JSON/,
    keep: ['run/metrics.jsonl'],
  });

  // golden: opens the GPU, then meets the bad config or file; must close what it opened.
  cases.push({
    name: 'a model folder with layers_per_block 1e9',
    command: 'golden',
    gpu: true,
    setup: (dir) => {
      const model = copyModel(tiny, dir, true);
      for (const f of ['case.json', 'case.safetensors']) copyFileSync(path.join(tiny, f), path.join(model, f));
      patchJson(path.join(model, 'unet/config.json'), (o) => void (o.layers_per_block = 1e9));
      return ['golden', model];
    },
    message: /unet\/config\.json.*layers_per_block must be a whole number from 1 to 16, got 1000000000/,
  });
  cases.push({
    name: 'a goldens file cut short',
    command: 'golden',
    gpu: true,
    setup: (dir) => {
      const model = copyModel(tiny, dir, false);
      for (const f of ['case.json', 'case.safetensors']) copyFileSync(path.join(tiny, f), path.join(model, f));
      damageFile(path.join(model, 'case.safetensors'), 'cut in the tensor data');
      return ['golden', model];
    },
    message: /case\.safetensors.*(truncated|past the end)/,
  });
  return cases;
}
