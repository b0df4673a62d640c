#!/usr/bin/env node
// Builds the compatibility matrix from the conformance kit's results.
//
//   pnpm matrix            writes docs/compatibility.md and the table in README.md
//   pnpm matrix --check    writes nothing; exits 1 when either file differs (for CI)
//
// Input: every <backend>.json that @kv/core/conformance wrote to .kv-test-results/
// (or $KV_RESULTS_DIR). Only backends with a results file get a column.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const resultsDir = process.env.KV_RESULTS_DIR
  ? resolve(process.env.KV_RESULTS_DIR)
  : join(root, '.kv-test-results');
const docFile = join(root, 'docs', 'compatibility.md');
const readmeFile = join(root, 'README.md');
const START = '<!-- matrix:start -->';
const END = '<!-- matrix:end -->';

/** Column order: these first, then any other backend alphabetically. */
const ORDER = ['sqlite', 'etcd', 'etcdv2', 'consul', 'zookeeper', 'redis'];
const ICONS = { works: '✅', 'not supported': '➖', fails: '❌', untested: '❔' };
const LEGEND =
  '✅ works · ➖ not supported (the backend declares it and throws `NotSupportedError`) · ❌ fails · ❔ not tested';

function main() {
  const check = process.argv.includes('--check');
  const unknown = process.argv.slice(2).filter((arg) => arg !== '--check');
  if (unknown.length > 0) {
    console.error(`matrix: unknown argument(s): ${unknown.join(' ')} (usage: matrix.mjs [--check])`);
    return 2;
  }
  const results = readResults();
  if (results.length === 0) {
    console.error(
      `matrix: no conformance results in ${relative(root, resultsDir) || '.'}/; run the tests first (pnpm test)`,
    );
    return 1;
  }
  const outputs = [{ file: docFile, content: renderDoc(results) }];
  const readme = existsSync(readmeFile) ? readFileSync(readmeFile, 'utf8') : undefined;
  if (readme === undefined) {
    console.log('matrix: no README.md; only docs/compatibility.md is generated');
  } else if (
    !readme.includes(START) ||
    !readme.includes(END) ||
    readme.indexOf(START) > readme.indexOf(END)
  ) {
    console.log(
      `matrix: README.md has no ${START} ... ${END} markers; only docs/compatibility.md is generated`,
    );
  } else {
    outputs.push({ file: readmeFile, content: replaceBetweenMarkers(readme, renderReadmeTable(results)) });
  }

  const backends = results.map((r) => r.backend).join(', ');
  let stale = 0;
  for (const { file, content } of outputs) {
    const current = existsSync(file) ? readFileSync(file, 'utf8') : undefined;
    const name = relative(root, file);
    if (current === content) {
      console.log(`matrix: ${name} is up to date (${backends})`);
    } else if (check) {
      stale++;
      console.error(
        `matrix: ${name} differs from what the test results give (${backends}); run \`pnpm matrix\` and commit it`,
      );
    } else {
      writeFileSync(file, content);
      console.log(`matrix: wrote ${name} (${backends})`);
    }
  }
  return stale > 0 ? 1 : 0;
}

/** The results files, valid ones only, in column order. */
function readResults() {
  if (!existsSync(resultsDir)) return [];
  const results = [];
  for (const name of readdirSync(resultsDir).sort()) {
    if (!name.endsWith('.json')) continue;
    const file = join(resultsDir, name);
    let data;
    try {
      data = JSON.parse(readFileSync(file, 'utf8'));
    } catch (error) {
      console.warn(`matrix: skipping ${name}: not JSON (${error.message})`);
      continue;
    }
    if (data?.kit !== '@kv/core/conformance' || data.format !== 1 || !Array.isArray(data.rows)) {
      console.warn(`matrix: skipping ${name}: not a conformance results file (format 1)`);
      continue;
    }
    results.push(data);
  }
  return results.sort((a, b) => columnRank(a.backend) - columnRank(b.backend) || cmp(a.backend, b.backend));
}

function columnRank(backend) {
  const i = ORDER.indexOf(backend);
  return i < 0 ? ORDER.length : i;
}

function cmp(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Rows in the kit's order; a row only some result files know is kept, in first-seen order. */
function rowsOf(results) {
  const rows = new Map();
  for (const result of results) {
    for (const row of result.rows) if (!rows.has(row.id)) rows.set(row.id, row.call ?? row.id);
  }
  return [...rows].map(([id, call]) => ({ id, call }));
}

function cell(result, id) {
  const status = result.rows.find((row) => row.id === id)?.status ?? 'untested';
  return ICONS[status] ?? ICONS.untested;
}

function table(results) {
  const header = `| Call | ${results.map((r) => r.backend).join(' | ')} |`;
  const rule = `|---|${results.map(() => ':-:').join('|')}|`;
  const lines = rowsOf(results).map(
    ({ id, call }) => `| ${call} | ${results.map((r) => cell(r, id)).join(' | ')} |`,
  );
  return [header, rule, ...lines].join('\n');
}

function renderReadmeTable(results) {
  return `${table(results)}\n\n${LEGEND}`;
}

function replaceBetweenMarkers(text, body) {
  const start = text.indexOf(START) + START.length;
  const end = text.indexOf(END);
  return `${text.slice(0, start)}\n${body}\n${text.slice(end)}`;
}

function bytes(n) {
  if (typeof n !== 'number') return '?';
  for (const [unit, size] of [
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ]) {
    if (n >= size && n % size === 0) return `${n / size} ${unit}`;
  }
  return `${n} B`;
}

function capabilityTable(results) {
  const caps = (r) => r.capabilities ?? {};
  const rows = [
    ['minTtl', (c) => (typeof c.minTtl === 'number' ? `${c.minTtl} ms` : '?')],
    ['ttlGranularity', (c) => (typeof c.ttlGranularity === 'number' ? `${c.ttlGranularity} ms` : '?')],
    ['maxValueSize', (c) => bytes(c.maxValueSize)],
    ['distributed', (c) => (c.distributed === true ? 'yes' : c.distributed === false ? 'no' : '?')],
  ];
  const header = `| Capability | ${results.map((r) => r.backend).join(' | ')} |`;
  const rule = `|---|${results.map(() => ':-:').join('|')}|`;
  const lines = rows.map(
    ([name, show]) => `| \`${name}\` | ${results.map((r) => show(caps(r))).join(' | ')} |`,
  );
  return [header, rule, ...lines].join('\n');
}

function failures(results) {
  const lines = [];
  for (const result of results) {
    if (result.error) lines.push(`- **${result.backend}**: could not open a store: ${oneLine(result.error)}`);
    for (const row of result.rows) {
      if (row.status !== 'fails' || result.error) continue;
      for (const failure of (row.failures ?? []).slice(0, 3)) {
        lines.push(`- **${result.backend}** ${row.call}: ${oneLine(failure)}`);
      }
    }
  }
  return lines;
}

function oneLine(text) {
  const line = String(text).split('\n')[0].trim();
  return line.length > 200 ? `${line.slice(0, 197)}...` : line;
}

function renderDoc(results) {
  const problems = failures(results);
  return [
    '# Compatibility',
    '',
    '<!-- Generated by `pnpm matrix` (scripts/matrix.mjs) from .kv-test-results/. Do not edit by hand. -->',
    '',
    'Generated by `pnpm matrix` from the results of the conformance kit',
    '(`@kv/core/conformance`), which every backend runs; never typed by hand.',
    'One row per call, one column per backend. A call "works" when every test of',
    'it passed; "not supported" when the backend declares the capability false',
    'and throws `NotSupportedError` for it, as the kit checks.',
    '',
    table(results),
    '',
    LEGEND,
    '',
    '## Capabilities',
    '',
    'As each backend declares them (`store.capabilities`); the kit holds it to them.',
    '',
    capabilityTable(results),
    ...(problems.length > 0 ? ['', '## Failures', '', ...problems] : []),
    '',
  ].join('\n');
}

process.exitCode = main();
