// The independent judge, shared by the Scores screen (the judge's margins against a run's implicit margins)
// and the Samples screen (the judge's score of each base and LoRA image): which judge folder is open in the
// engine, on which ONNX Runtime backend, and the last pairs result.

import { create } from 'zustand';
import type { EngineError, JudgeInfo, JudgeKind, JudgePairsResult } from '../../worker/api';
import type { EngineClient } from '../../worker/client';
import { engine } from '../engine';

export interface JudgeStore {
  kind: JudgeKind;
  /** The picked folder's files (kept so that a change of kind opens them again). */
  files: File[];
  info: JudgeInfo | null;
  opening: boolean;
  /** The pairs being scored: embedded captions and images so far, of how many. */
  progress: { done: number; total: number } | null;
  result: JudgePairsResult | null;
  error: EngineError | null;
  setKind(kind: JudgeKind): Promise<void>;
  open(files: File[]): Promise<void>;
  /** Scores a dataset's pairs and joins them with the run's implicit margins. */
  scorePairs(dataset: string, run: string | null): Promise<void>;
}

export function createJudgeStore(client: () => EngineClient) {
  return create<JudgeStore>()((set, get) => ({
    kind: 'clip',
    files: [],
    info: null,
    opening: false,
    progress: null,
    result: null,
    error: null,

    async setKind(kind) {
      set({ kind });
      if (get().files.length) await get().open(get().files);
    },

    async open(files) {
      set({ files, opening: true, error: null });
      const r = await client().lab.openJudge(files, get().kind);
      // A folder that fails leaves the engine's judge as it was: so does the screen.
      if (!r.ok) return set({ opening: false, error: r.error });
      set({ opening: false, info: r.value, result: null });
    },

    async scorePairs(dataset, run) {
      set({ progress: { done: 0, total: 0 }, error: null });
      const r = await client().lab.judgePairs(dataset, run, (done, total) => set({ progress: { done, total } }));
      if (!r.ok) return set({ progress: null, error: r.error });
      set({ progress: null, result: r.value });
    },
  }));
}

export const useJudgeStore = createJudgeStore(engine);

/** How a judge's score is named beside an image. */
export const scoreName = (kind: JudgeKind) => (kind === 'clip' ? 'CLIP score' : 'Reward');

/** The backend in words. */
export const backendName = (backend: JudgeInfo['backend']) => (backend === 'webgpu' ? 'WebGPU' : 'wasm (on the CPU)');
