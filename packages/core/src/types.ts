/** A value to store. Strings are stored as UTF-8. */
export type Value = Uint8Array | string;

export interface KVPair {
  /** Normalised key, without the store prefix. */
  readonly key: string;
  readonly value: Uint8Array;
  /** The backend's version of this key: changes on every write of it. Use it for CAS. */
  readonly lastIndex: number;
}

export interface CallOptions {
  /**
   * Aborting rejects the call with an `AbortError` (not a `KVError`: test it
   * with `isAbortError`) whose `cause` is `signal.reason`; an `AbortError`
   * means nothing was applied. A write already sent settles with its real
   * outcome instead. A watch just ends.
   */
  signal?: AbortSignal;
}

export interface ReadOptions extends CallOptions {
  /** A linearizable read where the backend's plain reads may be stale. */
  consistent?: boolean;
}

export interface WriteOptions extends CallOptions {
  /** Time to live in ms (a positive integer, at least `capabilities.minTtl`). */
  ttl?: number;
  /**
   * Keep the key alive while the store is open; it expires within `ttl` after
   * close or crash. Needs a `ttl` (an `InvalidArgumentError` without one).
   */
  keepAlive?: boolean;
}

export type TreeChange =
  | { readonly type: 'put'; readonly pair: KVPair }
  | { readonly type: 'delete'; readonly key: string };

export interface TreeEvent {
  /** The full sorted listing of the directory after the change. */
  readonly pairs: KVPair[];
  /** What changed since the previous event, sorted by key. The first event lists every pair as a put. */
  readonly changes: TreeChange[];
}

export interface LockOptions {
  /** Stored at the lock key while held; `get(key)` returns it. Empty by default. */
  value?: Value;
  /** ms. A holder that dies frees the lock within this time. Default 15 000 (or the backend's `minTtl` if larger). */
  ttl?: number;
}

export interface LockCallOptions extends CallOptions {}

/** What `lock()` and `tryLock()` give the holder. */
export interface LockLease {
  /**
   * Aborts when this holder stops holding the lock: on `unlock()`, on the
   * store's `close()`, or on loss (the store could not renew the lock in
   * time, or its key was deleted). On loss, `lost.reason` is a
   * `LockLostError`. It aborts before the server-side ttl can run out, so
   * work that stops when it fires never overlaps the next holder's.
   */
  readonly lost: AbortSignal;
  /**
   * Strictly greater than every token handed out before for this key, across
   * clients and processes. Pass it to the resource you protect and have it
   * refuse a token lower than the highest it has seen: that fences off a
   * holder that paused past its ttl. (After a server restore it can go back:
   * see "Restores and rebuilt servers" in docs/api.md.)
   */
  readonly fencingToken: number;
}

/**
 * A distributed mutex on one key, from `store.newLock(key, options)`. One
 * holder at a time across every client of the backend. Reusable: `lock()`
 * again after `unlock()`. `await using lock = store.newLock(...)` unlocks
 * on scope exit.
 */
export interface Lock extends AsyncDisposable {
  /** The lock key (normalised, without the store prefix). */
  readonly key: string;
  /**
   * Waits until the lock is held, then resolves to the lease. Waiters are
   * served first come, first served where the backend can. Rejects with an
   * `AbortError` if `signal` aborts first (nothing is held then), a
   * `ClosedError` if the store closes, `NotSupportedError` if the backend has
   * no locks, or another `KVError`. Calling it while this `Lock` already holds
   * the key is an `InvalidArgumentError`.
   */
  lock(options?: LockCallOptions): Promise<LockLease>;
  /**
   * Takes the lock if it is free right now and resolves to the lease, else
   * resolves to `null`. Never waits for a holder (only for the round trip).
   * Errors as for `lock()`.
   */
  tryLock(options?: LockCallOptions): Promise<LockLease | null>;
  /**
   * Releases the lock at once (`lease.lost` aborts, the key is deleted, the
   * next waiter gets it). Calling it when not held, or twice, is fine.
   */
  unlock(): Promise<void>;
}

export interface Capabilities {
  readonly watch: boolean;
  readonly watchTree: boolean;
  readonly lock: boolean;
  readonly ttl: boolean;
  readonly keepAlive: boolean;
  readonly consistentRead: boolean;
  /** ms */
  readonly minTtl: number;
  /** ms: a ttl key is gone between `ttl` and `ttl + ttlGranularity`. */
  readonly ttlGranularity: number;
  /** bytes: the largest value that round-trips under a short key. */
  readonly maxValueSize: number;
  readonly distributed: boolean;
}

/**
 * A key/value store: the same contract on every backend (docs/api.md has it
 * in full). Keys are `/`-separated paths (`a/b/c`; leading and trailing `/`
 * ignored); values are bytes (strings are stored as UTF-8). Every call takes
 * `{ signal }` and is bounded by the store's `requestTimeout`. Errors are
 * `KVError`s with a stable `code`, except an aborted call's `AbortError`.
 * `await using store = await createStore(...)` closes it on scope exit.
 */
export interface Store extends AsyncDisposable {
  /** The backend's name, e.g. `sqlite`, `etcd`. */
  readonly backend: string;
  /** What this backend supports; a call it cannot do throws `NotSupportedError`. */
  readonly capabilities: Capabilities;
  /** The normalised key prefix of this store ('' for none). */
  readonly prefix: string;

  /**
   * The pair at `key`: its value and `lastIndex` (pass the pair to
   * `atomicPut`/`atomicDelete` for compare-and-swap).
   * @throws `KeyNotFoundError` when the key does not exist (use `tryGet` for
   * `null` instead); `InvalidKeyError` for a malformed key.
   */
  get(key: string, options?: ReadOptions): Promise<KVPair>;
  /**
   * The pair at `key`, or `null` when it does not exist. Otherwise the same
   * as `get`.
   *
   * ```ts
   * const pair = await store.tryGet('stats/builds');
   * const count = pair ? Number(new TextDecoder().decode(pair.value)) : 0;
   * ```
   */
  tryGet(key: string, options?: ReadOptions): Promise<KVPair | null>;
  /**
   * Writes `value` at `key`, creating or replacing it. With `ttl` (ms) the key
   * expires between `ttl` and `ttl + capabilities.ttlGranularity` later; a later
   * put without `ttl` makes it permanent. With `keepAlive` (needs `ttl`) the
   * store renews it while open.
   * @throws `ValueTooLargeError` over `capabilities.maxValueSize`;
   * `InvalidArgumentError` for a bad ttl or option.
   */
  put(key: string, value: Value, options?: WriteOptions): Promise<void>;
  /** Deletes `key` only, never its children. Deleting a missing key is fine. */
  delete(key: string, options?: CallOptions): Promise<void>;
  /** Whether `key` holds a value. A key with only children (`a` when `a/b` exists) does not. */
  exists(key: string, options?: ReadOptions): Promise<boolean>;
  /**
   * Every pair below `directory` at any depth, sorted by key, without
   * `directory` itself (`a` never matches `ab/...`). A missing directory gives
   * `[]`; `list('')` lists the whole store.
   */
  list(directory: string, options?: ReadOptions): Promise<KVPair[]>;
  /**
   * Deletes `directory` and everything below it. `deleteTree('')` is an
   * `InvalidKeyError` (delete a whole store's directories one by one).
   */
  deleteTree(directory: string, options?: CallOptions): Promise<void>;

  /**
   * Compare-and-swap. With `previous === null`, creates `key` only if absent
   * (`KeyExistsError` otherwise). With a pair from `get`/`list`/`atomicPut`,
   * writes only if the key is still at `previous.lastIndex`
   * (`KeyModifiedError` if it changed, `KeyNotFoundError` if it is gone).
   * Resolves to the new pair (its `lastIndex` is the next `previous`).
   */
  atomicPut(key: string, value: Value, previous: KVPair | null, options?: WriteOptions): Promise<KVPair>;
  /**
   * Deletes `key` only if it is still at `previous.lastIndex`
   * (`KeyModifiedError` if it changed, `KeyNotFoundError` if it is gone).
   */
  atomicDelete(key: string, previous: KVPair, options?: CallOptions): Promise<void>;

  /**
   * Yields the key's current state first (`null` when absent), then every
   * change in commit order (a delete or expiry yields `null`; a same-value put
   * still yields). Ends (done, no error) when `signal` aborts, before or
   * during the watch, when the loop breaks, or when the store closes. Lost
   * connections are retried; a permanent failure is thrown as a `KVError`. A
   * slow consumer may see intermediate states merged, never the latest lost.
   * @throws `NotSupportedError` (on the first `next()`) if `capabilities.watch` is false.
   */
  watch(key: string, options?: CallOptions): AsyncIterable<KVPair | null>;
  /**
   * Yields `{ pairs, changes }` for `directory`: first the current listing
   * (every pair as a put), then one event per change (or per batch, for a slow
   * consumer) with the full sorted listing after it and what changed. Works on
   * a directory that does not exist yet. Ends as `watch` does.
   * @throws `NotSupportedError` (on the first `next()`) if `capabilities.watchTree` is false.
   */
  watchTree(directory: string, options?: CallOptions): AsyncIterable<TreeEvent>;

  /**
   * A lock on `key` (nothing is sent until `lock()`/`tryLock()`). While held,
   * `get(key)` returns `options.value`. `options.ttl` (ms, default 15 000):
   * a holder that dies frees the lock within it; a live holder renews it.
   * @throws `InvalidArgumentError` for a bad ttl or option.
   */
  newLock(key: string, options?: LockOptions): Lock;
  /**
   * Ends watches, releases held locks, lets keep-alive keys expire, and frees
   * connections; later calls reject with `ClosedError`. Calling it twice is
   * fine. Nothing keeps the process alive afterwards.
   */
  close(): Promise<void>;
}

export interface TlsOptions {
  /** PEM text or Buffer. */
  ca?: string | Uint8Array;
  cert?: string | Uint8Array;
  key?: string | Uint8Array;
  servername?: string;
  rejectUnauthorized?: boolean;
}

/** Options every backend understands. */
export interface CommonConfig {
  /** `host:port` (or a URL) per server. */
  endpoints?: string[];
  /** Key prefix: the store sees only keys under it. */
  prefix?: string;
  username?: string;
  password?: string;
  token?: string;
  /** `true` for TLS with the system CAs. */
  tls?: TlsOptions | boolean;
  /** ms, default 5 000: `createStore` rejects within this if the server cannot be reached. */
  connectTimeout?: number;
  /** ms, default 5 000: no call waits longer. */
  requestTimeout?: number;
}

/**
 * Backend packages add their own options here by declaration merging, so
 * `createStore({ backend: 'sqlite', path })` is type-checked:
 *
 * ```ts
 * declare module '@kv/core' {
 *   interface BackendOptions { sqlite: { path?: string } }
 * }
 * ```
 */
// biome-ignore lint/suspicious/noEmptyInterface: augmented by backend packages
export interface BackendOptions {}

export type StoreConfig<B extends string = string> = CommonConfig & {
  backend: B;
} & (B extends keyof BackendOptions ? BackendOptions[B] : Record<string, unknown>);

/** The configuration a backend's `create` receives: validated and with defaults applied. */
export type ResolvedConfig = Omit<CommonConfig, 'connectTimeout' | 'requestTimeout' | 'prefix'> & {
  backend: string;
  prefix: string;
  connectTimeout: number;
  requestTimeout: number;
  [option: string]: unknown;
};

export interface BackendDefinition {
  /** The URL scheme and `backend` config value, e.g. `etcd`. */
  readonly name: string;
  readonly capabilities: Capabilities;
  /** Names of the backend's own options, beyond `CommonConfig`. Anything else is an `InvalidArgumentError`. */
  readonly options?: readonly string[];
  /** Turns a URL into a config when the generic rules do not fit (e.g. `sqlite:./file.db`). */
  parseUrl?(url: string): StoreConfig;
  /** Opens a store. Must make one round trip and reject within `connectTimeout` when the server cannot be had. */
  create(config: ResolvedConfig): Promise<Store>;
}
