// The Samples screen: draw prompts with chosen seeds on the open model and, beside each image, the same
// prompt and seed with a run's LoRA at a chosen scale, so the LoRA's effect is all that differs. Each image
// can be saved as a PNG that carries its parameters (Automatic1111 reads them back). With a judge open
// (Scores screen), each image shows the judge's score against its prompt.

import { useEffect, useId } from 'react';
import { SAMPLER_LABELS, SAMPLERS, type SamplerName } from '../../diffusion/samplers';
import { downloadBytes, slug } from '../download';
import { useModelStore } from '../model/store';
import { type SampleView, type SamplesForm, useSamplesStore } from './store';
import { ErrorNotice } from '../ErrorNotice';
import { runLabel } from '../runs';
import { scoreName, useJudgeStore } from '../judge/store';

export function SamplesScreen() {
  const refreshRuns = useSamplesStore((s) => s.refreshRuns);
  useEffect(() => {
    void refreshRuns();
  }, [refreshRuns]);
  return (
    <>
      <SampleSettings />
      <SampleResults />
    </>
  );
}

/** A number input that keeps the last good value while the user is typing. */
function NumberField({ label, value, min, max, step, onChange }: { label: string; value: number; min?: number; max?: number; step?: number; onChange(n: number): void }) {
  const id = useId();
  return (
    <label htmlFor={id}>
      {label}
      <input
        id={id}
        type="number"
        min={min}
        max={max}
        step={step ?? 1}
        value={value}
        onChange={(e) => {
          const n = Number(e.target.value);
          if (e.target.value.trim() !== '' && Number.isFinite(n)) onChange(n);
        }}
      />
    </label>
  );
}

function SampleSettings() {
  const form = useSamplesStore((s) => s.form);
  const runs = useSamplesStore((s) => s.runs);
  const status = useSamplesStore((s) => s.status);
  const error = useSamplesStore((s) => s.error);
  const stopped = useSamplesStore((s) => s.stopped);
  const { setForm, generate, stop } = useSamplesStore.getState();
  const model = useModelStore((s) => s.model);
  const modelOpen = model.status === 'open' || (model.status === 'error' && model.previous !== null);
  const ids = { prompts: useId(), seeds: useId(), run: useId(), scale: useId(), sampler: useId(), negative: useId() };
  const running = status.state === 'running';
  const set = (patch: Partial<SamplesForm>) => setForm(patch);

  return (
    <section className="card" aria-labelledby="samples-heading">
      <h2 id="samples-heading">Samples</h2>
      <p className="muted">
        Each prompt is drawn with each seed by the base model and, beside it, with the chosen run&rsquo;s LoRA: the same noise, so
        the difference is the LoRA&rsquo;s. {modelOpen ? '' : 'Open a model on the Model screen first.'}
      </p>
      <div className="setting">
        <label htmlFor={ids.prompts}>Prompts</label>
        <textarea id={ids.prompts} rows={3} value={form.prompts} placeholder="one prompt per line" onChange={(e) => set({ prompts: e.target.value })} />
      </div>
      <div className="form-grid fill-form">
        <div className="field wide">
          <label htmlFor={ids.run}>Run</label>
          <select id={ids.run} value={form.run} onChange={(e) => set({ run: e.target.value })}>
            <option value="">none: base model only</option>
            {runs.map((r) => (
              <option key={r.id} value={r.id}>
                {runLabel(r)}
              </option>
            ))}
          </select>
        </div>
        <div className="scale-field wide">
          <label htmlFor={ids.scale}>LoRA scale</label>
          <div className="scale-inputs">
            <input id={ids.scale} type="range" min={0} max={1.5} step={0.05} value={form.loraScale} disabled={!form.run} onChange={(e) => set({ loraScale: Number(e.target.value) })} />
            <input
              type="number"
              aria-label="LoRA scale value"
              min={0}
              max={1.5}
              step={0.05}
              value={form.loraScale}
              disabled={!form.run}
              onChange={(e) => {
                const n = Number(e.target.value);
                if (e.target.value.trim() !== '' && Number.isFinite(n)) set({ loraScale: n });
              }}
            />
          </div>
        </div>
      </div>
      <div className="form-grid fill-form">
        <label htmlFor={ids.seeds}>
          Seeds
          <input id={ids.seeds} type="text" inputMode="numeric" value={form.seeds} placeholder="1, 2, 3" onChange={(e) => set({ seeds: e.target.value })} />
        </label>
        <NumberField label="Sampling steps" value={form.steps} min={1} max={1000} onChange={(steps) => set({ steps })} />
        <NumberField label="Guidance" value={form.guidance} min={0} step={0.5} onChange={(guidance) => set({ guidance })} />
        <div className="field">
          <label htmlFor={ids.sampler}>Sampler</label>
          <select id={ids.sampler} value={form.sampler} onChange={(e) => set({ sampler: e.target.value as SamplerName })}>
            {SAMPLERS.map((s) => (
              <option key={s} value={s}>
                {SAMPLER_LABELS[s]}
              </option>
            ))}
          </select>
        </div>
        <NumberField label="Width (px)" value={form.width} min={8} step={8} onChange={(width) => set({ width })} />
        <NumberField label="Height (px)" value={form.height} min={8} step={8} onChange={(height) => set({ height })} />
      </div>
      <div className="setting">
        <label htmlFor={ids.negative}>Negative prompt</label>
        <input id={ids.negative} type="text" value={form.negativePrompt} placeholder="optional: what guidance steers away from" onChange={(e) => set({ negativePrompt: e.target.value })} />
      </div>
      <div className="toolbar">
        <button type="button" className="primary" onClick={() => void generate()} disabled={running || !modelOpen}>
          Generate samples
        </button>
        {running && (
          <button type="button" onClick={() => void stop()} disabled={status.stopping}>
            Stop
          </button>
        )}
        <span role="status" aria-live="polite" className="muted">
          {running && (
            <>
              <progress max={status.total || 1} value={status.done} aria-label="Sampling progress" />{' '}
              {status.stopping
                ? 'stopping after the image in flight…'
                : status.total
                  ? `step ${status.done} of ${status.total}`
                  : 'starting (the first time, the model is loaded onto the GPU)…'}
            </>
          )}
          {!running && stopped && (stopped.drawn ? `Stopped: ${stopped.drawn} of ${stopped.asked} images drawn (below).` : 'Stopped before the first image was drawn.')}
        </span>
      </div>
      <ErrorNotice error={error} />
    </section>
  );
}

function SampleResults() {
  const images = useSamplesStore((s) => s.images);
  const drawnWith = useSamplesStore((s) => s.drawnWith);
  const judged = useSamplesStore((s) => s.judged);
  const judgeError = useSamplesStore((s) => s.judgeError);
  const judge = useJudgeStore((s) => s.info);
  // With a judge open (Scores screen), the images shown are scored by it: again when either changes.
  useEffect(() => {
    if (judge && images.length && (judged?.images !== images || judged.judge !== judge)) void useSamplesStore.getState().judgeImages(judge);
  }, [judge, images, judged]);
  const scores = judge && judged?.images === images && judged.judge === judge ? judged.scores : null;
  if (!images.length) return null;
  return (
    <section className="card" aria-labelledby="sample-results-heading">
      <h2 id="sample-results-heading">Images</h2>
      <p className="muted">
        {drawnWith ? `Left: the base model. Right: ${drawnWith.name} (step ${drawnWith.step}) at scale ${drawnWith.scale}.` : 'The base model alone.'}
      </p>
      <div className="sample-pairs">
        {images.map((pair, i) => (
          <SamplePairView key={`${pair.prompt}\n${pair.seed}`} pair={pair} lora={drawnWith} judge={scores && judge ? { name: scoreName(judge.kind), ...scores[i] } : null} />
        ))}
      </div>
      {judge && !scores && !judgeError && <p className="muted" role="status">Scoring the images with the judge…</p>}
      <ErrorNotice error={judgeError} />
    </section>
  );
}

function SamplePairView({ pair, lora, judge }: { pair: SampleView; lora: { scale: number } | null; judge: { name: string; base: number; lora: number | null } | null }) {
  const name = (variant: string) => `${slug(pair.prompt)}-${pair.seed}-${variant}.png`;
  const shown = [
    { image: pair.base, what: 'base model', file: name('base'), score: judge?.base ?? null },
    ...(pair.lora && lora ? [{ image: pair.lora, what: `LoRA at ${lora.scale}`, file: name('lora'), score: judge?.lora ?? null }] : []),
  ];
  return (
    <figure className="sample-pair">
      <div className="sample-images">
        {shown.map(({ image, what, file, score }) => (
          <div key={what} className="sample-image">
            <img src={image.url} alt={`${pair.prompt} — seed ${pair.seed}, ${what}`} />
            <span className="muted">{what}</span>
            {judge && score !== null && (
              <span className="judge-score">
                {judge.name} {score.toFixed(1)}
              </span>
            )}
            <button type="button" className="small" aria-label={`Save image: ${what}, seed ${pair.seed}, ${pair.prompt}`} onClick={() => downloadBytes(image.bytes, file, 'image/png')}>
              Save image
            </button>
          </div>
        ))}
      </div>
      <figcaption>
        {pair.prompt} <span className="muted">· seed {pair.seed}</span>
      </figcaption>
    </figure>
  );
}
