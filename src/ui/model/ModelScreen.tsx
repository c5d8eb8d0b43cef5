// The Model screen: open a Stable Diffusion 1.5 model from disk (a diffusers folder, or one .safetensors
// checkpoint read with the SD1.5 configs the app ships), see its architecture and size, the GPU, and whether
// training with the chosen settings fits in the GPU's memory before anything starts.

import { type ChangeEvent, useEffect, useId, useState } from 'react';
import { forgetModelFolder, recallModelFolder } from '../../app/model-sources';
import type { EngineError, ModelInfo } from '../../worker/api';
import { formatCount } from '../format';
import { formatBytes } from '../../util/format';
import { demoOpensAtStart, openDemoModel, setDemoOpensAtStart } from '../demo';
import { GpuPanel } from '../GpuPanel';
import { type PlanForm, useModelStore } from './store';

export function ModelScreen() {
  return (
    <>
      <OpenModel />
      <MemoryPlanCard />
      <GpuPanel />
    </>
  );
}

function OpenModel() {
  const model = useModelStore((s) => s.model);
  const open = useModelStore((s) => s.open);
  const busy = model.status === 'opening';
  const folderId = useId();
  const fileId = useId();

  const onFolder = (e: ChangeEvent<HTMLInputElement>) => {
    const files = [...(e.target.files ?? [])];
    e.target.value = '';
    if (files.length) void open({ kind: 'files', files }, files[0].webkitRelativePath.split('/')[0] || 'the folder');
  };
  const onFile = (e: ChangeEvent<HTMLInputElement>) => {
    const file = e.target.files?.[0];
    e.target.value = '';
    if (file) void open({ kind: 'single-file', file }, file.name);
  };

  // Where the browser has directory handles (Chromium), a folder can be remembered and reopened after a
  // reload with one click (the browser asks for read permission again).
  const canPickFolder = typeof window !== 'undefined' && 'showDirectoryPicker' in window;
  const [remembered, setRemembered] = useState<FileSystemDirectoryHandle | null>(null);
  const [reopenError, setReopenError] = useState('');
  useEffect(() => {
    void recallModelFolder()
      .then((r) => setRemembered(r?.handle ?? null))
      .catch(() => setRemembered(null));
  }, []);
  const pickFolder = async () => {
    try {
      const handle = await (window as unknown as { showDirectoryPicker(o: { mode: 'read' }): Promise<FileSystemDirectoryHandle> }).showDirectoryPicker({ mode: 'read' });
      setRemembered(handle);
      await open({ kind: 'directory', handle, remember: true }, handle.name);
    } catch (e) {
      if ((e as Error).name !== 'AbortError') setReopenError((e as Error).message);
    }
  };
  const reopen = async () => {
    if (!remembered) return;
    setReopenError('');
    const h = remembered as unknown as { requestPermission?(d: { mode: 'read' }): Promise<PermissionState> };
    const state = h.requestPermission ? await h.requestPermission({ mode: 'read' }).catch(() => 'denied' as const) : 'granted';
    if (state !== 'granted') return setReopenError(`Reading ${remembered.name} was not allowed: allow it when the browser asks, or pick the folder again.`);
    await open({ kind: 'directory', handle: remembered }, remembered.name);
  };

  return (
    <section className="card" aria-labelledby="model-heading">
      <h2 id="model-heading">Model</h2>
      <p className="muted">
        A Stable Diffusion 1.5 model already on your disk: its diffusers folder (with <code>unet/</code>, <code>vae/</code>,{' '}
        <code>text_encoder/</code>, <code>tokenizer/</code>) or one <code>.safetensors</code> checkpoint. The files are read
        here, in this tab, as the training needs them: nothing is copied or uploaded.
      </p>
      <div className="pickers">
        <div className="picker">
          <label htmlFor={folderId}>Model folder</label>
          {/* webkitdirectory: the browser asks for a folder and hands over every file in it. */}
          <input id={folderId} type="file" {...{ webkitdirectory: '' }} onChange={onFolder} disabled={busy} />
        </div>
        <div className="picker">
          <label htmlFor={fileId}>Model file</label>
          <input id={fileId} type="file" accept=".safetensors" onChange={onFile} disabled={busy} />
        </div>
      </div>
      <DemoModel busy={busy} />
      {(canPickFolder || remembered) && (
        <div className="toolbar">
          {canPickFolder && (
            <button type="button" onClick={() => void pickFolder()} disabled={busy}>
              Choose and remember a folder…
            </button>
          )}
          {remembered && (
            <>
              <button type="button" className="primary" onClick={() => void reopen()} disabled={busy}>
                Reopen {remembered.name}
              </button>
              <button
                type="button"
                className="small"
                onClick={() => {
                  void forgetModelFolder().then(() => setRemembered(null));
                }}
              >
                Forget it
              </button>
            </>
          )}
        </div>
      )}
      {reopenError && (
        <div className="notice notice-error" role="alert">
          <p>{reopenError}</p>
        </div>
      )}
      <div role="status" aria-live="polite">
        {busy && <p className="muted">Opening {model.what}: reading its configs and checking every weight's shape…</p>}
        {model.status === 'open' && <ModelDetails info={model.info} />}
        {model.status === 'error' && <ModelError error={model.error} previous={model.previous} />}
      </div>
    </section>
  );
}

/** The built-in demo model (public/demo/): one click to open, and whether it opens at start. */
function DemoModel({ busy }: { busy: boolean }) {
  const [atStart, setAtStart] = useState(demoOpensAtStart);
  return (
    <div className="demo-model">
      <p className="muted">
        No model at hand? The demo model is a small model of the lab&apos;s own shapes world (64 px, a few MB, served with the app): every
        step works with it, in minutes even without a GPU.
      </p>
      <div className="toolbar">
        <button type="button" onClick={() => void openDemoModel()} disabled={busy}>
          Load demo
        </button>
        <label className="checkbox plain">
          <input
            type="checkbox"
            checked={atStart}
            onChange={(e) => {
              setDemoOpensAtStart(e.target.checked);
              setAtStart(e.target.checked);
            }}
          />
          Open it when the lab starts
        </label>
      </div>
    </div>
  );
}

function ModelError({ error, previous }: { error: EngineError; previous: ModelInfo | null }) {
  return (
    <>
      <div className="notice notice-error" role="alert">
        <h3>The model could not be opened</h3>
        <p>{error.message}</p>
      </div>
      {previous && (
        <>
          <p className="muted">Still open: {previous.name}.</p>
          <ModelDetails info={previous} />
        </>
      )}
    </>
  );
}

function ModelDetails({ info }: { info: ModelInfo }) {
  const u = info.unet;
  return (
    <dl className="facts model-facts" aria-label="Model details">
      <div>
        <dt>Model</dt>
        <dd>
          {info.name} <span className="muted">({info.kind === 'folder' ? 'diffusers folder' : 'single file, SD1.5 configs'})</span>
        </dd>
      </div>
      <div>
        <dt>UNet</dt>
        <dd>
          {formatCount(u.parameters)} parameters; channels {u.blockOutChannels.join(' / ')}, {u.layersPerBlock} {u.layersPerBlock === 1 ? 'layer' : 'layers'} per block,
          cross-attention {u.crossAttentionDim} wide; native size {u.sampleSize * info.vae.downsample} px
        </dd>
      </div>
      <div>
        <dt>Weights in GPU memory</dt>
        <dd>
          {formatBytes(u.parameters * 2)} as float16 (where the GPU has <code>shader-f16</code>), {formatBytes(u.parameters * 4)} as float32
        </dd>
      </div>
      <div>
        <dt>Text encoder</dt>
        <dd>
          CLIP, {info.textEncoder.layers} layers, {info.textEncoder.hiddenSize} wide
        </dd>
      </div>
      <div>
        <dt>VAE</dt>
        <dd>
          {info.vae.latentChannels} latent channels, {info.vae.downsample}x smaller, scaling {info.vae.scalingFactor}
        </dd>
      </div>
    </dl>
  );
}

function MemoryPlanCard() {
  const model = useModelStore((s) => s.model);
  const form = useModelStore((s) => s.form);
  const plan = useModelStore((s) => s.plan);
  const setForm = useModelStore((s) => s.setForm);
  const runPlan = useModelStore((s) => s.runPlan);
  const open = model.status === 'open' || (model.status === 'error' && model.previous !== null);

  const number = (key: keyof PlanForm) => (e: ChangeEvent<HTMLInputElement>) => setForm({ [key]: Number(e.target.value) } as Partial<PlanForm>);

  return (
    <section className="card" aria-labelledby="plan-heading">
      <h2 id="plan-heading">Will it fit?</h2>
      <p className="muted">
        The GPU memory a training step takes with these settings, counted from the model's own layers. Browsers do not tell
        a page how much memory the GPU has: enter it (your GPU's specification, e.g. 8 GiB).
      </p>
      <form
        className="form-grid"
        onSubmit={(e) => {
          e.preventDefault();
          void runPlan();
        }}
      >
        <label>
          Plan for method
          <select value={form.method} onChange={(e) => setForm({ method: e.target.value as PlanForm['method'] })}>
            <option value="tdpo">TDPO</option>
            <option value="tkto">TKTO</option>
            <option value="sft">SFT</option>
          </select>
        </label>
        <label>
          Resolution (px)
          <input type="number" min={64} max={1024} step={64} value={form.resolution} onChange={number('resolution')} />
        </label>
        <label>
          LoRA rank
          <input type="number" min={1} max={128} value={form.rank} onChange={number('rank')} />
        </label>
        <label>
          Batch size
          <input type="number" min={1} max={16} value={form.batch} onChange={number('batch')} />
        </label>
        <label>
          GPU memory (GiB)
          <input type="number" min={1} max={256} step={1} value={form.budgetGiB} onChange={number('budgetGiB')} />
        </label>
        <label className="checkbox">
          <input type="checkbox" checked={form.checkpointing} onChange={(e) => setForm({ checkpointing: e.target.checked })} />
          Gradient checkpointing
        </label>
        <button type="submit" className="primary" disabled={!open || plan.status === 'planning'}>
          Check memory
        </button>
      </form>
      <div role="status" aria-live="polite">
        {!open && <p className="muted">Open a model to plan its training.</p>}
        {plan.status === 'planning' && <p className="muted">Counting…</p>}
        {plan.status === 'error' && (
          <div className="notice notice-error" role="alert">
            <p>{plan.error.message}</p>
          </div>
        )}
        {plan.status === 'done' && (
          <div className={`notice ${plan.verdict.fits ? 'notice-ok' : 'notice-error'}`}>
            <p className="verdict">
              {plan.verdict.fits ? '✓ Fits' : '✗ Does not fit'}: a step needs {formatBytes(plan.verdict.needed)} of the{' '}
              {form.budgetGiB} GiB you have.
            </p>
            {plan.verdict.advice && <p>{plan.verdict.advice}</p>}
            <PlanLines lines={(form.checkpointing ? plan.result.checkpointing : plan.result.noCheckpointing).lines} />
          </div>
        )}
      </div>
    </section>
  );
}

function PlanLines({ lines }: { lines: { key: string; label: string; bytes: number; note: string }[] }) {
  return (
    <table className="plan-lines">
      <caption className="visually-hidden">Memory at the step's peak, by kind</caption>
      <thead>
        <tr>
          <th scope="col">What</th>
          <th scope="col">Size</th>
        </tr>
      </thead>
      <tbody>
        {lines
          .filter((l) => l.bytes > 0)
          .map((l) => (
            <tr key={l.key} title={l.note}>
              <td>{l.label}</td>
              <td className="num">{formatBytes(l.bytes)}</td>
            </tr>
          ))}
      </tbody>
    </table>
  );
}
