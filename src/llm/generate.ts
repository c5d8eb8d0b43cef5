// Making N negatives for a caption with any editor, and running many captions through a bounded pool.

import type { NegativeSource, PrincipleChoice, RecordedPrinciple } from '../data/vocabulary';
import { isAbortError } from './client';
import { principleFor } from './principles';
import type { CaptionEditor } from './types';

export interface MadeNegative {
  caption: string;
  principle: RecordedPrinciple;
  source: NegativeSource;
}

export interface FailedNegative {
  principle: PrincipleChoice;
  source: NegativeSource;
  reason: string;
  attempts: number;
}

export interface NegativesRequest {
  caption: string;
  /** How many to make. */
  count: number;
  /** Principles to cycle through; negative k uses principles[(offset + k) % length]. */
  principles: readonly PrincipleChoice[];
  /** Where in the cycle this caption starts (e.g. item index times per-caption count), so runs stay balanced. */
  offset?: number;
  /** Negatives the caption already has: new ones must differ from them. */
  existing?: readonly string[];
  signal?: AbortSignal;
}

export interface NegativesResult {
  made: MadeNegative[];
  failed: FailedNegative[];
  /** The signal aborted before all `count` were tried: `made` holds what was finished. */
  cancelled: boolean;
  /** The editor's server is gone (see isServerGone): the rest were not tried, and no other caption should be. */
  serverGone?: string;
}

/** Makes `count` negatives one after another (each must differ from the ones before it). */
export async function makeNegatives(editor: CaptionEditor, request: NegativesRequest): Promise<NegativesResult> {
  const made: MadeNegative[] = [];
  const failed: FailedNegative[] = [];
  const avoid = [...(request.existing ?? [])];
  const offset = request.offset ?? 0;
  for (let k = 0; k < request.count; k++) {
    if (request.signal?.aborted) return { made, failed, cancelled: true };
    const principle = principleFor(request.principles, offset + k);
    let result;
    try {
      result = await editor.edit({ caption: request.caption, principle, avoid, index: avoid.length, signal: request.signal });
    } catch (e) {
      if (isAbortError(e) || request.signal?.aborted) return { made, failed, cancelled: true };
      throw e;
    }
    if (result.ok) {
      made.push({ caption: result.caption, principle: result.principle, source: result.source });
      avoid.push(result.caption);
    } else {
      failed.push({ principle: result.principle, source: result.source, reason: result.reason, attempts: result.attempts });
      if (result.serverGone) return { made, failed, cancelled: false, serverGone: result.reason };
    }
  }
  return { made, failed, cancelled: !!request.signal?.aborted && made.length + failed.length < request.count };
}

/**
 * Runs `task` over `items` with at most `concurrency` at once, in order of start. Stops starting new
 * tasks once the signal aborts; a task's abort error ends the run. Any other error stops new tasks from
 * starting and is rethrown once the tasks in flight have finished (so nothing runs on after the caller
 * has moved on to saving and reporting).
 */
export async function runPool<T>(
  items: readonly T[],
  concurrency: number,
  task: (item: T, index: number) => Promise<void>,
  signal?: AbortSignal,
): Promise<{ completed: number; cancelled: boolean }> {
  let next = 0;
  let completed = 0;
  let cancelled = false;
  let failure: { error: unknown } | null = null;
  const worker = async () => {
    while (next < items.length && !failure) {
      if (signal?.aborted) {
        cancelled = true;
        return;
      }
      const i = next++;
      try {
        await task(items[i], i);
        completed++;
      } catch (e) {
        if (isAbortError(e) || signal?.aborted) {
          cancelled = true;
          return;
        }
        failure ??= { error: e };
        return;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
  if (failure) throw (failure as { error: unknown }).error;
  return { completed, cancelled: cancelled || !!signal?.aborted };
}
