// One line chart (uPlot) of a series by step. uPlot draws on a canvas, so its colours are read from the
// theme's CSS variables and the chart is rebuilt when the colour scheme changes; its width follows the box.
// For screen readers the figure's caption says the latest value.

import { useEffect, useRef, useState } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export interface ChartProps {
  title: string;
  steps: number[];
  values: (number | null)[];
  /** Formats a value for the caption and the axis. */
  format(v: number): string;
  /** A fixed value range (accuracy and fractions: 0 to 1); otherwise it follows the data. */
  range?: [number, number];
}

/** Steps are whole numbers: ticks at 1, 2, 5, 10, 20, ... apart. */
const STEP_TICKS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];

export function usePrefersDark(): boolean {
  const query = typeof matchMedia === 'function' ? matchMedia('(prefers-color-scheme: dark)') : null;
  const [dark, setDark] = useState(query?.matches ?? false);
  useEffect(() => {
    if (!query) return;
    const on = () => setDark(query.matches);
    query.addEventListener('change', on);
    return () => query.removeEventListener('change', on);
  }, [query]);
  return dark;
}

/**
 * Runs jobs one per task, in order: building a uPlot costs ~10-15 ms (canvas, styles, layout), so a screen
 * that mounts six charts at once would hold the main thread for a long task; one per task keeps it responsive.
 * Returns a cancel function (for a chart unmounted before its turn).
 */
const pending: (() => void)[] = [];
function oneTaskEach(job: () => void): () => void {
  pending.push(job);
  if (pending.length === 1) setTimeout(runNext, 0);
  return () => {
    const i = pending.indexOf(job);
    if (i > 0) pending.splice(i, 1);
    else if (i === 0) pending[0] = () => {}; // already scheduled: run nothing in its turn
  };
}
function runNext(): void {
  pending[0]?.();
  pending.shift();
  if (pending.length) setTimeout(runNext, 0);
}

export function Chart({ title, steps, values, format, range }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const dark = usePrefersDark();
  // The data to draw once the plot is built (it is built a few tasks after the first render).
  const data = useRef<[number[], (number | null)[]]>([steps, values]);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    let u: uPlot | null = null;
    let observer: ResizeObserver | null = null;
    const cancel = oneTaskEach(() => {
      ({ u, observer } = build(el));
      plot.current = u;
      u.setData(data.current);
    });
    return () => {
      cancel();
      observer?.disconnect();
      u?.destroy();
      plot.current = null;
    };
  }, [title, format, dark, range]);

  useEffect(() => {
    data.current = [steps, values];
    plot.current?.setData(data.current);
  }, [steps, values, dark]);

  function build(el: HTMLDivElement): { u: uPlot; observer: ResizeObserver } {
    const css = getComputedStyle(el);
    const colour = (name: string) => css.getPropertyValue(name).trim() || '#888';
    const axis = { stroke: colour('--muted'), grid: { stroke: colour('--border'), width: 1 }, ticks: { stroke: colour('--border') } };
    const u = new uPlot(
      {
        width: Math.max(200, el.clientWidth),
        height: 160,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: false }, y: range ? { range: () => range } : {} },
        axes: [{ ...axis, incrs: STEP_TICKS }, { ...axis, size: 64, values: (_u, ticks) => ticks.map((t) => format(t)) }],
        series: [{ label: 'step' }, { label: title, stroke: colour('--accent'), width: 2, spanGaps: true, points: { show: false } }],
      },
      [[], []],
      el,
    );
    const observer = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height: 160 }));
    observer.observe(el);
    return { u, observer };
  }

  const lastIndex = values.length - 1;
  const last = lastIndex >= 0 ? values[lastIndex] : null;
  return (
    <figure className="chart">
      <figcaption>
        {title}
        <span className="chart-last">{last === null || last === undefined ? '—' : `${format(last)} at step ${steps[lastIndex]}`}</span>
      </figcaption>
      <div ref={box} className="chart-box" role="img" aria-label={`${title} by step`} />
    </figure>
  );
}
