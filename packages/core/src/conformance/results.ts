import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Capabilities } from '../index.js';
import type { CapabilityName } from './harness.js';

/**
 * The rows of the compatibility matrix: one per call or capability group.
 * `capability` names the flag that may declare the row unsupported.
 */
export const ROWS = [
  { id: 'put', call: 'Put' },
  { id: 'get', call: 'Get' },
  { id: 'delete', call: 'Delete' },
  { id: 'exists', call: 'Exists' },
  { id: 'list', call: 'List' },
  { id: 'deleteTree', call: 'DeleteTree' },
  { id: 'atomicPut', call: 'AtomicPut' },
  { id: 'atomicDelete', call: 'AtomicDelete' },
  { id: 'watch', call: 'Watch', capability: 'watch' },
  { id: 'watchTree', call: 'WatchTree', capability: 'watchTree' },
  { id: 'lock', call: 'NewLock (Lock/Unlock)', capability: 'lock' },
  { id: 'ttl', call: 'TTL (put with ttl)', capability: 'ttl' },
  { id: 'keepAlive', call: 'KeepAlive', capability: 'keepAlive' },
  { id: 'consistentRead', call: 'Consistent read', capability: 'consistentRead' },
  { id: 'close', call: 'Close' },
  { id: 'partition', call: 'Fault: one client partitioned' },
  { id: 'restart', call: 'Fault: server restarted' },
  { id: 'memberLost', call: 'Fault: cluster member killed or frozen' },
  { id: 'clusterPartition', call: 'Fault: cluster member isolated (links cut)' },
  { id: 'linearizable', call: 'Linearizable (checked history)' },
  { id: 'fencedLocks', call: 'Locks under faults (fenced)' },
  { id: 'fuzz', call: 'Fuzzed keys, values, options, URLs' },
  { id: 'encrypted', call: 'Recipe: encrypted() values' },
  { id: 'typed', call: 'Recipe: typed() values' },
  { id: 'election', call: 'Recipe: leader election', capability: 'lock' },
  { id: 'electionFailover', call: 'Recipe: election failover across processes', capability: 'lock' },
  { id: 'discovery', call: 'Recipe: service discovery', capability: 'keepAlive' },
  { id: 'discoveryProcesses', call: 'Recipe: discovery across processes', capability: 'keepAlive' },
] as const satisfies readonly { id: string; call: string; capability?: CapabilityName }[];

export type RowId = (typeof ROWS)[number]['id'];

/** `untested`: no test of the row ran (a filtered run, or the suite could not start). */
export type RowStatus = 'works' | 'not supported' | 'fails' | 'untested';

export type TestState = 'pass' | 'fail' | 'skip' | 'not run';

export interface TestResult {
  readonly title: string;
  readonly rows: RowId[];
  /** `unsupported`: a check that a capability declared false throws `NotSupportedError`. */
  readonly kind: 'behaviour' | 'unsupported';
  readonly state: TestState;
  readonly durationMs?: number;
  readonly error?: string;
  /** Measurements the test recorded (e.g. a failover time). */
  readonly notes?: string[];
  /** The histories the test checked, if it records them. */
  readonly histories?: CheckedHistory[];
}

/**
 * A history a fault or linearizability case checked, kept in the results
 * file so a run can say what was checked per backend (scripts/histories.mjs).
 */
export interface CheckedHistory {
  /** What was checked: `linearizable` (WGL, register with CAS), `locks` (holds, tokens), `calls` (bounded, durable). */
  readonly checker: 'linearizable' | 'locks' | 'calls' | 'watch';
  /** Operations in the history (for locks: holds). */
  readonly operations: number;
  /** Operations of unknown outcome (timed out, connection lost). */
  readonly unknown?: number;
  /** Faults injected while it ran. */
  readonly faults: number;
  /** What the faults were, e.g. `client link black-holed`, `member isolated`. */
  readonly faultKinds: readonly string[];
  readonly result: 'ok' | 'violation' | 'inconclusive';
  /** ms the workload ran. */
  readonly durationMs: number;
  /** More numbers (states searched, fenced writes...). */
  readonly detail?: string;
}

export interface RowResult {
  readonly id: RowId;
  /** The label of the matrix row. */
  readonly call: string;
  readonly status: RowStatus;
  readonly passed: number;
  readonly failed: number;
  readonly skipped: number;
  /** `title: message` of each failed test. */
  readonly failures: string[];
}

/** The file the kit writes per backend: `<results dir>/<name>.json`. */
export interface ConformanceResults {
  readonly format: 1;
  readonly kit: '@kv/core/conformance';
  readonly backend: string;
  readonly capabilities: Capabilities | null;
  /** Set when the suite could not even open a store; every row then fails. */
  readonly error?: string;
  readonly summary: { passed: number; failed: number; skipped: number; notRun: number };
  readonly rows: RowResult[];
  readonly tests: TestResult[];
}

interface Entry {
  readonly title: string;
  readonly rows: Set<RowId>;
  readonly kind: TestResult['kind'];
  state: TestState | 'running';
  started?: number;
  durationMs?: number;
  error?: string;
  notes?: string[];
  histories?: CheckedHistory[];
}

/**
 * Bookkeeping of one suite run. Each test is declared at collection time
 * and marked running / passed / failed / skipped by the kit's own wrapper, so
 * a test that vitest timed out (its body never returned) is still counted:
 * "running" at the end means failed.
 */
export class ResultBook {
  private readonly entries = new Map<string, Entry>();

  declare(title: string, rows: readonly RowId[], kind: TestResult['kind']): Entry {
    if (this.entries.has(title))
      throw new Error(`conformance kit: duplicate test title ${JSON.stringify(title)}`);
    const entry: Entry = { title, rows: new Set(rows), kind, state: 'not run' };
    this.entries.set(title, entry);
    return entry;
  }

  static start(entry: Entry): void {
    entry.state = 'running';
    entry.started = performance.now();
    delete entry.error;
    delete entry.histories;
  }

  static history(entry: Entry, history: CheckedHistory): void {
    entry.histories ??= [];
    entry.histories.push(history);
  }

  static note(entry: Entry, text: string): void {
    entry.notes ??= [];
    entry.notes.push(text);
  }

  static finish(entry: Entry, state: 'pass' | 'fail' | 'skip', error?: unknown): void {
    entry.state = state;
    if (entry.started !== undefined) entry.durationMs = performance.now() - entry.started;
    if (error !== undefined) entry.error = error instanceof Error ? error.message : String(error);
  }

  results(backend: string, capabilities: Capabilities | null, openError?: unknown): ConformanceResults {
    const tests: TestResult[] = [...this.entries.values()].map((e) => {
      const state: TestState = e.state === 'running' ? 'fail' : e.state;
      const error = e.state === 'running' ? 'did not finish (timed out or the run was interrupted)' : e.error;
      return {
        title: e.title,
        rows: [...e.rows],
        kind: e.kind,
        state,
        ...(e.durationMs === undefined ? {} : { durationMs: e.durationMs }),
        ...(error === undefined ? {} : { error }),
        ...(e.notes === undefined ? {} : { notes: e.notes }),
        ...(e.histories ? { histories: e.histories } : {}),
      };
    });
    const openMessage =
      openError === undefined
        ? undefined
        : openError instanceof Error
          ? openError.message
          : String(openError);
    const rows = ROWS.map((row) => rowResult(row, tests, capabilities, openMessage));
    const count = (state: TestState) => tests.filter((t) => t.state === state).length;
    return {
      format: 1,
      kit: '@kv/core/conformance',
      backend,
      capabilities,
      ...(openMessage === undefined ? {} : { error: openMessage }),
      summary: {
        passed: count('pass'),
        failed: count('fail'),
        skipped: count('skip'),
        notRun: count('not run'),
      },
      rows,
      tests,
    };
  }
}

function rowResult(
  row: (typeof ROWS)[number],
  tests: readonly TestResult[],
  capabilities: Capabilities | null,
  openError: string | undefined,
): RowResult {
  const mine = tests.filter((t) => t.rows.includes(row.id));
  const failed = mine.filter((t) => t.state === 'fail');
  const passed = mine.filter((t) => t.state === 'pass');
  const base = {
    id: row.id,
    call: row.call,
    passed: passed.length,
    failed: failed.length,
    skipped: mine.filter((t) => t.state === 'skip').length,
    failures: failed.map((t) => `${t.title}: ${t.error ?? 'failed'}`),
  };
  if (openError !== undefined || capabilities === null) {
    return {
      ...base,
      status: 'fails',
      failures: [`no test could run: ${openError ?? 'no store could be opened'}`],
    };
  }
  if (failed.length > 0) return { ...base, status: 'fails' };
  const capability = 'capability' in row ? row.capability : undefined;
  if (capability !== undefined && capabilities[capability] === false) {
    const checked = passed.some((t) => t.kind === 'unsupported');
    return { ...base, status: checked ? 'not supported' : 'untested' };
  }
  return { ...base, status: passed.some((t) => t.kind === 'behaviour') ? 'works' : 'untested' };
}

/**
 * Where results go: `$KV_RESULTS_DIR`, else `.kv-test-results/` in the
 * repository root (the nearest directory up from the working directory with
 * a `pnpm-workspace.yaml`, else with a `.git`, else the working directory).
 */
export function defaultResultsDir(): string {
  const fromEnv = process.env.KV_RESULTS_DIR;
  if (fromEnv) return resolve(fromEnv);
  return join(findRoot(process.cwd()), '.kv-test-results');
}

function findRoot(start: string): string {
  for (const marker of ['pnpm-workspace.yaml', '.git']) {
    let dir = resolve(start);
    for (;;) {
      if (existsSync(join(dir, marker))) return dir;
      const parent = dirname(dir);
      if (parent === dir) break;
      dir = parent;
    }
  }
  return resolve(start);
}

/** Writes `<dir>/<backend>.json` atomically (write + rename), so a reader never sees half a file. */
export function writeResults(dir: string, results: ConformanceResults): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${results.backend}.json`);
  const temporary = `${file}.${process.pid}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(results, null, 2)}\n`);
  renameSync(temporary, file);
  return file;
}
