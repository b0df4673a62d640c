// Adds up the vitest JSON reports of every package and prints the one line
// CI reads: `N passed, N failed, N skipped`. A package with a test script
// but no report (its run crashed or never started) counts as one failure.
// Reports of the runs on other Node versions (`.vitest-report-node<N>.json`,
// written by scripts/node-versions/run.sh) are added too. Every failed test
// is named (file, full name, first line of its message) just before that line,
// so the tail of a CI log says what failed.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
let passed = 0;
let failed = 0;
let skipped = 0;
const failures = [];
for (const dir of readdirSync(join(root, 'packages')).sort()) {
  const pkgPath = join(root, 'packages', dir, 'package.json');
  if (!existsSync(pkgPath)) continue;
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8'));
  if (!pkg.scripts?.test) continue;
  const reportPath = join(root, 'packages', dir, '.vitest-report.json');
  if (!existsSync(reportPath)) {
    console.log(`${pkg.name}: no test report (the test run did not finish)`);
    failed++;
    continue;
  }
  count(pkg.name, reportPath);
  for (const file of readdirSync(join(root, 'packages', dir)).sort()) {
    const node = /^\.vitest-report-node(\d+)\.json$/.exec(file);
    if (node) count(`${pkg.name} (Node ${node[1]})`, join(root, 'packages', dir, file));
  }
}

function count(name, reportPath) {
  const report = JSON.parse(readFileSync(reportPath, 'utf8'));
  const p = report.numPassedTests ?? 0;
  const f = (report.numFailedTests ?? 0) + (report.success === false && !report.numFailedTests ? 1 : 0);
  const s = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  console.log(`${name}: ${p} passed, ${f} failed, ${s} skipped`);
  passed += p;
  failed += f;
  skipped += s;
  for (const file of report.testResults ?? []) {
    const where = file.name ? file.name.replace(root, '') : '?';
    const failedTests = (file.assertionResults ?? []).filter((t) => t.status === 'failed');
    if (file.status === 'failed' && failedTests.length === 0) {
      failures.push(`${name}: ${where}: ${firstLine(file.message) || 'the file failed to run'}`);
    }
    for (const t of failedTests) {
      failures.push(`${name}: ${where} > ${t.fullName ?? t.title}: ${firstLine(t.failureMessages?.[0])}`);
    }
  }
}

function firstLine(text) {
  return (
    String(text ?? '')
      .split('\n')
      .find((l) => l.trim() !== '')
      ?.trim()
      .slice(0, 300) ?? ''
  );
}

if (failures.length > 0) {
  console.log(`failed tests (${failures.length}):`);
  for (const f of failures) console.log(`  ${f}`);
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
