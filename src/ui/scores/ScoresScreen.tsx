// The Scores screen, the lab's signature view: for a run's scored step (or the base model) on the training
// and held-out splits, the histogram of implicit preference margins, the scatter of r(x, c_w) against
// r(x, c_l) with the diagonal, implicit accuracy per principle, and a sortable table of pairs that opens a
// pair; a second step (or the base model) side by side; and an independent judge's margins against the
// implicit ones (JudgeCard).

import { useEffect, useId, useMemo, useState } from 'react';
import { useThumbnail } from '../data/thumbnails';
import { useTrainStore } from '../train/store';
import { MarginHistogram, RewardScatter } from './plots';
import { type PairScore, type ScoreChoice, type ScoreSet, type Split, useScoresStore } from './store';
import { ErrorNotice } from '../ErrorNotice';
import { JudgeCard } from './JudgeCard';

const choiceKey = (c: ScoreChoice | null) => (c === null ? '' : c.kind === 'base' ? 'base' : `step-${c.step}`);
const parseChoice = (key: string): ScoreChoice | null => (key === 'base' ? { kind: 'base' } : key.startsWith('step-') ? { kind: 'step', step: Number(key.slice(5)) } : null);
const pct = (x: number) => (Number.isFinite(x) ? `${Math.round(x * 100)}%` : '—');
const num = (x: number, digits = 4) => (Number.isFinite(x) ? x.toFixed(digits) : '—');

export function ScoresScreen() {
  const runs = useTrainStore((s) => s.runs);
  const refreshRuns = useTrainStore((s) => s.refreshRuns);
  const { run, steps, loading, error, load } = useScoresStore();
  const [split, setSplit] = useState<Split>('train');
  const [shown, setShown] = useState<ScoreChoice | null>(null);
  const [compared, setCompared] = useState<ScoreChoice | null>(null);
  const runId = useId();
  const shownId = useId();
  const compareId = useId();

  useEffect(() => {
    void refreshRuns();
  }, [refreshRuns]);
  // The latest scored step by default once a run's scores are read.
  useEffect(() => {
    setShown(steps.length ? { kind: 'step', step: steps.at(-1)! } : null);
    setCompared(null);
  }, [steps]);

  const choices = [...steps.map((s): ScoreChoice => ({ kind: 'step', step: s })), { kind: 'base' } as ScoreChoice];
  const label = (c: ScoreChoice) => (c.kind === 'base' ? 'Base model' : `Step ${c.step}`);

  return (
    <>
      <section className="card" aria-labelledby="scores-heading">
        <h2 id="scores-heading">Implicit preference scores</h2>
        <p className="muted">
          For each pair, how much more the LoRA prefers the image under its own caption than under the subtly wrong one, measured
          against the base model: the margin r(x, c_w) − r(x, c_l). Above zero the pair is right. Scores are computed during training
          (Train screen: Scores every) and at its end.
        </p>
        <div className="toolbar">
          <label htmlFor={runId}>Run</label>
          <select
            id={runId}
            value={run ?? ''}
            onChange={(e) => {
              const info = runs.find((r) => r.id === e.target.value);
              if (info) void load(info.id, info.dataset);
            }}
          >
            <option value="">Choose a run…</option>
            {runs.map((r) => (
              <option key={r.id} value={r.id}>
                {r.id} ({r.method}, {r.status}, step {r.step})
              </option>
            ))}
          </select>
          <label htmlFor={shownId}>Scores at</label>
          <select id={shownId} value={choiceKey(shown)} onChange={(e) => setShown(parseChoice(e.target.value))} disabled={!steps.length}>
            {choices.map((c) => (
              <option key={choiceKey(c)} value={choiceKey(c)}>
                {label(c)}
              </option>
            ))}
          </select>
          <label htmlFor={compareId}>Compare with</label>
          <select id={compareId} value={choiceKey(compared)} onChange={(e) => setCompared(parseChoice(e.target.value))} disabled={!steps.length}>
            <option value="">nothing</option>
            {choices.map((c) => (
              <option key={choiceKey(c)} value={choiceKey(c)}>
                {label(c)}
              </option>
            ))}
          </select>
          <div role="radiogroup" aria-label="Split" className="segmented">
            {(['train', 'held-out'] as const).map((s) => (
              <label key={s}>
                <input type="radio" name="split" value={s} checked={split === s} onChange={() => setSplit(s)} /> {s === 'train' ? 'Training' : 'Held out'}
              </label>
            ))}
          </div>
        </div>
        <div role="status" aria-live="polite">
          {loading && <p className="muted">Reading the scores…</p>}
          {run && !loading && !steps.length && !error && <p className="muted">This run has no scores yet: they are written at its end, or every few steps if set.</p>}
        </div>
        <ErrorNotice error={error} />
      </section>
      {shown && (
        <div className={compared ? 'side-by-side' : ''}>
          <ScoreView choice={shown} split={split} title={label(shown)} />
          {compared && <ScoreView choice={compared} split={split} title={label(compared)} />}
        </div>
      )}
      <JudgeCard />
    </>
  );
}

function ScoreView({ choice, split, title }: { choice: ScoreChoice; split: Split; title: string }) {
  const scoreSet = useScoresStore((s) => s.scoreSet);
  const lines = useScoresStore((s) => s.lines);
  const set = useMemo(() => scoreSet(choice, split), [scoreSet, choice, split, lines]);
  const [open, setOpen] = useState<PairScore | null>(null);
  return (
    <section className="card" aria-label={`Scores: ${title}, ${split === 'train' ? 'training' : 'held-out'} pairs`}>
      <h3>
        {title} · {split === 'train' ? 'training pairs' : 'held-out pairs'}
      </h3>
      {set.base && <p className="muted">Without the LoRA the model is its own reference: every reward and margin is 0, accuracy 50% (ties count half).</p>}
      {set.pairs.length === 0 ? (
        <p className="muted">No {split === 'train' ? 'training' : 'held-out'} pairs were scored at this step.</p>
      ) : (
        <>
          <p className="score-summary">
            Implicit accuracy <strong>{pct(set.accuracy)}</strong> · mean margin <strong>{num(set.meanMargin)}</strong> · {set.pairs.length} pairs
          </p>
          <div className="plots">
            <MarginHistogram margins={set.pairs.map((p) => p.margin)} label="Margins" />
            <RewardScatter points={set.pairs} label="r(x, c_w) against r(x, c_l)" />
          </div>
          <PrincipleTable set={set} />
          <div className="table-scroll">
            <PairTable set={set} onOpen={setOpen} />
          </div>
          {open && <PairDetail pair={open} onClose={() => setOpen(null)} />}
        </>
      )}
    </section>
  );
}

function PrincipleTable({ set }: { set: ScoreSet }) {
  const rows = [...new Set(set.pairs.map((p) => p.principle))].sort().map((principle) => {
    const pairs = set.pairs.filter((p) => p.principle === principle);
    const accuracy = pairs.reduce((a, p) => a + (p.margin > 0 ? 1 : p.margin === 0 ? 0.5 : 0), 0) / pairs.length;
    return { principle, n: pairs.length, accuracy };
  });
  return (
    <table className="score-table">
      <caption>Implicit accuracy per principle</caption>
      <thead>
        <tr>
          <th scope="col">Principle</th>
          <th scope="col">Pairs</th>
          <th scope="col">Accuracy</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr key={r.principle}>
            <td>{r.principle}</td>
            <td className="num">{r.n}</td>
            <td className="num">{pct(r.accuracy)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

type SortKey = 'image' | 'principle' | 'rewardW' | 'rewardL' | 'margin';

function PairTable({ set, onOpen }: { set: ScoreSet; onOpen(p: PairScore): void }) {
  const [sort, setSort] = useState<{ key: SortKey; up: boolean }>({ key: 'margin', up: true });
  const rows = [...set.pairs].sort((a, b) => {
    const d = typeof a[sort.key] === 'number' ? (a[sort.key] as number) - (b[sort.key] as number) : String(a[sort.key]).localeCompare(String(b[sort.key]));
    return sort.up ? d : -d;
  });
  const header = (key: SortKey, text: string) => (
    <th scope="col" aria-sort={sort.key === key ? (sort.up ? 'ascending' : 'descending') : 'none'}>
      <button type="button" className="sort" onClick={() => setSort({ key, up: sort.key === key ? !sort.up : true })}>
        {text}
        {sort.key === key ? (sort.up ? ' ▲' : ' ▼') : ''}
      </button>
    </th>
  );
  return (
    <table className="score-table pairs-table">
      <caption>Pairs (choose one to see it)</caption>
      <thead>
        <tr>
          {header('image', 'Image')}
          <th scope="col">Wrong caption</th>
          {header('principle', 'Principle')}
          {header('rewardW', 'r(x, c_w)')}
          {header('rewardL', 'r(x, c_l)')}
          {header('margin', 'Margin')}
        </tr>
      </thead>
      <tbody>
        {rows.map((p) => (
          <tr key={p.id} className={p.margin > 0 ? 'right' : 'wrong'}>
            <td>
              <button type="button" className="link" onClick={() => onOpen(p)} aria-label={`Open the pair ${p.image}: ${p.negative}`}>
                {p.image}
              </button>
            </td>
            <td>{p.negative}</td>
            <td>{p.principle}</td>
            {/* Three decimals: the table's six columns fit half the screen when two sets are compared. */}
            <td className="num">{num(p.rewardW, 3)}</td>
            <td className="num">{num(p.rewardL, 3)}</td>
            <td className="num">{num(p.margin, 3)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function PairDetail({ pair, onClose }: { pair: PairScore; onClose(): void }) {
  const dataset = useScoresStore((s) => s.dataset);
  const item = useScoresStore((s) => s.items.find((i) => i.image === pair.image));
  const url = useThumbnail(dataset ?? '', pair.image);
  return (
    <div className="pair-detail" role="region" aria-label={`Pair ${pair.image}`}>
      {url && dataset ? <img src={url} alt={item?.caption ?? pair.image} /> : <p className="muted">The image is no longer in the dataset.</p>}
      <dl className="facts">
        <div>
          <dt>Right caption</dt>
          <dd>{item?.caption ?? 'unknown (the dataset changed)'}</dd>
        </div>
        <div>
          <dt>Wrong caption</dt>
          <dd>{pair.negative}</dd>
        </div>
        <div>
          <dt>Principle</dt>
          <dd>{pair.principle}</dd>
        </div>
        <div>
          <dt>Margin</dt>
          <dd>
            {num(pair.margin)} ({pair.margin > 0 ? 'the right caption is preferred' : 'not preferred yet'})
          </dd>
        </div>
      </dl>
      <button type="button" className="small" onClick={onClose}>
        Close
      </button>
    </div>
  );
}
