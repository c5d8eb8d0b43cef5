// The Train screen: the method and every hyper-parameter (defaults from the spec, a one-line explanation
// each, presets), start / pause / resume / cancel, progress with an ETA, live charts of the step metrics, the
// preview samples as they are made, and the run list.

import { type ChangeEvent, memo, useEffect, useId } from 'react';
import { useDataStore } from '../data/store';
import { useModelStore } from '../model/store';
import { Chart } from './Chart';
import { type PresetName, type RunView, type TrainForm, formFor, useTrainStore } from './store';
import { ErrorNotice } from '../ErrorNotice';
import { datasetSize, formatCount } from '../format';
import { formatBytes } from '../../util/format';
import { METHODS_FOR } from '../../tpo/examples';
import type { LossMethod } from '../../tpo/methods';
import type { RunInfo } from '../../worker/api';

interface Field {
  key: keyof TrainForm;
  label: string;
  help: string;
  kind: 'number' | 'checkbox' | 'select' | 'textarea';
  step?: number;
  min?: number;
  options?: [string, string][];
}

/** Every setting of a run besides Method and Steps, with what it does in a line. */
const FIELDS: Field[] = [
  { key: 'lr', label: 'Learning rate', kind: 'number', step: 1e-5, min: 0, help: 'How far each step moves the LoRA; 1e-4 is usual for SD1.5 LoRAs.' },
  { key: 'lrSchedule', label: 'Learning-rate schedule', kind: 'select', options: [['constant', 'constant'], ['cosine', 'cosine decay']], help: 'Constant, or decaying to zero along a cosine by the last step.' },
  { key: 'warmupSteps', label: 'Warm-up steps', kind: 'number', min: 0, help: 'Steps over which the learning rate rises from zero: steadier starts.' },
  { key: 'beta', label: 'β (preference strength)', kind: 'number', min: 0, help: 'Scales the errors into preferences: higher lets smaller differences count (TDPO 2500, TKTO 1000).' },
  { key: 'kappa', label: 'κ (clip of the mismatched term)', kind: 'number', min: 0, help: 'Bounds how much making mismatched captions worse may help the loss (logit units; empty: no clip).' },
  { key: 'rank', label: 'LoRA rank', kind: 'number', min: 1, help: 'Size of each low-rank update: more can learn more, and the file grows.' },
  { key: 'alpha', label: 'LoRA alpha', kind: 'number', min: 0, help: 'Scales the update by alpha / rank; equal to the rank is the usual choice.' },
  { key: 'batchSize', label: 'Batch size', kind: 'number', min: 1, help: 'Examples per step, on the GPU at once: more memory.' },
  { key: 'gradAccum', label: 'Gradient accumulation', kind: 'number', min: 1, help: 'Batches summed into one step: a larger effective batch without more memory.' },
  { key: 'resolution', label: 'Resolution (px)', kind: 'number', min: 64, step: 64, help: 'Images are resized and cropped to this square; 512 is SD1.5’s own.' },
  { key: 'gradientCheckpointing', label: 'Gradient checkpointing', kind: 'checkbox', help: 'Recomputes activations in the backward pass: much less memory, about 30% slower.' },
  { key: 'seed', label: 'Seed', kind: 'number', min: 0, help: 'Fixes the noise, timesteps and order: the same seed gives the same run.' },
  { key: 'holdout', label: 'Held-out share', kind: 'number', min: 0, step: 0.05, help: 'Part of the pairs kept out of training to see whether the preference generalises.' },
  { key: 'negatives', label: 'Negatives used', kind: 'select', options: [['all', 'all but rejected'], ['accepted', 'accepted only']], help: 'Which mismatched captions train: everything not rejected, or only what you accepted.' },
  { key: 'checkpointEvery', label: 'Checkpoint every (steps)', kind: 'number', min: 1, help: 'How often the run is saved to resume from after a reload, a crash or a lost GPU.' },
  { key: 'scoreEvery', label: 'Scores every (steps)', kind: 'number', min: 0, help: 'How often the implicit preference scores are computed (0: at the end only).' },
  { key: 'previewPrompts', label: 'Preview prompts', kind: 'textarea', help: 'One per line: images drawn with the LoRA as it trains, at a fixed seed (empty: none).' },
  { key: 'previewEvery', label: 'Previews every (steps)', kind: 'number', min: 1, help: 'How often the preview prompts are drawn.' },
  { key: 'previewSteps', label: 'Preview sampling steps', kind: 'number', min: 1, help: 'Denoising steps per preview image (DDIM): fewer is faster.' },
];

const PRESETS: [PresetName, string][] = [
  ['quick', 'Quick test'],
  ['default', 'Default'],
  ['careful', 'Careful'],
];

const METHOD_HELP: Record<LossMethod, string> = {
  tdpo: 'TDPO: prefers each image under its own caption over a subtly wrong one (pairs).',
  tkto: 'TKTO: the same preference, judged per caption against a reference point (no pairing needed).',
  sft: 'SFT: plain fine-tuning on the right captions only (a baseline).',
  dpo: 'Diffusion-DPO: prefers the preferred image of each pair over the rejected one, under their prompt.',
  kto: 'Diffusion-KTO: makes desirable images likelier and undesirable ones less likely, each under its caption.',
};

export function TrainScreen() {
  const refreshRuns = useTrainStore((s) => s.refreshRuns);
  useEffect(() => {
    void refreshRuns();
  }, [refreshRuns]);
  return (
    <>
      <SettingsCard />
      <RunCard />
      <RunList />
    </>
  );
}

function SettingsCard() {
  const form = useTrainStore((s) => s.form);
  // Only whether a run is going, not the run itself: this card must not re-render at each step event.
  const active = useTrainStore((s) => s.view !== null && (s.view.status === 'running' || s.view.status === 'paused'));
  const error = useTrainStore((s) => s.error);
  const { setForm, applyPreset, start } = useTrainStore.getState();
  const dataset = useDataStore((s) => s.datasets.find((d) => d.id === s.current));
  const model = useModelStore((s) => s.model);
  const methodId = useId();
  const stepsId = useId();
  const modelOpen = model.status === 'open' || (model.status === 'error' && model.previous !== null);
  // The methods this data trains with: captions with negatives (TDPO, TKTO, SFT), image pairs (DPO), labels (KTO).
  const kind = dataset?.kind ?? 'tpo';
  const methods = METHODS_FOR[kind];
  const chooseMethod = (method: LossMethod) => {
    // The method's own defaults (β and κ differ), keeping the length of the run, its size and the preview prompts.
    const f = useTrainStore.getState().form;
    setForm({ ...formFor(method), steps: f.steps, resolution: f.resolution, previewPrompts: f.previewPrompts });
  };
  // Once the dataset is known: a method it cannot train with (the last one used, on other data) gives way.
  useEffect(() => {
    if (dataset && !methods.includes(form.method)) chooseMethod(methods[0]);
  });

  return (
    <section className="card" aria-labelledby="train-heading">
      <h2 id="train-heading">Train</h2>
      <p className="muted">
        {dataset
          ? `Dataset: ${dataset.name} (${datasetSize(dataset)}${dataset.kind === 'tpo' ? `, ${formatCount(dataset.stats.negatives)} negatives` : ''}).`
          : 'Choose a dataset on the Data screen.'}{' '}
        {modelOpen ? '' : 'Open a model on the Model screen.'}
      </p>
      <div className="form-grid">
        <div className="field">
          <label htmlFor={methodId}>Method</label>
          <select
            id={methodId}
            value={form.method}
            onChange={(e) => chooseMethod(e.target.value as LossMethod)}
          >
            {(methods.includes(form.method) ? methods : [...methods, form.method]).map((m) => (
              <option key={m} value={m}>
                {m}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor={stepsId}>Steps</label>
          <input id={stepsId} type="number" min={1} value={form.steps} onChange={(e) => setForm({ steps: Number(e.target.value) })} />
        </div>
        <div className="presets" role="group" aria-label="Presets">
          {PRESETS.map(([name, label]) => (
            <button key={name} type="button" className="small" onClick={() => applyPreset(name)}>
              {label}
            </button>
          ))}
        </div>
      </div>
      <p className="muted">{METHOD_HELP[form.method]}</p>
      <details className="all-settings">
        <summary>All settings</summary>
        <div className="settings-list">
          {FIELDS.filter((f) => f.key !== 'negatives' || kind === 'tpo').map((f) => (
            <SettingField key={f.key} field={f} form={form} setForm={setForm} />
          ))}
        </div>
      </details>
      <div className="toolbar">
        <button type="button" className="primary" onClick={() => void start()} disabled={active || !dataset || !modelOpen}>
          Start training
        </button>
      </div>
      <ErrorNotice error={error} />
    </section>
  );
}

const SettingField = memo(function SettingField({ field, form, setForm }: { field: Field; form: TrainForm; setForm(p: Partial<TrainForm>): void }) {
  const id = useId();
  const value = form[field.key];
  const onNumber = (e: ChangeEvent<HTMLInputElement>) => {
    const raw = e.target.value.trim();
    // κ may be empty (no clip); other numbers keep their last value while being typed.
    if (field.key === 'kappa' && raw === '') return setForm({ kappa: null });
    const n = Number(raw);
    if (raw !== '' && Number.isFinite(n)) setForm({ [field.key]: n } as Partial<TrainForm>);
  };
  let control;
  if (field.kind === 'checkbox') control = <input id={id} type="checkbox" checked={value as boolean} onChange={(e) => setForm({ [field.key]: e.target.checked } as Partial<TrainForm>)} />;
  else if (field.kind === 'select')
    control = (
      <select id={id} value={String(value)} onChange={(e) => setForm({ [field.key]: e.target.value } as Partial<TrainForm>)}>
        {field.options!.map(([v, label]) => (
          <option key={v} value={v}>
            {label}
          </option>
        ))}
      </select>
    );
  else if (field.kind === 'textarea') control = <textarea id={id} rows={2} value={value as string} onChange={(e) => setForm({ [field.key]: e.target.value } as Partial<TrainForm>)} />;
  else control = <input id={id} type="number" min={field.min} step={field.step ?? 1} value={value === null ? '' : String(value)} onChange={onNumber} />;
  return (
    <div className="setting">
      <label htmlFor={id}>{field.label}</label>
      {control}
      <p className="muted setting-help">{field.help}</p>
    </div>
  );
});

const fmt = {
  loss: (v: number) => v.toFixed(3),
  accuracy: (v: number) => `${Math.round(v * 100)}%`,
  meanMargin: (v: number) => v.toFixed(3),
  clipFraction: (v: number) => `${Math.round(v * 100)}%`,
  lr: (v: number) => v.toExponential(1),
  stepTime: (v: number) => `${v.toFixed(v < 10 ? 2 : 0)} s`,
};

/** Accuracy and fractions: 0 to 100%. (One array, so the charts are not rebuilt at each render.) */
const UNIT_RANGE: [number, number] = [0, 1];

function eta(view: RunView): string {
  const times = view.metrics.stepTime.slice(-20).filter((t): t is number => t !== null);
  if (!times.length || view.status !== 'running') return '';
  const perStep = times.reduce((a, b) => a + b, 0) / times.length;
  const seconds = perStep * Math.max(0, view.steps - view.step);
  if (seconds < 90) return `about ${Math.ceil(seconds)} s left`;
  if (seconds < 5400) return `about ${Math.round(seconds / 60)} min left`;
  return `about ${(seconds / 3600).toFixed(1)} h left`;
}

function RunCard() {
  const view = useTrainStore((s) => s.view);
  const { pause, resume, cancel } = useTrainStore.getState();
  if (!view) return null;
  const m = view.metrics;
  return (
    <section className="card" aria-labelledby="run-heading">
      <h2 id="run-heading">Run {view.id}</h2>
      <div className="toolbar">
        <button type="button" onClick={() => void pause()} disabled={view.status !== 'running'}>
          Pause
        </button>
        <button type="button" onClick={() => void resume()} disabled={view.status !== 'paused' && view.status !== 'stopped'}>
          Resume
        </button>
        <button type="button" onClick={() => void cancel()} disabled={view.status !== 'running' && view.status !== 'paused'}>
          Cancel
        </button>
      </div>
      <p role="status" aria-live="polite" className="run-progress">
        <progress max={view.steps || 1} value={view.step} aria-label="Training progress" /> Step {view.step} of {view.steps} · {view.status}
        {eta(view) && ` · ${eta(view)}`}
      </p>
      <ErrorNotice error={view.error} />
      <div className="charts">
        <Chart title="Loss" steps={m.step} values={m.loss} format={fmt.loss} />
        <Chart title="Implicit accuracy" steps={m.step} values={m.accuracy} format={fmt.accuracy} range={UNIT_RANGE} />
        <Chart title="Mean margin" steps={m.step} values={m.meanMargin} format={fmt.meanMargin} />
        <Chart title="Clip fraction" steps={m.step} values={m.clipFraction} format={fmt.clipFraction} range={UNIT_RANGE} />
        <Chart title="Learning rate" steps={m.step} values={m.lr} format={fmt.lr} />
        <Chart title="Step time" steps={m.step} values={m.stepTime} format={fmt.stepTime} />
      </div>
      {view.previews.length > 0 && (
        <>
          <h3>Previews</h3>
          <div className="previews">
            {view.previews.map((p) => (
              <figure key={p.step}>
                {p.urls.map((url, i) => (
                  <img key={url} src={url} alt={`${p.prompts[i] ?? 'preview'} — ${p.step === 0 ? 'base model' : `step ${p.step}`}`} />
                ))}
                <figcaption>{p.step === 0 ? 'Base model' : `Step ${p.step}`}</figcaption>
              </figure>
            ))}
          </div>
        </>
      )}
      {view.log.length > 0 && (
        <details>
          <summary>Log</summary>
          <pre className="run-log">{view.log.join('\n')}</pre>
        </details>
      )}
    </section>
  );
}

/** A run's shaping settings in one line: "lr 1e-4 constant · batch 4 × 2 · rank 8 (α 8) · 512 px · β 5000". */
function runSettings(r: RunInfo): string {
  const c = r.config;
  if (!c) return '—';
  const batch = c.gradAccum > 1 ? `${c.batchSize} × ${c.gradAccum}` : `${c.batchSize}`;
  return `lr ${c.lr.toExponential(0)} ${c.lrSchedule} · batch ${batch} · rank ${c.rank} (α ${c.alpha}) · ${c.resolution} px · β ${c.beta}`;
}

function RunList() {
  const runs = useTrainStore((s) => s.runs);
  const view = useTrainStore((s) => s.view);
  const { openRun, deleteRun } = useTrainStore.getState();
  if (!runs.length) return null;
  return (
    <section className="card" aria-labelledby="runs-heading">
      <h2 id="runs-heading">Runs</h2>
      <table className="runs">
        <thead>
          <tr>
            <th scope="col">Run</th>
            <th scope="col">Method</th>
            <th scope="col">State</th>
            <th scope="col">Step</th>
            <th scope="col">Settings</th>
            <th scope="col">Size</th>
            <th scope="col">Started</th>
            <th scope="col">
              <span className="visually-hidden">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {runs.map((r) => (
            <tr key={r.id} aria-current={view?.id === r.id ? 'true' : undefined}>
              <td>
                <code>{r.id}</code>
              </td>
              <td>{r.method}</td>
              <td>{r.status}</td>
              <td className="num">
                {r.step} / {r.steps}
              </td>
              <td className="settings">{runSettings(r)}</td>
              <td className="num">{formatBytes(r.bytes)}</td>
              <td>{new Date(r.startedAt * 1000).toLocaleString()}</td>
              <td>
                <button type="button" className="small" aria-label={`Open run ${r.id}`} onClick={() => void openRun(r.id)}>
                  Open
                </button>{' '}
                <button
                  type="button"
                  className="small danger"
                  aria-label={`Delete run ${r.id}`}
                  disabled={r.status === 'running' || r.status === 'paused'}
                  onClick={() => {
                    if (confirm(`Delete run ${r.id} with its checkpoints, LoRA and samples?`)) void deleteRun(r.id);
                  }}
                >
                  Delete
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
