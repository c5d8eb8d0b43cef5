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

function usePrefersDark(): boolean {
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

export function Chart({ title, steps, values, format, range }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const dark = usePrefersDark();

  useEffect(() => {
    const el = box.current;
    if (!el) return;
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
    plot.current = u;
    const observer = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height: 160 }));
    observer.observe(el);
    return () => {
      observer.disconnect();
      u.destroy();
      plot.current = null;
    };
  }, [title, format, dark, range]);

  useEffect(() => {
    plot.current?.setData([steps, values]);
  }, [steps, values, dark]);

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
