// Learning-rate schedules: linear warm-up from 0, then constant or cosine decay to 0 at the last step.

export type LrSchedule = 'constant' | 'cosine';
export const LR_SCHEDULES: readonly LrSchedule[] = ['constant', 'cosine'];

export interface LrScheduleConfig {
  lr: number;
  schedule: LrSchedule;
  warmupSteps: number;
  totalSteps: number;
}

/** The learning rate of optimizer step `step` (0-based). */
export function learningRate(c: LrScheduleConfig, step: number): number {
  if (step < c.warmupSteps) return (c.lr * (step + 1)) / c.warmupSteps;
  if (c.schedule === 'constant') return c.lr;
  const span = Math.max(1, c.totalSteps - c.warmupSteps);
  const progress = Math.min(1, (step - c.warmupSteps) / span);
  return 0.5 * c.lr * (1 + Math.cos(Math.PI * progress));
}
