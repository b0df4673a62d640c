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
  /** Aborting rejects the call with an `AbortError` whose `cause` is `signal.reason`. */
  signal?: AbortSignal;
}

export interface ReadOptions extends CallOptions {
  /** A linearizable read where the backend's plain reads may be stale. */
  consistent?: boolean;
}

export interface WriteOptions extends CallOptions {
  /** Time to live in ms (a positive integer, at least `capabilities.minTtl`). */
  ttl?: number;
  /** Keep the key alive while the store is open; it expires within `ttl` after close or crash. */
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

export interface LockLease {
  /** Aborts when this holder stops holding the lock: unlock, close, or loss (reason: `LockLostError`). */
  readonly lost: AbortSignal;
  /** Strictly greater than every token handed out before for this key, across clients. */
  readonly fencingToken: number;
}

export interface Lock extends AsyncDisposable {
  readonly key: string;
  /** Waits until the lock is held. */
  lock(options?: LockCallOptions): Promise<LockLease>;
  /** Takes the lock if it is free right now, else resolves to `null`. Never waits for a holder. */
  tryLock(options?: LockCallOptions): Promise<LockLease | null>;
  /** Releases the lock at once. Calling it when not held is fine. */
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

export interface Store extends AsyncDisposable {
  readonly backend: string;
  readonly capabilities: Capabilities;
  /** The normalised key prefix of this store ('' for none). */
  readonly prefix: string;

  get(key: string, options?: ReadOptions): Promise<KVPair>;
  put(key: string, value: Value, options?: WriteOptions): Promise<void>;
  delete(key: string, options?: CallOptions): Promise<void>;
  exists(key: string, options?: ReadOptions): Promise<boolean>;
  list(directory: string, options?: ReadOptions): Promise<KVPair[]>;
  deleteTree(directory: string, options?: CallOptions): Promise<void>;

  atomicPut(key: string, value: Value, previous: KVPair | null, options?: WriteOptions): Promise<KVPair>;
  atomicDelete(key: string, previous: KVPair, options?: CallOptions): Promise<void>;

  watch(key: string, options?: CallOptions): AsyncIterable<KVPair | null>;
  watchTree(directory: string, options?: CallOptions): AsyncIterable<TreeEvent>;

  newLock(key: string, options?: LockOptions): Lock;
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
