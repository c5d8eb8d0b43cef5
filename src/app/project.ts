// A whole project as one file: a dataset (its images, captions, negatives with their review status) and the
// runs trained on it (settings, metrics, checkpoint, LoRA, scores, previews), zipped, so it can move to
// another browser or machine, or be kept as a backup. Import gives the dataset and the runs new ids, so a
// project can be imported next to itself.
//
// Layout inside the zip: tpo-lab-project.json (what it holds), dataset/... (the dataset's folder as stored),
// runs/<old id>/... (each run's folder as stored). Images are stored, not deflated: they are compressed already.

import { unzipSync, zipSync, type Zippable } from 'fflate';
import { parseTrainerJsonl } from '../data/import';
import { parsePreferenceJsonl, preferenceImages } from '../data/preference-records';
import { InputError } from './errors';
import type { Storage } from './storage';
import { CHECKPOINT_FOLDER, RUN_SETTINGS_FILE } from './training-run';

export const PROJECT_MANIFEST = 'tpo-lab-project.json';
const FORMAT = 'tpo-lab-project';
const VERSION = 1;

interface Manifest {
  format: typeof FORMAT;
  version: number;
  dataset: { name: string; createdAt: string };
  runs: string[];
  exportedAt: string;
}

/** Every file under `path` (recursively), keyed by its path relative to `path`. */
async function readTree(storage: Storage, path: string): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  const walk = async (rel: string) => {
    for (const name of await storage.list(rel ? `${path}/${rel}` : path)) {
      const child = rel ? `${rel}/${name}` : name;
      const bytes = await storage.read(`${path}/${child}`);
      // read() gives null for a folder.
      if (bytes) out[child] = bytes;
      else await walk(child);
    }
  };
  await walk('');
  return out;
}

/**
 * The project of dataset folder `datasetPath` and the run folders `runPaths` (their ids as the keys), as a zip.
 * `dataset` is what dataset.json says (its name names the file).
 */
export async function exportProject(root: Storage, datasetPath: string, dataset: { name: string; createdAt: string }, runPaths: Record<string, string>): Promise<Uint8Array> {
  const files: Zippable = {};
  const manifest: Manifest = { format: FORMAT, version: VERSION, dataset, runs: Object.keys(runPaths), exportedAt: new Date().toISOString() };
  files[PROJECT_MANIFEST] = new TextEncoder().encode(`${JSON.stringify(manifest, null, 2)}\n`);
  const add = (prefix: string, tree: Record<string, Uint8Array>) => {
    for (const [name, bytes] of Object.entries(tree)) files[`${prefix}/${name}`] = [bytes, { level: /\.(json|jsonl|txt)$/.test(name) ? 6 : 0 }];
  };
  add('dataset', await readTree(root, datasetPath));
  for (const [id, path] of Object.entries(runPaths)) add(`runs/${id}`, await readTree(root, path));
  return zipSync(files);
}

export interface ProjectContents {
  manifest: Manifest;
  /** The dataset folder's files, by path inside it. */
  dataset: Record<string, Uint8Array>;
  /** Each run's files, by path inside its folder, by the run's id in the file. */
  runs: Record<string, Record<string, Uint8Array>>;
}

/** Reads and checks a project file; what is wrong is an InputError that says so. */
export function readProject(bytes: Uint8Array, name = 'the project file'): ProjectContents {
  let entries: Record<string, Uint8Array>;
  try {
    entries = unzipSync(bytes);
  } catch (e) {
    throw new InputError(`${name} is not a TPO Lab project (it is not a readable zip file: ${(e as Error).message})`);
  }
  const raw = entries[PROJECT_MANIFEST];
  if (!raw) throw new InputError(`${name} is not a TPO Lab project: it has no ${PROJECT_MANIFEST}`);
  let manifest: Manifest;
  try {
    manifest = JSON.parse(new TextDecoder().decode(raw)) as Manifest;
  } catch {
    throw new InputError(`${name}: ${PROJECT_MANIFEST} is damaged (not JSON)`);
  }
  if (manifest?.format !== FORMAT || typeof manifest.dataset?.name !== 'string' || !Array.isArray(manifest.runs)) throw new InputError(`${name}: ${PROJECT_MANIFEST} does not describe a TPO Lab project`);
  if (manifest.version > VERSION) throw new InputError(`${name} was written by a newer TPO Lab (project version ${manifest.version}); update the app to import it`);
  const contents: ProjectContents = { manifest, dataset: {}, runs: {} };
  for (const [path, data] of Object.entries(entries)) {
    if (path === PROJECT_MANIFEST || path.endsWith('/')) continue;
    const parts = path.split('/');
    if (parts.some((p) => p === '' || p === '.' || p === '..')) throw new InputError(`${name}: the entry ${JSON.stringify(path)} is not a plain relative path`);
    if (parts[0] === 'dataset' && parts.length > 1) contents.dataset[parts.slice(1).join('/')] = data;
    else if (parts[0] === 'runs' && parts.length > 2 && manifest.runs.includes(parts[1])) (contents.runs[parts[1]] ??= {})[parts.slice(2).join('/')] = data;
    else throw new InputError(`${name}: the entry ${JSON.stringify(path)} belongs to no part of a project`);
  }
  const items = contents.dataset['items.jsonl'];
  if (!items) throw new InputError(`${name}: the dataset has no items.jsonl`);
  const text = new TextDecoder().decode(items);
  const info = contents.dataset['dataset.json'];
  let kind: unknown = 'tpo';
  try {
    if (info) kind = (JSON.parse(new TextDecoder().decode(info)) as { kind?: unknown }).kind ?? 'tpo';
  } catch {
    throw new InputError(`${name}: the dataset's dataset.json is damaged (not JSON)`);
  }
  if (kind !== 'tpo' && kind !== 'dpo' && kind !== 'kto') throw new InputError(`${name}: the dataset is of a kind this app does not know (${JSON.stringify(kind)}); update the app to import it`);
  const images = kind === 'tpo' ? parseTrainerJsonl(text, { file: 'items.jsonl', onInvalid: 'error' }).items.map((i) => i.image) : preferenceImages(parsePreferenceJsonl(text, kind, { file: 'items.jsonl' }));
  for (const image of images) if (!contents.dataset[`images/${image}`]) throw new InputError(`${name}: the image ${image} of the dataset is missing`);
  for (const id of manifest.runs) if (!contents.runs[id]?.[RUN_SETTINGS_FILE]) throw new InputError(`${name}: run ${id} has no ${RUN_SETTINGS_FILE}`);
  return contents;
}

/**
 * Writes a project's dataset to `datasetPath` and each run to `runPaths[old id]`, pointing the runs at the
 * dataset's new id. The checkpoint folder is written as one (all or nothing), as training writes it.
 */
export async function writeProject(root: Storage, contents: ProjectContents, datasetPath: string, datasetId: string, runPaths: Record<string, string>): Promise<void> {
  const datasetInfo = { ...JSON.parse(new TextDecoder().decode(contents.dataset['dataset.json'] ?? new TextEncoder().encode('{}'))), id: datasetId, name: contents.manifest.dataset.name, createdAt: contents.manifest.dataset.createdAt };
  for (const [path, bytes] of Object.entries(contents.dataset)) if (path !== 'dataset.json') await root.write(`${datasetPath}/${path}`, bytes);
  for (const [old, files] of Object.entries(contents.runs)) {
    const path = runPaths[old];
    const checkpoint: Record<string, Uint8Array> = {};
    for (const [name, bytes] of Object.entries(files)) {
      if (name.startsWith(`${CHECKPOINT_FOLDER}/`)) checkpoint[name.slice(CHECKPOINT_FOLDER.length + 1)] = bytes;
      else if (name === RUN_SETTINGS_FILE) {
        const settings = JSON.parse(new TextDecoder().decode(bytes)) as { data: string };
        await root.write(`${path}/${name}`, `${JSON.stringify({ ...settings, data: datasetId }, null, 2)}\n`);
      } else await root.write(`${path}/${name}`, bytes);
    }
    if (Object.keys(checkpoint).length) await root.writeFolder(`${path}/${CHECKPOINT_FOLDER}`, checkpoint);
  }
  // Last: a dataset without dataset.json is an unfinished import, which listings skip.
  await root.write(`${datasetPath}/dataset.json`, `${JSON.stringify(datasetInfo, null, 2)}\n`);
}
