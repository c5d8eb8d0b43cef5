// Errors the orchestration layer raises about what the user gave it (a data file, settings, a run folder),
// as opposed to bugs and device failures: the CLI prints them with its usage hint (exit 2), the worker
// returns them as a failure of kind 'input'.

export class InputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
  }
}

/**
 * What kind of failure an error is, for the page: what the user gave ('input': fix it and try again), a full
 * storage quota ('storage-full': delete something, then resume), a lost GPU device ('device-lost'), or
 * anything else ('error'). By name, so that it also works on errors that crossed a realm.
 */
export type FailureKind = 'input' | 'storage-full' | 'device-lost' | 'error';

export function failureKind(error: unknown): FailureKind {
  const name = error instanceof Error ? error.name : '';
  if (name === 'StorageFullError') return 'storage-full';
  if (name === 'GpuDeviceLostError') return 'device-lost';
  // Problems with the user's files (a damaged model, a wrong config, an unreadable dataset) are input too.
  if (name === 'InputError' || name === 'ModelLoadError' || name === 'SafetensorsError' || name === 'DatasetImportError' || name === 'ImageDecodeError' || name === 'LoraFileError' || name === 'JudgeModelError') return 'input';
  return 'error';
}
