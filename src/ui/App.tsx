// The lab's page: one screen at a time, chosen in the tab bar. Each screen keeps its state in its own store,
// so switching screens loses nothing.

import { useEffect, useState, useTransition } from 'react';
import { useDataStore } from './data/store';
import { startDemo } from './demo';
import { useModelStore } from './model/store';
import { useSamplesStore } from './samples/store';
import { useTrainStore } from './train/store';
import { DataScreen } from './data/DataScreen';
import { ExportScreen } from './export/ExportScreen';
import { ModelScreen } from './model/ModelScreen';
import { PairsScreen } from './pairs/PairsScreen';
import { SamplesScreen } from './samples/SamplesScreen';
import { ScoresScreen } from './scores/ScoresScreen';
import { TrainScreen } from './train/TrainScreen';

const SCREENS = [
  { id: 'model', label: 'Model', Screen: ModelScreen },
  { id: 'data', label: 'Data', Screen: DataScreen },
  { id: 'pairs', label: 'Pairs', Screen: PairsScreen },
  { id: 'train', label: 'Train', Screen: TrainScreen },
  { id: 'scores', label: 'Scores', Screen: ScoresScreen },
  { id: 'samples', label: 'Samples', Screen: SamplesScreen },
  { id: 'export', label: 'Export', Screen: ExportScreen },
] as const;

type ScreenId = (typeof SCREENS)[number]['id'];

export function App() {
  const [current, setCurrent] = useState<ScreenId>('model');
  // A screen is rendered as a transition: React renders it in slices that yield to the browser, so opening a
  // screen while a run streams its steps does not hold the main thread for one long task.
  const [, startTransition] = useTransition();
  const screen = SCREENS.find((s) => s.id === current) ?? SCREENS[0];
  // The datasets (and the one worked on last time) for every screen, not only once the Data screen opens.
  useEffect(() => {
    void useDataStore.getState().refresh();
    void startDemo();
  }, []);
  // Training and drawing follow the open model's native size (64 px for the demo, 512 px for SD1.5).
  useEffect(
    () =>
      useModelStore.subscribe((s, before) => {
        if (s.model.status !== 'open' || (before.model.status === 'open' && before.model.info === s.model.info)) return;
        const native = s.model.info.unet.sampleSize * s.model.info.vae.downsample;
        useTrainStore.getState().fitToModel(native);
        useSamplesStore.getState().fitToModel(native);
      }),
    [],
  );
  return (
    <div className="page">
      <header className="page-header">
        <h1>TPO Lab</h1>
        <p className="tagline">
          Text Preference Optimization for Stable Diffusion v1.5, in your browser, on your GPU: no server, no upload.
        </p>
      </header>
      <nav aria-label="Screens">
        <ul className="tabs">
          {SCREENS.map((s) => (
            <li key={s.id}>
              <button type="button" aria-current={s.id === current ? 'page' : undefined} onClick={() => startTransition(() => setCurrent(s.id))}>
                {s.label}
              </button>
            </li>
          ))}
        </ul>
      </nav>
      <main>
        <screen.Screen />
      </main>
    </div>
  );
}
