// The Pairs screen: write mismatched captions (negatives) for the current dataset's captions, with the
// offline rule editor or an OpenAI-compatible LLM, then review each pair (image, caption, negative) and
// accept, reject or edit it. Only accepted and pending negatives are trained on; rejected ones are kept
// in the dataset (with their history) but never used.

import { type KeyboardEvent, useEffect, useId, useMemo, useRef, useState } from 'react';
import { datasetStats } from '../../data/dataset';
import type { DatasetItem, Negative } from '../../data/types';
import { NEGATIVE_STATUSES, type NegativeStatus, PRINCIPLE_CHOICES, type PrincipleChoice, RECORDED_PRINCIPLES, type RecordedPrinciple } from '../../data/vocabulary';
import { PRINCIPLE_INFO, type PromptTemplates } from '../../llm/principles';
import { ENDPOINT_PRESETS } from '../../llm/settings';
import { useDataStore } from '../data/store';
import { engine } from '../engine';
import { changedWords } from './diff';
import { filteredPairs, type PairRef, usePairsStore } from './store';

export function PairsScreen() {
  const current = useDataStore((s) => s.current);
  const datasets = useDataStore((s) => s.datasets);
  const refresh = useDataStore((s) => s.refresh);

  useEffect(() => {
    void refresh();
  }, [refresh]);

  if (!current) {
    return (
      <section className="card" aria-labelledby="pairs-heading">
        <h2 id="pairs-heading">Pairs</h2>
        <p>Import images on the Data screen first: negatives are written for a dataset's captions.</p>
        <DatasetChoice />
      </section>
    );
  }
  const info = datasets.find((d) => d.id === current);
  if (info && info.kind !== 'tpo') {
    // Preference data already says which image is better: there is nothing to write or review here.
    return (
      <section className="card" aria-labelledby="pairs-heading">
        <h2 id="pairs-heading">Pairs</h2>
        <p role="status">
          {info.name} holds {info.kind === 'dpo' ? 'Diffusion-DPO pairs: a preferred and a rejected image for each prompt' : 'Diffusion-KTO images labelled desirable or undesirable'}, so it
          needs no negative captions. Train it with {info.kind === 'dpo' ? 'Diffusion-DPO' : 'Diffusion-KTO'} on the Train screen, or choose a dataset of captioned
          images to write negatives for.
        </p>
        <DatasetChoice />
      </section>
    );
  }
  return (
    <>
      <EditorCard />
      <GenerateCard />
      {/* Keyed by dataset: another dataset starts a fresh list (and frees the old thumbnails). */}
      <ReviewCard key={current} dataset={current} />
    </>
  );
}

/** Another dataset to work on: the captioned-image ones (preference data needs no negatives). */
function DatasetChoice() {
  const datasets = useDataStore((s) => s.datasets).filter((d) => d.kind === 'tpo');
  const select = useDataStore((s) => s.select);
  if (datasets.length === 0) return null;
  return (
    <label className="picker">
      Or work on a dataset you imported before
      <select value="" onChange={(e) => void select(e.target.value || null)}>
        <option value="">Choose a dataset…</option>
        {datasets.map((d) => (
          <option key={d.id} value={d.id}>
            {d.name}
          </option>
        ))}
      </select>
    </label>
  );
}

// ---------------------------------------------------------------------------------------------------
// The caption editor.

function EditorCard() {
  const editor = usePairsStore((s) => s.editor);
  const setEditor = usePairsStore((s) => s.setEditor);
  return (
    <section className="card" aria-labelledby="editor-heading">
      <h2 id="editor-heading">Caption editor</h2>
      <fieldset className="choices">
        <legend className="visually-hidden">Who writes the negatives</legend>
        <label className="checkbox">
          <input type="radio" name="pairs-editor" checked={editor === 'rules'} onChange={() => setEditor('rules')} />
          <span>
            <strong>Rule editor</strong> <span className="muted">— offline, instant: swaps colours, counts, positions and settings from word lists.</span>
          </span>
        </label>
        <label className="checkbox">
          <input type="radio" name="pairs-editor" checked={editor === 'llm'} onChange={() => setEditor('llm')} />
          <span>
            <strong>LLM endpoint</strong> <span className="muted">— any OpenAI-compatible server (Ollama, LM Studio, vLLM, OpenAI): varied, natural edits.</span>
          </span>
        </label>
      </fieldset>
      {editor === 'llm' && <LlmForm />}
    </section>
  );
}

function LlmForm() {
  const llm = usePairsStore((s) => s.llm);
  const setLlm = usePairsStore((s) => s.setLlm);
  const forgetKey = usePairsStore((s) => s.forgetKey);
  const connection = usePairsStore((s) => s.connection);
  const test = usePairsStore((s) => s.testConnection);
  const [keyRemembered] = useState(() => llm.rememberKey);
  const ready = llm.baseUrl.trim() !== '' && llm.model.trim() !== '';

  return (
    <>
      <div className="form-grid">
        <label>
          Preset
          <select value="" onChange={(e) => e.target.value && setLlm({ baseUrl: e.target.value })}>
            <option value="">Fill in the URL of…</option>
            {ENDPOINT_PRESETS.map((p) => (
              <option key={p.name} value={p.baseUrl}>
                {p.name}
              </option>
            ))}
          </select>
        </label>
        <label className="wide">
          Base URL
          <input type="url" value={llm.baseUrl} placeholder="http://localhost:11434/v1" onChange={(e) => setLlm({ baseUrl: e.target.value })} />
        </label>
        <label>
          Model
          <input value={llm.model} placeholder="llama3.2" onChange={(e) => setLlm({ model: e.target.value })} />
        </label>
        <label>
          API key
          <input type="password" autoComplete="off" value={llm.apiKey} placeholder="none for a local server" onChange={(e) => setLlm({ apiKey: e.target.value })} />
        </label>
        <label>
          Concurrency
          <input type="number" min={1} max={32} value={llm.concurrency} onChange={(e) => setLlm({ concurrency: Number(e.target.value) })} />
        </label>
        <label className="checkbox">
          <input type="checkbox" checked={llm.rememberKey} onChange={(e) => setLlm({ rememberKey: e.target.checked })} />
          Remember the key on this device
        </label>
        {(llm.rememberKey || keyRemembered) && (
          <button type="button" onClick={forgetKey}>
            Forget the key
          </button>
        )}
      </div>
      <p className="muted small">
        The key stays in this tab's memory and goes only to this server{llm.rememberKey ? '; it is also kept in this browser\'s storage until you forget it' : ''}.
      </p>
      <button type="button" onClick={() => void test()} disabled={!ready || connection.status === 'testing'}>
        {connection.status === 'testing' && <span className="spinner" aria-hidden="true" />}
        Test connection
      </button>
      {!ready && <span className="muted small"> Enter the base URL and the model to test them.</span>}
      <div role="status" aria-live="polite">
        {connection.status === 'tested' && connection.result.ok && (
          <div className="notice notice-ok">
            <p className="verdict">✓ The server answers: {connection.result.url} works with this model and key.</p>
          </div>
        )}
      </div>
      {connection.status === 'tested' && !connection.result.ok && (
        <div className="notice notice-error" role="alert">
          <h3>{connection.result.problem.title}</h3>
          <ul>
            {connection.result.problem.help.map((h) => (
              <li key={h}>{h}</li>
            ))}
          </ul>
          <p className="muted small">Details: {connection.result.problem.detail}</p>
        </div>
      )}
      <Templates />
    </>
  );
}

const TEMPLATE_KEYS: readonly (keyof PromptTemplates)[] = ['system', ...PRINCIPLE_CHOICES];

function Templates() {
  const templates = usePairsStore((s) => s.templates);
  const setTemplate = usePairsStore((s) => s.setTemplate);
  const resetTemplate = usePairsStore((s) => s.resetTemplate);
  return (
    <details className="templates">
      <summary>Prompt templates</summary>
      <p className="muted small">
        What the LLM is asked, per principle. Placeholders: <code>{'{{caption}}'}</code>, <code>{'{{description}}'}</code>, <code>{'{{example}}'}</code>,{' '}
        <code>{'{{avoid}}'}</code>, <code>{'{{principle}}'}</code>. The answer must stay JSON: <code>{'{"caption": …}'}</code>.
      </p>
      {TEMPLATE_KEYS.map((key) => {
        const label = key === 'system' ? 'System prompt' : `${PRINCIPLE_INFO[key].label} template`;
        return (
          <div className="template" role="group" aria-label={label} key={key}>
            <label>
              {label}
              <textarea rows={key === 'system' ? 3 : 8} value={templates[key]} onChange={(e) => setTemplate(key, e.target.value)} />
            </label>
            <button type="button" onClick={() => resetTemplate(key)}>
              Reset to default
            </button>
          </div>
        );
      })}
    </details>
  );
}

// ---------------------------------------------------------------------------------------------------
// Generating.

function GenerateCard() {
  const editor = usePairsStore((s) => s.editor);
  const llm = usePairsStore((s) => s.llm);
  const principles = usePairsStore((s) => s.principles);
  const setPrinciples = usePairsStore((s) => s.setPrinciples);
  const perCaption = usePairsStore((s) => s.perCaption);
  const setPerCaption = usePairsStore((s) => s.setPerCaption);
  const job = usePairsStore((s) => s.job);
  const generate = usePairsStore((s) => s.generate);
  const cancel = usePairsStore((s) => s.cancel);
  const items = useDataStore((s) => s.items);

  const running = job.status === 'running';
  const why = principles.length === 0 ? 'Choose at least one principle.' : editor === 'llm' && (!llm.baseUrl.trim() || !llm.model.trim()) ? 'Enter the LLM base URL and model, or use the rule editor.' : '';
  const toggle = (p: PrincipleChoice, on: boolean) => setPrinciples(on ? PRINCIPLE_CHOICES.filter((x) => x === p || principles.includes(x)) : principles.filter((x) => x !== p));

  return (
    <section className="card" aria-labelledby="generate-heading">
      <h2 id="generate-heading">Negatives</h2>
      <p className="muted">
        For each of the {items.length} caption{items.length === 1 ? '' : 's'}: captions that already have enough negatives (not counting rejected ones) are
        skipped, so running again only fills the gaps.
      </p>
      <fieldset className="principles">
        <legend>Principles</legend>
        {PRINCIPLE_CHOICES.map((p) => (
          <label className="checkbox" key={p} title={PRINCIPLE_INFO[p].description}>
            <input type="checkbox" checked={principles.includes(p)} onChange={(e) => toggle(p, e.target.checked)} />
            {PRINCIPLE_INFO[p].label}
            <span className="muted small">{p === 'mix' ? 'the editor picks' : PRINCIPLE_INFO[p].description.split(':')[0].split(' (')[0]}</span>
          </label>
        ))}
      </fieldset>
      <div className="form-grid">
        <label>
          Negatives per caption
          <input type="number" min={1} max={16} value={perCaption} onChange={(e) => setPerCaption(Number(e.target.value))} />
        </label>
        <button type="button" className="primary" onClick={() => void generate()} disabled={running || why !== ''}>
          Generate negatives
        </button>
        {running && (
          <button type="button" onClick={() => void cancel()} disabled={job.cancelling}>
            Cancel
          </button>
        )}
      </div>
      {why && <p className="muted small">{why}</p>}
      <div role="status" aria-live="polite">
        {running && (
          <div className="job-progress">
            <progress value={job.done} max={job.total || 1} aria-label="Captions done" />
            <p className="muted">
              {job.cancelling ? 'Cancelling… ' : ''}
              {job.total === 0 ? 'Reading the dataset…' : `${job.done} of ${job.total} captions done`}
              {job.failed > 0 ? `, ${job.failed} negative${job.failed === 1 ? '' : 's'} failed` : ''}
            </p>
          </div>
        )}
        {job.status === 'done' && <JobSummary job={job} perCaption={perCaption} />}
      </div>
      {job.status === 'error' && (
        <div className="notice notice-error" role="alert">
          <h3>The negatives could not be written</h3>
          <p>{job.error.message}</p>
          <p>What was made before the error is saved; Generate negatives again resumes from there.</p>
        </div>
      )}
    </section>
  );
}

function JobSummary({ job, perCaption }: { job: Extract<ReturnType<typeof usePairsStore.getState>['job'], { status: 'done' }>; perCaption: number }) {
  if (job.serverGone) {
    return (
      <div className="notice notice-error" role="alert">
        <h3>The LLM server stopped the job</h3>
        <p>{job.serverGone}</p>
        <p>
          The {job.made} negative{job.made === 1 ? '' : 's'} made are saved. Use Test connection to find what is wrong, then Generate negatives again to
          resume.
        </p>
      </div>
    );
  }
  const failed = job.failures.length;
  return (
    <div className={`notice ${failed ? 'notice-warn' : 'notice-ok'}`}>
      <p className="verdict">
        {job.cancelled ? 'Cancelled: ' : ''}
        {job.todo === 0
          ? `Nothing to do: every caption already has ${perCaption} negative${perCaption === 1 ? '' : 's'}. Raise “Negatives per caption” to write more.`
          : `Wrote ${job.made} negative${job.made === 1 ? '' : 's'} for ${job.todo} caption${job.todo === 1 ? '' : 's'}${job.alreadyDone ? ` (${job.alreadyDone} already had enough)` : ''}.`}
      </p>
      {job.cancelled && <p>What was made is saved; Generate negatives again resumes.</p>}
      {failed > 0 && (
        <>
          <p>
            {failed} negative{failed === 1 ? '' : 's'} could not be made (recorded with the dataset; generating again retries them):
          </p>
          <ul>
            {job.failures.slice(0, 5).map((f, i) => (
              <li key={i}>{f}</li>
            ))}
          </ul>
          {failed > 5 && <p className="muted">…and {failed - 5} more.</p>}
        </>
      )}
    </div>
  );
}

// ---------------------------------------------------------------------------------------------------
// Review.

const PAGE = 50;
const STATUS_WORD: Record<NegativeStatus, string> = { pending: 'pending', accepted: 'accepted', rejected: 'rejected' };

function ReviewCard({ dataset }: { dataset: string }) {
  const items = useDataStore((s) => s.items);
  const undo = useDataStore((s) => s.undo);
  const undoLast = useDataStore((s) => s.undoLast);
  const dataError = useDataStore((s) => s.error);
  const filter = usePairsStore((s) => s.filter);
  const setFilter = usePairsStore((s) => s.setFilter);
  const setStatus = usePairsStore((s) => s.setStatus);
  const setAllStatus = usePairsStore((s) => s.setAllStatus);
  const editNegative = usePairsStore((s) => s.editNegative);

  const pairs = useMemo(() => filteredPairs(items, filter), [items, filter]);
  const byId = useMemo(() => new Map(items.map((i) => [i.id, i])), [items]);
  const stats = useMemo(() => datasetStats(items), [items]);
  const [limit, setLimit] = useState(PAGE);
  const [cursor, setCursor] = useState(0);
  const [editing, setEditing] = useState<PairRef | null>(null);
  const listRef = useRef<HTMLOListElement>(null);
  const principleId = useId();
  const statusId = useId();
  const shown = pairs.slice(0, limit);
  const at = Math.min(cursor, Math.max(0, shown.length - 1));
  const thumbs = useThumbnails(dataset, [...new Set(shown.map((p) => byId.get(p.itemId)?.image ?? ''))].filter(Boolean));

  useEffect(() => {
    listRef.current?.querySelector(`[data-row="${at}"]`)?.scrollIntoView({ block: 'nearest' });
  }, [at]);

  const decide = (pair: PairRef, status: NegativeStatus) => {
    void setStatus(pair, status);
    // With a status filter the row leaves the list and the next one takes its place; otherwise move on.
    if (filter.status === 'all') setCursor(Math.min(at + 1, shown.length - 1));
  };

  const onKey = (e: KeyboardEvent<HTMLOListElement>) => {
    // Typing in the edit field (or any control in a row) is not a shortcut.
    if (editing || e.altKey || e.ctrlKey || e.metaKey || e.target !== e.currentTarget) return;
    const pair = shown[at];
    const key = e.key;
    if (key === 'j' || key === 'ArrowDown') setCursor(Math.min(at + 1, shown.length - 1));
    else if (key === 'k' || key === 'ArrowUp') setCursor(Math.max(at - 1, 0));
    else if (pair && key === 'a') decide(pair, 'accepted');
    else if (pair && key === 'r') decide(pair, 'rejected');
    else if (pair && key === 'e') setEditing(pair);
    else return;
    e.preventDefault();
  };

  const endEdit = () => {
    setEditing(null);
    listRef.current?.focus();
  };

  return (
    <section className="card" aria-labelledby="review-heading">
      <h2 id="review-heading">Review</h2>
      <p className="review-counts" aria-label="Negatives by status">
        {NEGATIVE_STATUSES.map((s) => (
          <span key={s} className={`count count-${s}`}>
            <strong>{stats.byStatus[s]}</strong> {STATUS_WORD[s]}
          </span>
        ))}
        <span className="muted">
          of {stats.negatives} negative{stats.negatives === 1 ? '' : 's'} for {stats.items} caption{stats.items === 1 ? '' : 's'}
          {stats.itemsWithoutNegatives ? `, ${stats.itemsWithoutNegatives} without any` : ''}
        </span>
      </p>
      <div className="review-tools">
        {/* Labels beside, not around, the selects: a wrapping label would add the chosen option to the name. */}
        <div className="field">
          <label htmlFor={principleId}>Principle</label>
          <select id={principleId} value={filter.principle} onChange={(e) => setFilter({ principle: e.target.value as RecordedPrinciple | 'all' })}>
            <option value="all">All principles</option>
            {RECORDED_PRINCIPLES.map((p) => (
              <option key={p} value={p}>
                {p === 'other' ? 'Other' : PRINCIPLE_INFO[p].label}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor={statusId}>Status</label>
          <select id={statusId} value={filter.status} onChange={(e) => setFilter({ status: e.target.value as NegativeStatus | 'all' })}>
            <option value="all">Any status</option>
            {NEGATIVE_STATUSES.map((s) => (
              <option key={s} value={s}>
                {STATUS_WORD[s][0].toUpperCase() + STATUS_WORD[s].slice(1)}
              </option>
            ))}
          </select>
        </div>
        <button type="button" onClick={() => void setAllStatus('accepted')} disabled={pairs.length === 0}>
          Accept all
        </button>
        <button type="button" onClick={() => void setAllStatus('rejected')} disabled={pairs.length === 0}>
          Reject all
        </button>
        <span className="muted small">(the {pairs.length} shown by the filters)</span>
      </div>
      {undo && (
        <div className="notice undo-bar" role="status">
          <span>{undo.label}.</span>
          <button type="button" onClick={() => void undoLast()}>
            Undo
          </button>
        </div>
      )}
      {dataError && (
        <div className="notice notice-error" role="alert">
          <p>The change could not be saved: {dataError.message}</p>
        </div>
      )}
      {stats.negatives === 0 ? (
        <p className="muted">No negatives yet: generate them above.</p>
      ) : pairs.length === 0 ? (
        <p className="muted">No negative matches these filters.</p>
      ) : (
        <>
          <p className="muted small shortcuts" id="review-keys">
            Keys, with the list focused: <kbd>j</kbd>/<kbd>k</kbd> next/previous, <kbd>a</kbd> accept, <kbd>r</kbd> reject, <kbd>e</kbd> edit.
          </p>
          <ol
            ref={listRef}
            className="pairs"
            tabIndex={0}
            aria-label="Pairs to review"
            aria-describedby="review-keys"
            onKeyDown={onKey}
          >
            {shown.map((pair, row) => {
              const item = byId.get(pair.itemId);
              const negative = item?.negatives[pair.index];
              if (!item || !negative) return null;
              const isEditing = editing?.itemId === pair.itemId && editing.index === pair.index;
              return (
                <PairRow
                  key={`${pair.itemId}#${pair.index}`}
                  row={row}
                  current={row === at}
                  item={item}
                  negative={negative}
                  thumb={thumbs[item.image]}
                  editing={isEditing}
                  onPick={() => setCursor(row)}
                  onDecide={(s) => decide(pair, s)}
                  onEdit={() => {
                    setCursor(row);
                    setEditing(pair);
                  }}
                  onSave={async (text) => {
                    if (await editNegative(pair, text)) endEdit();
                  }}
                  onCancelEdit={endEdit}
                />
              );
            })}
          </ol>
          {pairs.length > shown.length && (
            <button type="button" onClick={() => setLimit(limit + PAGE)}>
              Show {Math.min(PAGE, pairs.length - shown.length)} more (of {pairs.length - shown.length})
            </button>
          )}
        </>
      )}
    </section>
  );
}

interface RowProps {
  row: number;
  current: boolean;
  item: DatasetItem;
  negative: Negative;
  thumb: string | undefined;
  editing: boolean;
  onPick(): void;
  onDecide(status: NegativeStatus): void;
  onEdit(): void;
  onSave(text: string): Promise<void>;
  onCancelEdit(): void;
}

function PairRow({ row, current, item, negative, thumb, editing, onPick, onDecide, onEdit, onSave, onCancelEdit }: RowProps) {
  const [text, setText] = useState(negative.caption);
  const edited = negative.history.some((h) => h.action === 'edited');
  const principle = negative.principle === 'other' ? 'Other' : PRINCIPLE_INFO[negative.principle].label;
  return (
    <li data-row={row} className={`pair status-${negative.status}${current ? ' current' : ''}`} aria-current={current ? 'true' : undefined} onClick={onPick}>
      {thumb ? <img src={thumb} alt={item.image} width={72} height={72} /> : <div className="thumb-missing">{item.image}</div>}
      <div className="pair-text">
        <p className="caption">
          <span className="tag">Caption</span> {item.caption}
        </p>
        {editing ? (
          <form
            className="edit-negative"
            onSubmit={(e) => {
              e.preventDefault();
              void onSave(text);
            }}
          >
            <label>
              <span className="tag">Negative</span>
              <input
                autoFocus
                value={text}
                onChange={(e) => setText(e.target.value)}
                onKeyDown={(e) => {
                  if (e.key === 'Escape') onCancelEdit();
                }}
              />
            </label>
            <button type="submit" className="primary">
              Save
            </button>
            <button type="button" onClick={onCancelEdit}>
              Cancel edit
            </button>
          </form>
        ) : (
          <p className="negative">
            <span className="tag">Negative</span>{' '}
            {changedWords(item.caption, negative.caption).map((part, i) => (part.changed ? <mark key={i}>{part.text}</mark> : part.text))}
          </p>
        )}
        <p className="muted small pair-meta">
          {principle} · {negative.source === 'llm' ? 'LLM' : negative.source === 'rule' ? 'rule editor' : 'written by hand'}
          {edited ? ' · edited by hand' : ''} · <span className={`status-word status-${negative.status}`}>{STATUS_WORD[negative.status]}</span>
        </p>
      </div>
      <div className="pair-actions">
        <button type="button" onClick={() => onDecide('accepted')} disabled={negative.status === 'accepted'} aria-label={`Accept: ${negative.caption}`}>
          Accept
        </button>
        <button type="button" onClick={() => onDecide('rejected')} disabled={negative.status === 'rejected'} aria-label={`Reject: ${negative.caption}`}>
          Reject
        </button>
        <button type="button" onClick={onEdit} disabled={editing} aria-label={`Edit: ${negative.caption}`}>
          Edit
        </button>
      </div>
    </li>
  );
}

/** MIME type from the file name, for the blob the <img> reads. */
function mimeOf(image: string): string {
  const ext = image.toLowerCase().split('.').pop();
  return ext === 'png' ? 'image/png' : ext === 'jpg' || ext === 'jpeg' ? 'image/jpeg' : ext === 'webp' ? 'image/webp' : 'application/octet-stream';
}

/**
 * Blob URLs of the dataset's images, read through the engine as rows come into view. Every URL is revoked
 * when the list unmounts (its key is the dataset, so switching datasets unmounts it too).
 */
function useThumbnails(dataset: string, images: string[]): Record<string, string> {
  const [urls, setUrls] = useState<Record<string, string>>({});
  const asked = useRef(new Set<string>());
  const made = useRef<string[]>([]);
  const gone = useRef(false);
  const wanted = images.join('\n');

  useEffect(() => {
    gone.current = false;
    return () => {
      gone.current = true;
      for (const url of made.current) URL.revokeObjectURL(url);
      made.current = [];
      asked.current.clear();
    };
  }, []);

  useEffect(() => {
    for (const image of wanted.split('\n')) {
      if (!image || asked.current.has(image)) continue;
      asked.current.add(image);
      void engine()
        .lab.datasetImage(dataset, image)
        .then((r) => {
          // A missing image shows its name instead (the Data screen reports unreadable files).
          if (!r.ok || gone.current) return;
          const url = URL.createObjectURL(new Blob([r.value as Uint8Array<ArrayBuffer>], { type: mimeOf(image) }));
          made.current.push(url);
          setUrls((u) => ({ ...u, [image]: url }));
        });
    }
  }, [dataset, wanted]);

  return urls;
}
