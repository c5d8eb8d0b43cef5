// Models from the user's disk, in the browser: a diffusers folder (picked with <input webkitdirectory>, or a
// File System Access directory handle) or a single-file .safetensors checkpoint read against the SD1.5
// configs and tokenizer the app ships. Every weight is read lazily, tensor by tensor, through Blob.slice of
// the user's File objects: nothing is copied whole into memory and nothing leaves the machine.
// A directory handle can be remembered in IndexedDB, so a reload needs only a permission prompt, not the
// picker again (showDirectoryPicker and handle permissions exist in Chromium only; these functions only
// take and give handles, the UI decides what to offer). Browser-safe: no `node:` imports.

import { checkModelConfigs, checkSingleFileForTraining } from '../models/model-check';
import { ldmLayoutFromConfigs } from '../models/model-weights';
import { blobSource, SafetensorsError, SafetensorsFile } from '../models/safetensors';
import { SD15_MODEL_INDEX, SD15_SCHEDULER_FILE, SD15_TEXT_ENCODER_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG } from '../models/sd15-configs';
import { loadClipTextModelFromSingleFile } from '../models/clip-text';
import type { ClipTokenizer } from '../models/tokenizer';
import { loadUNetFromSingleFile } from '../models/unet';
import { loadVaeFromSingleFile } from '../models/vae';
import { browserModelFiles, ModelLoadError, type ModelFiles } from '../models/weights';
import { singleFileComponentFingerprint } from '../tpo/features';
import { InputError } from './errors';
import { folderModel, folderTokenizer, type ModelHandle } from './model';

const DIFFUSERS_LAYOUT =
  'A diffusers Stable Diffusion 1.x folder holds model_index.json and the folders unet/, vae/ and text_encoder/ ' +
  '(each a config.json and a .safetensors weight file), tokenizer/ (vocab.json, merges.txt) and scheduler/.';

// ---- a folder -------------------------------------------------------------------------------------------

const isHidden = (path: string) => path.split('/').some((part) => part.startsWith('.'));

/** A folder's files as a ModelHandle, after checking that it looks like a diffusers folder at all. */
function modelFromEntries(name: string, entries: { path: string; file: Blob }[]): ModelHandle {
  const visible = entries.filter((e) => !isHidden(e.path));
  const paths = visible.map((e) => e.path);
  if (!paths.includes('unet/config.json')) {
    // A common slip: picking the folder above the model. Name the model folder inside, if there is one.
    const inner = paths.find((p) => p.endsWith('/unet/config.json'));
    const hint = inner ? ` It has one inside: pick ${name}/${inner.slice(0, -'/unet/config.json'.length)} instead.` : '';
    const what = paths.includes('model_index.json') ? 'has model_index.json but no unet/config.json' : 'has no model_index.json or unet/config.json';
    throw new InputError(`${name}: the folder ${what}, so it is not a diffusers model folder.${hint} ${DIFFUSERS_LAYOUT} For a single .safetensors checkpoint, open the file instead.`);
  }
  return folderModel(browserModelFiles(name, visible));
}

/**
 * A folder picked with <input type="file" webkitdirectory>: each File's webkitRelativePath starts with the
 * picked folder's own name, which names the model and is dropped from the paths.
 */
export function pickedFolderModel(files: File[]): ModelHandle {
  if (files.length === 0) throw new InputError(`No files were picked: the folder is empty or the picker was cancelled. ${DIFFUSERS_LAYOUT}`);
  const relative = files.map((f) => f.webkitRelativePath || ''); // '' (or absent) when not picked as a folder
  if (relative.some((p) => !p.includes('/'))) {
    throw new InputError('These files carry no folder paths: pick the model folder itself (a folder picker), not the files in it.');
  }
  const name = relative[0].split('/')[0];
  const entries = files.map((file, i) => {
    const [root, ...rest] = relative[i].split('/');
    if (root !== name) throw new InputError(`The picked files come from more than one folder (${name} and ${root}): pick one model folder.`);
    return { path: rest.join('/'), file };
  });
  return modelFromEntries(name, entries);
}

/**
 * A folder given as a File System Access directory handle (showDirectoryPicker, or a remembered handle).
 * Lists its files and gets their File objects (reading none); hidden entries are skipped, and the walk goes
 * two levels deep, as deep as a diffusers folder is, so a wrongly picked home folder is not walked whole.
 */
export async function directoryModel(handle: FileSystemDirectoryHandle): Promise<ModelHandle> {
  const entries: { path: string; file: Blob }[] = [];
  const walk = async (dir: FileSystemDirectoryHandle, prefix: string, depth: number) => {
    for await (const [name, entry] of entriesOf(dir)) {
      if (name.startsWith('.')) continue;
      if (entry.kind === 'directory') {
        if (depth < 2) await walk(entry as FileSystemDirectoryHandle, `${prefix}${name}/`, depth + 1);
      } else {
        entries.push({ path: prefix + name, file: await (entry as FileSystemFileHandle).getFile() });
      }
    }
  };
  await walk(handle, '', 1);
  if (entries.length === 0) throw new InputError(`${handle.name}: the folder is empty. ${DIFFUSERS_LAYOUT}`);
  return modelFromEntries(handle.name, entries);
}

/** A folder's entries (the async iterator is not in every TypeScript DOM lib, hence the cast). */
function entriesOf(dir: FileSystemDirectoryHandle): AsyncIterable<[string, FileSystemHandle]> {
  return (dir as unknown as { entries(): AsyncIterable<[string, FileSystemHandle]> }).entries();
}

// ---- a single file --------------------------------------------------------------------------------------

/**
 * A single-file checkpoint (LDM keys: model.diffusion_model.*, first_stage_model.*, cond_stage_model.*) read
 * against `configs`: configs, tokenizer and scheduler of a diffusers folder, usually shippedSd15Configs().
 * Refuses pickles by name at once; the header is read on first use (check, load or fingerprint).
 */
export function singleFileModel(file: Blob & { name: string }, configs: ModelFiles): ModelHandle {
  const lower = file.name.toLowerCase();
  if (/\.(ckpt|pt|pth|bin)$/.test(lower)) {
    throw new InputError(
      `${file.name}: this is a PyTorch pickle. Pickles can run code when they are opened, so they cannot be read safely; ` +
        'convert it to .safetensors first (for example with diffusers\' convert scripts or a "safetensors converter"), then open that file.',
    );
  }
  if (!lower.endsWith('.safetensors')) {
    throw new InputError(`${file.name}: only .safetensors checkpoints can be opened as a single file; for a diffusers model, open its folder.`);
  }

  let opened: Promise<SafetensorsFile> | null = null;
  const open = () => {
    opened ??= SafetensorsFile.open(blobSource(file, file.name)).catch((e) => {
      opened = null; // let a later call try again (the user may have fixed the file)
      if (e instanceof SafetensorsError) {
        throw new InputError(`${e.message}. Pick a complete Stable Diffusion 1.x .safetensors checkpoint (a download that did not finish is truncated).`);
      }
      throw e;
    });
    return opened;
  };
  let tokenizer: Promise<ClipTokenizer> | null = null;

  return {
    name: file.name,
    kind: 'single-file',
    files: configs,
    check: async (options) => checkSingleFileForTraining(await open(), configs, options),
    tokenizer: () => {
      tokenizer ??= folderTokenizer(configs);
      tokenizer.catch(() => (tokenizer = null));
      return tokenizer;
    },
    loadUNet: async (gpu, options) => {
      const { unet } = await checkModelConfigs(configs); // read and validated, as a folder's loadUNet does
      return loadUNetFromSingleFile(gpu, await open(), unet, await ldmLayoutFromConfigs(configs), options);
    },
    loadVae: async (gpu) => loadVaeFromSingleFile(gpu, await open(), configs),
    loadTextEncoder: async (gpu) => loadClipTextModelFromSingleFile(gpu, await open(), configs),
    fingerprint: async (component) => singleFileComponentFingerprint(await open(), configs, component, await ldmLayoutFromConfigs(configs)),
    close: async () => {
      // A Blob needs no closing; the configs may hold open files (a folder on disk in Node).
      await configs.close?.();
    },
  };
}

/**
 * The configs, tokenizer and scheduler of Stable Diffusion 1.5 as a ModelFiles, for single-file
 * checkpoints, which carry weights only. The JSON files are generated from sd15-configs.ts; the tokenizer's
 * vocab.json and merges.txt (1.5 MB) are fetched once from the app's public/sd15/tokenizer/. `fetchText`
 * replaces fetch (Node tests read public/ from disk).
 */
export function shippedSd15Configs(fetchText: (url: string) => Promise<string> = fetchOk): ModelFiles {
  const generated: Record<string, unknown> = {
    'model_index.json': SD15_MODEL_INDEX,
    'unet/config.json': { _class_name: 'UNet2DConditionModel', ...SD15_UNET_CONFIG },
    'text_encoder/config.json': { architectures: ['CLIPTextModel'], model_type: 'clip_text_model', ...SD15_TEXT_ENCODER_CONFIG },
    'vae/config.json': { _class_name: 'AutoencoderKL', ...SD15_VAE_CONFIG },
    'scheduler/scheduler_config.json': SD15_SCHEDULER_FILE,
  };
  const fetched = ['tokenizer/vocab.json', 'tokenizer/merges.txt'];
  const cache = new Map<string, Promise<string>>();
  const name = 'Stable Diffusion 1.5 (configs shipped with the app)';
  return {
    name,
    list: () => [...Object.keys(generated), ...fetched],
    open: async (path) => {
      throw new ModelLoadError(`${name}: ${path}: the shipped SD1.5 files are configs and tokenizer only; weights come from the checkpoint.`);
    },
    readText: async (path) => {
      if (path in generated) return JSON.stringify(generated[path], null, 2);
      if (!fetched.includes(path)) throw new ModelLoadError(`${name}: ${path} is not one of the shipped files.`);
      let text = cache.get(path);
      if (!text) {
        text = fetchText(`${import.meta.env.BASE_URL}sd15/${path}`);
        cache.set(path, text);
        text.catch(() => cache.delete(path)); // a failed download is tried again next time
      }
      return text;
    },
  };
}

async function fetchOk(url: string): Promise<string> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: the app's copy of the SD1.5 tokenizer did not load (HTTP ${response.status}); reload the page.`);
  return response.text();
}

// ---- a folder the app serves (the built-in demo) ----------------------------------------------------------

/**
 * A model folder on the app's own server (public/demo/, the built-in demo): a server lists no folders, so
 * `files` names every file. Each is fetched whole (the demo is a few MB) and read from memory after.
 * `fetchBytes` replaces fetch (Node tests read public/ from disk).
 */
export async function servedFolderModel(
  name: string,
  base: string,
  files: readonly string[],
  fetchBytes: (url: string) => Promise<Response> = (url) => fetch(url),
): Promise<ModelHandle> {
  const entries = await Promise.all(
    files.map(async (path) => {
      const url = `${base}${path}`;
      let response: Response;
      try {
        response = await fetchBytes(url);
      } catch (error) {
        throw new InputError(`${name}: ${url} could not be fetched (${error instanceof Error ? error.message : String(error)}); check that the app's server is running, then try again.`);
      }
      if (!response.ok) {
        throw new InputError(
          response.status === 404
            ? `${name}: the app's server has no ${url}, so the demo model is not built. Build it with npm run build:demo, or open a model of your own.`
            : `${name}: ${url} did not load (HTTP ${response.status}); reload the page and try again.`,
        );
      }
      return { path, file: await response.blob() };
    }),
  );
  return modelFromEntries(name, entries);
}

// ---- remembering a folder -------------------------------------------------------------------------------

// One IndexedDB database with one object store holding the handle under one key. Directory handles are
// structured-cloneable, so IndexedDB keeps them across reloads; the permission to read does not persist
// (Chromium asks again, or keeps it when the user chose "allow on every visit").
const DB_NAME = 'tpo-lab-model-sources';
const STORE = 'handles';
const KEY = 'model-folder';

function openDb(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** Runs one request in its own transaction and resolves when the transaction has committed. */
async function withStore<T>(mode: IDBTransactionMode, use: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  if (typeof indexedDB === 'undefined') throw new Error('this browser keeps no IndexedDB (a private window?), so the model folder cannot be remembered');
  const db = await openDb();
  try {
    return await new Promise<T>((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = use(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/** Remembers the model folder's handle so that a reload can reopen it without the picker. */
export async function rememberModelFolder(handle: FileSystemDirectoryHandle): Promise<void> {
  await withStore('readwrite', (s) => s.put(handle, KEY));
}

/** The remembered model folder, or null when none is (or the browser keeps no IndexedDB). */
export async function recallModelFolder(): Promise<{ handle: FileSystemDirectoryHandle; name: string } | null> {
  if (typeof indexedDB === 'undefined') return null;
  const handle = await withStore<FileSystemDirectoryHandle | undefined>('readonly', (s) => s.get(KEY));
  return handle ? { handle, name: handle.name } : null;
}

export async function forgetModelFolder(): Promise<void> {
  await withStore('readwrite', (s) => s.delete(KEY));
}

/** The permission calls of a handle (Chromium's File System Access; not in TypeScript's DOM lib). */
interface PermissionHandle {
  queryPermission?(descriptor: { mode: 'read' | 'readwrite' }): Promise<PermissionState>;
  requestPermission?(descriptor: { mode: 'read' | 'readwrite' }): Promise<PermissionState>;
}

/**
 * Reopens a remembered folder: asks for read permission when the browser has not kept it (Chromium shows a
 * prompt, so call this from a click), then opens the model. Null with a reason when it cannot.
 */
export async function reopenRemembered(
  handle: FileSystemDirectoryHandle,
): Promise<{ model: ModelHandle; reason?: undefined } | { model: null; reason: string }> {
  const h = handle as unknown as PermissionHandle;
  if (!h.queryPermission || !h.requestPermission) {
    return { model: null, reason: 'this browser cannot reopen a remembered folder; pick the model folder again' };
  }
  try {
    let state = await h.queryPermission({ mode: 'read' });
    if (state === 'prompt') state = await h.requestPermission({ mode: 'read' });
    if (state !== 'granted') return { model: null, reason: `reading ${handle.name} was not allowed; pick the folder again or allow access when asked` };
  } catch (e) {
    // requestPermission needs a user gesture; without one it throws (SecurityError).
    return { model: null, reason: `could not ask to read ${handle.name} (${(e as Error).message}); click to reopen it, or pick the folder again` };
  }
  try {
    return { model: await directoryModel(handle) };
  } catch (e) {
    if (e instanceof InputError) return { model: null, reason: e.message };
    // NotFoundError and the like: the folder was moved or deleted since it was remembered.
    return { model: null, reason: `${handle.name} cannot be read any more (${(e as Error).message}); it may have been moved or deleted: pick it again` };
  }
}
