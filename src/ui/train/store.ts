// The Train screen's state: the settings of the next run (every hyper-parameter, from the method's defaults
// or a preset), the run list, and the run on screen: its metrics (read back from storage, then extended by
// live step events, so a resumed run draws one continuous curve), its previews and its status.

import { create } from 'zustand';
import { persist } from 'zustand/middleware';
import { defaultTrainConfig, type TrainConfig } from '../../tpo/trainer';
import type { LossMethod } from '../../tpo/methods';
import type { EngineError, LabRunEvent, RunInfo, RunRequest } from '../../worker/api';
import type { EngineClient } from '../../worker/client';
import { useDataStore } from '../data/store';
import { engine } from '../engine';

export type PresetName = 'quick' | 'default' | 'careful';

export interface TrainForm {
  method: LossMethod;
  steps: number;
  lr: number;
  lrSchedule: TrainConfig['lrSchedule'];
  warmupSteps: number;
  beta: number;
  kappa: number | null;
  rank: number;
  alpha: number;
  batchSize: number;
  gradAccum: number;
  resolution: number;
  gradientCheckpointing: boolean;
  seed: number;
  holdout: number;
  negatives: 'all' | 'accepted';
  checkpointEvery: number;
  scoreEvery: number;
  /** One prompt per line; none: no previews. */
  previewPrompts: string;
  previewEvery: number;
  previewSteps: number;
}

/** The series the charts draw, by step. */
export const SERIES = ['loss', 'accuracy', 'meanMargin', 'clipFraction', 'lr', 'stepTime'] as const;
export type SeriesName = (typeof SERIES)[number];
export type Metrics = { step: number[] } & Record<SeriesName, (number | null)[]>;

export interface Preview {
  step: number;
  /** Object URLs of the images, in prompt order. */
  urls: string[];
  prompts: string[];
}

export interface RunView {
  id: string;
  status: RunInfo['status'];
  step: number;
  steps: number;
  metrics: Metrics;
  previews: Preview[];
  /** Log lines of this session (preparation, checkpoints, scores, recoveries). */
  log: string[];
  error: EngineError | null;
  /** When the first step of this session arrived, for the ETA. */
  startedAt: number | null;
}

export interface TrainStore {
  form: TrainForm;
  runs: RunInfo[];
  view: RunView | null;
  error: EngineError | null;
  /** The open model's native size in pixels, once one has been opened (the resolution the form follows). */
  nativeSize: number | null;
  setForm(patch: Partial<TrainForm>): void;
  applyPreset(preset: PresetName): void;
  /** A model of another native size was opened: train at its size (a 64 px demo model, 512 px SD1.5). */
  fitToModel(nativeSize: number): void;
  refreshRuns(): Promise<void>;
  openRun(id: string): Promise<void>;
  start(): Promise<void>;
  pause(): Promise<void>;
  /** Continues a paused run, or resumes a stopped one from its checkpoint. */
  resume(): Promise<void>;
  cancel(): Promise<void>;
  deleteRun(id: string): Promise<void>;
}

export function formFor(method: LossMethod, preset: PresetName = 'default'): TrainForm {
  const d = defaultTrainConfig(method);
  const base: TrainForm = {
    method,
    steps: d.steps,
    lr: d.lr,
    lrSchedule: d.lrSchedule,
    warmupSteps: d.warmupSteps,
    beta: d.beta,
    kappa: d.kappa,
    rank: d.rank,
    alpha: d.alpha,
    batchSize: d.batchSize,
    gradAccum: d.gradAccum,
    resolution: d.resolution,
    gradientCheckpointing: d.gradientCheckpointing,
    seed: d.seed,
    holdout: 0.1,
    negatives: 'all',
    checkpointEvery: 100,
    scoreEvery: 0,
    previewPrompts: '',
    previewEvery: 250,
    previewSteps: 20,
  };
  if (preset === 'quick') return { ...base, steps: 50, resolution: 256, rank: 4, alpha: 4, checkpointEvery: 10, previewEvery: 25 };
  if (preset === 'careful') return { ...base, steps: 2000, lr: d.lr / 2, lrSchedule: 'cosine', warmupSteps: 100, negatives: 'accepted', scoreEvery: 250 };
  return base;
}

export const emptyMetrics = (): Metrics => ({ step: [], loss: [], accuracy: [], meanMargin: [], clipFraction: [], lr: [], stepTime: [] });

/** Adds a step's numbers (a metrics.jsonl line or a step event's report); a step seen already replaces nothing. */
export function addStep(metrics: Metrics, row: Record<string, unknown>): Metrics {
  const step = Number(row.step);
  const last = metrics.step.at(-1) ?? 0;
  if (!(step > last)) return metrics;
  const next = { ...metrics, step: [...metrics.step, step] } as Metrics;
  for (const s of SERIES) {
    const v = row[s];
    next[s] = [...metrics[s], typeof v === 'number' && Number.isFinite(v) ? v : null];
  }
  return next;
}

export function createTrainStore(client: () => EngineClient) {
  const urls = new Set<string>();
  const dropUrls = () => {
    for (const u of urls) URL.revokeObjectURL(u);
    urls.clear();
  };

  return create<TrainStore>()(
    persist(
      (set, get) => {
        /** Applies a run event to the view when it is the run on screen. */
        const onEvent = (e: LabRunEvent) => {
          const view = get().view;
          if (e.type === 'status') void get().refreshRuns();
          if (!view || view.id !== e.run) return;
          const log = (line: string) => ({ log: [...view.log, line].slice(-200) });
          switch (e.type) {
            case 'step':
              set({ view: { ...view, step: e.report.step, steps: e.steps, metrics: addStep(view.metrics, e.report as unknown as Record<string, unknown>), startedAt: view.startedAt ?? performance.now() } });
              break;
            case 'status':
              set({ view: { ...view, status: e.status, step: e.step, error: e.error ? { kind: e.errorKind ?? 'error', message: e.error } : null, ...log(`${e.status} at step ${e.step}`) } });
              break;
            case 'start':
              set({ view: { ...view, steps: e.steps, ...log(`training on ${e.train} examples, ${e.heldOut} held out, from step ${e.step}`) } });
              break;
            case 'prepare':
              set({ view: { ...view, ...log(`preparing features: ${e.done} of ${e.total}`) } });
              break;
            case 'checkpoint':
              set({ view: { ...view, ...log(`checkpoint at step ${e.step}`) } });
              break;
            case 'scores':
              set({ view: { ...view, ...log(`scores at step ${e.step} on ${e.split}: accuracy ${(e.accuracy * 100).toFixed(0)}%, mean margin ${e.meanMargin.toFixed(3)}`) } });
              break;
            case 'device-lost':
              set({ view: { ...view, ...log(`the GPU device was lost (${e.message}); resuming from step ${e.resumeFrom}`) } });
              break;
            case 'log':
              set({ view: { ...view, ...log(e.text) } });
              break;
            case 'preview':
              void loadPreview(e.run, e.step, e.folder, e.files);
              break;
          }
        };

        const loadPreview = async (run: string, step: number, folder: string, files: string[]) => {
          const index = await client().lab.runFile(run, `${folder}/index.json`);
          const prompts = index.ok && index.value ? (JSON.parse(new TextDecoder().decode(index.value)) as { images: { prompt: string }[] }).images.map((i) => i.prompt) : [];
          const images: string[] = [];
          for (const file of files) {
            const r = await client().lab.runFile(run, file);
            if (r.ok && r.value) {
              const url = URL.createObjectURL(new Blob([r.value as Uint8Array<ArrayBuffer>], { type: 'image/png' }));
              urls.add(url);
              images.push(url);
            }
          }
          const view = get().view;
          if (!view || view.id !== run) return;
          const previews = [...view.previews.filter((p) => p.step !== step), { step, urls: images, prompts }].sort((a, b) => a.step - b.step);
          set({ view: { ...view, previews } });
        };

        const request = (): RunRequest | null => {
          const dataset = useDataStore.getState().current;
          if (!dataset) return null;
          const f = get().form;
          const prompts = f.previewPrompts
            .split('\n')
            .map((p) => p.trim())
            .filter(Boolean);
          return {
            dataset,
            config: {
              method: f.method,
              steps: f.steps,
              lr: f.lr,
              lrSchedule: f.lrSchedule,
              warmupSteps: f.warmupSteps,
              beta: f.beta,
              kappa: f.kappa,
              rank: f.rank,
              alpha: f.alpha,
              batchSize: f.batchSize,
              gradAccum: f.gradAccum,
              resolution: f.resolution,
              gradientCheckpointing: f.gradientCheckpointing,
              seed: f.seed,
            },
            settings: {
              holdout: f.holdout,
              negatives: f.negatives,
              checkpointEvery: f.checkpointEvery,
              scoreEvery: f.scoreEvery,
              previews: prompts.length ? { every: f.previewEvery, prompts, steps: f.previewSteps, guidance: 7.5, sampler: 'ddim', seed: 1 } : undefined,
            },
          };
        };

        const newView = (id: string, info?: RunInfo): RunView => ({
          id,
          status: info?.status ?? 'running',
          step: info?.step ?? 0,
          steps: info?.steps ?? get().form.steps,
          metrics: emptyMetrics(),
          previews: [],
          log: [],
          error: info?.error ? { kind: 'error', message: info.error } : null,
          startedAt: null,
        });

        return {
          form: formFor('tdpo'),
          nativeSize: null,
          runs: [],
          view: null,
          error: null,

          setForm(patch) {
            set({ form: { ...get().form, ...patch } });
          },

          applyPreset(preset) {
            const form = formFor(get().form.method, preset);
            const native = get().nativeSize;
            set({ form: native ? { ...form, resolution: Math.min(form.resolution, native) } : form });
          },

          fitToModel(nativeSize) {
            if (get().nativeSize === nativeSize) return;
            set({ nativeSize, form: { ...get().form, resolution: nativeSize } });
          },

          async refreshRuns() {
            const r = await client().lab.listRuns();
            if (r.ok) set({ runs: [...r.value].sort((a, b) => b.startedAt - a.startedAt) });
          },

          async openRun(id) {
            dropUrls();
            const info = get().runs.find((r) => r.id === id);
            set({ view: newView(id, info), error: null });
            const metrics = await client().lab.metrics(id);
            const view = get().view;
            if (!view || view.id !== id) return;
            let m = emptyMetrics();
            if (metrics.ok) for (const row of metrics.value) m = addStep(m, row);
            // Live steps that arrived while reading stay (addStep keeps the order).
            for (let i = 0; i < view.metrics.step.length; i++) {
              const row: Record<string, unknown> = { step: view.metrics.step[i] };
              for (const s of SERIES) row[s] = view.metrics[s][i];
              m = addStep(m, row);
            }
            set({ view: { ...view, metrics: m } });
            // The previews saved so far.
            const previews = await client().lab.previews(id);
            if (previews.ok) for (const p of previews.value) await loadPreview(id, p.step, p.folder, p.images.map((i) => i.file));
          },

          async start() {
            const req = request();
            if (!req) {
              set({ error: { kind: 'input', message: 'Choose a dataset on the Data screen first.' } });
              return;
            }
            set({ error: null });
            dropUrls();
            const r = await client().lab.startRun(req, onEvent);
            if (!r.ok) {
              set({ error: r.error });
              return;
            }
            // Events may have arrived before the id: they were for no view; the metrics file catches up.
            set({ view: { ...newView(r.value.run), steps: req.config.steps ?? get().form.steps } });
            await get().refreshRuns();
          },

          async pause() {
            const view = get().view;
            if (!view) return;
            const r = await client().lab.pauseRun(view.id);
            if (!r.ok) {
              set({ error: r.error });
              return;
            }
            set({ view: { ...view, status: 'paused' } });
          },

          async resume() {
            const view = get().view;
            if (!view) return;
            set({ error: null });
            if (view.status === 'paused') {
              const r = await client().lab.continueRun(view.id);
              if (!r.ok) {
              set({ error: r.error });
              return;
            }
              set({ view: { ...view, status: 'running' } });
              return;
            }
            const r = await client().lab.resumeRun(view.id, onEvent);
            if (!r.ok) {
              set({ error: r.error });
              return;
            }
            set({ view: { ...get().view!, status: 'running', error: null, startedAt: null } });
          },

          async cancel() {
            const view = get().view;
            if (!view) return;
            const r = await client().lab.cancelRun(view.id);
            if (!r.ok) set({ error: r.error });
          },

          async deleteRun(id) {
            const r = await client().lab.deleteRun(id);
            if (!r.ok) {
              set({ error: r.error });
              return;
            }
            if (get().view?.id === id) {
              dropUrls();
              set({ view: null });
            }
            await get().refreshRuns();
          },
        };
      },
      // The next run's settings survive a reload; runs and views come from the lab's storage.
      { name: 'tpo-lab.train-form', partialize: (s) => ({ form: s.form, nativeSize: s.nativeSize }) },
    ),
  );
}

export const useTrainStore = createTrainStore(engine);
