// Human-readable numbers for the screens (sizes: src/util/format.ts).

/** What a dataset holds: "12 images", "30 pairs", "40 labelled images". */
export function datasetSize(d: { kind: 'tpo' | 'dpo' | 'kto'; items: number }): string {
  const unit = d.kind === 'dpo' ? (d.items === 1 ? 'pair' : 'pairs') : d.kind === 'kto' ? 'labelled images' : d.items === 1 ? 'image' : 'images';
  return `${formatCount(d.items)} ${unit}`;
}

/** 65535 -> "65,535". */
export function formatCount(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'unknown';
}

/** Milliseconds with a sensible number of digits: "0.42 ms", "3.1 ms", "812 ms", "2.4 s". */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return 'unknown';
  if (ms >= 1000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms >= 100) return `${Math.round(ms)} ms`;
  if (ms >= 1) return `${ms.toFixed(1)} ms`;
  return `${ms.toFixed(2)} ms`;
}

/** A small error in scientific notation with three significant digits at most: "9.8e-7", "1e-4"; zero as "0". */
export function formatError(x: number): string {
  if (Number.isNaN(x)) return 'NaN (the GPU returned a non-finite value)';
  return x === 0 ? '0' : Number(x.toPrecision(3)).toExponential();
}
