// The subcommand table. Each command lives in its own file; add new ones here (golden, train, bench...).

import type { Command } from './command';
import { pairsCommand } from './pairs';

export const COMMANDS: readonly Command[] = [pairsCommand];
