// The Data screen's state, shared with the Pairs screen: the lab's datasets, the one being worked on and its
// items (captions, negatives with their review status). Every change is saved to the lab's storage at once
// (the whole items file, replaced atomically); the last destructive change can be undone.

import { create } from 'zustand';
import { datasetStats } from '../../data/dataset';
import { DEMO_DATASET_NAME, DEMO_DATASET_SIZE } from '../../demo/files';
import { exportTrainerJsonl } from '../../data/export';
import { formatPreferenceJsonl, type PreferenceRecords, preferenceImages } from '../../data/preference-records';
import type { DatasetItem, ImportProblem } from '../../data/types';
import type { DatasetImport, DatasetInfo, EngineError, Result } from '../../worker/api';
import type { EngineClient } from '../../worker/client';
import { engine } from '../engine';

export interface DataStore {
  datasets: DatasetInfo[];
  /** The dataset being worked on (its id), or null. */
  current: string | null;
  items: DatasetItem[];
  /** A preference dataset's records (DPO pairs, KTO labels) instead of items; null for captioned images. */
  records: PreferenceRecords | null;
  /** An import under way: images copied so far. */
  importing: { name: string; done: number; total: number } | null;
  /** Records an import left out, with why. */
  problems: ImportProblem[];
  /** The last failure of a data call, for the screen to show (cleared by the next success). */
  error: EngineError | null;
  /** What undo() restores: the items (or records) before the last removal or bulk change. */
  undo: { label: string; items: DatasetItem[] } | { label: string; records: PreferenceRecords } | null;
  refresh(): Promise<void>;
  select(id: string | null): Promise<void>;
  importFiles(files: File[], name: string): Promise<void>;
  /** Adds the shapes world's demo data set. */
  importDemo(): Promise<void>;
  /** Replaces the items (saved at once); `undoLabel` makes the change undoable ("Removed disc0.png"). */
  setItems(items: DatasetItem[], undoLabel?: string): Promise<boolean>;
  updateCaption(itemId: string, caption: string): Promise<void>;
  removeItem(itemId: string): Promise<void>;
  /** Replaces a preference dataset's records (saved at once), undoable like setItems. */
  setRecords(records: PreferenceRecords, undoLabel?: string): Promise<boolean>;
  /** Removes the record at `index` of `records`. */
  removeRecord(index: number): Promise<void>;
  undoLast(): Promise<void>;
  deleteDataset(id: string): Promise<void>;
  /** The items (or records) as the lab's JSONL (the `tpo-lab train` input). */
  exportJsonl(): string;
  /** The current dataset and its runs as one file, or null (the failure is in `error`). */
  exportProject(): Promise<{ bytes: Uint8Array; name: string } | null>;
  /** Imports a project file as a new dataset (with its runs) and makes it the current one. */
  importProject(file: File): Promise<void>;
  /** What the last project import brought, for the screen to say. */
  projectImported: { name: string; runs: number } | null;
}

/** The dataset being worked on, kept across reloads (only its id; the data is in the lab's storage). */
const CURRENT_KEY = 'tpo-lab.current-dataset';

function rememberCurrent(id: string | null): void {
  try {
    if (id) localStorage.setItem(CURRENT_KEY, id);
    else localStorage.removeItem(CURRENT_KEY);
  } catch {
    // Storage refused (private mode): the choice is simply not kept.
  }
}

function recallCurrent(): string | null {
  try {
    return localStorage.getItem(CURRENT_KEY);
  } catch {
    return null;
  }
}

export function createDataStore(client: () => EngineClient) {
  return create<DataStore>()((set, get) => {
    /** One import at a time, its progress shown; the new dataset is selected. */
    const importWith = async (name: string, total: number, run: (onProgress: (done: number, total: number) => void) => Promise<Result<DatasetImport>>) => {
      if (get().importing) return;
      set({ importing: { name, done: 0, total }, problems: [], error: null });
      const r = await run((done, total) => set({ importing: { name, done, total } }));
      set({ importing: null });
      if (!r.ok) return set({ error: r.error });
      set({ problems: r.value.problems });
      await get().refresh();
      await get().select(r.value.dataset.id);
    };
    return {
    datasets: [],
    current: null,
    items: [],
    records: null,
    importing: null,
    problems: [],
    error: null,
    undo: null,

    async refresh() {
      const r = await client().lab.listDatasets();
      if (!r.ok) return set({ error: r.error });
      set({ datasets: r.value, error: null });
      const { current } = get();
      if (current && !r.value.some((d) => d.id === current)) await get().select(null);
      // After a reload: the dataset worked on last time.
      const last = recallCurrent();
      if (!current && last && r.value.some((d) => d.id === last)) await get().select(last);
    },

    async select(id) {
      if (id === null) {
        rememberCurrent(null);
        return set({ current: null, items: [], records: null, undo: null });
      }
      const kind = get().datasets.find((d) => d.id === id)?.kind ?? 'tpo';
      if (kind !== 'tpo') {
        const r = await client().lab.datasetRecords(id);
        if (!r.ok) return set({ error: r.error });
        rememberCurrent(id);
        return set({ current: id, items: [], records: r.value, undo: null, error: null });
      }
      const r = await client().lab.datasetItems(id);
      if (!r.ok) return set({ error: r.error });
      rememberCurrent(id);
      set({ current: id, items: r.value, records: null, undo: null, error: null });
    },

    async importFiles(files, name) {
      await importWith(name, files.length, (onProgress) => client().lab.importDataset(files, name, { onInvalid: 'skip' }, onProgress));
    },

    async importDemo() {
      await importWith(DEMO_DATASET_NAME, DEMO_DATASET_SIZE, (onProgress) => client().lab.importDemoDataset(onProgress));
    },

    async setItems(items, undoLabel) {
      const { current, items: before } = get();
      if (!current) return false;
      set({ items });
      const r = await client().lab.saveItems(current, items);
      if (!r.ok) {
        // Nothing was written: show the items as they are stored.
        set({ items: before, error: r.error });
        return false;
      }
      // The list's counts for this dataset from the items in hand: re-listing would read every dataset's items.
      const datasets = get().datasets.map((d) => (d.id === current ? { ...d, items: items.length, stats: datasetStats(items) } : d));
      set({ datasets, error: null, ...(undoLabel ? { undo: { label: undoLabel, items: before } } : {}) });
      return true;
    },

    async updateCaption(itemId, caption) {
      const text = caption.trim();
      const items = get().items;
      const item = items.find((i) => i.id === itemId);
      if (!item || item.caption === text) return;
      if (!text) return set({ error: { kind: 'input', message: 'A caption cannot be empty: remove the image instead.' } });
      // The negatives were written for the old caption; they go with it.
      const changed = { ...item, caption: text, negatives: [], failures: [] };
      const label = item.negatives.length ? `Edited the caption of ${item.image} (its ${item.negatives.length} negatives were removed)` : undefined;
      await get().setItems(
        items.map((i) => (i.id === itemId ? changed : i)),
        label,
      );
    },

    async removeItem(itemId) {
      const item = get().items.find((i) => i.id === itemId);
      if (!item) return;
      await get().setItems(
        get().items.filter((i) => i.id !== itemId),
        `Removed ${item.image}`,
      );
    },

    async setRecords(records, undoLabel) {
      const { current, records: before } = get();
      if (!current || !before) return false;
      set({ records });
      const r = await client().lab.saveRecords(current, records);
      if (!r.ok) {
        set({ records: before, error: r.error });
        return false;
      }
      const images = preferenceImages(records).length;
      const datasets = get().datasets.map((d) => (d.id === current ? { ...d, items: records.records.length, images } : d));
      set({ datasets, error: null, ...(undoLabel ? { undo: { label: undoLabel, records: before } } : {}) });
      return true;
    },

    async removeRecord(index) {
      const data = get().records;
      if (!data?.records[index]) return;
      const others = <T,>(list: T[]) => list.filter((_, i) => i !== index);
      if (data.kind === 'dpo') await get().setRecords({ kind: 'dpo', records: others(data.records) }, `Removed the pair for “${data.records[index].prompt}”`);
      else await get().setRecords({ kind: 'kto', records: others(data.records) }, `Removed ${data.records[index].image}`);
    },

    async undoLast() {
      const { undo } = get();
      if (!undo) return;
      const restored = 'records' in undo ? await get().setRecords(undo.records) : await get().setItems(undo.items);
      if (restored) set({ undo: null });
    },

    async deleteDataset(id) {
      const r = await client().lab.deleteDataset(id);
      if (!r.ok) return set({ error: r.error });
      if (get().current === id) await get().select(null);
      await get().refresh();
    },

    exportJsonl() {
      const { records, items } = get();
      return records ? formatPreferenceJsonl(records) : exportTrainerJsonl(items);
    },

    projectImported: null,

    async exportProject() {
      const { current } = get();
      if (!current) return null;
      const r = await client().lab.exportProject(current);
      if (!r.ok) {
        set({ error: r.error });
        return null;
      }
      set({ error: null });
      return r.value;
    },

    async importProject(file) {
      set({ projectImported: null, error: null });
      const r = await client().lab.importProject(file);
      if (!r.ok) return set({ error: r.error });
      await get().refresh();
      await get().select(r.value.dataset.id);
      // Said once the new dataset is listed and open.
      set({ projectImported: { name: r.value.dataset.name, runs: r.value.runs.length } });
    },
  };
  });
}

export const useDataStore = createDataStore(engine);
