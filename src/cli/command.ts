// The shape of a subcommand. Add a command: write src/cli/<name>.ts exporting a Command, then add it to
// COMMANDS in commands.ts.

import type { CliIO } from './io';

export interface Command {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** Full help text (printed for `tpo-lab <name> --help`). */
  help(): string;
  /** Runs with the arguments after the command name; returns the exit status. */
  run(argv: string[], io: CliIO): Promise<number>;
}
