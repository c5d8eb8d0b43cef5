// Runs as the Samples and Export screens offer them: the ones with a LoRA to use (finished, or stopped with a
// checkpoint), newest first, each labelled with its state.

import type { EngineError, RunInfo } from '../worker/api';
import type { EngineClient } from '../worker/client';

export async function usableRuns(client: EngineClient): Promise<{ runs: RunInfo[] } | { error: EngineError }> {
  const r = await client.lab.listRuns();
  if (!r.ok) return { error: r.error };
  const runs = r.value.filter((x) => x.status === 'done' || x.status === 'stopped').sort((a, b) => b.startedAt - a.startedAt || (a.id < b.id ? 1 : -1));
  return { runs };
}

/** The run kept when the list changes: the chosen one while it is there, else the newest. */
export function keptRun(runs: RunInfo[], chosen: string): string {
  return chosen && runs.some((x) => x.id === chosen) ? chosen : (runs[0]?.id ?? '');
}

export function runLabel(r: RunInfo): string {
  return `${r.id} · ${r.method} · ${r.status === 'done' ? `done, ${r.step} steps` : `checkpoint at step ${r.step} of ${r.steps}`}`;
}
