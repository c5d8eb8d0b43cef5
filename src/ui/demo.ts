// The built-in demo at start (issue #16): once the GPU answers, the demo model (public/demo/, served with the
// app) opens when no other model is open, and on the first visit the shapes demo data set is added, so a
// fresh lab is one click from negatives and two from training. The user can turn the model's opening off on
// the Model screen; a data set they delete is not added again.

import { useDataStore } from './data/store';
import { useModelStore } from './model/store';
import { useGpuStore } from './store';

const OPEN_AT_START_KEY = 'tpo-lab.demo.open-at-start';
const DATASET_ADDED_KEY = 'tpo-lab.demo.dataset-added';

function read(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage refused (private mode): the defaults
  }
}

function write(key: string, value: string): void {
  try {
    localStorage.setItem(key, value);
  } catch {
    // not kept: the default comes back next time
  }
}

/** Whether the demo model opens when the lab starts (the default). */
export function demoOpensAtStart(): boolean {
  return read(OPEN_AT_START_KEY) !== 'no';
}

export function setDemoOpensAtStart(on: boolean): void {
  write(OPEN_AT_START_KEY, on ? 'yes' : 'no');
}

export function openDemoModel(): Promise<void> {
  return useModelStore.getState().open({ kind: 'demo' }, 'the demo model');
}

/** Whether the app's server has the demo model (its model_index.json). */
async function demoServed(): Promise<boolean> {
  try {
    const response = await fetch(`${import.meta.env.BASE_URL}demo/model_index.json`);
    // A single-page-app fallback answers unknown paths with index.html: that is not the demo.
    return response.ok && (response.headers.get('content-type') ?? '').includes('json');
  } catch {
    return false;
  }
}

let started = false;

/** Called once when the page starts; waits for the GPU probe, then sets the demo up as described above. */
export async function startDemo(): Promise<void> {
  if (started) return;
  started = true;
  if (useGpuStore.getState().probe.status === 'idle') void useGpuStore.getState().runProbe();
  const probe = await new Promise<string>((resolve) => {
    const done = (status: string) => status !== 'idle' && status !== 'loading';
    const now = useGpuStore.getState().probe.status;
    if (done(now)) return resolve(now);
    const stop = useGpuStore.subscribe((s) => {
      if (!done(s.probe.status)) return;
      stop();
      resolve(s.probe.status);
    });
  });
  // Without a GPU the lab cannot open a model; the GPU panel says why.
  if (probe !== 'ready') return;
  const openModel = demoOpensAtStart() && useModelStore.getState().model.status === 'none';
  const addDataset = read(DATASET_ADDED_KEY) === null;
  if (!openModel && !addDataset) return;
  // A checkout where `npm run build:demo` has not run serves no demo: then nothing happens at start (the
  // Model screen's button says how to build it).
  if (!(await demoServed())) return;
  if (openModel) await openDemoModel();
  if (addDataset) {
    const data = useDataStore.getState();
    await data.refresh();
    if (useDataStore.getState().datasets.length === 0) await data.importDemo();
    write(DATASET_ADDED_KEY, new Date().toISOString());
  }
}
