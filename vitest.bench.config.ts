import { defineConfig } from 'vitest/config';
import { useSwiftShaderUnlessSet } from './vitest.config.ts';

useSwiftShaderUnlessSet();

// `npm run bench`: the kernel benchmarks, run through Vitest only for its TypeScript and `?raw` handling.
// They print a table and write tests/bench/results/ instead of asserting timings.
export default defineConfig({
  test: {
    include: ['tests/bench/**/*.bench.test.ts'],
    pool: 'forks',
    maxWorkers: 1,
    testTimeout: 3_600_000,
    hookTimeout: 600_000,
  },
});
