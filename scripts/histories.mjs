#!/usr/bin/env node
// Prints, per backend, the histories the conformance kit's fault and
// linearizability cases checked (from the results files the kit writes),
// and how long the fault cases took together.
//
//   node scripts/histories.mjs            a plain-text summary
//   node scripts/histories.mjs --markdown the same as a Markdown table
//
// Input: every <backend>.json in .kv-test-results/ (or $KV_RESULTS_DIR).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const resultsDir = process.env.KV_RESULTS_DIR
  ? resolve(process.env.KV_RESULTS_DIR)
  : join(root, '.kv-test-results');
/** Rows whose tests break things: their time is the fault cases' CI time. */
const FAULT_ROWS = new Set([
  'partition',
  'restart',
  'memberLost',
  'clusterPartition',
  'linearizable',
  'fencedLocks',
]);

function main() {
  const args = process.argv.slice(2);
  const unknown = args.filter((a) => a !== '--markdown');
  if (unknown.length > 0) {
    console.error(`histories: unknown argument(s): ${unknown.join(' ')} (usage: histories.mjs [--markdown])`);
    return 2;
  }
  const markdown = args.includes('--markdown');
  if (!existsSync(resultsDir)) {
    console.error(`histories: no ${resultsDir}; run the conformance tests first`);
    return 1;
  }
  const files = readdirSync(resultsDir)
    .filter((n) => n.endsWith('.json'))
    .sort();
  let any = false;
  const lines = [];
  if (markdown) {
    lines.push('| Backend | Case | Checker | Operations | Unknown | Faults | Fault kinds | Result | ms |');
    lines.push('|---|---|---|--:|--:|--:|---|---|--:|');
  }
  for (const name of files) {
    let data;
    try {
      data = JSON.parse(readFileSync(join(resultsDir, name), 'utf8'));
    } catch {
      continue;
    }
    if (data?.kit !== '@kv/core/conformance' || !Array.isArray(data.tests)) continue;
    const faultTests = data.tests.filter((t) => t.rows.some((r) => FAULT_ROWS.has(r)));
    const ran = faultTests.filter((t) => t.state === 'pass' || t.state === 'fail');
    const ms = ran.reduce((sum, t) => sum + (t.durationMs ?? 0), 0);
    const withHistories = data.tests.filter((t) => Array.isArray(t.histories) && t.histories.length > 0);
    if (ran.length === 0 && withHistories.length === 0) continue;
    any = true;
    if (!markdown) {
      const passed = ran.filter((t) => t.state === 'pass').length;
      lines.push(
        `${data.backend}: fault cases ${passed}/${ran.length} passed in ${(ms / 1000).toFixed(1)} s (${faultTests.length - ran.length} not run or skipped)`,
      );
    }
    for (const test of withHistories) {
      for (const h of test.histories) {
        const title = test.title.length > 70 ? `${test.title.slice(0, 67)}...` : test.title;
        if (markdown) {
          lines.push(
            `| ${data.backend} | ${title} | ${h.checker} | ${h.operations} | ${h.unknown ?? '-'} | ${h.faults} | ${h.faultKinds.join(', ') || '-'} | ${h.result} | ${h.durationMs} |`,
          );
        } else {
          lines.push(
            `  ${h.result.toUpperCase().padEnd(12)} ${h.checker.padEnd(12)} ${String(h.operations).padStart(4)} ops` +
              `${h.unknown === undefined ? '' : ` (${h.unknown} unknown)`}, ${h.faults} faults` +
              `${h.faultKinds.length ? ` [${h.faultKinds.join('; ')}]` : ''}, ${h.durationMs} ms: ${title}` +
              `${h.detail ? `\n${' '.repeat(15)}${h.detail}` : ''}`,
          );
        }
      }
    }
  }
  if (!any) {
    console.error(`histories: no fault case ran in ${resultsDir}`);
    return 1;
  }
  console.log(lines.join('\n'));
  return 0;
}

process.exitCode = main();
