// What a subcommand may touch of the outside world, injected so tests can run commands in-process.

import type { Gpu } from '../gpu/gpu';
import { openNodeGpu } from '../gpu/node';

export interface OutStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface CliIO {
  stdout: OutStream;
  stderr: OutStream;
  env: Record<string, string | undefined>;
  cwd: string;
  /** Aborts on Ctrl-C (process IO) or when a test says so. */
  signal?: AbortSignal;
  /** A GPU already open, used instead of opening one (tests share one so each kernel compiles once). */
  gpu?: Gpu;
}

/** The command's GPU: io.gpu when given (left open), else a fresh one (destroyed by release). */
export async function commandGpu(io: CliIO): Promise<{ gpu: Gpu; release: () => void }> {
  if (io.gpu) return { gpu: io.gpu, release: () => {} };
  const gpu = await openNodeGpu();
  return { gpu, release: () => gpu.destroy() };
}

/** The real process's streams and environment; Ctrl-C aborts the signal (a second one exits at once). */
export function processIO(): { io: CliIO; dispose: () => void } {
  const controller = new AbortController();
  const onSigint = () => {
    if (controller.signal.aborted) process.exit(130);
    process.stderr.write('\ninterrupted: finishing what is in flight and saving (Ctrl-C again to quit now)\n');
    controller.abort(new Error('interrupted'));
  };
  process.on('SIGINT', onSigint);
  return {
    io: { stdout: process.stdout, stderr: process.stderr, env: process.env, cwd: process.cwd(), signal: controller.signal },
    dispose: () => process.off('SIGINT', onSigint),
  };
}

/**
 * A one-line progress bar on stderr, redrawn in place on a terminal (at most ~10 times a second); on a
 * pipe or file it prints a plain line at every quarter instead.
 */
export class ProgressBar {
  private done = 0;
  private lastDraw = 0;
  private lastQuarter = -1;
  private readonly started = Date.now();
  private note = '';

  constructor(
    private readonly stream: OutStream,
    private readonly total: number,
    private readonly label: string,
    private readonly enabled = true,
  ) {}

  tick(n = 1, note?: string): void {
    this.done += n;
    if (note !== undefined) this.note = note;
    this.draw(false);
  }

  setNote(note: string): void {
    this.note = note;
    this.draw(false);
  }

  finish(): void {
    this.draw(true);
    if (this.enabled && this.stream.isTTY) this.stream.write('\n');
  }

  private draw(force: boolean): void {
    if (!this.enabled || this.total <= 0) return;
    const now = Date.now();
    const fraction = Math.min(1, this.done / this.total);
    if (this.stream.isTTY) {
      if (!force && now - this.lastDraw < 100 && this.done < this.total) return;
      this.lastDraw = now;
      const width = 24;
      const filled = Math.round(fraction * width);
      const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
      const elapsed = (now - this.started) / 1000;
      const eta = this.done > 0 && this.done < this.total ? ` eta ${formatSeconds((elapsed / this.done) * (this.total - this.done))}` : '';
      let line = `${this.label} [${bar}] ${this.done}/${this.total} ${Math.round(fraction * 100)}%${eta}${this.note ? `  ${this.note}` : ''}`;
      const cols = this.stream.columns ?? 100;
      if (line.length > cols - 1) line = line.slice(0, cols - 1);
      this.stream.write(`\r\x1b[2K${line}`);
    } else {
      const quarter = Math.floor(fraction * 4);
      if (quarter > this.lastQuarter && (quarter > 0 || force)) {
        this.lastQuarter = quarter;
        this.stream.write(`${this.label}: ${this.done}/${this.total} (${Math.round(fraction * 100)}%)\n`);
      }
    }
  }
}

/** System error codes in words: what a user can act on, instead of "EISDIR: illegal operation on a directory". */
const SYSTEM_ERRORS: Record<string, string> = {
  ENOENT: 'no such file or folder',
  EISDIR: 'is a folder, where a file was expected',
  ENOTDIR: 'a part of the path is a file, where a folder was expected',
  EEXIST: 'already exists as a file, where a folder was expected',
  EACCES: 'permission denied',
  EPERM: 'the operation is not permitted',
  EROFS: 'is on a read-only file system',
  ENOSPC: 'the disk is full',
  EDQUOT: 'the disk quota is exhausted',
  EMFILE: 'too many files are open',
  ENAMETOOLONG: 'the path is too long',
  ELOOP: 'the path has a loop of symbolic links',
  EBUSY: 'the file is busy',
};

/** What a Node system error means, in words (no path); null when `e` is not one we know. */
export function systemErrorWords(e: unknown): string | null {
  const code = (e as NodeJS.ErrnoException)?.code;
  return typeof code === 'string' && code in SYSTEM_ERRORS ? SYSTEM_ERRORS[code] : null;
}

/** A Node system error (fs, net) said in words, naming the path; null when `e` is not one. */
export function systemErrorMessage(e: unknown): string | null {
  const err = e as NodeJS.ErrnoException;
  if (!(e instanceof Error) || typeof err.code !== 'string' || !(err.code in SYSTEM_ERRORS)) return null;
  const where = err.path ?? (err as { dest?: string }).dest;
  return `${where ? `${where}: ` : ''}${SYSTEM_ERRORS[err.code]}${err.syscall ? ` (${err.code} in ${err.syscall})` : ''}`;
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${Math.round(s)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
