// tpo-lab: the command-line entry. `main(argv)` dispatches to a subcommand from the table in commands.ts
// and returns the exit status; bin/tpo-lab.mjs calls it with process.argv.slice(2).

import { InputError } from '../app/errors';
import type { Command } from './command';
import { COMMANDS } from './commands';
import { type CliIO, processIO, systemErrorMessage } from './io';

export const VERSION = '0.1.0';

export function globalHelp(commands: readonly Command[] = COMMANDS): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  const list = commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`).join('\n');
  return `Usage: tpo-lab <command> [options]

TPO Lab, headless: the engine of the browser app, run from Node.

Commands:
${list}

Run 'tpo-lab <command> --help' for a command's options.
`;
}

export async function main(argv: string[], io?: CliIO, commands: readonly Command[] = COMMANDS): Promise<number> {
  let dispose = () => {};
  if (!io) ({ io, dispose } = processIO());
  try {
    const [name, ...rest] = argv;
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      const target = name === 'help' && rest[0] ? commands.find((c) => c.name === rest[0]) : undefined;
      io.stdout.write(target ? target.help() : globalHelp(commands));
      return 0;
    }
    if (name === '--version' || name === '-v') {
      io.stdout.write(`tpo-lab ${VERSION}\n`);
      return 0;
    }
    const command = commands.find((c) => c.name === name);
    if (!command) {
      io.stderr.write(`tpo-lab: unknown command '${name}'\n\n${globalHelp(commands)}`);
      return 2;
    }
    if (rest.includes('--help') || rest.includes('-h')) {
      io.stdout.write(command.help());
      return 0;
    }
    try {
      return await command.run(rest, io);
    } catch (e) {
      if (e instanceof InputError) {
        io.stderr.write(`tpo-lab ${name}: ${e.message}\nRun 'tpo-lab ${name} --help' for its options.\n`);
        return 2;
      }
      io.stderr.write(`tpo-lab ${name}: ${systemErrorMessage(e) ?? (e instanceof Error ? e.message : String(e))}\n`);
      return 1;
    }
  } finally {
    dispose();
  }
}
