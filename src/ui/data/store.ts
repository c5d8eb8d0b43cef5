// The Data screen's state, shared with the Pairs screen: the lab's datasets, the one being worked on and its
// items (captions, negatives with their review status). Every change is saved to the lab's storage at once
// (the whole items file, replaced atomically); the last destructive change can be undone.

import { create } from 'zustand';
import { datasetStats } from '../../data/dataset';
import { exportTrainerJsonl } from '../../data/export';
import type { DatasetItem, ImportProblem } from '../../data/types';
import type { DatasetInfo, EngineError } from '../../worker/api';
import type { EngineClient } from '../../worker/client';
import { engine } from '../engine';

export interface DataStore {
  datasets: DatasetInfo[];
  /** The dataset being worked on (its id), or null. */
  current: string | null;
  items: DatasetItem[];
  /** An import under way: images copied so far. */
  importing: { name: string; done: number; total: number } | null;
  /** Records an import left out, with why. */
  problems: ImportProblem[];
  /** The last failure of a data call, for the screen to show (cleared by the next success). */
  error: EngineError | null;
  /** What undo() restores: the items before the last removal or bulk change. */
  undo: { label: string; items: DatasetItem[] } | null;
  refresh(): Promise<void>;
  select(id: string | null): Promise<void>;
  importFiles(files: File[], name: string): Promise<void>;
  /** Replaces the items (saved at once); `undoLabel` makes the change undoable ("Removed disc0.png"). */
  setItems(items: DatasetItem[], undoLabel?: string): Promise<boolean>;
  updateCaption(itemId: string, caption: string): Promise<void>;
  removeItem(itemId: string): Promise<void>;
  undoLast(): Promise<void>;
  deleteDataset(id: string): Promise<void>;
  /** The items as the lab's JSONL (the `tpo-lab train` input). */
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
  return create<DataStore>()((set, get) => ({
    datasets: [],
    current: null,
    items: [],
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
        return set({ current: null, items: [], undo: null });
      }
      const r = await client().lab.datasetItems(id);
      if (!r.ok) return set({ error: r.error });
      rememberCurrent(id);
      set({ current: id, items: r.value, undo: null, error: null });
    },

    async importFiles(files, name) {
      if (get().importing) return;
      set({ importing: { name, done: 0, total: files.length }, problems: [], error: null });
      const r = await client().lab.importDataset(files, name, { onInvalid: 'skip' }, (done, total) => set({ importing: { name, done, total } }));
      set({ importing: null });
      if (!r.ok) return set({ error: r.error });
      set({ problems: r.value.problems });
      await get().refresh();
      await get().select(r.value.dataset.id);
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

    async undoLast() {
      const { undo } = get();
      if (!undo) return;
      if (await get().setItems(undo.items)) set({ undo: null });
    },

    async deleteDataset(id) {
      const r = await client().lab.deleteDataset(id);
      if (!r.ok) return set({ error: r.error });
      if (get().current === id) await get().select(null);
      await get().refresh();
    },

    exportJsonl() {
      return exportTrainerJsonl(get().items);
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
  }));
}

export const useDataStore = createDataStore(engine);
