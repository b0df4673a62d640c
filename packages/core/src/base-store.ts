import { setMaxListeners } from 'node:events';
import { Deadlines, MAX_TIMER_MS, runBounded } from './call.js';
import { Channel, type ChannelOptions, WATCH_BUFFER_BYTES, weighWatchState } from './channel.js';
import {
  ClosedError,
  describeValue,
  InvalidArgumentError,
  InvalidKeyError,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  KVError,
  NotSupportedError,
  UnavailableError,
  ValueTooLargeError,
} from './errors.js';
import { compareKeys, isBelow, joinKey, normalizeKey, samePair, stripPrefix, toBytes } from './keys.js';
import { type AcquiredLock, type AcquireRequest, type LockHost, StoreLock } from './lock.js';
import { type RawTreeUpdate, TreeState } from './tree-state.js';
import type {
  CallOptions,
  Capabilities,
  KVPair,
  Lock,
  LockOptions,
  ReadOptions,
  Store,
  TreeChange,
  TreeEvent,
  Value,
  WriteOptions,
} from './types.js';

/** A pair as a backend returns it: `key` is the full storage key, prefix included. */
export interface RawPair {
  readonly key: string;
  readonly value: Uint8Array;
  readonly lastIndex: number;
}

export interface PrimitiveReadOptions {
  readonly signal: AbortSignal;
  readonly consistent: boolean;
}

export interface PrimitiveWriteOptions {
  readonly signal: AbortSignal;
  /** ms, validated: a positive integer >= minTtl. */
  readonly ttl: number | undefined;
  /** Only with a ttl. */
  readonly keepAlive: boolean;
}

/**
 * Backends mark their helper keys (lock waiters, side keys) with a control
 * character, which no user key may hold; the base class hides such keys from
 * every listing and tree watch.
 */
export function isHelperKey(fullKey: string): boolean {
  return hasControlFrom(fullKey, 0);
}

/** Whether `key` holds a control character (U+0000-U+001F, U+007F) at or after index `from`. */
function hasControlFrom(key: string, from: number): boolean {
  for (let i = from; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c < 32 || c === 127) return true;
  }
  return false;
}

export const DEFAULT_TIMEOUT = 5_000;
export const DEFAULT_KEEPALIVE_TTL = 15_000;
export const DEFAULT_LOCK_TTL = 15_000;

export interface BaseStoreOptions {
  readonly backend: string;
  readonly capabilities: Capabilities;
  readonly prefix: string;
  readonly requestTimeout: number;
  /** Named in the `InvalidArgumentError` for a ttl under `minTtl`, e.g. Consul's `session_ttl_min`. */
  readonly minTtlSetting?: string;
  /** Named in the `ValueTooLargeError` for a value over `maxValueSize`: what sets that limit. */
  readonly maxValueSetting?: string;
}

/**
 * The base class of every backend. Public methods validate and normalise
 * their arguments, apply the prefix, enforce the closed state, bound every
 * call with `requestTimeout` and the caller's `signal`, and wrap driver
 * errors; they then call the small protected primitives a backend
 * implements. Keys given to primitives are full storage keys (prefix
 * included, no leading or trailing `/`; '' is the root of an unprefixed
 * store).
 */
export abstract class BaseStore implements Store {
  readonly backend: string;
  readonly capabilities: Capabilities;
  readonly prefix: string;
  readonly requestTimeout: number;
  private readonly minTtlSetting: string | undefined;
  private readonly maxValueSetting: string | undefined;
  private readonly closeController = new AbortController();
  /** Bounds every call: one timer and one close listener for the whole store. */
  private readonly deadlines: Deadlines;
  private readonly locks = new Set<StoreLock>();
  private closePromise: Promise<void> | undefined;

  protected constructor(options: BaseStoreOptions) {
    this.backend = options.backend;
    this.capabilities = Object.freeze({ ...options.capabilities });
    this.prefix = normalizeKey(options.prefix, true);
    this.requestTimeout = options.requestTimeout;
    this.minTtlSetting = options.minTtlSetting;
    this.maxValueSetting = options.maxValueSetting;
    // Every call in flight listens on it: many concurrent calls are normal, not a leak.
    setMaxListeners(0, this.closeController.signal);
    (this.lockHost as { requestTimeout: number }).requestTimeout = options.requestTimeout;
    this.deadlines = new Deadlines(this.closeController.signal, options.requestTimeout);
  }

  /** Aborts when `close()` starts. Backends tie their background work to it. */
  protected get closing(): AbortSignal {
    return this.closeController.signal;
  }

  get closed(): boolean {
    return this.closeController.signal.aborted;
  }

  // ---- primitives a backend implements ----

  protected abstract _get(key: string, options: PrimitiveReadOptions): Promise<RawPair | null>;
  protected abstract _put(key: string, value: Uint8Array, options: PrimitiveWriteOptions): Promise<void>;
  /** Removes only `key`, never its children. A missing key is fine. */
  protected abstract _delete(key: string, signal: AbortSignal): Promise<void>;
  /** Every pair strictly below `dir` ('' = everything), in any order. Helper keys are filtered out by the caller. */
  protected abstract _list(dir: string, options: PrimitiveReadOptions): Promise<RawPair[]>;
  /** Removes `dir` and everything below it. */
  protected abstract _deleteTree(dir: string, signal: AbortSignal): Promise<void>;
  /**
   * Writes only if the key is at `previousIndex` (`null`: only if absent).
   * Throws `KeyExistsError`, `KeyModifiedError` or `KeyNotFoundError`.
   */
  protected abstract _atomicPut(
    key: string,
    value: Uint8Array,
    previousIndex: number | null,
    options: PrimitiveWriteOptions,
  ): Promise<RawPair>;
  /** Throws `KeyModifiedError` or `KeyNotFoundError`. */
  protected abstract _atomicDelete(key: string, previousIndex: number, signal: AbortSignal): Promise<void>;
  /** Releases connections and timers. Called once. Locks were already released and watches ended. */
  protected abstract _close(): Promise<void>;

  protected _exists(key: string, options: PrimitiveReadOptions): Promise<boolean> {
    return this._get(key, options).then((pair) => pair !== null);
  }

  /**
   * Yields the key's current state first, then every later state in commit
   * order, until `signal` aborts. Reconnects are the backend's job; it may
   * yield the same state again after one (the base class drops repeats).
   */
  protected _watch(_key: string, _signal: AbortSignal): AsyncIterable<RawPair | null> {
    throw new NotSupportedError(this.backend, 'watch', this.unimplemented('watch', '_watch'));
  }

  /**
   * Yields full listings of `dir` (as `_list` returns them): the current one
   * first, then one after each change. The base class computes `changes`
   * and skips listings that changed nothing. A backend that knows what each
   * commit changed implements `_watchTreeChanges` instead: a full listing
   * per commit costs O(n) per change on a big directory.
   */
  protected _watchTree(_dir: string, _signal: AbortSignal): AsyncIterable<RawPair[]> {
    throw new NotSupportedError(
      this.backend,
      'watchTree',
      this.unimplemented('watchTree', '_watchTreeChanges or _watchTree'),
    );
  }

  /**
   * The incremental form of `_watchTree`: yields a full listing of `dir`
   * first (and again after a resync: it replaces everything), then the
   * changes of each commit below `dir` (a batch is applied as one step, so
   * a deleteTree never shows half done). Helper keys and keys not strictly
   * below `dir` may be included: the base class filters them. By default it
   * adapts `_watchTree`'s listings.
   */
  protected async *_watchTreeChanges(dir: string, signal: AbortSignal): AsyncIterable<RawTreeUpdate> {
    for await (const pairs of this._watchTree(dir, signal)) yield { type: 'listing', pairs };
  }

  /** Acquires `key` (waiting if `request.wait`), or resolves `null` for a `tryLock` that found it held. */
  protected _acquireLock(_key: string, _request: AcquireRequest): Promise<AcquiredLock | null> {
    throw new NotSupportedError(this.backend, 'locks', this.unimplemented('lock', '_acquireLock'));
  }

  /**
   * The ms a key's ttl has left (`remainingTtl`). The default says the backend cannot tell; a
   * backend overrides it when its server or its own bookkeeping knows a key's deadline.
   */
  protected _remainingTtl(_key: string, _signal: AbortSignal): Promise<number | undefined> {
    throw new NotSupportedError(this.backend, 'remainingTtl');
  }

  /** The reason for a default primitive's `NotSupportedError` when the capability is declared true. */
  private unimplemented(capability: 'watch' | 'watchTree' | 'lock', primitive: string): string | undefined {
    return this.capabilities[capability]
      ? `capabilities.${capability} is declared true but not implemented (the backend has no ${primitive})`
      : undefined;
  }

  /** Turns a driver error into a `KVError`. Backends override it to map their error codes. */
  protected _mapError(error: unknown, operation: string): KVError {
    if (KVError.isInstance(error)) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new UnavailableError(`${this.backend}: ${operation} failed: ${message}`, { cause: error });
  }

  // ---- the Store ----

  get(key: string, options?: ReadOptions): Promise<KVPair> {
    return this.#read('get', key, options, (pair, full) => {
      if (!pair) throw new KeyNotFoundError(stripPrefix(this.prefix, full));
      return this.toPair(pair);
    });
  }

  tryGet(key: string, options?: ReadOptions): Promise<KVPair | null> {
    return this.#read('tryGet', key, options, (pair) => (pair ? this.toPair(pair) : null));
  }

  /**
   * How long `key` has left to live: its remaining ttl in ms (rounded up), `undefined` for a key
   * without a ttl or a missing key. Not part of the `Store` contract: it is what tools that copy
   * keys with their ttls use (`kv copy`, `kv dump`), on a `BaseStore` whose backend can tell
   * (`NotSupportedError` otherwise). A keepAlive key's figure is its current term, renewed while
   * its owner lives.
   */
  remainingTtl(key: string, options?: CallOptions): Promise<number | undefined> {
    return this.run(
      'remainingTtl',
      options,
      (signal) => {
        checkOptions(options, CALL_OPTIONS);
        return this._remainingTtl(this.fullKey(key), signal);
      },
      'read',
    );
  }

  /**
   * One `_get` of `key`, bounded as every read is; `finish` turns what it
   * found into the result. An ES private name, so a backend's own `read`
   * does not clash with it.
   */
  #read<T>(
    operation: string,
    key: string,
    options: ReadOptions | undefined,
    finish: (pair: RawPair | null, full: string) => T,
  ): Promise<T> {
    return this.run(
      operation,
      options,
      async (signal) => {
        const full = this.fullKey(key);
        return finish(await this._get(full, this.readOptions(options, signal)), full);
      },
      'read',
    );
  }

  put(key: string, value: Value, options?: WriteOptions): Promise<void> {
    return this.run('put', options, async (signal) => {
      const full = this.fullKey(key);
      const bytes = this.checkValue(value);
      await this._put(full, bytes, this.writeOptions(options, signal));
    });
  }

  delete(key: string, options?: CallOptions): Promise<void> {
    return this.run('delete', options, (signal) => {
      checkOptions(options, CALL_OPTIONS);
      return this._delete(this.fullKey(key), signal);
    });
  }

  exists(key: string, options?: ReadOptions): Promise<boolean> {
    return this.run(
      'exists',
      options,
      (signal) => this._exists(this.fullKey(key), this.readOptions(options, signal)),
      'read',
    );
  }

  list(directory: string, options?: ReadOptions): Promise<KVPair[]> {
    return this.run(
      'list',
      options,
      async (signal) => {
        const dir = this.fullDir(directory);
        return this.toListing(dir, await this._list(dir, this.readOptions(options, signal)));
      },
      'read',
    );
  }

  deleteTree(directory: string, options?: CallOptions): Promise<void> {
    return this.run('deleteTree', options, async (signal) => {
      checkOptions(options, CALL_OPTIONS);
      const dir = normalizeKey(directory, true);
      if (dir === '') {
        throw new InvalidKeyError(
          directory,
          'deleteTree of the whole store is refused; delete its directories one by one',
        );
      }
      await this._deleteTree(joinKey(this.prefix, dir), signal);
    });
  }

  atomicPut(key: string, value: Value, previous: KVPair | null, options?: WriteOptions): Promise<KVPair> {
    return this.run('atomicPut', options, async (signal) => {
      const full = this.fullKey(key);
      const bytes = this.checkValue(value);
      const index = previous === null ? null : this.checkPrevious(full, previous);
      const write = this._atomicPut(full, bytes, index, this.writeOptions(options, signal));
      return this.toPair(await write.catch((error: unknown) => rethrowWithUserKey(error, full, this.prefix)));
    });
  }

  atomicDelete(key: string, previous: KVPair, options?: CallOptions): Promise<void> {
    return this.run('atomicDelete', options, async (signal) => {
      checkOptions(options, CALL_OPTIONS);
      const full = this.fullKey(key);
      if (previous === null || previous === undefined) {
        throw new InvalidArgumentError('atomicDelete needs the previous pair (from get or atomicPut)');
      }
      await this._atomicDelete(full, this.checkPrevious(full, previous), signal).catch((error: unknown) =>
        rethrowWithUserKey(error, full, this.prefix),
      );
    });
  }

  watch(key: string, options?: CallOptions): AsyncIterable<KVPair | null> {
    return {
      [Symbol.asyncIterator]: () => {
        let last: RawPair | null | undefined;
        return this.pump<RawPair | null, KVPair | null>(
          'watch',
          options,
          (signal) => {
            if (!this.capabilities.watch) throw new NotSupportedError(this.backend, 'watch');
            return this._watch(this.fullKey(key), signal);
          },
          (state, channel) => {
            const repeat =
              last !== undefined && (state === null ? last === null : last !== null && samePair(last, state));
            if (repeat) return;
            last = state;
            channel.push(state === null ? null : this.toPair(state));
          },
          {
            maxBytes: WATCH_BUFFER_BYTES,
            weigh: weighWatchState,
          },
        );
      },
    };
  }

  watchTree(directory: string, options?: CallOptions): AsyncIterable<TreeEvent> {
    return {
      [Symbol.asyncIterator]: () => {
        let dir = '';
        // Updates are applied to the state as they arrive; the channel only says "something arrived".
        const tree = new TreeState({
          pair: (raw) => (isBelow(dir, raw.key) && !isHelperKey(raw.key) ? this.toPair(raw) : undefined),
          key: (raw) => (isBelow(dir, raw) && !isHelperKey(raw) ? stripPrefix(this.prefix, raw) : undefined),
        });
        const updates = this.pump<RawTreeUpdate, true>(
          'watchTree',
          options,
          (signal) => {
            if (!this.capabilities.watchTree) throw new NotSupportedError(this.backend, 'watchTree');
            dir = this.fullDir(directory);
            return this._watchTreeChanges(dir, signal);
          },
          (update, channel) => {
            tree.apply(update);
            channel.replace(true);
          },
        );
        // One event per pull, from everything that arrived since the last one.
        let returned = false;
        const pull = async (): Promise<IteratorResult<TreeEvent>> => {
          for (;;) {
            const waiting = updates.bufferedItems === 0;
            const result = await updates.next();
            if (result.done) return { value: undefined, done: true };
            // Woken by an update: let the rest of its I/O turn (a burst of messages) arrive, so they make one event.
            if (waiting) await new Promise<void>((resolve) => setImmediate(resolve));
            if (returned) return { value: undefined, done: true };
            const event = tree.take();
            if (event) return { value: event, done: false };
          }
        };
        // A plain iterator, not an async generator: a generator would queue return() behind a pending next().
        let last: Promise<unknown> = Promise.resolve();
        const iterator: AsyncIterableIterator<TreeEvent> = {
          next: () => {
            const result = last.then(pull);
            last = result.catch(() => {});
            return result;
          },
          return: async () => {
            returned = true;
            await updates.return();
            return { value: undefined, done: true };
          },
          [Symbol.asyncIterator]: () => iterator,
        };
        return iterator;
      },
    };
  }

  newLock(key: string, options: LockOptions = {}): Lock {
    const full = this.fullKey(key);
    checkOptions(options, LOCK_OPTIONS);
    options ??= {};
    const value = options.value === undefined ? new Uint8Array(0) : this.checkValue(options.value);
    const ttl = options.ttl ?? Math.max(DEFAULT_LOCK_TTL, this.capabilities.minTtl);
    this.checkTtl(ttl, 'lock ttl');
    return new StoreLock(this.lockHost, stripPrefix(this.prefix, full), full, value, ttl);
  }

  close(): Promise<void> {
    if (!this.closePromise) {
      this.closeController.abort(new ClosedError());
      this.closePromise = (async () => {
        const releases = [...this.locks].map((lock) => lock.settle().catch(() => {}));
        await Promise.all(releases);
        await this._close();
      })();
    }
    return this.closePromise;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- helpers for backends ----

  /** Throws `ClosedError` once `close()` was called. */
  protected assertOpen(): void {
    if (this.closed) throw new ClosedError();
  }

  /**
   * Runs a backend's own extra call (a toolkit call) with the same bounds and
   * error mapping as the Store calls. `kind: 'write'` (the default): once
   * `fn` has started, the caller's abort waits for the real outcome, so an
   * `AbortError` always means nothing was applied; `'read'` calls stop at
   * once on abort.
   */
  protected run<T>(
    operation: string,
    options: CallOptions | undefined,
    fn: (signal: AbortSignal) => Promise<T>,
    kind: 'read' | 'write' = 'write',
  ): Promise<T> {
    try {
      checkSignal(options);
    } catch (error) {
      return Promise.reject(error);
    }
    return runBounded(
      {
        user: options?.signal,
        deadlines: this.deadlines,
        operation,
        abortsInFlight: kind === 'read',
      },
      (signal) => {
        this.assertOpen();
        return fn(signal);
      },
      (error) => this._mapError(error, operation),
    );
  }

  /** A user key made into a full storage key. */
  protected fullKey(key: string): string {
    return joinKey(this.prefix, normalizeKey(key));
  }

  /** A user directory ('' and '/' allowed) made into a full storage key. */
  protected fullDir(directory: string): string {
    return joinKey(this.prefix, normalizeKey(directory, true));
  }

  protected toPair(raw: RawPair): KVPair {
    return { key: stripPrefix(this.prefix, raw.key), value: raw.value, lastIndex: raw.lastIndex };
  }

  /** Filters helper keys and anything not strictly below `dir`, strips the prefix, sorts (when a backend's order was not already the listing's). */
  protected toListing(dir: string, raw: readonly RawPair[]): KVPair[] {
    // One pass, sized once. `dir` and the prefix are normalised (no control characters), so a key
    // below `dir` is a helper key only if the part after `dir/` holds one.
    const pairs: KVPair[] = new Array(raw.length);
    const below = dir === '' ? 0 : dir.length + 1;
    let count = 0;
    let previous = '';
    let sorted = true;
    for (let i = 0; i < raw.length; i++) {
      const pair = raw[i] as RawPair;
      if (!isBelow(dir, pair.key) || hasControlFrom(pair.key, below)) continue;
      const next = this.toPair(pair);
      if (sorted && next.key < previous) sorted = false;
      previous = next.key;
      pairs[count++] = next;
    }
    pairs.length = count;
    return sorted ? pairs : pairs.sort((a, b) => compareKeys(a.key, b.key));
  }

  private readOptions(options: ReadOptions | undefined, signal: AbortSignal): PrimitiveReadOptions {
    checkOptions(options, READ_OPTIONS);
    const consistent = options?.consistent === true;
    if (consistent && !this.capabilities.consistentRead) {
      throw new NotSupportedError(this.backend, 'consistent reads');
    }
    return { signal, consistent };
  }

  /** Validates ttl and keepAlive as the Store's writes do; for a backend's own write calls. */
  protected writeOptions(options: WriteOptions | undefined, signal: AbortSignal): PrimitiveWriteOptions {
    checkOptions(options, WRITE_OPTIONS);
    const ttl = options?.ttl;
    const keepAlive = options?.keepAlive === true;
    if (ttl !== undefined || keepAlive) {
      if (!this.capabilities.ttl) throw new NotSupportedError(this.backend, 'ttl');
      if (keepAlive && !this.capabilities.keepAlive) throw new NotSupportedError(this.backend, 'keepAlive');
      if (ttl === undefined) {
        throw new InvalidArgumentError(
          `keepAlive needs a ttl: the key expires within its ttl after the store closes or its process dies, e.g. { ttl: ${Math.max(DEFAULT_KEEPALIVE_TTL, this.capabilities.minTtl)}, keepAlive: true }`,
        );
      }
      this.checkTtl(ttl, 'ttl');
    }
    return { signal, ttl, keepAlive };
  }

  /** Throws `InvalidArgumentError` for a ttl that is not a positive integer of at least `minTtl`. */
  protected checkTtl(ttl: number, what: string): void {
    if (typeof ttl !== 'number' || !Number.isSafeInteger(ttl) || ttl <= 0 || ttl > MAX_TIMER_MS) {
      throw new InvalidArgumentError(
        `${what} must be a positive integer number of ms up to ${MAX_TIMER_MS}, got ${describeValue(ttl)}`,
      );
    }
    if (ttl < this.capabilities.minTtl) {
      const setting = this.minTtlSetting ? ` (the server setting ${this.minTtlSetting} governs it)` : '';
      throw new InvalidArgumentError(
        `${what} ${ttl} ms is under the ${this.backend} backend's minimum of ${this.capabilities.minTtl} ms${setting}`,
      );
    }
  }

  /** A value as bytes, or `InvalidArgumentError` / `ValueTooLargeError`. */
  protected checkValue(value: Value): Uint8Array {
    let bytes: Uint8Array;
    try {
      bytes = toBytes(value);
    } catch (error) {
      throw new InvalidArgumentError((error as Error).message);
    }
    if (bytes.byteLength > this.capabilities.maxValueSize) {
      throw new ValueTooLargeError(
        bytes.byteLength,
        this.capabilities.maxValueSize,
        this.maxValueSetting ? { limit: this.maxValueSetting } : undefined,
      );
    }
    return bytes;
  }

  private checkPrevious(full: string, previous: KVPair): number {
    if (typeof previous !== 'object' || previous === null || !Number.isSafeInteger(previous.lastIndex)) {
      throw new InvalidArgumentError('previous must be a KVPair from get, list or atomicPut');
    }
    // Every backend's versions start at 1. Sent on, 0 could mean "no condition" to a server (etcd v2's
    // prevIndex) or not parse at all (Consul's unsigned index), and no key can be at it: refused here.
    if (previous.lastIndex < 1) {
      throw new InvalidArgumentError(
        `previous.lastIndex must be a positive integer (a pair from get, list or atomicPut), got ${previous.lastIndex}`,
      );
    }
    const key = stripPrefix(this.prefix, full);
    if (typeof previous.key === 'string' && normalizeKey(previous.key, true) !== key) {
      throw new InvalidArgumentError(
        `previous is the pair of ${JSON.stringify(previous.key)}, not of ${JSON.stringify(key)}`,
      );
    }
    return previous.lastIndex;
  }

  /**
   * Runs a backend source into a channel the consumer pulls from. The source
   * stops when the consumer stops, the caller aborts or the store closes; the
   * latter two end iteration normally (an abort also when the signal was
   * already aborted: the watch never throws `AbortError`), any other failure
   * is thrown from the iterator as a `KVError`.
   */
  private pump<R, T>(
    operation: string,
    options: CallOptions | undefined,
    open: (signal: AbortSignal) => AsyncIterable<R>,
    deliver: (item: R, channel: Channel<T>) => void,
    buffering: Omit<ChannelOptions<T>, 'onReturn'> = {},
  ): Channel<T> {
    const controller = new AbortController();
    const channel = new Channel<T>({ ...buffering, onReturn: () => controller.abort() });
    try {
      checkOptions(options, CALL_OPTIONS);
    } catch (error) {
      channel.fail(error);
      return channel;
    }
    if (this.closed) {
      channel.fail(new ClosedError());
      return channel;
    }
    const user = options?.signal;
    // Aborting is the caller's "stop": before the watch starts or during it, it ends the same way.
    if (user?.aborted) {
      channel.end();
      return channel;
    }
    const stop = () => controller.abort();
    user?.addEventListener('abort', stop, { once: true });
    this.closing.addEventListener('abort', stop, { once: true });
    const cleanup = () => {
      user?.removeEventListener('abort', stop);
      this.closing.removeEventListener('abort', stop);
    };
    void (async () => {
      try {
        for await (const item of open(controller.signal)) {
          if (controller.signal.aborted) break;
          deliver(item, channel);
        }
        channel.end();
      } catch (error) {
        if (controller.signal.aborted) channel.end();
        else channel.fail(KVError.isInstance(error) ? error : this._mapError(error, operation));
      } finally {
        cleanup();
      }
    })();
    return channel;
  }

  private readonly lockHost: LockHost = {
    requestTimeout: 0,
    acquire: (key, request) => {
      if (!this.capabilities.lock) throw new NotSupportedError(this.backend, 'locks');
      return this._acquireLock(key, request);
    },
    assertOpen: () => this.assertOpen(),
    closing: this.closeController.signal,
    track: (lock) => this.locks.add(lock),
    untrack: (lock) => this.locks.delete(lock),
    mapError: (error, operation) => this._mapError(error, operation),
  };
}

/**
 * A backend's CAS error that names the full storage key is rethrown naming
 * the user's key, so no backend can leak its prefix into an error.
 */
function rethrowWithUserKey(error: unknown, full: string, prefix: string): never {
  const key = (error as { key?: unknown } | null)?.key;
  if (prefix === '' || key !== full || !KVError.isInstance(error)) throw error;
  const user = stripPrefix(prefix, full);
  const options = error.cause === undefined ? {} : { cause: error.cause };
  if (KeyNotFoundError.isInstance(error)) throw new KeyNotFoundError(user, options);
  if (KeyExistsError.isInstance(error)) throw new KeyExistsError(user, options);
  if (KeyModifiedError.isInstance(error)) throw new KeyModifiedError(user, options);
  throw error;
}

/** The changes between two sorted listings: new or rewritten keys as puts, vanished keys as deletes, sorted by key. */
export function diffListings(before: readonly KVPair[], after: readonly KVPair[]): TreeChange[] {
  const changes: TreeChange[] = [];
  let i = 0;
  let j = 0;
  while (i < before.length || j < after.length) {
    const a = before[i];
    const b = after[j];
    if (b === undefined || (a !== undefined && compareKeys(a.key, b.key) < 0)) {
      changes.push({ type: 'delete', key: (a as KVPair).key });
      i++;
    } else if (a === undefined || compareKeys(a.key, b.key) > 0) {
      changes.push({ type: 'put', pair: b });
      j++;
    } else {
      if (!samePair(a, b)) changes.push({ type: 'put', pair: b });
      i++;
      j++;
    }
  }
  return changes;
}

const CALL_OPTIONS = ['signal'] as const;
const READ_OPTIONS = ['signal', 'consistent'] as const;
const WRITE_OPTIONS = ['signal', 'ttl', 'keepAlive'] as const;
const LOCK_OPTIONS = ['value', 'ttl'] as const;
const BOOLEAN_OPTIONS: ReadonlySet<string> = new Set(['consistent', 'keepAlive']);

function checkSignal(options: CallOptions | undefined): void {
  const signal = (options as { signal?: unknown } | undefined | null)?.signal;
  if (signal === undefined) return;
  const candidate = signal as { aborted?: unknown; addEventListener?: unknown } | null;
  if (
    typeof candidate !== 'object' ||
    candidate === null ||
    typeof candidate.aborted !== 'boolean' ||
    typeof candidate.addEventListener !== 'function'
  ) {
    throw new InvalidArgumentError('options.signal must be an AbortSignal');
  }
}

/** Unknown or mistyped call options are an `InvalidArgumentError`, never silently ignored. */
function checkOptions(options: unknown, accepted: readonly string[]): void {
  if (options === undefined || options === null) return;
  if (typeof options !== 'object')
    throw new InvalidArgumentError(`options must be an object, got ${typeof options}`);
  for (const [name, value] of Object.entries(options)) {
    if (!accepted.includes(name)) {
      throw new InvalidArgumentError(
        `unknown option ${JSON.stringify(name)} (accepted: ${accepted.join(', ')})`,
      );
    }
    if (value !== undefined && BOOLEAN_OPTIONS.has(name) && typeof value !== 'boolean') {
      throw new InvalidArgumentError(`option ${name} must be a boolean, got ${JSON.stringify(value)}`);
    }
  }
  checkSignal(options as CallOptions);
}
