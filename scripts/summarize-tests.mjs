// Adds up the vitest JSON reports of every package and prints the one line
// CI reads: `N passed, N failed, N skipped`. A package with a test script
// but no report (its run crashed or never started) counts as one failure.
// Reports of the runs on other Node versions (`.vitest-report-node<N>.json`,
// written by scripts/node-versions/run.sh) are added too. Every failed test
// is named (file, full name, first line of its message) just before that line,
// so the tail of a CI log says what failed. Two things vitest's JSON report
// does not count are counted as failures too: an error outside any test (from
// the `.errors.json` that scripts/vitest-reporters.mjs writes beside the
// report; vitest exits 1 on one) and a test that never finished (its file's
// worker exited or was killed: the report lists such a test as pending).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

// The workspace to add up: this repository, or the directory given as the one argument.
const root = process.argv[2] ? `${resolve(process.argv[2])}/` : new URL('..', import.meta.url).pathname;
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
  let f = (report.numFailedTests ?? 0) + (report.success === false && !report.numFailedTests ? 1 : 0);
  const s = (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
  const errorsPath = reportPath.replace(/\.json$/, '.errors.json');
  const runErrors = existsSync(errorsPath) ? (JSON.parse(readFileSync(errorsPath, 'utf8')).errors ?? []) : [];
  for (const e of runErrors) {
    const where = e.file
      ? `${e.file.replace(root, '')}${e.test ? ` (during or after "${e.test}")` : ''}: `
      : '';
    const cause = e.cause ? ` (cause: ${firstLine(e.cause)})` : '';
    failures.push(`${name}: error outside any test: ${where}${e.name}: ${firstLine(e.message)}${cause}`);
  }
  let unfinished = 0;
  for (const file of report.testResults ?? []) {
    const where = file.name ? file.name.replace(root, '') : '?';
    const pending = (file.assertionResults ?? []).filter((t) => t.status === 'pending');
    if (pending.length > 0) {
      unfinished += pending.length;
      failures.push(
        `${name}: ${where}: ${pending.length} tests never finished (did its worker exit or get killed?), from "${pending[0].fullName ?? pending[0].title}"`,
      );
    }
    const failedTests = (file.assertionResults ?? []).filter((t) => t.status === 'failed');
    if (file.status === 'failed' && failedTests.length === 0) {
      failures.push(`${name}: ${where}: ${firstLine(file.message) || 'the file failed to run'}`);
    }
    for (const t of failedTests) {
      failures.push(`${name}: ${where} > ${t.fullName ?? t.title}: ${firstLine(t.failureMessages?.[0])}`);
    }
  }
  f += runErrors.length + unfinished;
  console.log(`${name}: ${p} passed, ${f} failed, ${s} skipped`);
  passed += p;
  failed += f;
  skipped += s;
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
