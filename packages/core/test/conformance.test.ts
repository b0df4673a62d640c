import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect } from 'vitest';
import { type ConformanceResults, describeConformance } from '../src/conformance/index.js';
import { MemoryServer, MemoryStore } from './memory-store.js';

// The memory store is a reference implementation, not a backend users install: its
// results go to a temporary directory, never to .kv-test-results/ (so never into the matrix).
const resultsDir = mkdtempSync(join(tmpdir(), 'kv-conformance-'));
const server = new MemoryServer();

describeConformance({
  name: 'memory',
  open: async (prefix) => new MemoryStore({ server, prefix }),
  ttl: 300,
  lockTtl: 1_500,
  crash: (store) => (store as MemoryStore).crash(),
  resultsDir,
});

afterAll(() => {
  const results = JSON.parse(readFileSync(join(resultsDir, 'memory.json'), 'utf8')) as ConformanceResults;
  const notWorking = results.rows.filter((row) => row.status !== 'works');
  expect(notWorking, 'the memory store supports every call').toEqual([]);
  expect(results.summary.failed).toBe(0);
});
