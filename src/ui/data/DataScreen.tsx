// The Data screen: import captioned images (a folder of images with .txt captions, an imagefolder
// metadata.jsonl, a CSV, or the lab's JSONL: the layouts `tpo-lab pairs` reads) into the lab's storage, pick
// the dataset to work on, edit or remove items in a virtualised grid (thousands of images stay smooth),
// see the counts, and export the lab's JSONL.

import { useVirtualizer } from '@tanstack/react-virtual';
import { type ChangeEvent, useEffect, useId, useRef, useState } from 'react';
import { datasetStats } from '../../data/dataset';
import type { DatasetItem } from '../../data/types';
import { downloadBytes } from '../download';
import { formatCount } from '../format';
import { useDataStore } from './store';
import { useThumbnail } from './thumbnails';
import { ErrorNotice } from '../ErrorNotice';

export function DataScreen() {
  const refresh = useDataStore((s) => s.refresh);
  useEffect(() => {
    void refresh();
  }, [refresh]);
  return (
    <>
      <ImportCard />
      <DatasetCard />
    </>
  );
}

function ImportCard() {
  const importing = useDataStore((s) => s.importing);
  const problems = useDataStore((s) => s.problems);
  const importFiles = useDataStore((s) => s.importFiles);
  const projectImported = useDataStore((s) => s.projectImported);
  const projectId = useId();
  const [name, setName] = useState('');
  const filesId = useId();
  const folderId = useId();
  const nameId = useId();

  const onPick = (e: ChangeEvent<HTMLInputElement>) => {
    const files = [...(e.target.files ?? [])];
    e.target.value = '';
    if (!files.length) return;
    const folder = files[0].webkitRelativePath.split('/')[0];
    void importFiles(files, name.trim() || folder || `Images of ${new Date().toLocaleDateString()}`);
  };

  return (
    <section className="card" aria-labelledby="import-heading">
      <h2 id="import-heading">Import images</h2>
      <p className="muted">
        Images with their captions: each image beside a <code>.txt</code> file of the same name, or a <code>metadata.jsonl</code>,
        a CSV or the lab's JSONL with the images; or a project file exported here (a dataset with its runs). They are copied into this browser's storage for the lab, so the files you
        picked can move afterwards; nothing leaves your machine.
      </p>
      <div className="pickers">
        <div className="picker">
          <label htmlFor={nameId}>Dataset name</label>
          <input id={nameId} type="text" value={name} placeholder="from the folder" onChange={(e) => setName(e.target.value)} />
        </div>
        <div className="picker">
          <label htmlFor={filesId}>Images</label>
          <input id={filesId} type="file" multiple accept="image/*,.txt,.caption,.jsonl,.csv" onChange={onPick} disabled={!!importing} />
        </div>
        <div className="picker">
          <label htmlFor={folderId}>Image folder</label>
          <input id={folderId} type="file" {...{ webkitdirectory: '' }} onChange={onPick} disabled={!!importing} />
        </div>
        <div className="picker">
          <label htmlFor={projectId}>Project file</label>
          <input
            id={projectId}
            type="file"
            accept=".zip"
            onChange={(e) => {
              const file = e.target.files?.[0];
              e.target.value = '';
              if (file) void useDataStore.getState().importProject(file);
            }}
            disabled={!!importing}
          />
        </div>
      </div>
      {projectImported && (
        <p role="status" className="notice notice-ok">
          Imported the project {projectImported.name} with {projectImported.runs} {projectImported.runs === 1 ? 'run' : 'runs'}.
        </p>
      )}
      <div role="status" aria-live="polite">
        {importing && (
          <p>
            Copying {importing.name}: <progress max={importing.total || 1} value={importing.done} /> {importing.done} of {importing.total}
          </p>
        )}
      </div>
      {problems.length > 0 && (
        <details className="notice notice-warn">
          <summary>
            {problems.length} {problems.length === 1 ? 'record was' : 'records were'} left out
          </summary>
          <ul>
            {problems.slice(0, 200).map((p, i) => (
              <li key={i}>{p.message}</li>
            ))}
          </ul>
        </details>
      )}
    </section>
  );
}

function DatasetCard() {
  const datasets = useDataStore((s) => s.datasets);
  const current = useDataStore((s) => s.current);
  const items = useDataStore((s) => s.items);
  const error = useDataStore((s) => s.error);
  const undo = useDataStore((s) => s.undo);
  const { select, deleteDataset, undoLast, exportJsonl } = useDataStore.getState();
  const selectId = useId();
  const info = datasets.find((d) => d.id === current);
  const stats = datasetStats(items);

  const download = () => downloadBytes(new TextEncoder().encode(exportJsonl()), `${info?.name ?? 'dataset'}.jsonl`, 'application/jsonl');
  const [exporting, setExporting] = useState(false);
  const downloadProject = async () => {
    setExporting(true);
    const project = await useDataStore.getState().exportProject();
    setExporting(false);
    if (project) downloadBytes(project.bytes, project.name, 'application/zip');
  };

  return (
    <section className="card" aria-labelledby="dataset-heading">
      <h2 id="dataset-heading">Your datasets</h2>
      {datasets.length === 0 ? (
        <p className="muted">No dataset yet: import images above.</p>
      ) : (
        <div className="toolbar">
          <label htmlFor={selectId}>Dataset</label>
          <select id={selectId} value={current ?? ''} onChange={(e) => void select(e.target.value || null)}>
            <option value="">Choose a dataset…</option>
            {datasets.map((d) => (
              <option key={d.id} value={d.id}>
                {d.name} ({formatCount(d.items)} images)
              </option>
            ))}
          </select>
          {info && (
            <>
              <button type="button" onClick={download}>
                Export JSONL
              </button>
              <button type="button" onClick={() => void downloadProject()} disabled={exporting} title="The images, captions, negatives with their review status, and every run of this dataset, as one .zip">
                {exporting ? 'Exporting project…' : 'Export project'}
              </button>
              <button
                type="button"
                className="danger"
                onClick={() => {
                  if (confirm(`Delete the dataset ${info.name} (${info.items} images, their captions and negatives) from this browser?`)) void deleteDataset(info.id);
                }}
              >
                Delete dataset
              </button>
            </>
          )}
        </div>
      )}
      <ErrorNotice error={error} />
      {undo && (
        <div className="notice undo" role="status">
          <span>{undo.label}.</span>{' '}
          <button type="button" onClick={() => void undoLast()}>
            Undo
          </button>
        </div>
      )}
      {current && (
        <>
          <p className="counts" aria-label="Counts">
            {formatCount(stats.items)} images · {formatCount(stats.negatives)} negatives ({stats.byStatus.pending} pending,{' '}
            {stats.byStatus.accepted} accepted, {stats.byStatus.rejected} rejected) · {stats.itemsWithoutNegatives} without negatives
          </p>
          <ItemGrid dataset={current} items={items} />
        </>
      )}
    </section>
  );
}

const CELL_WIDTH = 220;
const ROW_HEIGHT = 300;

/** The items as a grid whose rows are virtualised: only the rows in view (and a few more) are in the DOM. */
function ItemGrid({ dataset, items }: { dataset: string; items: DatasetItem[] }) {
  const scroller = useRef<HTMLDivElement>(null);
  const [columns, setColumns] = useState(4);
  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const observer = new ResizeObserver(() => setColumns(Math.max(1, Math.floor(el.clientWidth / CELL_WIDTH))));
    observer.observe(el);
    return () => observer.disconnect();
  }, []);
  const rows = Math.ceil(items.length / columns);
  const virtualizer = useVirtualizer({ count: rows, getScrollElement: () => scroller.current, estimateSize: () => ROW_HEIGHT, overscan: 3 });

  return (
    <div ref={scroller} className="item-grid" role="list" aria-label="Dataset items">
      <div style={{ height: virtualizer.getTotalSize(), position: 'relative' }}>
        {virtualizer.getVirtualItems().map((row) => (
          <div key={row.key} className="item-row" style={{ transform: `translateY(${row.start}px)`, height: ROW_HEIGHT, gridTemplateColumns: `repeat(${columns}, 1fr)` }}>
            {items.slice(row.index * columns, row.index * columns + columns).map((item) => (
              <ItemCell key={item.id} dataset={dataset} item={item} />
            ))}
          </div>
        ))}
      </div>
    </div>
  );
}

function ItemCell({ dataset, item }: { dataset: string; item: DatasetItem }) {
  const url = useThumbnail(dataset, item.image);
  const [caption, setCaption] = useState(item.caption);
  useEffect(() => setCaption(item.caption), [item.caption]);
  const { updateCaption, removeItem } = useDataStore.getState();
  const save = () => {
    if (caption.trim() !== item.caption) void updateCaption(item.id, caption);
  };
  return (
    <div className="item" role="listitem">
      <div className="thumb">{url ? <img src={url} alt={item.caption} loading="lazy" decoding="async" /> : <span className="muted">…</span>}</div>
      <div className="item-name" title={item.image}>
        {item.image}
        {item.negatives.length > 0 && <span className="muted"> · {item.negatives.length} neg.</span>}
      </div>
      <textarea
        aria-label={`Caption of ${item.image}`}
        value={caption}
        rows={3}
        onChange={(e) => setCaption(e.target.value)}
        onBlur={save}
        onKeyDown={(e) => {
          // Enter saves (Shift+Enter for a new line would make a caption the trainer splits oddly).
          if (e.key === 'Enter') {
            e.preventDefault();
            save();
          }
          if (e.key === 'Escape') setCaption(item.caption);
        }}
      />
      <button type="button" className="small" aria-label={`Remove ${item.image}`} onClick={() => void removeItem(item.id)}>
        Remove
      </button>
    </div>
  );
}
