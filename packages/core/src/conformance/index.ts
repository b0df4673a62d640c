/**
 * The conformance kit: the one behaviour suite every kv backend runs,
 * third-party ones too.
 *
 * ```ts
 * import { describeConformance } from '@kv/core/conformance';
 * describeConformance({ name: 'mystore', open: (prefix) => MyStore.connect({ ...cfg, prefix }) });
 * ```
 *
 * It needs vitest (an optional peer dependency of `@kv/core`).
 */
import { afterAll, beforeAll, describe, it } from 'vitest';
import type { Capabilities, Store } from '../index.js';
import { casCases } from './cas-cases.js';
import {
  faultCases,
  fencedLockCase,
  linearizabilityCase,
  memberLostCase,
  reopenCase,
} from './fault-cases.js';
import { fuzzCases } from './fuzz-cases.js';
import type { CapabilityName, CaseBody, CaseSpec, Define, FaultHooks, Settings } from './harness.js';
import { describeError, TestEnv } from './harness.js';
import { checkSharedDataSet, findNotSupported, unimplementedCapability } from './kit-checks.js';
import { kvCases } from './kv-cases.js';
import { lifecycleCases } from './lifecycle-cases.js';
import { lockCases } from './lock-cases.js';
import { clusterPartitionCases } from './partition-cases.js';
import {
  discoveryCases,
  electionCases,
  encryptedCases,
  recipeFaultCases,
  recipeUnsupportedCases,
  typedCases,
} from './recipe-cases.js';
import { type ProcessOptions, recipeProcessCases } from './recipe-process-cases.js';
import { defaultResultsDir, ResultBook, writeResults } from './results.js';
import { ttlCases } from './ttl-cases.js';
import { watchCases } from './watch-cases.js';

export {
  type ClusterFaultHooks,
  checkTreeEvent,
  type FaultHooks,
  type PartitionableStore,
  Reader,
  within,
} from './harness.js';
export type { ProcessOptions } from './recipe-process-cases.js';
export {
  type CheckedHistory,
  type ConformanceResults,
  ROWS,
  type RowId,
  type RowResult,
  type RowStatus,
  type TestResult,
  type TestState,
} from './results.js';

export interface ConformanceOptions {
  /** The backend's name: the results file is `<name>.json` and the matrix column is headed by it. */
  name: string;
  /**
   * Opens a NEW store (its own connection) with this key prefix. The kit
   * gives every test its own prefix under `kvtest/<run id>/`, so several
   * suites can share one server; it closes every store it opens.
   */
  open: (prefix: string) => Promise<Store>;
  /** A string skips the whole suite, printing the reason (e.g. "no etcd server; set KV_ETCD_URL"). Nothing is recorded. */
  skip?: string | false;
  /** ms: the ttl the TTL and keep-alive tests write with. Default 1000, raised to `capabilities.minTtl`. */
  ttl?: number;
  /** ms: the ttl of the locks the lock tests take. Default 10 000, raised to `capabilities.minTtl`. */
  lockTtl?: number;
  /** Multiplies every wait bound and test timeout, for slow machines or servers. Default 1. */
  timeScale?: number;
  /**
   * Simulates the death of the process holding `store`: from now on it must
   * send nothing more (no renewals, no release), as if killed. Given, the kit
   * also checks that a dead lock holder frees the lock within its ttl and a
   * dead keep-alive key expires. The kit still calls `close()` on the store.
   */
  crash?: (store: Store) => Promise<void> | void;
  /**
   * Hooks that let the kit break things (partition one client, restart the
   * server) on a server of the backend's own: see `FaultHooks`. Without
   * them the fault rows of the matrix stay "untested".
   */
  faults?: FaultHooks;
  /**
   * How a child process opens the same store, for the multi-process recipe
   * cases (three election candidates in three processes, the leader
   * SIGKILLed; discovery members in several processes). Without it their
   * matrix rows stay "untested". E.g. for SQLite:
   * `{ url: (prefix) => \`sqlite:${path}?prefix=${prefix}\`, imports: ['@kv/backend-sqlite'] }`.
   */
  processes?: ProcessOptions;
  /** Whether to write the results file (default true). The kit's own tests of reference stores pass false or a `resultsDir` of their own. */
  record?: boolean;
  /** Where the results file goes; default `$KV_RESULTS_DIR`, else `<repo root>/.kv-test-results`. */
  resultsDir?: string;
}

const NAME = /^[a-z0-9][a-z0-9._-]*$/i;
/** The vitest timeout of each test: a ceiling only; each test has its own bound from the capabilities. */
const CEILING = 30 * 60_000;
const DEFAULT_TIMEOUT = 30_000;

/**
 * Declares the conformance suite for one backend: a `describe` block named
 * `conformance: <name>` whose tests are gated by the store's capabilities.
 * A capability declared true must work; one declared false must throw
 * `NotSupportedError`. When the suite ends, the per-call results are
 * written to `<results dir>/<name>.json` for `pnpm matrix`.
 */
export function describeConformance(options: ConformanceOptions): void {
  if (!options || typeof options.open !== 'function') {
    throw new TypeError('describeConformance needs { name, open(prefix) }');
  }
  const { name } = options;
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new TypeError(`describeConformance: name must match ${NAME}, got ${JSON.stringify(name)}`);
  }
  const title = `conformance: ${name}`;
  if (typeof options.skip === 'string') {
    const reason = options.skip;
    describe(title, () => {
      it.skip(`skipped: ${reason}`, () => {});
    });
    return;
  }

  const timeScale = options.timeScale ?? 1;
  if (!(timeScale > 0)) throw new TypeError('describeConformance: timeScale must be > 0');
  const runId = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  const root = `kvtest/${runId}`;
  const book = new ResultBook();
  const suite: {
    admin?: Store;
    caps?: Capabilities;
    settings?: Settings;
    openError?: unknown;
    /** Why no test can run (e.g. the stores do not share one data set): every test fails with it. */
    setupError?: Error;
    counter: number;
  } = { counter: 0 };

  const define: Define = (testTitle: string, spec: CaseSpec, body: CaseBody) => {
    const entry = book.declare(testTitle, spec.rows, spec.unsupported ? 'unsupported' : 'behaviour');
    it(
      testTitle,
      async (context) => {
        const { caps, settings, admin } = suite;
        if (suite.setupError) throw suite.setupError;
        if (!caps || !settings || !admin) {
          throw new Error(`no store could be opened: ${String(suite.openError)}`);
        }
        const skip = skipReason(spec, caps, settings, name);
        if (skip) {
          ResultBook.finish(entry, 'skip');
          context.skip(skip);
          return;
        }
        ResultBook.start(entry);
        const n = ++suite.counter;
        const env = new TestEnv(
          {
            caps,
            settings,
            open: options.open,
            wipe: () => admin.deleteTree(String(n)),
            note: (text) => ResultBook.note(entry, text),
            record: (history) => ResultBook.history(entry, history),
          },
          `${root}/${n}`,
          entry.rows,
        );
        const bound = (spec.timeout?.(caps, settings) ?? DEFAULT_TIMEOUT) * timeScale;
        let failure: unknown;
        try {
          await withBound(bound, async () => {
            await env.start();
            await body(env);
          });
        } catch (error) {
          failure = error;
        }
        try {
          await env.cleanup();
        } catch (error) {
          failure ??= error;
        }
        const missing = failure === undefined ? undefined : unimplementedCapability(failure, caps);
        if (missing) {
          // A capability declared true whose primitive is missing: say so, and fail only its row.
          const said = describeError(findNotSupported(failure));
          failure = new Error(
            said.includes('declared true but not implemented')
              ? `${said}; implement it or declare ${missing}: false`
              : `${name} declares capabilities.${missing}: true but does not implement it (${said}); implement it or declare ${missing}: false`,
            { cause: failure },
          );
          entry.rows.clear();
          entry.rows.add(missing);
        }
        ResultBook.finish(entry, failure === undefined ? 'pass' : 'fail', failure);
        if (failure !== undefined) throw failure;
      },
      CEILING,
    );
  };

  describe(title, () => {
    beforeAll(async () => {
      try {
        const admin = await options.open(root);
        suite.admin = admin;
        suite.caps = admin.capabilities;
        suite.settings = settingsFor(admin.capabilities, options, timeScale);
      } catch (error) {
        suite.openError = error;
        throw error;
      }
      try {
        await checkSharedDataSet(options.open, suite.admin, root, name, 2_000 * timeScale);
      } catch (error) {
        suite.setupError = error as Error;
        suite.openError = error;
        delete suite.caps;
        throw error;
      }
    }, 120_000 * timeScale);

    afterAll(async () => {
      try {
        await suite.admin?.close();
      } finally {
        if (options.record !== false) {
          const results = book.results(name, suite.caps ?? null, suite.openError);
          const file = writeResults(options.resultsDir ?? defaultResultsDir(), results);
          if (process.env.KV_CONFORMANCE_VERBOSE) console.info(`conformance results: ${file}`);
        }
      }
    }, 60_000 * timeScale);

    define('capabilities are well-formed', { rows: [] }, async (t) => {
      const c = t.caps;
      for (const flag of [
        'watch',
        'watchTree',
        'lock',
        'ttl',
        'keepAlive',
        'consistentRead',
        'distributed',
      ] as const) {
        if (typeof c[flag] !== 'boolean') throw new Error(`capabilities.${flag} must be a boolean`);
      }
      for (const ms of ['minTtl', 'ttlGranularity', 'maxValueSize'] as const) {
        if (typeof c[ms] !== 'number' || !(c[ms] >= 0) || !Number.isFinite(c[ms])) {
          throw new Error(`capabilities.${ms} must be a finite number >= 0, got ${String(c[ms])}`);
        }
      }
      if (c.keepAlive && !c.ttl) throw new Error('capabilities.keepAlive needs capabilities.ttl');
      if (typeof t.store.backend !== 'string' || t.store.backend === '') {
        throw new Error('store.backend must name the backend');
      }
    });
    describe('keys, values, list, deleteTree', () => kvCases(define));
    describe('compare-and-swap', () => casCases(define));
    describe('watch and watchTree', () => watchCases(define));
    describe('locks', () => lockCases(define));
    describe('ttl and keepAlive', () => ttlCases(define));
    describe('prefixes, close, abort, capabilities', () => lifecycleCases(define));
    describe('faults: partitions and restarts', () => faultCases(define));
    describe('faults: every process closed and reopened', () => reopenCase(define));
    describe('faults: a cluster member lost', () => memberLostCase(define));
    describe('faults: cluster links cut', () => clusterPartitionCases(define));
    describe('linearizability', () => linearizabilityCase(define));
    describe('locks under faults', () => fencedLockCase(define));
    describe('fuzzed input', () => fuzzCases(define));
    describe('recipes: encrypted values', () => encryptedCases(define));
    describe('recipes: typed values', () => typedCases(define));
    describe('recipes: leader election', () => electionCases(define));
    describe('recipes: service discovery', () => discoveryCases(define));
    describe('recipes: not supported', () => recipeUnsupportedCases(define));
    describe('recipes: across processes', () => recipeProcessCases(define));
    describe('recipes: under faults', () => recipeFaultCases(define));
  });
}

function settingsFor(caps: Capabilities, options: ConformanceOptions, timeScale: number): Settings {
  const lockTtl = Math.max(caps.minTtl, options.lockTtl ?? 10_000);
  return {
    ttl: Math.max(caps.minTtl, options.ttl ?? 1_000),
    lockTtl,
    timeScale,
    eventTimeout: 10_000 * timeScale,
    prompt: Math.min(lockTtl / 2, 3_000 * timeScale),
    slack: 500 * timeScale,
    crash: options.crash,
    faults: options.faults,
    processes: options.processes,
  };
}

function skipReason(
  spec: CaseSpec,
  caps: Capabilities,
  settings: Settings,
  name: string,
): string | undefined {
  const required: readonly CapabilityName[] =
    spec.requires === undefined ? [] : typeof spec.requires === 'string' ? [spec.requires] : spec.requires;
  const missing = required.filter((cap) => !caps[cap]);
  if (missing.length > 0) return `${name} declares ${missing.join(', ')}: false`;
  if (spec.unsupported && caps[spec.unsupported]) return `${name} supports ${spec.unsupported}`;
  if (spec.needsCrash && !settings.crash) return 'no crash option given';
  if (spec.needsFault === 'clusterLinks') {
    const c = settings.faults?.cluster;
    if (!c?.openOn || !c.isolate || !c.partitionClients || !c.healAll)
      return 'no faults.cluster link hooks (openOn, isolate, partitionClients, healAll) given';
  } else if (spec.needsFault && !settings.faults?.[spec.needsFault])
    return `no faults.${spec.needsFault} hook given`;
  if (spec.needsProcesses && !settings.processes) return 'no processes option given';
  return undefined;
}

async function withBound(ms: number, fn: () => Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the test did not finish within its bound of ${ms} ms`)), ms);
  });
  try {
    await Promise.race([fn(), bound]);
  } finally {
    clearTimeout(timer);
  }
}
