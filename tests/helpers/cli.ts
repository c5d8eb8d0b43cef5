// Running `tpo-lab` commands in-process, with their output captured.

import type { CliIO } from '../../src/cli/io';
import { main } from '../../src/cli/main';

/** An IO that records stdout and stderr (stderr is not a terminal, so progress prints plain lines). */
export function captureIO(options: Partial<Pick<CliIO, 'cwd' | 'env' | 'signal' | 'gpu'>> = {}) {
  let stdout = '';
  let stderr = '';
  const io: CliIO = {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s), isTTY: false },
    env: options.env ?? {},
    cwd: options.cwd ?? '/',
    signal: options.signal,
    gpu: options.gpu,
  };
  return { io, out: () => stdout, err: () => stderr };
}

/** Runs `tpo-lab <argv>`; returns the exit status and what it printed. */
export async function runCli(argv: string[], options: Parameters<typeof captureIO>[0] = {}): Promise<{ status: number; out: string; err: string }> {
  const c = captureIO(options);
  const status = await main(argv, c.io);
  return { status, out: c.out(), err: c.err() };
}
