/**
 * The `memory:` backend: the whole contract in this process, with no server
 * and no native build, for application unit tests; also the reference
 * implementation of `BaseStore` for backend authors, and the store the
 * conformance kit is tested with.
 *
 * A `MemoryServer` plays the server (one data set with revisions, ttls and
 * change notifications); each `MemoryStore` is a client of it, so several
 * stores on one server behave like several connections to one etcd.
 * Everything a real backend does over the network happens synchronously
 * here, which makes every primitive atomic.
 */
import { BaseStore, DEFAULT_TIMEOUT, type PrimitiveWriteOptions, type RawPair } from './base-store.js';
import {
  InvalidArgumentError,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  LockLostError,
  UnavailableError,
} from './errors.js';
import { isBelow, stripPrefix } from './keys.js';
import type { AcquiredLock, AcquireRequest } from './lock.js';
import { parseQueryOptions } from './registry.js';
import type { RawTreeChange, RawTreeUpdate } from './tree-state.js';
import type { BackendDefinition, Capabilities, StoreConfig } from './types.js';

declare module './types.js' {
  interface BackendOptions {
    /** `name`: the process-wide data set to open (the URL's host); without it, a new private one. */
    memory: { name?: string };
  }
}

export const MEMORY_CAPABILITIES: Capabilities = Object.freeze({
  watch: true,
  watchTree: true,
  lock: true,
  ttl: true,
  keepAlive: true,
  consistentRead: true,
  minTtl: 100,
  // Reads hide expired keys at once; the sweep that tells watchers may fire a little late.
  ttlGranularity: 50,
  maxValueSize: 1024 * 1024,
  distributed: false,
});

interface Entry {
  readonly value: Uint8Array;
  /** The server revision of the write: strictly increasing across all keys, like etcd's mod_revision. */
  readonly lastIndex: number;
  /** epoch ms */
  expiresAt: number | undefined;
}

/** Called with the keys one commit changed (a deleteTree is one commit). */
type Listener = (changed: readonly string[]) => void;

/** One shared keyspace. */
export class MemoryServer {
  private readonly entries = new Map<string, Entry>();
  private readonly expiring = new Set<string>();
  private readonly listeners = new Set<Listener>();
  private revision = 0;
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweepAt = Number.POSITIVE_INFINITY;

  /** The live entry at `key`, expiring due keys first. */
  read(key: string): Entry | undefined {
    this.expire();
    return this.entries.get(key);
  }

  /** The live entry at `key` without side effects: safe inside listeners. */
  peek(key: string): Entry | undefined {
    const entry = this.entries.get(key);
    return entry && !isDue(entry, Date.now()) ? entry : undefined;
  }

  /** Every live pair strictly below `dir` ('' = all), helper keys included. */
  list(dir: string): RawPair[] {
    this.expire();
    return this.snapshot(dir);
  }

  /** Like `list`, without side effects: safe inside listeners. */
  snapshot(dir: string): RawPair[] {
    const now = Date.now();
    const pairs: RawPair[] = [];
    for (const [key, entry] of this.entries) {
      if (isBelow(dir, key) && !isDue(entry, now)) pairs.push(toRaw(key, entry));
    }
    return pairs;
  }

  write(key: string, value: Uint8Array, ttl: number | undefined): Entry {
    this.expire();
    // Copy: the caller may reuse its buffer.
    const entry: Entry = {
      value: value.slice(),
      lastIndex: ++this.revision,
      expiresAt: ttl === undefined ? undefined : Date.now() + ttl,
    };
    this.entries.set(key, entry);
    if (ttl === undefined) this.expiring.delete(key);
    else this.expiring.add(key);
    this.schedule();
    this.emit([key]);
    return entry;
  }

  /** Removes the keys that exist, in one commit. */
  remove(keys: readonly string[]): void {
    this.expire();
    this.drop(keys);
  }

  private drop(keys: readonly string[]): void {
    const gone = keys.filter((key) => this.entries.delete(key));
    for (const key of gone) this.expiring.delete(key);
    if (gone.length > 0) {
      this.revision++;
      this.emit(gone);
    }
  }

  /** Extends the ttl of `key` if it is still the write at `lastIndex`. Not a write: no revision, no event. */
  touch(key: string, lastIndex: number, ttl: number): boolean {
    const entry = this.read(key);
    if (!entry || entry.lastIndex !== lastIndex) return false;
    entry.expiresAt = Date.now() + ttl;
    this.expiring.add(key);
    this.schedule();
    return true;
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(changed: readonly string[]): void {
    for (const listener of [...this.listeners]) listener(changed);
  }

  private expire(): void {
    const now = Date.now();
    const gone: string[] = [];
    for (const key of this.expiring) {
      const entry = this.entries.get(key);
      if (!entry || entry.expiresAt === undefined) this.expiring.delete(key);
      else if (entry.expiresAt <= now) gone.push(key);
    }
    if (gone.length > 0) this.drop(gone);
  }

  /** Keeps one timer at the earliest expiry, so watchers learn of expiries without a read. */
  private schedule(): void {
    let earliest = Number.POSITIVE_INFINITY;
    for (const key of this.expiring) {
      const at = this.entries.get(key)?.expiresAt;
      if (at !== undefined && at < earliest) earliest = at;
    }
    if (earliest === this.sweepAt && this.sweepTimer) return;
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    this.sweepAt = earliest;
    if (earliest === Number.POSITIVE_INFINITY) return;
    this.sweepTimer = setTimeout(
      () => {
        this.sweepTimer = undefined;
        this.sweepAt = Number.POSITIVE_INFINITY;
        this.expire();
        this.schedule();
      },
      Math.max(0, earliest - Date.now()),
    );
    this.sweepTimer.unref();
  }
}

function isDue(entry: Entry, now: number): boolean {
  return entry.expiresAt !== undefined && entry.expiresAt <= now;
}

function toRaw(key: string, entry: Entry): RawPair {
  return { key, value: entry.value.slice(), lastIndex: entry.lastIndex };
}

export interface MemoryStoreOptions {
  /** The data set this store is a client of; default: a new, private one. */
  readonly server?: MemoryServer;
  readonly prefix?: string;
  readonly requestTimeout?: number;
  /** Overrides, e.g. to declare a capability false and see the kit expect `NotSupportedError`. */
  readonly capabilities?: Partial<Capabilities>;
  /** Implement only `_watchTree` (a full listing per commit), the older primitive, to test the base class's adapter. */
  readonly watchTreeListings?: boolean;
}

/** Lock waiters are helper keys below the lock key; the control character hides them from every listing. */
const WAITERS = '\u0000waiters';
const EMPTY = new Uint8Array(0);
/** ms a waiter's place in a lock queue lasts without being renewed. */
const WAITER_TTL = 1_000;

export class MemoryStore extends BaseStore {
  private readonly server: MemoryServer;
  /** Background work to stop on close (keep-alive renewals, lock-loss listeners). */
  private readonly background = new Set<() => void>();
  private crashed = false;
  private waiterSeq = 0;
  private readonly watchTreeListings: boolean;

  constructor(options: MemoryStoreOptions) {
    super({
      backend: 'memory',
      capabilities: { ...MEMORY_CAPABILITIES, ...options.capabilities },
      prefix: options.prefix ?? '',
      requestTimeout: options.requestTimeout ?? DEFAULT_TIMEOUT,
    });
    this.server = options.server ?? new MemoryServer();
    this.watchTreeListings = options.watchTreeListings === true;
  }

  /**
   * Simulates the death of this client's process: nothing more reaches the
   * server (renewals fail, release does nothing), so its locks and
   * keep-alive keys are freed only by their ttl.
   */
  crash(): void {
    this.crashed = true;
    this.stopBackground();
  }

  protected async _get(key: string): Promise<RawPair | null> {
    this.reach();
    const entry = this.server.read(key);
    return entry ? toRaw(key, entry) : null;
  }

  protected override async _remainingTtl(key: string): Promise<number | undefined> {
    this.reach();
    const at = this.server.read(key)?.expiresAt;
    return at === undefined ? undefined : Math.max(1, Math.ceil(at - Date.now()));
  }

  protected async _put(key: string, value: Uint8Array, options: PrimitiveWriteOptions): Promise<void> {
    this.reach();
    const entry = this.server.write(key, value, options.ttl);
    if (options.keepAlive && options.ttl !== undefined) this.keepAlive(key, entry.lastIndex, options.ttl);
  }

  protected async _delete(key: string): Promise<void> {
    this.reach();
    this.server.remove([key]);
  }

  protected async _list(dir: string): Promise<RawPair[]> {
    this.reach();
    return this.server.list(dir);
  }

  protected async _deleteTree(dir: string): Promise<void> {
    this.reach();
    this.server.remove([dir, ...this.server.list(dir).map((pair) => pair.key)]);
  }

  protected async _atomicPut(
    key: string,
    value: Uint8Array,
    previousIndex: number | null,
    options: PrimitiveWriteOptions,
  ): Promise<RawPair> {
    this.reach();
    const current = this.server.read(key);
    if (previousIndex === null) {
      if (current) throw new KeyExistsError(this.userKey(key));
    } else {
      this.checkIndex(key, current, previousIndex);
    }
    const entry = this.server.write(key, value, options.ttl);
    if (options.keepAlive && options.ttl !== undefined) this.keepAlive(key, entry.lastIndex, options.ttl);
    return toRaw(key, entry);
  }

  protected async _atomicDelete(key: string, previousIndex: number): Promise<void> {
    this.reach();
    this.checkIndex(key, this.server.read(key), previousIndex);
    this.server.remove([key]);
  }

  protected override _watch(key: string, signal: AbortSignal): AsyncIterable<RawPair | null> {
    const state = (): RawPair | null => {
      const entry = this.server.peek(key);
      return entry ? toRaw(key, entry) : null;
    };
    return this.follow(signal, (push) => {
      this.reach();
      this.server.read(key); // expire what is due before the first state
      push(state());
      return this.server.subscribe((changed) => {
        if (changed.includes(key)) push(state());
      });
    });
  }

  /** The incremental tree watch: a listing first, then the changes of each commit (one batch per commit). */
  protected override _watchTreeChanges(dir: string, signal: AbortSignal): AsyncIterable<RawTreeUpdate> {
    // The base class's default adapts `_watchTree`.
    if (this.watchTreeListings) return super._watchTreeChanges(dir, signal);
    return this.follow<RawTreeUpdate>(signal, (push) => {
      this.reach();
      push({ type: 'listing', pairs: this.server.list(dir) });
      return this.server.subscribe((changed) => {
        const changes: RawTreeChange[] = [];
        for (const key of changed) {
          if (!isBelow(dir, key)) continue;
          const entry = this.server.peek(key);
          changes.push(entry ? { type: 'put', pair: toRaw(key, entry) } : { type: 'delete', key });
        }
        if (changes.length > 0) push({ type: 'changes', changes });
      });
    });
  }

  /** The older primitive: a full listing per commit. Used only with `watchTreeListings`. */
  protected override _watchTree(dir: string, signal: AbortSignal): AsyncIterable<RawPair[]> {
    return this.follow(signal, (push) => {
      this.reach();
      push(this.server.list(dir));
      return this.server.subscribe((changed) => {
        if (changed.some((key) => isBelow(dir, key))) push(this.server.snapshot(dir));
      });
    });
  }

  protected override async _acquireLock(key: string, request: AcquireRequest): Promise<AcquiredLock | null> {
    this.reach();
    const { server } = this;
    const waitersDir = `${key}/${WAITERS}`;
    let waiter: { key: string; lastIndex: number } | undefined;
    try {
      for (;;) {
        if (request.signal.aborted) throw request.signal.reason;
        this.reach();
        const queue = server.list(waitersDir).sort((a, b) => a.lastIndex - b.lastIndex);
        const first = queue[0]?.key;
        const free = !server.read(key) && (first === undefined || first === waiter?.key);
        if (free) {
          const entry = server.write(key, request.value, request.ttl);
          return this.hold(key, entry.lastIndex, request);
        }
        if (!request.wait) return null;
        // Join the queue (again, if a deleteTree removed our place), or keep our place alive.
        // A place in the queue lives on its own short timescale, so a dead waiter is passed over soon.
        if (!waiter || !server.touch(waiter.key, waiter.lastIndex, WAITER_TTL)) {
          const waiterKey = `${waitersDir}/${++this.waiterSeq}`;
          waiter = { key: waiterKey, lastIndex: server.write(waiterKey, EMPTY, WAITER_TTL).lastIndex };
        }
        await this.nextChange(
          (changed) => changed.some((k) => k === key || k.startsWith(`${waitersDir}/`)),
          request.signal,
          Math.min(request.ttl, WAITER_TTL) / 3,
        );
      }
    } finally {
      if (waiter && !this.crashed) server.remove([waiter.key]);
    }
  }

  protected async _close(): Promise<void> {
    this.stopBackground();
  }

  /** After `crash()`, nothing reaches the server. */
  private reach(): void {
    if (this.crashed) throw new UnavailableError('memory: the client crashed');
  }

  private userKey(key: string): string {
    return stripPrefix(this.prefix, key);
  }

  private checkIndex(key: string, current: Entry | undefined, previousIndex: number): void {
    if (!current) throw new KeyNotFoundError(this.userKey(key));
    if (current.lastIndex !== previousIndex) throw new KeyModifiedError(this.userKey(key));
  }

  private keepAlive(key: string, lastIndex: number, ttl: number): void {
    const timer = setInterval(
      () => {
        // A later write of the key (by anyone) ends this keep-alive.
        if (!this.server.touch(key, lastIndex, ttl)) stop();
      },
      Math.max(1, Math.floor(ttl / 3)),
    );
    timer.unref();
    const stop = () => {
      clearInterval(timer);
      this.background.delete(stop);
    };
    this.background.add(stop);
  }

  private hold(key: string, lastIndex: number, request: AcquireRequest): AcquiredLock {
    const { server } = this;
    let unsubscribe = () => {};
    const stop = () => {
      unsubscribe();
      this.background.delete(stop);
    };
    // The server tells us when the lock key goes (expired, deleted, overwritten).
    unsubscribe = server.subscribe((changed) => {
      if (!changed.includes(key) || server.peek(key)?.lastIndex === lastIndex) return;
      stop();
      queueMicrotask(() => request.onLost('the lock key was deleted, overwritten or expired'));
    });
    this.background.add(stop);
    return {
      fencingToken: lastIndex,
      renew: async () => {
        this.reach();
        if (!server.touch(key, lastIndex, request.ttl)) {
          stop();
          throw new LockLostError(this.userKey(key), 'the lock key expired or was taken over');
        }
      },
      release: async () => {
        if (this.crashed) return;
        stop();
        if (server.read(key)?.lastIndex === lastIndex) server.remove([key]);
      },
    };
  }

  private stopBackground(): void {
    for (const stop of [...this.background]) stop();
  }

  /** Resolves on the next commit that `matches`, after `timeout` ms, or when `signal` aborts. */
  private nextChange(
    matches: (changed: readonly string[]) => boolean,
    signal: AbortSignal,
    timeout: number,
  ): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        unsubscribe();
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const unsubscribe = this.server.subscribe((changed) => {
        if (matches(changed)) done();
      });
      const timer = setTimeout(done, Math.max(1, timeout));
      timer.unref();
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /**
   * Turns a subscription into the async iterable the base class pumps:
   * `start` pushes the first state and subscribes in the same synchronous
   * step, so no commit falls between the two.
   */
  private async *follow<T>(
    signal: AbortSignal,
    start: (push: (item: T) => void) => () => void,
  ): AsyncGenerator<T> {
    const queue: T[] = [];
    let wake: (() => void) | undefined;
    const onAbort = () => wake?.();
    const stop = start((item) => {
      queue.push(item);
      wake?.();
    });
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      while (!signal.aborted) {
        if (queue.length > 0) {
          yield queue.shift() as T;
          continue;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    } finally {
      stop();
      signal.removeEventListener('abort', onAbort);
    }
  }
}

const DATA_SETS = Symbol.for('@kv/core.memoryDataSets');

/** The named data sets of this process, shared by every copy of @kv/core in it. */
function dataSets(): Map<string, MemoryServer> {
  const holder = globalThis as { [DATA_SETS]?: Map<string, MemoryServer> };
  holder[DATA_SETS] ??= new Map();
  return holder[DATA_SETS];
}

/**
 * The data set named `name` in this process (created on first use): every
 * store opened with `memory://<name>` is a client of it.
 */
export function memoryDataSet(name: string): MemoryServer {
  const sets = dataSets();
  let server = sets.get(name);
  if (!server) {
    server = new MemoryServer();
    sets.set(name, server);
  }
  return server;
}

const DATA_SET_NAME = /^[A-Za-z0-9._~-]+$/;

/**
 * `memory:` (a new private data set), `memory:?prefix=app`,
 * `memory://<name>` (the process-wide data set `<name>`) and
 * `memory://<name>/<prefix>?requestTimeout=1000`.
 */
export function parseMemoryUrl(url: string): StoreConfig {
  const match = /^memory:(?:\/\/([^/?#]*)([^?#]*))?(?:\?([^#]*))?$/i.exec(url);
  if (!match) {
    throw new InvalidArgumentError(
      `not a memory store URL: ${JSON.stringify(url)} (expected memory:, memory:?prefix=app or memory://name/prefix)`,
    );
  }
  const [, name, path, query] = match;
  const config: Record<string, unknown> = { backend: 'memory' };
  const decode = (part: string): string => {
    try {
      return decodeURIComponent(part);
    } catch (error) {
      throw new InvalidArgumentError(`bad percent-encoding in the store URL ${JSON.stringify(url)}`, {
        cause: error,
      });
    }
  };
  if (name) config.name = decode(name);
  if (path && path !== '/') config.prefix = decode(path);
  parseQueryOptions(query ?? '', config, ['name']);
  return config as StoreConfig;
}

/**
 * A registrable definition, for `createStore({ backend: name })`. Without
 * `server`, each store opens the data set its config names (`name`, the
 * URL's host) or, without a name, a new private one.
 */
export function memoryBackend(name = 'memory', server?: MemoryServer): BackendDefinition {
  return {
    name,
    capabilities: MEMORY_CAPABILITIES,
    options: ['name'],
    ...(name === 'memory' ? { parseUrl: parseMemoryUrl } : {}),
    create: async (config) => {
      const setName = (config as { name?: unknown }).name;
      if (setName !== undefined && (typeof setName !== 'string' || !DATA_SET_NAME.test(setName))) {
        throw new InvalidArgumentError(
          `the memory backend's name option must match ${DATA_SET_NAME}, got ${JSON.stringify(setName)}`,
        );
      }
      return new MemoryStore({
        server: server ?? (setName === undefined ? new MemoryServer() : memoryDataSet(setName)),
        prefix: config.prefix,
        requestTimeout: config.requestTimeout,
      });
    },
  };
}
