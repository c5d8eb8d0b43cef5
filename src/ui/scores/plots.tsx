// Small SVG plots for the scores view: a histogram of margins and a scatter of r(x, c_w) against r(x, c_l).
// SVG rather than a canvas: a few hundred marks at most, crisp at any zoom, themed by CSS, and each plot
// says in words what it shows for screen readers.

const W = 320;
const H = 200;
const PAD = 28;

function extent(values: number[]): [number, number] {
  let lo = Math.min(0, ...values);
  let hi = Math.max(0, ...values);
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const pad = (hi - lo) * 0.05;
  return [lo - pad, hi + pad];
}

const fmt = (v: number) => (Math.abs(v) >= 100 || (v !== 0 && Math.abs(v) < 0.01) ? v.toExponential(1) : v.toFixed(2));

export function MarginHistogram({ margins, label }: { margins: number[]; label: string }) {
  // An odd number of bins centred on zero, so ties (margin 0) fall in the middle bin.
  const bins = 15;
  const [lo0, hi0] = extent(margins);
  const half = Math.max(-lo0, hi0);
  const [lo, hi] = [-half, half];
  const counts = new Array<number>(bins).fill(0);
  for (const m of margins) counts[Math.min(bins - 1, Math.floor(((m - lo) / (hi - lo)) * bins))]++;
  const top = Math.max(1, ...counts);
  const x = (v: number) => PAD + ((v - lo) / (hi - lo)) * (W - 2 * PAD);
  const barW = (W - 2 * PAD) / bins;
  const right = margins.filter((m) => m > 0).length;
  return (
    <figure className="plot">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${label}: ${margins.length} margins, ${right} above zero, from ${fmt(Math.min(...margins, 0))} to ${fmt(Math.max(...margins, 0))}`}>
        {counts.map((c, i) => (
          <rect key={i} className={i > (bins - 1) / 2 ? 'bar-right' : i < (bins - 1) / 2 ? 'bar-wrong' : 'bar-tie'} x={PAD + i * barW + 1} width={barW - 2} y={H - PAD - ((H - 2 * PAD) * c) / top} height={((H - 2 * PAD) * c) / top} />
        ))}
        <line className="zero" x1={x(0)} x2={x(0)} y1={PAD / 2} y2={H - PAD} />
        <line className="axis" x1={PAD} x2={W - PAD} y1={H - PAD} y2={H - PAD} />
        <text x={PAD} y={H - 8} className="tick">
          {fmt(lo)}
        </text>
        <text x={W - PAD} y={H - 8} className="tick" textAnchor="end">
          {fmt(hi)}
        </text>
        <text x={x(0)} y={PAD / 2 - 2} className="tick" textAnchor="middle">
          0
        </text>
      </svg>
      <figcaption>{label}</figcaption>
    </figure>
  );
}

export function RewardScatter({ points, label }: { points: { rewardW: number; rewardL: number; margin: number }[]; label: string }) {
  const [lo, hi] = extent(points.flatMap((p) => [p.rewardW, p.rewardL]));
  const x = (v: number) => PAD + ((v - lo) / (hi - lo)) * (W - 2 * PAD);
  const y = (v: number) => H - PAD - ((v - lo) / (hi - lo)) * (H - 2 * PAD);
  const below = points.filter((p) => p.margin > 0).length;
  return (
    <figure className="plot">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`${label}: ${points.length} pairs, ${below} below the diagonal (the right caption preferred)`}>
        <line className="axis" x1={PAD} x2={W - PAD} y1={H - PAD} y2={H - PAD} />
        <line className="axis" x1={PAD} x2={PAD} y1={PAD / 2} y2={H - PAD} />
        {/* The diagonal r_w = r_l: below it the image prefers its own caption. */}
        <line className="zero" x1={x(lo)} y1={y(lo)} x2={x(hi)} y2={y(hi)} />
        {points.map((p, i) => (
          <circle key={i} className={p.margin > 0 ? 'dot-right' : 'dot-wrong'} cx={x(p.rewardW)} cy={y(p.rewardL)} r={3.5} />
        ))}
        <text x={W - PAD} y={H - 8} className="tick" textAnchor="end">
          r(x, c_w) →
        </text>
        <text x={4} y={PAD / 2 + 4} className="tick">
          ↑ r(x, c_l)
        </text>
      </svg>
      <figcaption>{label}</figcaption>
    </figure>
  );
}
