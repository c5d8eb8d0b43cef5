// The lab's page: one screen at a time, chosen in the tab bar. Each screen keeps its state in its own store,
// so switching screens loses nothing.

import { useState } from 'react';
import { DataScreen } from './data/DataScreen';
import { ExportScreen } from './export/ExportScreen';
import { ModelScreen } from './model/ModelScreen';
import { SamplesScreen } from './samples/SamplesScreen';
import { TrainScreen } from './train/TrainScreen';

const SCREENS = [
  { id: 'model', label: 'Model', Screen: ModelScreen },
  { id: 'data', label: 'Data', Screen: DataScreen },
  { id: 'train', label: 'Train', Screen: TrainScreen },
  { id: 'samples', label: 'Samples', Screen: SamplesScreen },
  { id: 'export', label: 'Export', Screen: ExportScreen },
] as const;

type ScreenId = (typeof SCREENS)[number]['id'];

export function App() {
  const [current, setCurrent] = useState<ScreenId>('model');
  const screen = SCREENS.find((s) => s.id === current) ?? SCREENS[0];
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
              <button type="button" aria-current={s.id === current ? 'page' : undefined} onClick={() => setCurrent(s.id)}>
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
