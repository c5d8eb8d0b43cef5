// The scatter of the judge's margin (y) against the run's implicit margin (x), one dot per pair, drawn with
// uPlot as the Train screen's charts are: colours from the theme's CSS variables, rebuilt when the colour
// scheme changes, width following the box. For screen readers the plot says in words what it shows.

import { useEffect, useRef } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { usePrefersDark } from '../train/Chart';

export interface ScatterPoint {
  implicit: number;
  judge: number;
}

const HEIGHT = 240;

/** An axis range over the values and zero, with a margin so that no dot sits on the frame. */
function padded(lo: number | null, hi: number | null): uPlot.Range.MinMax {
  let a = Math.min(0, lo ?? 0);
  let b = Math.max(0, hi ?? 0);
  if (a === b) {
    a -= 1;
    b += 1;
  }
  const pad = (b - a) * 0.08;
  return [a - pad, b + pad];
}
const fmt = (v: number) => (Math.abs(v) >= 100 || (v !== 0 && Math.abs(v) < 0.01) ? v.toExponential(1) : v.toFixed(2));

export function JudgeScatter({ points, label }: { points: ScatterPoint[]; label: string }) {
  const box = useRef<HTMLDivElement>(null);
  const dark = usePrefersDark();

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    // uPlot's x values ascend; each pair is one point, with no line between them.
    const sorted = [...points].sort((a, b) => a.implicit - b.implicit);
    const css = getComputedStyle(el);
    const colour = (name: string) => css.getPropertyValue(name).trim() || '#888';
    const axis = { stroke: colour('--muted'), grid: { stroke: colour('--border'), width: 1 }, ticks: { stroke: colour('--border') }, values: (_u: uPlot, ticks: number[]) => ticks.map(fmt) };
    const u = new uPlot(
      {
        width: Math.max(200, el.clientWidth),
        height: HEIGHT,
        legend: { show: false },
        cursor: { drag: { x: false, y: false } },
        scales: { x: { time: false, range: (_u, lo, hi) => padded(lo, hi) }, y: { range: (_u, lo, hi) => padded(lo, hi) } },
        // The zero lines: dots in the upper-right and lower-left quarters are pairs the two margins agree on.
        hooks: { draw: [(u) => drawZeroLines(u, colour('--text'))] },
        axes: [
          { ...axis, label: 'implicit margin (the run)' },
          { ...axis, label: 'judge margin', size: 64 },
        ],
        series: [{ label: 'implicit margin' }, { label: 'judge margin', stroke: colour('--accent'), paths: () => null, points: { show: true, size: 10, width: 1, fill: colour('--accent'), stroke: colour('--surface') } }],
      },
      [sorted.map((p) => p.implicit), sorted.map((p) => p.judge)],
      el,
    );
    const observer = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth), height: HEIGHT }));
    observer.observe(el);
    return () => {
      observer.disconnect();
      u.destroy();
    };
  }, [points, dark]);

  const agree = points.filter((p) => Math.sign(p.judge) === Math.sign(p.implicit) && p.judge !== 0).length;
  return (
    <figure className="chart judge-scatter">
      <figcaption>{label}</figcaption>
      <div ref={box} className="chart-box" role="img" aria-label={`${label}: ${points.length} pairs, ${agree} with both margins of the same sign`} />
    </figure>
  );
}

function drawZeroLines(u: uPlot, colour: string): void {
  const { ctx } = u;
  const { left, top, width, height } = u.bbox;
  const x = Math.round(u.valToPos(0, 'x', true));
  const y = Math.round(u.valToPos(0, 'y', true));
  ctx.save();
  ctx.strokeStyle = colour;
  ctx.globalAlpha = 0.6;
  ctx.lineWidth = Math.max(1, devicePixelRatio);
  ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
  ctx.beginPath();
  ctx.moveTo(x, top);
  ctx.lineTo(x, top + height);
  ctx.moveTo(left, y);
  ctx.lineTo(left + width, y);
  ctx.stroke();
  ctx.restore();
}
