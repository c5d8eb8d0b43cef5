// The Samples screen's state: what to draw (prompts, seeds, sampler settings), with which run's LoRA at
// which scale, and the images of the last request: the base model beside the LoRA for each prompt and seed,
// as object URLs for showing and the PNG bytes (with their parameters) for saving.

import { create } from 'zustand';
import { DEFAULT_SAMPLE_SETTINGS } from '../../diffusion/pipeline';
import type { SamplerName } from '../../diffusion/samplers';
import type { EngineError, JudgeInfo, RunInfo } from '../../worker/api';
import type { EngineClient } from '../../worker/client';
import { engine } from '../engine';
import { keptRun, usableRuns } from '../runs';

export interface SamplesForm {
  /** One prompt per line. */
  prompts: string;
  /** Whole numbers separated by commas or spaces. */
  seeds: string;
  /** A run id, or '' for the base model alone. */
  run: string;
  loraScale: number;
  steps: number;
  guidance: number;
  sampler: SamplerName;
  width: number;
  height: number;
  negativePrompt: string;
}

export interface SampleView {
  prompt: string;
  seed: number;
  base: { url: string; bytes: Uint8Array };
  lora: { url: string; bytes: Uint8Array } | null;
}

export interface SamplesStore {
  form: SamplesForm;
  /** Runs with a LoRA to draw with: finished, or stopped with a checkpoint. */
  runs: RunInfo[];
  /** `job` names the sample call for stop(); `stopping` once asked to. */
  status: { state: 'idle' } | { state: 'running'; done: number; total: number; job: string; stopping: boolean };
  images: SampleView[];
  /** The images shown were stopped short: how many prompt-and-seed pairs were drawn of those asked for. */
  stopped: { drawn: number; asked: number } | null;
  /** The LoRA the images were drawn with (name and step), and at which scale. */
  drawnWith: { name: string; step: number; scale: number } | null;
  error: EngineError | null;
  /** The open judge's scores of the images shown (base and LoRA of each), and which judge and images they are of. */
  judged: { images: SampleView[]; judge: JudgeInfo; scores: { base: number; lora: number | null }[] } | null;
  judgeError: EngineError | null;
  setForm(patch: Partial<SamplesForm>): void;
  /** Scores the images shown with the open judge, each against its prompt. */
  judgeImages(judge: JudgeInfo): Promise<void>;
  /** A model was opened: draw at its native size. */
  fitToModel(nativeSize: number): void;
  refreshRuns(): Promise<void>;
  generate(): Promise<void>;
  /** Stops the drawing in progress after the image in flight; what was drawn by then is shown. */
  stop(): Promise<void>;
}

export const DEFAULT_SAMPLES_FORM: SamplesForm = {
  prompts: '',
  seeds: '1',
  run: '',
  loraScale: 1,
  steps: DEFAULT_SAMPLE_SETTINGS.steps,
  guidance: DEFAULT_SAMPLE_SETTINGS.guidance,
  sampler: DEFAULT_SAMPLE_SETTINGS.sampler,
  width: 512,
  height: 512,
  negativePrompt: '',
};

/** The seeds typed in, or what is wrong with them. */
export function parseSeeds(text: string): number[] | string {
  const parts = text.split(/[\s,]+/).filter((p) => p !== '');
  if (parts.length === 0) return 'give at least one seed';
  const seeds: number[] = [];
  for (const p of parts) {
    const n = Number(p);
    if (!/^\d+$/.test(p) || n > 0xffffffff) return `seed ${JSON.stringify(p)} is not a whole number from 0 to 4294967295`;
    seeds.push(n);
  }
  return seeds;
}

export function createSamplesStore(client: () => EngineClient) {
  return create<SamplesStore>()((set, get) => ({
    form: DEFAULT_SAMPLES_FORM,
    runs: [],
    status: { state: 'idle' },
    images: [],
    stopped: null,
    drawnWith: null,
    error: null,
    judged: null,
    judgeError: null,

    setForm(patch) {
      set({ form: { ...get().form, ...patch } });
    },

    fitToModel(nativeSize) {
      set({ form: { ...get().form, width: nativeSize, height: nativeSize } });
    },

    async judgeImages(judge) {
      const images = get().images;
      if (!images.length) return;
      const list = images.flatMap((i) => [{ bytes: i.base.bytes, prompt: i.prompt }, ...(i.lora ? [{ bytes: i.lora.bytes, prompt: i.prompt }] : [])]);
      const r = await client().lab.judgeImages(list);
      // Images drawn again meanwhile are scored by the next call.
      if (get().images !== images) return;
      if (!r.ok) return set({ judged: null, judgeError: r.error });
      let k = 0;
      const scores = images.map((i) => ({ base: r.value[k++], lora: i.lora ? r.value[k++] : null }));
      set({ judged: { images, judge, scores }, judgeError: null });
    },

    async refreshRuns() {
      const r = await usableRuns(client());
      if ('error' in r) {
        set({ error: r.error });
        return;
      }
      const { form } = get();
      set({ runs: r.runs, form: { ...form, run: keptRun(r.runs, form.run) } });
    },

    async generate() {
      const { form } = get();
      const seeds = parseSeeds(form.seeds);
      if (typeof seeds === 'string') {
        set({ error: { kind: 'input', message: `Seeds: ${seeds}.` } });
        return;
      }
      const job = `sample-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
      set({ status: { state: 'running', done: 0, total: 0, job, stopping: false }, error: null, stopped: null });
      const r = await client().lab.sample(
        {
          prompts: form.prompts.split('\n'),
          seeds,
          run: form.run || undefined,
          loraScale: form.loraScale,
          steps: form.steps,
          guidance: form.guidance,
          sampler: form.sampler,
          width: form.width,
          height: form.height,
          negativePrompt: form.negativePrompt,
        },
        (done, total) => {
          const s = get().status;
          if (s.state === 'running') set({ status: { ...s, done, total } });
        },
        job,
      );
      if (!r.ok) {
        set({ status: { state: 'idle' }, error: r.error });
        return;
      }
      const { asked } = r.value;
      // Stopped before the first image: the images shown before stay.
      if (r.value.stopped && !r.value.images.length) return set({ status: { state: 'idle' }, stopped: { drawn: 0, asked } });
      for (const old of get().images) {
        URL.revokeObjectURL(old.base.url);
        if (old.lora) URL.revokeObjectURL(old.lora.url);
      }
      const view = (bytes: Uint8Array) => ({ bytes, url: URL.createObjectURL(new Blob([bytes as Uint8Array<ArrayBuffer>], { type: 'image/png' })) });
      set({
        status: { state: 'idle' },
        images: r.value.images.map((i) => ({ prompt: i.prompt, seed: i.seed, base: view(i.base), lora: i.lora ? view(i.lora) : null })),
        stopped: r.value.stopped ? { drawn: r.value.images.length, asked } : null,
        drawnWith: r.value.lora ? { ...r.value.lora, scale: r.value.settings.loraScale } : null,
      });
    },

    async stop() {
      const s = get().status;
      if (s.state !== 'running' || s.stopping) return;
      set({ status: { ...s, stopping: true } });
      const r = await client().lab.cancelJob(s.job);
      if (!r.ok) set({ error: r.error });
    },
  }));
}

export const useSamplesStore = createSamplesStore(engine);
