import { expect } from 'vitest';
import {
  type Capabilities,
  ClosedError,
  KVError,
  type KVPair,
  type Store,
  type TreeEvent,
} from '../index.js';
import type { ProcessOptions } from './recipe-process-cases.js';
import type { CheckedHistory, RowId } from './results.js';

/** The capabilities that gate tests (the boolean ones). */
export type CapabilityName = 'watch' | 'watchTree' | 'lock' | 'ttl' | 'keepAlive' | 'consistentRead';

/** Knobs derived from the options and the backend's capabilities, fixed once the first store is open. */
export interface Settings {
  /** ms: the ttl the TTL tests write with. */
  readonly ttl: number;
  /** ms: the ttl of the locks the lock tests take. */
  readonly lockTtl: number;
  /** Multiplies every wait bound. */
  readonly timeScale: number;
  /** ms: how long to wait for an event that should come at once (a watch event, a lock hand-over). */
  readonly eventTimeout: number;
  /** ms: "promptly", e.g. a waiter gets a lock after unlock(), well before the lock's ttl. */
  readonly prompt: number;
  /** ms: added to ttl + ttlGranularity for polling and round trips. */
  readonly slack: number;
  readonly crash: ((store: Store) => Promise<void> | void) | undefined;
  readonly faults: FaultHooks | undefined;
  /** How child processes open the same store (the multi-process recipe cases). */
  readonly processes: ProcessOptions | undefined;
}

/** A store whose link to its server a test can cut and heal. */
export interface PartitionableStore {
  readonly store: Store;
  /** Cuts this store's link: its sockets stay open, nothing moves either way (a black hole). */
  partition(): void | Promise<void>;
  /** Heals the link. */
  heal(): void | Promise<void>;
}

/**
 * What a backend lets the kit break, on a server of the backend's own that
 * nothing else uses. The kit runs the fault cases these hooks allow and
 * leaves the others "untested" in the matrix.
 */
export interface FaultHooks {
  /** Opens a store on the fault server with this prefix. */
  open(prefix: string): Promise<Store>;
  /** Opens a store on the fault server whose link alone can be partitioned. */
  openPartitionable?(prefix: string): Promise<PartitionableStore>;
  /** Restarts the fault server (keeping what its persistence keeps: maybe nothing); resolves once it serves again. */
  restart?(): Promise<void>;
  /**
   * For an embedded store (no server to restart): closes every store `open`
   * gave, as if every process using the data had exited; stores opened
   * afterwards are the restarted processes.
   */
  reopen?(): Promise<void>;
  /**
   * A cluster of the backend's own: `open(prefix)` of these hooks opens a
   * store on all its members, and the kit breaks one member at a time.
   */
  cluster?: ClusterFaultHooks;
}

/** One cluster's members, by index, for the "member lost" case. */
export interface ClusterFaultHooks {
  readonly members: number;
  /** Opens a store on every member's endpoint. */
  open(prefix: string): Promise<Store>;
  /** SIGKILL; `start` brings it back with its data. */
  kill(member: number): Promise<void>;
  start(member: number): Promise<void>;
  /** SIGSTOP / SIGCONT: the member keeps its sockets and answers nothing. */
  freeze(member: number): Promise<void>;
  thaw(member: number): Promise<void>;
  /** ms: the `requestTimeout` of the stores `open` gives; every call must settle within it. */
  readonly requestTimeout: number;
  /** Link hooks (all four, or none): a store on one member's endpoint only. */
  openOn?(member: number, prefix: string): Promise<Store>;
  /** Cuts the member from every other member (a minority of one); its clients still reach it. Black holes, not resets. */
  isolate?(member: number): Promise<void>;
  /** Cuts the clients (this process) from the member; it still reaches the other members. */
  partitionClients?(member: number): Promise<void>;
  /** Heals every link cut by `isolate` and `partitionClients`. */
  healAll?(): Promise<void>;
  /** The member that leads now (optional): the link cases then isolate the leader first, the harder case. */
  leader?(): Promise<number>;
}

/** What a test case declares about itself. */
export interface CaseSpec {
  /** The matrix rows (calls) the test exercises. More can be added at run time with `t.tag()`. */
  readonly rows: readonly RowId[];
  /** The test runs only when every named capability is declared true (else it is skipped). */
  readonly requires?: CapabilityName | readonly CapabilityName[];
  /** A "not supported" check: runs only when this capability is declared false. */
  readonly unsupported?: CapabilityName;
  /** Runs only when the backend passed a `crash` option. */
  readonly needsCrash?: boolean;
  /** Runs only when the backend's fault hooks include this one. */
  readonly needsFault?: 'openPartitionable' | 'restart' | 'reopen' | 'cluster' | 'clusterLinks';
  /** Runs only when the backend passed a `processes` option (child processes open the same store). */
  readonly needsProcesses?: boolean;
  /** ms, from the capabilities; the default is 30 s (times `timeScale`). */
  readonly timeout?: (caps: Capabilities, settings: Settings) => number;
}

export type CaseBody = (t: TestEnv) => Promise<void>;
export type Define = (title: string, spec: CaseSpec, body: CaseBody) => void;

const decoder = new TextDecoder();

export function text(value: Uint8Array): string {
  return decoder.decode(value);
}

export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Short description of anything thrown, for assertion messages. */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return `${error.name}${code === undefined ? '' : ` [${String(code)}]`}: ${error.message}`;
  }
  return `non-Error ${typeof error}: ${String(error)}`;
}

/** A KV error class (or anything with a cross-copy `isInstance`). */
export interface ErrorClass {
  readonly name: string;
  isInstance(error: unknown): boolean;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Runs `fn`, catching both a synchronous throw and a rejection. */
export async function settle<T>(fn: () => T | Promise<T>): Promise<Settled<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    return { ok: false, error };
  }
}

/**
 * Asserts that `fn` throws or rejects with `cls` (checked with its
 * cross-copy `isInstance`), and that the error is a `KVError` with a code.
 */
export async function expectKVError<E extends ErrorClass>(
  fn: () => unknown,
  cls: E,
  what: string,
): Promise<KVError> {
  const result = await settle(fn);
  if (result.ok) {
    throw new Error(`${what}: expected ${cls.name}, but it succeeded (${format(result.value)})`);
  }
  const { error } = result;
  if (!cls.isInstance(error)) {
    throw new Error(`${what}: expected ${cls.name}, got ${describeError(error)}`, { cause: error });
  }
  if (!KVError.isInstance(error) || typeof error.code !== 'string') {
    throw new Error(`${what}: ${describeError(error)} is not a KVError with a code`, { cause: error });
  }
  return error;
}

/** Asserts an aborted call: an error named `AbortError` whose `cause` is the signal's reason. */
export async function expectAbort(fn: () => unknown, reason: unknown, what: string): Promise<void> {
  const result = await settle(fn);
  if (result.ok) throw new Error(`${what}: expected an AbortError, but it succeeded`);
  const error = result.error as { name?: unknown; cause?: unknown };
  if (!(result.error instanceof Error) || error.name !== 'AbortError') {
    throw new Error(`${what}: expected an error named AbortError, got ${describeError(result.error)}`, {
      cause: result.error,
    });
  }
  if (error.cause !== reason) {
    throw new Error(`${what}: the AbortError's cause is not signal.reason (got ${format(error.cause)})`);
  }
}

/** Like `JSON.stringify`, but readable for pairs (values as text when they are text). */
export function format(value: unknown): string {
  try {
    return JSON.stringify(value, (_key, v: unknown) =>
      v instanceof Uint8Array ? (v.length > 64 ? `<${v.length} bytes>` : `<${text(v)}>`) : v,
    );
  } catch {
    return String(value);
  }
}

/** Rejects with an `Error(message)` when `promise` does not settle within `ms`. */
export function within<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `condition` until it holds; fails with `what` once `deadline` (`performance.now()` ms) passed. */
export async function waitUntil(
  condition: () => Promise<boolean> | boolean,
  options: { deadline: number; interval: number; what: string },
): Promise<void> {
  for (;;) {
    if (await condition()) return;
    if (performance.now() > options.deadline) throw new Error(`timed out waiting until ${options.what}`);
    await sleep(options.interval);
  }
}

/** Expects a pair with this key and text value. */
export function expectPair(pair: KVPair | null | undefined, key: string, value: string | Uint8Array): void {
  expect(pair, `expected the pair of ${JSON.stringify(key)}`).toBeTruthy();
  const p = pair as KVPair;
  expect(p.key).toBe(key);
  expect(p.value).toBeInstanceOf(Uint8Array);
  if (typeof value === 'string') expect(text(p.value)).toBe(value);
  else expect(sameBytes(p.value, value), `value of ${key}`).toBe(true);
  expectIndex(p.lastIndex, `lastIndex of ${key}`);
}

/** `lastIndex` and `fencingToken` are positive integers. */
export function expectIndex(index: unknown, what: string): void {
  expect(
    Number.isSafeInteger(index) && (index as number) > 0,
    `${what} must be a positive integer, got ${String(index)}`,
  ).toBe(true);
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The keys of a listing. */
export function keys(pairs: readonly KVPair[]): string[] {
  return pairs.map((p) => p.key);
}

/** `key` strictly below `dir` ('' is the root), for user keys. */
export function below(dir: string, key: string): boolean {
  return dir === '' ? key !== '' : key.startsWith(`${dir}/`) && key.length > dir.length + 1;
}

/**
 * Pulls from an async iterator with a bound on every wait. A wait that timed
 * out leaves its `next()` pending and the following call reuses it, so no
 * event is lost and the iterator never sees two `next()` calls at once.
 */
export class Reader<T> {
  private readonly iterator: AsyncIterator<T> | undefined;
  private readonly openError: unknown;
  private pending: Promise<IteratorResult<T>> | undefined;
  protected readonly what: string;
  private readonly timeout: number;

  constructor(open: () => AsyncIterable<T>, what: string, timeout: number) {
    this.what = what;
    this.timeout = timeout;
    let iterator: AsyncIterator<T> | undefined;
    let openError: unknown;
    try {
      iterator = open()[Symbol.asyncIterator]();
    } catch (error) {
      openError = error;
    }
    this.iterator = iterator;
    this.openError = openError;
  }

  /** The next result, done or not. Throws what the iterator throws, or after `ms`. */
  async result(ms = this.timeout): Promise<IteratorResult<T>> {
    if (!this.iterator) throw this.openError;
    if (!this.pending) {
      this.pending = this.iterator.next();
      this.pending.catch(() => {});
    }
    const pending = this.pending;
    try {
      const result = await within(pending, ms, `${this.what}: nothing within ${ms} ms`);
      this.pending = undefined;
      return result;
    } catch (error) {
      // A rejection of the iterator itself is consumed; a timeout keeps the next() pending.
      if (await isSettled(pending)) this.pending = undefined;
      throw error;
    }
  }

  /** The next event; fails when the iteration ends or nothing comes within `ms`. */
  async next(ms = this.timeout): Promise<T> {
    const result = await this.result(ms);
    if (result.done) throw new Error(`${this.what} ended, but an event was expected`);
    return result.value;
  }

  /** Expects the iteration to end (done) within `ms`. */
  async end(ms = this.timeout): Promise<void> {
    const result = await this.result(ms);
    if (!result.done) throw new Error(`${this.what} should have ended, but yielded ${format(result.value)}`);
  }

  /** Stops the iteration (return()), without waiting long for it. */
  async close(): Promise<void> {
    if (!this.iterator?.return) return;
    await within(Promise.resolve(this.iterator.return()), 1_000, 'return()').catch(() => {});
  }
}

async function isSettled(promise: Promise<unknown>): Promise<boolean> {
  const marker = Symbol();
  const winner = await Promise.race([
    promise.then(
      () => true,
      () => true,
    ),
    Promise.resolve(marker),
  ]);
  return winner !== marker;
}

/**
 * A `Reader` for `watchTree` that checks every event against the one before:
 * `pairs` sorted, strictly below the directory; `changes` sorted and equal to
 * the difference of consecutive listings; a put change carries the same pair
 * as `pairs`; no event without a change except the first.
 */
export class TreeReader extends Reader<TreeEvent> {
  private previous: KVPair[] | undefined;
  private readonly dir: string;

  constructor(open: () => AsyncIterable<TreeEvent>, dir: string, what: string, timeout: number) {
    super(open, what, timeout);
    this.dir = dir;
  }

  override async next(ms?: number): Promise<TreeEvent> {
    const event = await super.next(ms);
    checkTreeEvent(this.dir, this.previous, event, this.what);
    this.previous = event.pairs;
    return event;
  }

  /** Reads events until one satisfies `done`; returns every event read, in order. */
  async until(done: (event: TreeEvent) => boolean, ms?: number): Promise<TreeEvent[]> {
    const events: TreeEvent[] = [];
    for (;;) {
      const event = await this.next(ms);
      events.push(event);
      if (done(event)) return events;
    }
  }
}

/** The checks `TreeReader` applies to each event (exported for backends' own tests). */
export function checkTreeEvent(
  dir: string,
  previous: readonly KVPair[] | undefined,
  event: TreeEvent,
  what = 'watchTree',
): void {
  expect(
    Array.isArray(event?.pairs) && Array.isArray(event?.changes),
    `${what}: an event is { pairs, changes }`,
  ).toBe(true);
  const { pairs, changes } = event;
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i] as KVPair;
    expect(
      below(dir, pair.key),
      `${what}: ${JSON.stringify(pair.key)} is not below ${JSON.stringify(dir)}`,
    ).toBe(true);
    expect(pair.value).toBeInstanceOf(Uint8Array);
    expectIndex(pair.lastIndex, `${what}: lastIndex of ${pair.key}`);
    if (i > 0) {
      const before = (pairs[i - 1] as KVPair).key;
      expect(before < pair.key, `${what}: pairs not sorted by key (${before} then ${pair.key})`).toBe(true);
    }
  }
  for (let i = 1; i < changes.length; i++) {
    const a = changeKey(changes[i - 1]);
    const b = changeKey(changes[i]);
    expect(a < b, `${what}: changes not sorted by key (${a} then ${b})`).toBe(true);
  }
  const before = new Map((previous ?? []).map((p) => [p.key, p]));
  const after = new Map(pairs.map((p) => [p.key, p]));
  const expected: string[] = [];
  for (const key of [...new Set([...before.keys(), ...after.keys()])].sort()) {
    const a = before.get(key);
    const b = after.get(key);
    if (a && !b) expected.push(`delete ${key}`);
    else if (b && (!a || a.lastIndex !== b.lastIndex || !sameBytes(a.value, b.value)))
      expected.push(`put ${key}`);
  }
  const got = changes.map((c) => `${c.type} ${changeKey(c)}`);
  expect(got, `${what}: changes must be the difference between consecutive listings`).toEqual(expected);
  for (const change of changes) {
    if (change.type === 'put') {
      const listed = after.get(change.pair.key) as KVPair;
      expect(change.pair.lastIndex, `${what}: lastIndex of the put change of ${change.pair.key}`).toBe(
        listed.lastIndex,
      );
      expect(
        sameBytes(change.pair.value, listed.value),
        `${what}: value of the put change of ${change.pair.key}`,
      ).toBe(true);
    }
  }
  if (previous !== undefined) {
    expect(changes.length, `${what}: an event after the first must carry a change`).toBeGreaterThan(0);
  }
}

function changeKey(change: TreeEvent['changes'][number] | undefined): string {
  if (!change) return '';
  return change.type === 'put' ? change.pair.key : change.key;
}

/** A listing as `{ key: text value }`, for comparing with expected states. */
export function snapshot(pairs: readonly KVPair[]): Record<string, string> {
  return Object.fromEntries(pairs.map((p) => [p.key, text(p.value)]));
}

export interface EnvHost {
  readonly caps: Capabilities;
  readonly settings: Settings;
  readonly open: (prefix: string) => Promise<Store>;
  /** Removes everything under the test's prefix. */
  readonly wipe: () => Promise<void>;
  /** Records a measurement or remark in the test's result (e.g. a failover time). */
  readonly note?: (text: string) => void;
  /** Keeps a checked history for the results file. */
  readonly record?: (history: CheckedHistory) => void;
}

/**
 * What a test body gets: its unique prefix, a store opened on it, more stores
 * on demand, watch readers with bounded waits. Everything it opens is closed
 * and its prefix wiped when the test ends.
 */
export class TestEnv {
  readonly caps: Capabilities;
  readonly settings: Settings;
  /** This test's own prefix; every store it opens lives at or below it. */
  readonly prefix: string;
  private readonly host: EnvHost;
  private readonly stores: Store[] = [];
  private readonly readers: Reader<unknown>[] = [];
  private readonly cleanups: (() => Promise<unknown> | unknown)[] = [];
  private readonly rows: Set<RowId>;
  private main: Store | undefined;

  constructor(host: EnvHost, prefix: string, rows: Set<RowId>) {
    this.host = host;
    this.caps = host.caps;
    this.settings = host.settings;
    this.prefix = prefix;
    this.rows = rows;
  }

  /** The store opened for the test on its prefix. */
  get store(): Store {
    if (!this.main) throw new Error('the test store is not open');
    return this.main;
  }

  async start(): Promise<void> {
    this.main = await this.open();
  }

  /** Opens another store (a new connection); `sub` gives it the prefix `<test prefix>/<sub>`. */
  async open(sub?: string): Promise<Store> {
    const store = await this.host.open(sub === undefined ? this.prefix : `${this.prefix}/${sub}`);
    this.stores.push(store);
    return store;
  }

  /** Opens `n` more stores on the test's prefix. */
  openMany(n: number): Promise<Store[]> {
    return Promise.all(range(n).map(() => this.open()));
  }

  /** Runs `fn` first when the test ends (kill child processes, stop iterators). */
  onCleanup(fn: () => Promise<unknown> | unknown): void {
    this.cleanups.push(fn);
  }

  /** Records a measurement in the results file (`notes` of this test) and prints it. */
  note(text: string): void {
    this.host.note?.(text);
    console.info(`[conformance] ${text}`);
  }

  /** Records a history this test checked (operations, faults, result) in the results file. */
  recordHistory(history: CheckedHistory): void {
    this.host.record?.(history);
  }

  /** Marks more matrix rows as exercised by this test. */
  tag(...rows: RowId[]): void {
    for (const row of rows) this.rows.add(row);
  }

  watch(store: Store, key: string, signal?: AbortSignal): Reader<KVPair | null> {
    const reader = new Reader<KVPair | null>(
      () => store.watch(key, signal ? { signal } : {}),
      `watch(${JSON.stringify(key)})`,
      this.settings.eventTimeout,
    );
    this.readers.push(reader as Reader<unknown>);
    return reader;
  }

  watchTree(store: Store, dir: string, signal?: AbortSignal): TreeReader {
    const reader = new TreeReader(
      () => store.watchTree(dir, signal ? { signal } : {}),
      dir.replace(/^\/+|\/+$/g, ''),
      `watchTree(${JSON.stringify(dir)})`,
      this.settings.eventTimeout,
    );
    this.readers.push(reader as Reader<unknown>);
    return reader;
  }

  /** Closes readers and stores, then wipes the prefix. Throws the first failure. */
  async cleanup(): Promise<void> {
    const problems: unknown[] = [];
    for (const fn of this.cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (error) {
        problems.push(error);
      }
    }
    await Promise.all(this.readers.map((r) => r.close()));
    const bound = 10_000 * this.settings.timeScale;
    await Promise.all(
      this.stores.map((s) =>
        within(s.close(), bound, `close() did not finish within ${bound} ms`).catch((error) => {
          if (!ClosedError.isInstance(error)) problems.push(error);
        }),
      ),
    );
    try {
      await within(
        this.host.wipe(),
        bound,
        `deleteTree of the test prefix did not finish within ${bound} ms`,
      );
    } catch (error) {
      problems.push(error);
    }
    if (problems.length > 0) {
      throw new Error(`cleanup failed: ${problems.map(describeError).join('; ')}`, { cause: problems[0] });
    }
  }
}
