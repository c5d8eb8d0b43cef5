// The Model screen's state: the open model (from a picked folder or one .safetensors file) and the memory
// plan for the training settings the user is weighing, with a verdict against the GPU memory they say
// they have (WebGPU does not tell a page how much memory the GPU has).

import { create } from 'zustand';
import type { EngineError, MemoryPlanRequest, MemoryPlanResult, ModelInfo, ModelSource } from '../../worker/api';
import type { EngineClient } from '../../worker/client';
import { engine } from '../engine';

export interface PlanForm extends Required<Pick<MemoryPlanRequest, 'method' | 'resolution' | 'rank' | 'batch'>> {
  checkpointing: boolean;
  /** The GPU memory the user says they have, in GiB. */
  budgetGiB: number;
}

export interface Verdict {
  fits: boolean;
  /** Bytes the pool holds from the device for a step with the chosen settings. */
  needed: number;
  /** What to change when it does not fit (or what else would also fit), in a sentence; '' when nothing. */
  advice: string;
}

export type ModelState =
  | { status: 'none' }
  | { status: 'opening'; what: string }
  | { status: 'open'; info: ModelInfo }
  | { status: 'error'; error: EngineError; previous: ModelInfo | null };

export interface ModelStore {
  model: ModelState;
  form: PlanForm;
  plan: { status: 'idle' | 'planning' } | { status: 'done'; result: MemoryPlanResult; verdict: Verdict } | { status: 'error'; error: EngineError };
  open(source: ModelSource, what: string): Promise<void>;
  setForm(patch: Partial<PlanForm>): void;
  runPlan(): Promise<void>;
}

export const DEFAULT_PLAN_FORM: PlanForm = { method: 'tdpo', resolution: 512, rank: 4, batch: 1, checkpointing: true, budgetGiB: 8 };

const GIB = 2 ** 30;
/** Resolutions the advice tries, largest first (multiples of 64, as the UNet needs). */
const SMALLER_RESOLUTIONS = [448, 384, 320, 256, 192, 128, 64];

export function createModelStore(client: () => EngineClient) {
  return create<ModelStore>()((set, get) => ({
    model: { status: 'none' },
    form: DEFAULT_PLAN_FORM,
    plan: { status: 'idle' },

    async open(source, what) {
      const before = get().model;
      const previous = before.status === 'open' ? before.info : before.status === 'error' ? before.previous : null;
      set({ model: { status: 'opening', what } });
      const r = await client().lab.openModel(source);
      // A model that fails to open leaves the one that was open as it was (the engine keeps it too).
      set({ model: r.ok ? { status: 'open', info: r.value } : { status: 'error', error: r.error, previous }, plan: { status: 'idle' } });
      // The plan starts at the model's native size (64 px for the demo, 512 for SD1.5), as Train does.
      if (r.ok) set({ form: { ...get().form, resolution: r.value.unet.sampleSize * r.value.vae.downsample } });
      if (r.ok) await get().runPlan();
    },

    setForm(patch) {
      set({ form: { ...get().form, ...patch } });
    },

    async runPlan() {
      const { form } = get();
      set({ plan: { status: 'planning' } });
      const request = (resolution: number): MemoryPlanRequest => ({ method: form.method, resolution, rank: form.rank, batch: form.batch });
      const r = await client().lab.planMemory(request(form.resolution));
      if (!r.ok) {
        set({ plan: { status: 'error', error: r.error } });
        return;
      }
      const budget = form.budgetGiB * GIB;
      const chosen = form.checkpointing ? r.value.checkpointing : r.value.noCheckpointing;
      const fits = chosen.reservedBytes <= budget;
      let advice = '';
      if (!fits && !form.checkpointing && r.value.checkpointing.reservedBytes <= budget) {
        advice = 'Turn on gradient checkpointing: it fits then, about 30% slower per step.';
      } else if (!fits) {
        for (const resolution of SMALLER_RESOLUTIONS.filter((x) => x < form.resolution)) {
          const smaller = await client().lab.planMemory(request(resolution));
          if (smaller.ok && smaller.value.checkpointing.reservedBytes <= budget) {
            advice = `Lower the resolution to ${resolution} px${form.checkpointing ? '' : ' and turn on gradient checkpointing'}: it fits then.`;
            break;
          }
        }
        advice ||= 'Even the smallest settings do not fit: use a GPU with more memory.';
      }
      set({ plan: { status: 'done', result: r.value, verdict: { fits, needed: chosen.reservedBytes, advice } } });
    },
  }));
}

export const useModelStore = createModelStore(engine);
