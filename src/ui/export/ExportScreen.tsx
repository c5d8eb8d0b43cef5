// The Export screen: a run's LoRA as a .safetensors file for Automatic1111 / ComfyUI (kohya's layout) or
// diffusers, in float16 or float32. What the file will carry (kohya's ss_* metadata, our own keys, the
// tensor count and size) is read back from the encoded file and shown before anything is downloaded.

import { useEffect, useId } from 'react';
import type { LoraFormat } from '../../models/lora-io';
import type { LoraInfo } from '../../worker/api';
import { formatBytes } from '../../util/format';
import { useModelStore } from '../model/store';
import { useExportStore } from './store';
import { ErrorNotice } from '../ErrorNotice';
import { runLabel } from '../runs';

/** Values longer than this are cut in the table (hashes, tag frequencies); the full text is in the tooltip. */
const SHOWN_CHARS = 120;

export function ExportScreen() {
  const refreshRuns = useExportStore((s) => s.refreshRuns);
  useEffect(() => {
    void refreshRuns();
  }, [refreshRuns]);
  return <ExportCard />;
}

function ExportCard() {
  const form = useExportStore((s) => s.form);
  const runs = useExportStore((s) => s.runs);
  const info = useExportStore((s) => s.info);
  const exporting = useExportStore((s) => s.exporting);
  const saved = useExportStore((s) => s.saved);
  const error = useExportStore((s) => s.error);
  const { setForm, exportLora } = useExportStore.getState();
  const model = useModelStore((s) => s.model);
  const modelOpen = model.status === 'open' || (model.status === 'error' && model.previous !== null);
  const ids = { run: useId(), format: useId(), dtype: useId() };

  return (
    <section className="card" aria-labelledby="export-heading">
      <h2 id="export-heading">Export</h2>
      <p className="muted">
        A run&rsquo;s LoRA as one <code>.safetensors</code> file: the finished one, or the last checkpoint&rsquo;s of a stopped run. The
        LoRA is checked against the open model&rsquo;s UNet first{modelOpen ? '.' : ': open the model it was trained on, on the Model screen.'}
      </p>
      {runs.length === 0 ? (
        <p>No run has a LoRA yet: train one on the Train screen.</p>
      ) : (
        <div className="form-grid fill-form export-form">
          <div className="field full">
            <label htmlFor={ids.run}>Run</label>
            <select id={ids.run} value={form.run} onChange={(e) => void setForm({ run: e.target.value })}>
              {runs.map((r) => (
                <option key={r.id} value={r.id}>
                  {runLabel(r)}
                </option>
              ))}
            </select>
          </div>
          <div className="field">
            <label htmlFor={ids.format}>Format</label>
            <select id={ids.format} value={form.format} onChange={(e) => void setForm({ format: e.target.value as LoraFormat })}>
              <option value="kohya">kohya (Automatic1111 / ComfyUI)</option>
              <option value="diffusers">diffusers (PEFT)</option>
            </select>
          </div>
          <div className="field">
            <label htmlFor={ids.dtype}>Precision</label>
            <select id={ids.dtype} value={form.dtype} onChange={(e) => void setForm({ dtype: e.target.value as 'fp16' | 'fp32' })}>
              <option value="fp16">fp16 (half the size; what kohya saves)</option>
              <option value="fp32">fp32 (exact)</option>
            </select>
          </div>
        </div>
      )}
      <div className="toolbar">
        <button type="button" className="primary" disabled={!form.run || exporting || info.state !== 'ready'} onClick={() => void exportLora()}>
          Export LoRA
        </button>
        <span role="status" aria-live="polite" className="muted">
          {info.state === 'loading' && 'Reading the LoRA…'}
          {exporting && 'Writing the file…'}
          {saved && `Downloaded ${saved.name} (${formatBytes(saved.bytes)}).`}
        </span>
      </div>
      <ErrorNotice error={error} />
      {info.state === 'ready' && <LoraFacts info={info.info} />}
    </section>
  );
}

function LoraFacts({ info }: { info: LoraInfo }) {
  const keys = Object.keys(info.metadata).sort();
  return (
    <>
      <dl className="facts export-facts" aria-label="File">
        <div>
          <dt>File</dt>
          <dd>
            <code>{info.name}</code>
          </dd>
        </div>
        <div>
          <dt>Weights</dt>
          <dd>
            {info.source === 'final' ? 'the finished LoRA' : 'the last checkpoint'} at step {info.step}
          </dd>
        </div>
        <div>
          <dt>Contents</dt>
          <dd>
            {info.modules} LoRA modules, {info.tensors} tensors, {info.dtype}, {formatBytes(info.bytes)}
          </dd>
        </div>
      </dl>
      <h3>Metadata</h3>
      <p className="muted">
        {keys.length} keys, written into the file&rsquo;s header: kohya&rsquo;s <code>ss_*</code> keys (Automatic1111 and ComfyUI show them) and the
        training details.
      </p>
      <div className="table-scroll">
        <table className="metadata">
          <thead>
            <tr>
              <th scope="col">Key</th>
              <th scope="col">Value</th>
            </tr>
          </thead>
          <tbody>
            {keys.map((k) => {
              const v = info.metadata[k];
              const cut = v.length > SHOWN_CHARS;
              // kohya writes times as Unix seconds: say when that was, too.
              const when = /_at$/.test(k) && /^\d+(\.\d+)?$/.test(v) ? ` (${new Date(Number(v) * 1000).toLocaleString()})` : '';
              return (
                <tr key={k}>
                  <th scope="row">
                    <code>{k}</code>
                  </th>
                  <td title={cut ? v : undefined}>{cut ? `${v.slice(0, SHOWN_CHARS)}… (${v.length} characters)` : `${v}${when}`}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
    </>
  );
}
