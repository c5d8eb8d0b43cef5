// Errors the orchestration layer raises about what the user gave it (a data file, settings, a run folder),
// as opposed to bugs and device failures: the CLI prints them with its usage hint (exit 2), the worker
// returns them as a failure of kind 'input'.

export class InputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InputError';
  }
}
