import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // KV_VITEST_REPORT: where the JSON report goes (CI's runs on other Node versions keep theirs apart).
    reporters: ['default', ['json', { outputFile: process.env.KV_VITEST_REPORT ?? '.vitest-report.json' }]],
  },
});
