// The Data screen: import captioned images (a folder of images with .txt captions, an imagefolder
// metadata.jsonl, a CSV, or the lab's JSONL: the layouts `tpo-lab pairs` reads), or preference data (the
// trainer's Diffusion-DPO or Diffusion-KTO JSONL with its images) into the lab's storage, pick the dataset to
// work on, edit or remove items in a virtualised grid (thousands of images stay smooth), see the counts, and
// export the lab's JSONL.

import { useVirtualizer } from '@tanstack/react-virtual';
import { type ChangeEvent, type ReactNode, useEffect, useId, useRef, useState } from 'react';
import { datasetStats } from '../../data/dataset';
import { DEMO_DATASET_SIZE } from '../../demo/files';
import type { DpoRecord, KtoRecord, PreferenceRecords } from '../../data/preference-records';
import type { DatasetItem } from '../../data/types';
import { downloadBytes } from '../download';
import { datasetSize, formatCount } from '../format';
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
        a CSV or the lab's JSONL with the images; preference data as the trainer's Diffusion-DPO JSONL (<code>prompt</code>,{' '}
        <code>image_w</code>, <code>image_l</code>) or Diffusion-KTO JSONL (<code>image</code>, <code>caption</code>, <code>label</code>) with its
        images; or a project file exported here (a dataset with its runs). They are copied into this browser's storage for the lab, so the files you
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
      <p className="muted">
        No images at hand? The demo dataset: {DEMO_DATASET_SIZE} captioned images of the shapes world, the demo model&apos;s own (&ldquo;a small
        red circle on the left of a large blue square, on a white background&rdquo;), made here in the tab.
      </p>
      <div className="toolbar">
        <button type="button" onClick={() => void useDataStore.getState().importDemo()} disabled={!!importing}>
          Add the demo dataset
        </button>
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
  const records = useDataStore((s) => s.records);
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
        <p className="muted">No dataset yet: import images above, or add the demo dataset.</p>
      ) : (
        <div className="toolbar">
          <label htmlFor={selectId}>Dataset</label>
          <select id={selectId} value={current ?? ''} onChange={(e) => void select(e.target.value || null)}>
            <option value="">Choose a dataset…</option>
            {datasets.map((d) => (
              <option key={d.id} value={d.id}>
                {d.name} ({datasetSize(d)})
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
                  if (confirm(`Delete the dataset ${info.name} (${datasetSize(info)}${info.kind === 'tpo' ? ', their captions and negatives' : ''}) from this browser?`)) void deleteDataset(info.id);
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
      {current && records && <PreferenceView dataset={current} data={records} />}
      {current && !records && (
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

/**
 * `count` cells in a grid whose rows are virtualised: only the rows in view (and a few more) are in the DOM.
 * `cell(i)` draws the i-th cell; cells are at least `cellWidth` px wide.
 */
function VirtualGrid({ count, label, cell, cellWidth = CELL_WIDTH }: { count: number; label: string; cell: (index: number) => ReactNode; cellWidth?: number }) {
  const scroller = useRef<HTMLDivElement>(null);
  const [columns, setColumns] = useState(4);
  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const observer = new ResizeObserver(() => setColumns(Math.max(1, Math.floor(el.clientWidth / cellWidth))));
    observer.observe(el);
    return () => observer.disconnect();
  }, [cellWidth]);
  const rows = Math.ceil(count / columns);
  const virtualizer = useVirtualizer({ count: rows, getScrollElement: () => scroller.current, estimateSize: () => ROW_HEIGHT, overscan: 3 });

  return (
    <div ref={scroller} className="item-grid" role="list" aria-label={label}>
      <div style={{ height: virtualizer.getTotalSize(), position: 'relative' }}>
        {virtualizer.getVirtualItems().map((row) => (
          <div key={row.key} className="item-row" style={{ transform: `translateY(${row.start}px)`, height: ROW_HEIGHT, gridTemplateColumns: `repeat(${columns}, 1fr)` }}>
            {Array.from({ length: Math.min(columns, count - row.index * columns) }, (_, j) => cell(row.index * columns + j))}
          </div>
        ))}
      </div>
    </div>
  );
}

function ItemGrid({ dataset, items }: { dataset: string; items: DatasetItem[] }) {
  return <VirtualGrid count={items.length} label="Dataset items" cell={(i) => <ItemCell key={items[i].id} dataset={dataset} item={items[i]} />} />;
}

/** A preference dataset: its counts, and its pairs (DPO) or labelled images (KTO), each removable. */
function PreferenceView({ dataset, data }: { dataset: string; data: PreferenceRecords }) {
  const removeRecord = useDataStore((s) => s.removeRecord);
  if (data.kind === 'dpo') {
    const images = new Set(data.records.flatMap((r) => [r.imageW, r.imageL])).size;
    return (
      <>
        <p className="counts" aria-label="Counts">
          {formatCount(data.records.length)} Diffusion-DPO {data.records.length === 1 ? 'pair' : 'pairs'} · {formatCount(images)} images · train with Diffusion-DPO
        </p>
        <VirtualGrid
          count={data.records.length}
          label="Dataset pairs"
          cellWidth={2 * CELL_WIDTH}
          cell={(i) => <PairCell key={`${i}:${data.records[i].imageW}:${data.records[i].imageL}`} dataset={dataset} record={data.records[i]} index={i} onRemove={removeRecord} />}
        />
      </>
    );
  }
  const desirable = data.records.filter((r) => r.label).length;
  return (
    <>
      <p className="counts" aria-label="Counts">
        {formatCount(data.records.length)} labelled images · {formatCount(desirable)} desirable · {formatCount(data.records.length - desirable)} undesirable · train with
        Diffusion-KTO
      </p>
      <VirtualGrid
        count={data.records.length}
        label="Dataset images"
        cell={(i) => <LabelledCell key={`${i}:${data.records[i].image}`} dataset={dataset} record={data.records[i]} index={i} onRemove={removeRecord} />}
      />
    </>
  );
}

function Thumb({ dataset, image, alt }: { dataset: string; image: string; alt: string }) {
  const url = useThumbnail(dataset, image);
  return <div className="thumb">{url ? <img src={url} alt={alt} loading="lazy" decoding="async" /> : <span className="muted">…</span>}</div>;
}

function PairCell({ dataset, record, index, onRemove }: { dataset: string; record: DpoRecord; index: number; onRemove: (index: number) => Promise<void> }) {
  return (
    <div className="item pair-item" role="listitem">
      <div className="pair-thumbs">
        <figure>
          <Thumb dataset={dataset} image={record.imageW} alt={`Preferred: ${record.imageW}`} />
          <figcaption>
            <span className="pref-label pref-good">preferred</span> <span title={record.imageW}>{record.imageW}</span>
          </figcaption>
        </figure>
        <figure>
          <Thumb dataset={dataset} image={record.imageL} alt={`Rejected: ${record.imageL}`} />
          <figcaption>
            <span className="pref-label pref-bad">rejected</span> <span title={record.imageL}>{record.imageL}</span>
          </figcaption>
        </figure>
      </div>
      <p className="item-caption">{record.prompt}</p>
      <button type="button" className="small" aria-label={`Remove pair ${index + 1}`} onClick={() => void onRemove(index)}>
        Remove
      </button>
    </div>
  );
}

function LabelledCell({ dataset, record, index, onRemove }: { dataset: string; record: KtoRecord; index: number; onRemove: (index: number) => Promise<void> }) {
  return (
    <div className="item" role="listitem">
      <Thumb dataset={dataset} image={record.image} alt={record.caption} />
      <div className="item-name" title={record.image}>
        <span className={record.label ? 'pref-label pref-good' : 'pref-label pref-bad'}>{record.label ? 'desirable' : 'undesirable'}</span> {record.image}
      </div>
      <p className="item-caption">{record.caption}</p>
      <button type="button" className="small" aria-label={`Remove ${record.image} (record ${index + 1})`} onClick={() => void onRemove(index)}>
        Remove
      </button>
    </div>
  );
}

function ItemCell({ dataset, item }: { dataset: string; item: DatasetItem }) {
  const [caption, setCaption] = useState(item.caption);
  useEffect(() => setCaption(item.caption), [item.caption]);
  const { updateCaption, removeItem } = useDataStore.getState();
  const save = () => {
    if (caption.trim() !== item.caption) void updateCaption(item.id, caption);
  };
  return (
    <div className="item" role="listitem">
      <Thumb dataset={dataset} image={item.image} alt={item.caption} />
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
