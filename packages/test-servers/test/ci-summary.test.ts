// CI's accounting (scripts/summarize-tests.mjs with scripts/vitest-reporters.mjs) on a real vitest
// run: an error outside any test and a test worker that dies are failures in the summary line and are
// named above it, although vitest's JSON report counts neither (it leaves the dead worker's tests out).
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const vitestBin = join(dirname(createRequire(import.meta.url).resolve('vitest/package.json')), 'vitest.mjs');

describe('CI test accounting', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kv-ci-summary-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('counts an error outside any test and a killed test worker as failures, and names both', () => {
    const pkg = join(dir, 'packages', 'p');
    mkdirSync(join(pkg, 'test'), { recursive: true });
    writeFileSync(join(pkg, 'package.json'), JSON.stringify({ name: 'p', scripts: { test: 'vitest run' } }));
    writeFileSync(
      join(pkg, 'vitest.config.mjs'),
      `import { reporters } from ${JSON.stringify(join(repo, 'scripts/vitest-reporters.mjs'))};\n` +
        `export default { test: { include: ['test/*.test.mjs'], reporters } };\n`,
    );
    writeFileSync(
      join(pkg, 'test', 'fine.test.mjs'),
      `import { it, expect } from 'vitest';\nit('adds', () => expect(1 + 1).toBe(2));\nit.skip('skipped', () => {});\n`,
    );
    writeFileSync(
      join(pkg, 'test', 'late.test.mjs'),
      `import { it } from 'vitest';\n` +
        `it('throws after it ends', async () => {\n` +
        `  setTimeout(() => { throw new Error('thrown after the test'); }, 5);\n` +
        `  await new Promise((r) => setTimeout(r, 100));\n});\n`,
    );
    writeFileSync(
      join(pkg, 'test', 'killed.test.mjs'),
      `import { it } from 'vitest';\n` +
        `it('kills its worker', () => { process.kill(process.pid, 'SIGKILL'); });\n` +
        `it('never runs', () => {});\n`,
    );
    const run = spawnSync(process.execPath, [vitestBin, 'run'], {
      cwd: pkg,
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, KV_VITEST_REPORT: undefined, CI: 'true' },
    });
    expect(run.status).toBe(1);

    const summary = spawnSync(process.execPath, [join(repo, 'scripts/summarize-tests.mjs'), dir], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(summary.status).toBe(0);
    const lines = summary.stdout.trim().split('\n');
    const last = /^(\d+) passed, (\d+) failed, (\d+) skipped$/.exec(lines.at(-1) ?? '');
    expect(last, summary.stdout).not.toBeNull();
    // fine.test: 1 passed, 1 skipped. late.test's error: 1 failure. The dead worker: its error, and
    // its two tests that never finished.
    expect(Number(last?.[2])).toBe(4);
    expect(Number(last?.[3])).toBe(1);
    expect(lines).toContainEqual(
      expect.stringMatching(
        /error outside any test: .*late\.test\.mjs \(during or after "throws after it ends"\): Error: thrown after the test/,
      ),
    );
    expect(lines).toContainEqual(
      expect.stringMatching(/error outside any test: .*Worker exited unexpectedly/),
    );
    expect(lines).toContainEqual(expect.stringMatching(/killed\.test\.mjs: 2 tests never finished/));
  });
});
