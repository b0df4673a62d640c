import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect } from 'vitest';
import { type ConformanceResults, describeConformance, type RowStatus } from '../src/conformance/index.js';
import { createStore } from '../src/index.js';
import { MemoryServer, MemoryStore } from '../src/memory-store.js';

// The memory: backend ships in @kv/core and needs no server: its results go to a temporary
// directory, never to .kv-test-results/, so never into the matrix (it has no fault hooks to offer).
const resultsDir = mkdtempSync(join(tmpdir(), 'kv-conformance-'));
const server = new MemoryServer();

// The memory: backend as applications open it: every store of the named data set shares it.
describeConformance({
  name: 'memory',
  open: (prefix) => createStore({ backend: 'memory', name: 'conformance', prefix }),
  ttl: 300,
  lockTtl: 1_500,
  crash: (store) => (store as MemoryStore).crash(),
  resultsDir,
});

// The same store with only the older watchTree primitive (a full listing per commit): the base
// class's adapter must give the same watchTree behaviour.
describeConformance({
  name: 'memory-listings',
  open: async (prefix) => new MemoryStore({ server, prefix, watchTreeListings: true }),
  ttl: 300,
  lockTtl: 1_500,
  crash: (store) => (store as MemoryStore).crash(),
  resultsDir,
});

// The same store declaring every optional capability false: the kit must then expect
// NotSupportedError (which BaseStore throws from the capabilities) and skip the behaviour tests.
describeConformance({
  name: 'memory-minimal',
  open: async (prefix) =>
    new MemoryStore({
      server,
      prefix,
      capabilities: {
        watch: false,
        watchTree: false,
        lock: false,
        ttl: false,
        keepAlive: false,
        consistentRead: false,
      },
    }),
  resultsDir,
});

function statuses(name: string): Record<string, RowStatus> {
  const results = JSON.parse(readFileSync(join(resultsDir, `${name}.json`), 'utf8')) as ConformanceResults;
  expect(results.summary.failed, `${name}: failed tests`).toBe(0);
  return Object.fromEntries(results.rows.map((row) => [row.id, row.status]));
}

afterAll(() => {
  const all = statuses('memory');
  // The in-process memory store has no link to cut, no server to restart and no other process to share
  // it with: those rows stay untested.
  const faultRows = new Set([
    'partition',
    'restart',
    'fencedLocks',
    'memberLost',
    'electionFailover',
    'discoveryProcesses',
    'clusterPartition',
  ]);
  for (const results of [all, statuses('memory-listings')]) {
    expect(
      Object.entries(results).filter(([row, status]) => status !== 'works' && !faultRows.has(row)),
    ).toEqual([]);
    for (const row of faultRows) expect(results[row], row).toBe('untested');
  }
  const minimal = statuses('memory-minimal');
  for (const row of ['watch', 'watchTree', 'lock', 'ttl', 'keepAlive', 'consistentRead']) {
    expect(minimal[row], row).toBe('not supported');
  }
  for (const row of [
    'put',
    'get',
    'delete',
    'exists',
    'list',
    'deleteTree',
    'atomicPut',
    'atomicDelete',
    'close',
  ]) {
    expect(minimal[row], row).toBe('works');
  }
});
