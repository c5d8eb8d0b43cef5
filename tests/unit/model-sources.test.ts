// Models from the user's disk (src/app/model-sources.ts), driven in Node with Blob/File objects standing in
// for the browser's: the tiny single-file checkpoint read against configs (weights equal to the folder's,
// headers checked without reading weights, fingerprints), pickles and broken files refused with clear
// messages, a picked folder (webkitRelativePath) and a directory handle, and the SD1.5 configs and
// tokenizer the app ships.

import { openAsBlob, readdirSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/app/errors';
import { folderModel, folderTokenizer, type ModelHandle } from '../../src/app/model';
import { directoryModel, pickedFolderModel, reopenRemembered, shippedSd15Configs, singleFileModel } from '../../src/app/model-sources';
import { loadSchedulerConfig } from '../../src/diffusion/pipeline';
import { SD15_SCHEDULER } from '../../src/diffusion/schedule';
import { checkModelConfigs } from '../../src/models/model-check';
import { dirModelFiles } from '../../src/models/model-files-node';
import { ldmLayoutFromConfigs } from '../../src/models/model-weights';
import type { Tensor } from '../../src/nn/tensor';
import { readConfig } from '../../src/models/weights';
import { GOLDENS } from '../helpers/goldens';
import { testGpu } from '../helpers/gpu';

const TINY = path.join(GOLDENS, 'tiny-sd15');
const SINGLE = path.join(GOLDENS, 'tiny-sd15-single.safetensors');
const PUBLIC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../public');

/** The single file as a Blob backed by the file on disk (not read into memory), named like a File. */
async function singleBlob(name = 'tiny-sd15-single.safetensors'): Promise<Blob & { name: string }> {
  return Object.assign(await openAsBlob(SINGLE), { name });
}

/** A Blob stand-in that counts the bytes read through slice(), to show what opening a model reads. */
function countingBlob(bytes: Uint8Array<ArrayBuffer>, name: string): { blob: Blob & { name: string }; read: () => number } {
  let read = 0;
  const whole = new Blob([bytes]);
  const blob = {
    name,
    size: bytes.length,
    slice(start?: number, end?: number) {
      const part = whole.slice(start, end);
      read += part.size;
      return part;
    },
  } as unknown as Blob & { name: string };
  return { blob, read: () => read };
}

/** Every file of the tiny folder as File objects, as <input webkitdirectory> gives them. */
function pickedFiles(root: string, extra: Record<string, string> = {}): File[] {
  const out: File[] = [];
  const add = (rel: string, bytes: Uint8Array<ArrayBuffer> | string) => {
    const f = new File([bytes], path.basename(rel));
    Object.defineProperty(f, 'webkitRelativePath', { value: `${root}/${rel}` });
    out.push(f);
  };
  for (const dir of ['', 'unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler']) {
    for (const e of readdirSync(path.join(TINY, dir), { withFileTypes: true })) {
      if (e.isFile()) add(dir ? `${dir}/${e.name}` : e.name, readFileSync(path.join(TINY, dir, e.name)));
    }
  }
  for (const [rel, text] of Object.entries(extra)) add(rel, text);
  return out;
}

/** A File System Access directory handle over a folder on disk (the parts directoryModel uses). */
function fakeDirectoryHandle(dir: string, permission?: { query: PermissionState; request: PermissionState }): FileSystemDirectoryHandle {
  const handle = (d: string): unknown => ({
    kind: 'directory',
    name: path.basename(d),
    async *entries() {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const full = path.join(d, e.name);
        if (e.isDirectory()) yield [e.name, handle(full)];
        else yield [e.name, { kind: 'file', name: e.name, getFile: async () => new File([readFileSync(full)], e.name) }];
      }
    },
    ...(permission && { queryPermission: async () => permission.query, requestPermission: async () => permission.request }),
  });
  return handle(dir) as FileSystemDirectoryHandle;
}

const readPublic = (url: string) => readFile(path.join(PUBLIC, url.replace(/^\//, '')), 'utf8');

describe('a single-file checkpoint', () => {
  it('checks against the configs, reading headers only', async () => {
    const bytes = readFileSync(SINGLE);
    const { blob, read } = countingBlob(bytes, 'tiny-sd15-single.safetensors');
    const model = singleFileModel(blob, dirModelFiles(TINY));
    expect(model.kind).toBe('single-file');
    expect(model.name).toBe('tiny-sd15-single.safetensors');
    const checked = await model.check({ resolution: 64 });
    expect(checked.unet.block_out_channels).toEqual([32, 32, 64, 64]);
    expect(checked.text.hidden_size).toBe(48);
    expect(read()).toBeLessThan(bytes.length / 10); // the header, not the weights
    await model.close();
  });

  it('loads the same weights as the diffusers folder', async () => {
    const gpu = await testGpu();
    const single = singleFileModel(await singleBlob(), dirModelFiles(TINY));
    const folder = folderModel(dirModelFiles(TINY));
    const same = async (label: string, a: Map<string, Tensor>, b: Map<string, Tensor>) => {
      expect([...a.keys()].sort(), label).toEqual([...b.keys()].sort());
      for (const [name, t] of a) {
        const u = b.get(name)!;
        expect(t.shape, `${label} ${name}`).toEqual(u.shape);
        expect(Buffer.from((await t.read()).buffer).equals(Buffer.from((await u.read()).buffer)), `${label} ${name}`).toBe(true);
      }
    };
    const unets = [await single.loadUNet(gpu), await folder.loadUNet(gpu)];
    await same('unet', unets[0].weights, unets[1].weights);
    unets.forEach((u) => u.release());
    const vaes = [await single.loadVae(gpu), await folder.loadVae(gpu)];
    await same('vae', vaes[0].weights.tensors, vaes[1].weights.tensors);
    vaes.forEach((v) => v.weights.release());
    const texts = [await single.loadTextEncoder(gpu), await folder.loadTextEncoder(gpu)];
    await same('text encoder', texts[0].weights.tensors, texts[1].weights.tensors);
    texts.forEach((t) => t.weights.release());
    expect((await single.tokenizer()).encodeForModel('a photo of a cat')).toEqual((await folder.tokenizer()).encodeForModel('a photo of a cat'));
    await single.close();
    await folder.close();
  });

  it('fingerprints each component, stable across opens and file names, without reading the file whole', async () => {
    const bytes = readFileSync(SINGLE);
    const first = countingBlob(bytes, 'tiny-sd15-single.safetensors');
    const a = singleFileModel(first.blob, dirModelFiles(TINY));
    const b = singleFileModel(await singleBlob('renamed.safetensors'), dirModelFiles(TINY));
    const prints: string[] = [];
    for (const c of ['unet', 'vae', 'text_encoder'] as const) {
      const p = await a.fingerprint(c);
      expect(p).toMatch(/^[0-9a-f]{32}$/);
      expect(await b.fingerprint(c)).toBe(p);
      expect(await a.fingerprint(c)).toBe(p);
      prints.push(p);
    }
    expect(new Set(prints).size).toBe(3);
    expect(first.read()).toBeLessThan(bytes.length / 2);
  });

  it('a fingerprint follows its own component: changing UNet bytes leaves the VAE and text encoder prints alone', async () => {
    const bytes = new Uint8Array(readFileSync(SINGLE));
    const configs = dirModelFiles(TINY);
    const before = singleFileModel(countingBlob(bytes, 'a.safetensors').blob, configs);
    const prints = { unet: await before.fingerprint('unet'), vae: await before.fingerprint('vae'), text: await before.fingerprint('text_encoder') };
    // Change one value of a UNet tensor sampled by the fingerprint: the first bytes of the UNet's stream.
    const layout = await ldmLayoutFromConfigs(configs);
    expect(layout).toEqual({ unetLayersPerBlock: 2, vaeBlocks: 4 });
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength))) as Record<string, { data_offsets: [number, number] }>;
    const firstUnet = Object.entries(header)
      .filter(([k]) => k.startsWith('model.diffusion_model.'))
      .sort((x, y) => x[1].data_offsets[0] - y[1].data_offsets[0])[0][1];
    const changed = bytes.slice();
    changed[8 + headerLength + firstUnet.data_offsets[0]] ^= 0x55;
    const after = singleFileModel(countingBlob(changed, 'a.safetensors').blob, configs);
    expect(await after.fingerprint('unet')).not.toBe(prints.unet);
    expect(await after.fingerprint('vae')).toBe(prints.vae);
    expect(await after.fingerprint('text_encoder')).toBe(prints.text);
  });

  it('refuses pickles and other files by name, saying why', () => {
    const configs = dirModelFiles(TINY);
    for (const name of ['v1-5-pruned.ckpt', 'model.PT', 'model.pth', 'pytorch_model.bin']) {
      const open = () => singleFileModel(new File([new Uint8Array(16)], name), configs);
      expect(open).toThrow(InputError);
      expect(open).toThrow(/pickle.*can run code.*cannot be read safely.*convert it to \.safetensors/);
    }
    expect(() => singleFileModel(new File(['x'], 'notes.txt'), configs)).toThrow(/only \.safetensors checkpoints/);
  });

  it('a truncated file gives a clear error', async () => {
    const whole = await singleBlob();
    const cut = Object.assign(whole.slice(0, whole.size - 4096), { name: 'cut.safetensors' });
    const model = singleFileModel(cut, dirModelFiles(TINY));
    await expect(model.check()).rejects.toThrow(InputError);
    await expect(model.check()).rejects.toThrow(/cut\.safetensors: .*the file is truncated.*complete Stable Diffusion 1\.x \.safetensors/);
    const headerOnly = Object.assign(whole.slice(0, 100), { name: 'short.safetensors' });
    await expect(singleFileModel(headerOnly, dirModelFiles(TINY)).check()).rejects.toThrow(/short\.safetensors: header .* runs past the end .*truncated/);
  });

  it('a pickle renamed to .safetensors gives a clear error', async () => {
    const zip = new Uint8Array(4096);
    zip.set([0x50, 0x4b, 0x03, 0x04, 0x14, 0x00, 0x00, 0x08]); // a zip (PyTorch's pickle container) signature
    const model = singleFileModel(new File([zip], 'renamed.safetensors'), dirModelFiles(TINY));
    await expect(model.check()).rejects.toThrow(/renamed\.safetensors: header length .* this is not a safetensors file/);
  });

  it('one weight file of a diffusers folder says to open the folder', async () => {
    const vae = Object.assign(await openAsBlob(path.join(TINY, 'vae/diffusion_pytorch_model.safetensors')), { name: 'diffusion_pytorch_model.safetensors' });
    const model = singleFileModel(vae, dirModelFiles(TINY));
    await expect(model.check()).rejects.toThrow(/none of its \d+ tensors is named like a single-file Stable Diffusion checkpoint.*open the whole folder instead/);
  });
});

describe('a picked folder', () => {
  it('opens from <input webkitdirectory> files, skipping hidden ones', async () => {
    const model = pickedFolderModel(pickedFiles('tiny-sd15', { '.git/HEAD': 'ref: refs/heads/main' }));
    expect(model.name).toBe('tiny-sd15');
    expect(model.kind).toBe('folder');
    expect(model.files.list()).toContain('unet/diffusion_pytorch_model.safetensors');
    expect(model.files.list().some((p) => p.startsWith('.git'))).toBe(false);
    const checked = await model.check();
    expect(checked.vae.latent_channels).toBe(4);
    const onDisk = folderModel(dirModelFiles(TINY));
    expect(await model.fingerprint('vae')).toBe(await onDisk.fingerprint('vae')); // same files, same print
    await onDisk.close();
    expect((await model.tokenizer()).encode('a photo of a cat')).toEqual([320, 1125, 539, 320, 2368]);
  });

  it('an empty pick, a folder of something else, and the folder above the model give InputErrors', () => {
    expect(() => pickedFolderModel([])).toThrow(InputError);
    expect(() => pickedFolderModel([])).toThrow(/No files were picked.*model_index\.json.*unet\//);
    const photos = new File(['x'], 'a.png');
    Object.defineProperty(photos, 'webkitRelativePath', { value: 'holiday/a.png' });
    expect(() => pickedFolderModel([photos])).toThrow(/holiday: the folder has no model_index\.json or unet\/config\.json, so it is not a diffusers model folder/);
    // The user picked the folder above the model: the paths are models/tiny-sd15/...
    expect(() => pickedFolderModel(pickedFiles('models/tiny-sd15'))).toThrow(/pick models\/tiny-sd15 instead/);
    expect(() => pickedFolderModel([new File(['{}'], 'config.json')])).toThrow(/no folder paths/);
  });
});

describe('a directory handle', () => {
  it('opens the folder through the handle', async () => {
    const model = await directoryModel(fakeDirectoryHandle(TINY));
    expect(model.name).toBe('tiny-sd15');
    await model.check();
    expect(model.files.list()).toContain('tokenizer/vocab.json');
  });

  it('reopens a remembered handle only with read permission', async () => {
    const granted = await reopenRemembered(fakeDirectoryHandle(TINY, { query: 'prompt', request: 'granted' }));
    expect(granted.model?.name).toBe('tiny-sd15');
    const denied = await reopenRemembered(fakeDirectoryHandle(TINY, { query: 'prompt', request: 'denied' }));
    expect(denied.model).toBeNull();
    expect(denied.reason).toMatch(/reading tiny-sd15 was not allowed/);
    const old = await reopenRemembered(fakeDirectoryHandle(TINY));
    expect(old.model).toBeNull();
    expect(old.reason).toMatch(/cannot reopen a remembered folder/);
  });
});

describe('the SD1.5 configs and tokenizer the app ships', () => {
  it('are SD1.5: configs, layout, schedule and the CLIP tokenizer', async () => {
    const fetched: string[] = [];
    const configs = shippedSd15Configs((url) => {
      fetched.push(url);
      return readPublic(url);
    });
    expect((await readConfig<{ block_out_channels: number[] }>(configs, 'unet')).block_out_channels).toEqual([320, 640, 1280, 1280]);
    const checked = await checkModelConfigs(configs, { resolution: 512 });
    expect(checked.text.hidden_size).toBe(768);
    expect(checked.vae.block_out_channels).toEqual([128, 256, 512, 512]);
    expect(await ldmLayoutFromConfigs(configs)).toEqual({ unetLayersPerBlock: 2, vaeBlocks: 4 });
    expect(await loadSchedulerConfig(configs)).toEqual({ ...SD15_SCHEDULER, timestep_spacing: undefined, _class_name: 'PNDMScheduler', clip_sample: false, skip_prk_steps: true, trained_betas: null });
    // The scheduler file is the one the goldens' SD1.5-layout folder carries (less the diffusers version).
    const golden = JSON.parse(readFileSync(path.join(TINY, 'scheduler/scheduler_config.json'), 'utf8'));
    delete golden._diffusers_version;
    expect(JSON.parse(await configs.readText('scheduler/scheduler_config.json'))).toEqual(golden);

    const cases = JSON.parse(readFileSync(path.join(GOLDENS, 'tokenizer-cases.json'), 'utf8')) as { cases: { prompt: string; input_ids_77: number[] }[] };
    const cat = cases.cases.find((c) => c.prompt === 'a photo of a cat')!;
    const tokenizer = await folderTokenizer(configs);
    expect(tokenizer.encodeForModel('a photo of a cat')).toEqual(cat.input_ids_77);
    for (const c of cases.cases) expect(tokenizer.encodeForModel(c.prompt), c.prompt).toEqual(c.input_ids_77);
    await folderTokenizer(configs);
    expect(fetched.sort()).toEqual(['/sd15/tokenizer/merges.txt', '/sd15/tokenizer/vocab.json']); // fetched once each
    await expect(configs.open('unet/diffusion_pytorch_model.safetensors')).rejects.toThrow(/configs and tokenizer only/);
  });

  it('a single-file model over them names what does not fit (the tiny checkpoint is not SD1.5-sized)', async () => {
    const model: ModelHandle = singleFileModel(await singleBlob(), shippedSd15Configs(readPublic));
    await expect(model.check()).rejects.toThrow(/tiny-sd15-single\.safetensors \(unet\) does not match its config:[\s\S]*mis-shaped/);
  });
});
