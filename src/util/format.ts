// Byte sizes as people read them, one format for the screens, the CLI and error messages.

const BINARY_UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'] as const;

/** 268435456 -> "256 MiB", 4294967292 -> "4 GiB" (three significant digits, trailing zeros dropped). */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return 'unknown';
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < BINARY_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${bytes} ${bytes === 1 ? 'byte' : 'bytes'}`;
  return `${Number(value.toPrecision(3))} ${BINARY_UNITS[unit]}`;
}
