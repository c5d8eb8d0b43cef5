// The subcommand table. Each command lives in its own file; add new ones here (train, bench...).

import { buildDemoCommand } from './build-demo';
import type { Command } from './command';
import { evalCommand } from './eval';
import { exportCommand } from './export';
import { goldenCommand } from './golden';
import { judgeCommand } from './judge';
import { judgeShapesCommand } from './judge-shapes';
import { pairsCommand } from './pairs';
import { planCommand } from './plan';
import { sampleCommand } from './sample';
import { scoreCommand } from './score';
import { shapesCommand } from './shapes';
import { trainCommand } from './train';

export const COMMANDS: readonly Command[] = [goldenCommand, pairsCommand, planCommand, trainCommand, scoreCommand, sampleCommand, exportCommand, shapesCommand, judgeShapesCommand, judgeCommand, buildDemoCommand, evalCommand];
