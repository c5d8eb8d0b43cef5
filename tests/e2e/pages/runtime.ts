// What the runtime e2e test calls through page.evaluate: the engine client (src/worker/client.ts) as the
// app's screens will use it, over the files set on this page's two folder inputs. Run events are recorded
// here by run id; a run can be told to lose its GPU device, or to have Node shrink the storage quota (an
// exposed function), right after a given checkpoint, from inside the event stream so the timing is exact.

import type { LabRunEvent, PairsEvent, Result } from '../../../src/worker/api';
import { createEngineClient } from '../../../src/worker/client';

const client = createEngineClient();
const events = new Map<string, LabRunEvent[]>();
const pairsEvents: PairsEvent[] = [];
const progress: [number, number][] = [];

/** What to do when a run reports a checkpoint. */
interface Plan {
  loseDeviceAt?: number;
  fillStorageAt?: number;
}
const plans = new Map<string, Plan>();
let nextPlan: Plan = {};

function record(e: LabRunEvent): void {
  const list = events.get(e.run) ?? [];
  list.push(e);
  events.set(e.run, list);
  // A run's first events can arrive before startRun has answered with its id.
  if (!plans.has(e.run)) plans.set(e.run, nextPlan);
  const plan = plans.get(e.run)!;
  if (e.type === 'checkpoint' && e.step === plan.loseDeviceAt) {
    plan.loseDeviceAt = undefined;
    void client.lab.simulateDeviceLoss();
  }
  if (e.type === 'checkpoint' && e.step === plan.fillStorageAt) {
    plan.fillStorageAt = undefined;
    void (window as unknown as { tpoFillStorage(): Promise<void> }).tpoFillStorage();
  }
}

const files = (id: string) => [...((document.getElementById(id) as HTMLInputElement).files ?? [])];

function unwrap<T>(r: Result<T>): T {
  if (!r.ok) throw new Error(`${r.error.kind}: ${r.error.message}`);
  return r.value;
}

function base64(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

const api = {
  probe: () => client.probe(),
  heartbeat: () => client.heartbeat(),
  openModel: () => client.lab.openModel({ kind: 'files', files: files('model') }),
  openSingleFile: () => client.lab.openModel({ kind: 'single-file', file: files('single')[0] }),
  importDataset: async (name: string) => client.lab.importDataset(files('dataset'), name, {}, (done, total) => progress.push([done, total])),
  makeNegatives: (dataset: string) => client.lab.makeNegatives('negatives', dataset, { principles: ['attribute'], perCaption: 1, rules: true, seed: 3 }, (e) => pairsEvents.push(e)),
  pairsEvents: () => pairsEvents,
  datasetItems: (dataset: string) => client.lab.datasetItems(dataset),
  listDatasets: () => client.lab.listDatasets(),
  prepare: (dataset: string) => {
    progress.length = 0;
    return client.lab.prepareFeatures(dataset, { method: 'tdpo', resolution: 64 }, (done, total) => progress.push([done, total]));
  },
  progress: () => progress,
  startRun: async (dataset: string, plan: Plan = {}) => {
    nextPlan = { ...plan };
    const r = await client.lab.startRun(
      {
        dataset,
        config: { method: 'tdpo', steps: 3, resolution: 64, rank: 2, lr: 1e-3, batchSize: 2, seed: 7 },
        // Previews of the base model and of step 3 (they draw nothing from the trainer's random streams).
        settings: { holdout: 0.25, checkpointEvery: 1, scoreDraws: 1, dtype: 'fp32', previews: { every: 3, prompts: ['a red circle on the left'], steps: 2, guidance: 3, sampler: 'ddim', seed: 1 } },
      },
      record,
    );
    if (r.ok && !plans.has(r.value.run)) plans.set(r.value.run, nextPlan);
    return r;
  },
  /** Resumes a run; its events so far are dropped, so `ended` waits for the resumed run's end. */
  resumeRun: (run: string) => {
    events.delete(run);
    return client.lab.resumeRun(run, record);
  },
  events: (run: string) => events.get(run) ?? [],
  /** The run's last status event, when it has stopped ('done', 'stopped', 'failed'). */
  ended: (run: string) => (events.get(run) ?? []).filter((e) => e.type === 'status' && e.status !== 'running' && e.status !== 'paused').at(-1) ?? null,
  checkpoints: (run: string) => (events.get(run) ?? []).filter((e) => e.type === 'checkpoint').length,
  listRuns: () => client.lab.listRuns(),
  runInfo: (run: string) => client.lab.runInfo(run),
  scores: (run: string) => client.lab.scores(run),
  metrics: (run: string) => client.lab.metrics(run),
  storage: () => client.lab.storage(),
  /** The LoRA file as base64 (page.evaluate cannot return bytes), or the failure. */
  exportLora: async (run: string, format: 'kohya' | 'diffusers') => {
    const r = await client.lab.exportLora(run, { format, dtype: 'fp32' });
    return r.ok ? { ok: true as const, name: r.value.name, base64: base64(r.value.bytes), size: r.value.bytes.byteLength } : r;
  },
  /** A run's file (a preview PNG) as base64, or null. */
  runFile: async (run: string, file: string) => {
    const bytes = unwrap(await client.lab.runFile(run, file));
    return bytes ? base64(bytes) : null;
  },
  datasetImageSize: async (dataset: string, image: string) => unwrap(await client.lab.datasetImage(dataset, image)).byteLength,
};

export type RuntimeTestApi = typeof api;
(window as unknown as { runtime: RuntimeTestApi }).runtime = api;
document.title = 'runtime e2e ready';
