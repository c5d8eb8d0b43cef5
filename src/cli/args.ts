// Option tables for subcommands: one definition gives both node:util parseArgs' config and the --help text.

import { parseArgs } from 'node:util';
import { InputError } from '../app/errors';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  /** Shown in help as --name VALUE. */
  value?: string;
  description: string;
  default?: string | boolean;
  multiple?: boolean;
}

export type OptionTable = Record<string, OptionSpec>;

/**
 * A mistake in how the command was called: main prints it with a pointer to --help and exits 2, as it does
 * the shared layer's InputError (bad data, settings or run folder), which this extends.
 */
export class UsageError extends InputError {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export type ParsedValues = Record<string, string | boolean | string[] | boolean[] | undefined>;

export function parseOptions(argv: readonly string[], table: OptionTable): { values: ParsedValues; positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean; default?: string | boolean }> = {};
  for (const [name, spec] of Object.entries(table)) {
    options[name] = { type: spec.type };
    if (spec.short) options[name].short = spec.short;
    if (spec.multiple) options[name].multiple = true;
    if (spec.default !== undefined) options[name].default = spec.default;
  }
  try {
    const { values, positionals } = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
    return { values: values as ParsedValues, positionals };
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
}

/** The help text of a command: usage line, description, then one line per option. */
export function formatHelp(usage: string, description: string, table: OptionTable): string {
  const rows = Object.entries(table).map(([name, spec]) => {
    const flag = `${spec.short ? `-${spec.short}, ` : '    '}--${name}${spec.type === 'string' ? ` ${spec.value ?? 'VALUE'}` : ''}`;
    const def = spec.default !== undefined && spec.default !== false ? ` (default: ${spec.default})` : '';
    return [flag, spec.description + def] as const;
  });
  const width = Math.min(34, Math.max(...rows.map(([f]) => f.length)) + 2);
  const lines = rows.map(([flag, text]) => (flag.length + 2 > width ? `  ${flag}\n  ${' '.repeat(width)}${text}` : `  ${flag.padEnd(width)}${text}`));
  return `Usage: ${usage}\n\n${description}\n\nOptions:\n${lines.join('\n')}\n`;
}

export function stringOpt(values: ParsedValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

export function intOpt(values: ParsedValues, name: string, min: number, fallback: number): number {
  const v = stringOpt(values, name);
  if (v === undefined) return fallback;
  if (!/^-?\d+$/.test(v.trim())) throw new UsageError(`--${name} must be a whole number, not ${JSON.stringify(v)}`);
  const n = Number(v);
  if (n < min) throw new UsageError(`--${name} must be at least ${min}`);
  return n;
}

export function numberOpt(values: ParsedValues, name: string, min: number, fallback: number): number {
  const v = stringOpt(values, name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name} must be a number, not ${JSON.stringify(v)}`);
  if (n < min) throw new UsageError(`--${name} must be at least ${min}`);
  return n;
}
