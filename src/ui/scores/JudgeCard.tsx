// The Scores screen's judge: an independent model (a CLIP ONNX export, or a reward model in its layout)
// picked as a folder, scoring every pair of the run's dataset; its margins S(x, c_w) - S(x, c_l) against the
// run's implicit margins at its last scored step, with their Pearson and Spearman correlation overall and
// per principle. Agreement says the implicit scores track what an outside judge sees.

import { useId } from 'react';
import type { Correlation } from '../../judges/agreement';
import type { JudgeKind } from '../../worker/api';
import { ErrorNotice } from '../ErrorNotice';
import { backendName, useJudgeStore } from '../judge/store';
import { JudgeScatter } from './JudgeScatter';
import { useScoresStore } from './store';

const r = (v: number | null) => (v === null ? 'n/a' : v.toFixed(3));
const pct = (x: number) => (Number.isFinite(x) ? `${Math.round(x * 100)}%` : '—');

function correlationText(c: Correlation): string {
  return `Pearson ${r(c.pearson)} · Spearman ${r(c.spearman)} over ${c.pairs} pair${c.pairs === 1 ? '' : 's'}`;
}

export function JudgeCard() {
  const run = useScoresStore((s) => s.run);
  const dataset = useScoresStore((s) => s.dataset);
  const { kind, info, opening, progress, result, error, setKind, open, scorePairs } = useJudgeStore();
  const folderId = useId();
  const kindId = useId();
  const busy = opening || progress !== null;
  // A result for another run (or dataset) is not shown: the button scores again (the judge's own scores are kept by the engine).
  const shown = result && result.run === run && result.dataset === dataset ? result : null;
  const points = shown ? shown.rows.filter((p) => p.implicitMargin !== null).map((p) => ({ implicit: p.implicitMargin!, judge: p.margin })) : [];

  return (
    <section className="card" aria-labelledby="judge-heading">
      <h2 id="judge-heading">Judge</h2>
      <p className="muted">
        An independent model scores each image against its caption and against the wrong caption: its margin S(x, c_w) − S(x, c_l)
        beside the run&rsquo;s implicit margin. Pick a CLIP ONNX export (text_model.onnx, vision_model.onnx, preprocessor_config.json and
        the tokenizer, as Xenova/clip-vit-base-patch32 has them), or a reward model in that layout with its reward.json.
      </p>
      <div className="pickers">
        <div className="picker">
          <label htmlFor={kindId}>Judge kind</label>
          <select id={kindId} value={kind} onChange={(e) => void setKind(e.target.value as JudgeKind)} disabled={busy}>
            <option value="clip">CLIP</option>
            <option value="reward">Reward model</option>
          </select>
        </div>
        <div className="picker">
          <label htmlFor={folderId}>Judge folder</label>
          {/* webkitdirectory: the browser asks for a folder and hands over every file in it. */}
          <input id={folderId} type="file" {...{ webkitdirectory: '' }} disabled={busy} onChange={(e) => e.target.files?.length && void open([...e.target.files])} />
        </div>
      </div>
      <div className="toolbar">
        <button type="button" className="primary" disabled={!info || !run || !dataset || busy} onClick={() => void scorePairs(dataset!, run)}>
          Score with the judge
        </button>
        <span role="status" aria-live="polite" className="muted">
          {opening && 'Loading the judge…'}
          {progress && (
            <>
              <progress max={progress.total || 1} value={progress.done} aria-label="Judge progress" />{' '}
              {progress.total ? `${progress.done} of ${progress.total} captions and images` : 'starting…'}
            </>
          )}
          {!busy && !info && 'No judge open.'}
          {!busy && info && !run && 'Choose a run above.'}
        </span>
      </div>
      {info && (
        <p className="judge-backend" aria-label="Judge backend">
          {info.kind === 'clip' ? 'CLIP' : 'Reward model'} <strong>{info.name}</strong> on {backendName(info.backend)}
        </p>
      )}
      {info?.notices.map((n) => (
        <div key={n} className="notice" role="note">
          <p>{n}</p>
        </div>
      ))}
      <ErrorNotice error={error} />
      {shown && <JudgeResult result={shown} points={points} />}
    </section>
  );
}

function JudgeResult({ result, points }: { result: NonNullable<ReturnType<typeof useJudgeStore.getState>['result']>; points: { implicit: number; judge: number }[] }) {
  return (
    <div className="judge-result" role="region" aria-label="Judge result">
      <p className="score-summary">
        Judge accuracy <strong>{pct(result.accuracy)}</strong> · mean judge margin <strong>{result.meanMargin.toFixed(3)}</strong> · {result.rows.length} pairs
      </p>
      {result.overall === null || result.step === null ? (
        <p className="muted">This run has no implicit scores yet, so there is nothing to compare the judge with.</p>
      ) : (
        <>
          <p className="judge-correlation" aria-label="Judge agreement">
            Agreement with the implicit margins at step {result.step} (training and held-out pairs): <strong>{correlationText(result.overall)}</strong>
            {result.matched < result.rows.length && ` (${result.rows.length - result.matched} pairs the run did not score are left out)`}
          </p>
          <JudgeScatter points={points} label="Judge margin against implicit margin" />
          <table className="score-table">
            <caption>Judge agreement per principle</caption>
            <thead>
              <tr>
                <th scope="col">Principle</th>
                <th scope="col">Pairs</th>
                <th scope="col">Pearson</th>
                <th scope="col">Spearman</th>
              </tr>
            </thead>
            <tbody>
              {Object.entries(result.byPrinciple).map(([principle, c]) => (
                <tr key={principle}>
                  <td>{principle}</td>
                  <td className="num">{c.pairs}</td>
                  <td className="num">{r(c.pearson)}</td>
                  <td className="num">{r(c.spearman)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </div>
  );
}
