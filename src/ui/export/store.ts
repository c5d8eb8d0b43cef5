// The Export screen's state: which run, which format and precision, what the file would carry (its
// metadata, read back from the encoded file before anything is downloaded), and the export itself.

import { create } from 'zustand';
import type { LoraFormat } from '../../models/lora-io';
import type { EngineError, LoraInfo, RunInfo } from '../../worker/api';
import type { EngineClient } from '../../worker/client';
import { downloadBytes } from '../download';
import { engine } from '../engine';
import { keptRun, usableRuns } from '../runs';

export interface ExportForm {
  run: string;
  format: LoraFormat;
  dtype: 'fp16' | 'fp32';
}

export interface ExportStore {
  form: ExportForm;
  /** Runs with a LoRA: finished, or stopped with a checkpoint. */
  runs: RunInfo[];
  info: { state: 'none' } | { state: 'loading' } | { state: 'ready'; info: LoraInfo; for: ExportForm };
  exporting: boolean;
  /** The last file downloaded, for the confirmation. */
  saved: { name: string; bytes: number } | null;
  error: EngineError | null;
  setForm(patch: Partial<ExportForm>): Promise<void>;
  refreshRuns(): Promise<void>;
  loadInfo(): Promise<void>;
  exportLora(): Promise<void>;
}

export function createExportStore(client: () => EngineClient) {
  return create<ExportStore>()((set, get) => ({
    form: { run: '', format: 'kohya', dtype: 'fp16' },
    runs: [],
    info: { state: 'none' },
    exporting: false,
    saved: null,
    error: null,

    async setForm(patch) {
      set({ form: { ...get().form, ...patch }, saved: null });
      await get().loadInfo();
    },

    async refreshRuns() {
      const r = await usableRuns(client());
      if ('error' in r) {
        set({ error: r.error });
        return;
      }
      const { form } = get();
      set({ runs: r.runs, form: { ...form, run: keptRun(r.runs, form.run) } });
      await get().loadInfo();
    },

    async loadInfo() {
      const form = get().form;
      if (!form.run) {
        set({ info: { state: 'none' } });
        return;
      }
      set({ info: { state: 'loading' }, error: null });
      const r = await client().lab.loraInfo(form.run, { format: form.format, dtype: form.dtype });
      // A newer choice was made meanwhile: its own call will answer.
      if (get().form !== form) return;
      set(r.ok ? { info: { state: 'ready', info: r.value, for: form } } : { info: { state: 'none' }, error: r.error });
    },

    async exportLora() {
      const { form } = get();
      if (!form.run) return;
      set({ exporting: true, error: null, saved: null });
      const r = await client().lab.exportLora(form.run, { format: form.format, dtype: form.dtype });
      if (r.ok) {
        downloadBytes(r.value.bytes, r.value.name, 'application/octet-stream');
        set({ exporting: false, saved: { name: r.value.name, bytes: r.value.bytes.byteLength } });
      } else {
        set({ exporting: false, error: r.error });
      }
    },
  }));
}

export const useExportStore = createExportStore(engine);
