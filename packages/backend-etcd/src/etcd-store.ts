import {
  type AcquiredLock,
  type AcquireRequest,
  abortError,
  BaseStore,
  backoff,
  type CallOptions,
  type Capabilities,
  delay,
  InvalidArgumentError,
  isBelow,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  type KVError,
  type KVPair,
  LockLostError,
  monotonicNow,
  type PrimitiveReadOptions,
  type PrimitiveWriteOptions,
  type RawPair,
  type RawTreeChange,
  type RawTreeUpdate,
  type ReadOptions,
  type ResolvedConfig,
  stripPrefix,
  type Value,
  type WriteOptions,
} from '@kv/core';
import {
  type Etcd3,
  EtcdLeaseInvalidError,
  type ICompare,
  type IKeyValue,
  type IRangeRequest,
  type IRequestOp,
  type IResponseOp,
} from 'etcd3';
import { createClient } from './etcd-client.js';
import {
  DEFAULT_MAX_REQUEST_BYTES,
  type EtcdOptions,
  type EtcdSettings,
  REQUEST_OVERHEAD,
  settingsOf,
} from './etcd-config.js';
import { isPermanent, mapEtcdError, typedError } from './etcd-errors.js';
import {
  bytesOf,
  decodeKey,
  dirRange,
  isStoreKey,
  keyBytes,
  num,
  rawPair,
  valueBytes,
  waiterKey,
  waiterRange,
} from './etcd-keys.js';
import { keepAliveOnce, LeaseKeeper } from './leases.js';
import {
  type CompareOperator,
  type EtcdCompare,
  type EtcdKeyValue,
  type EtcdOp,
  type EtcdOpResult,
  EtcdTransaction,
  type EtcdTxnResult,
  type TxnSpec,
} from './transaction.js';
import { markOf, type ServerMark, WatchCursor, type WatchHost } from './watch-cursor.js';

export const ETCD_CAPABILITIES: Capabilities = Object.freeze({
  watch: true,
  watchTree: true,
  lock: true,
  ttl: true,
  keepAlive: true,
  consistentRead: true,
  // etcd's smallest lease is 1.5 x the election timeout, rounded up to whole seconds: 2 s by default.
  minTtl: 2_000,
  // Leases are whole seconds (a ttl is rounded up, < 1 s) and expired ones are revoked every 500 ms.
  ttlGranularity: 2_000,
  maxValueSize: DEFAULT_MAX_REQUEST_BYTES - REQUEST_OVERHEAD,
  distributed: true,
});

/**
 * s: the lease of a waiter's place in a lock queue (etcd's shortest lease by
 * default), kept alive while it waits: a waiter that dies leaves the queue
 * within this (plus etcd's 500 ms expiry sweep), whatever the lock's ttl.
 */
export const QUEUE_LEASE_SECONDS = 2;
/** ms between keep-alives of a queue lease: a live waiter's lease always has more than 1 s left. */
const QUEUE_KEEPALIVE_MS = 400;
/** ms between looks at the lease of the waiter just before this one. */
const QUEUE_PROBE_MS = 250;

const MIN_TTL_SETTING = "--election-timeout (etcd's minimum lease TTL is 1.5 x the election timeout)";
const EMPTY = Buffer.alloc(0);

/** A lease granted with `grantLease`. */
export interface EtcdLease {
  /** The lease ID, a decimal string (etcd lease IDs are 64-bit). */
  readonly id: string;
  /** ms, as granted: the ttl asked for, rounded up to whole seconds (or the server's minimum). */
  readonly ttl: number;
}

export interface EtcdLeaseInfo {
  readonly id: string;
  /** ms left. */
  readonly ttl: number;
  /** ms, as granted. */
  readonly grantedTtl: number;
  /** Store keys attached to it (only those inside this store's prefix), with `keys: true`. */
  readonly keys: string[];
}

export interface EtcdStatus {
  /** Server version, e.g. `3.4.23`. */
  readonly version: string;
  /** bytes of the backend database file. */
  readonly dbSize: number;
  /** bytes of it in use. */
  readonly dbSizeInUse: number;
  /** Member ID of the leader (decimal string); `'0'` when there is none. */
  readonly leader: string;
  /** Member ID of the member that answered. */
  readonly memberId: string;
  readonly isLearner: boolean;
  readonly raftIndex: number;
  readonly raftTerm: number;
  /** The store's current revision as that member sees it. */
  readonly revision: number;
  readonly errors: string[];
}

export interface EtcdMember {
  readonly id: string;
  readonly name: string;
  readonly peerURLs: string[];
  readonly clientURLs: string[];
  readonly isLearner: boolean;
}

export interface RangeOptions extends ReadOptions {
  /** At most this many pairs. */
  limit?: number;
  /** Read the range as it was at this revision (must not be compacted). */
  revision?: number;
}

const OPERATORS: Record<CompareOperator, ICompare['result']> = {
  '==': 'Equal',
  '!=': 'NotEqual',
  '<': 'Less',
  '>': 'Greater',
};

/**
 * The etcd v3 store, on the `etcd3` client. Keys are etcd keys: the prefix,
 * `/`, the key (`app/a/b`); directories are key ranges; `lastIndex` is the
 * key's `mod_revision`; TTLs are leases; watches resume from the last seen
 * revision; locks follow etcd's own concurrency recipe (a lease and a waiter
 * key per contender, each waiting for the one before it).
 *
 * Beyond the Store, the etcd toolkit: transactions, bulk and conditional
 * writes, an atomic move, ranges and past revisions, leases, cluster status.
 * Every toolkit call takes store keys (prefix applied, validated like the
 * Store's), is bounded by `requestTimeout` and throws `KVError`s.
 */
export class EtcdStore extends BaseStore {
  /** The underlying etcd3 client, for anything this API does not cover. Keys there are raw etcd keys (prefix included). */
  readonly client: Etcd3;
  private readonly settings: EtcdSettings;
  private readonly keeper: LeaseKeeper;
  /** One kept-alive lease per ttl (in seconds) for keepAlive keys. */
  private readonly keepAliveLeases = new Map<number, Promise<string>>();
  /** Leases this store keeps alive; revoked on close. */
  private readonly ownedLeases = new Set<string>();
  private readonly cursors = new Set<WatchCursor>();
  private readonly background = new Set<Promise<unknown>>();
  private readonly watchHost: WatchHost;

  /** Opens a store and makes one round trip; rejects with a `KVError` within `connectTimeout`. */
  static async open(config: ResolvedConfig & EtcdOptions): Promise<EtcdStore> {
    const settings = settingsOf(config);
    const store = new EtcdStore(config.prefix, settings);
    try {
      await store.ping();
      return store;
    } catch (error) {
      await store.close().catch(() => {});
      throw mapEtcdError(error, `connect to ${settings.hosts.join(',')}`);
    }
  }

  private constructor(prefix: string, settings: EtcdSettings) {
    super({
      backend: 'etcd',
      capabilities: {
        ...ETCD_CAPABILITIES,
        maxValueSize: Math.min(settings.maxRequestBytes, settings.maxCallSendMessageSize) - REQUEST_OVERHEAD,
      },
      prefix,
      requestTimeout: settings.requestTimeout,
      minTtlSetting: MIN_TTL_SETTING,
    });
    this.settings = settings;
    this.client = createClient(settings);
    this.keeper = new LeaseKeeper(this.client, settings.requestTimeout);
    this.watchHost = {
      client: this.client,
      mapError: (error, operation) => this._mapError(error, operation),
      cursors: this.cursors,
    };
  }

  /** Reachability and credentials: a read of one key; a permission error still proves both. */
  private async ping(): Promise<void> {
    // gRPC takes an absolute wall-clock deadline: computed right before the call from the timeout.
    const deadline = Date.now() + this.settings.connectTimeout;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer within connectTimeout (${this.settings.connectTimeout} ms)`)),
        this.settings.connectTimeout,
      );
      timer.unref();
    });
    try {
      await Promise.race([
        this.client.kv.range(
          {
            key: keyBytes(this.prefix === '' ? '\u0000' : this.prefix),
            keys_only: true,
            limit: 1,
            serializable: true,
          },
          { deadline },
        ),
        timeout,
      ]);
    } catch (error) {
      if (mapEtcdError(error, 'connect').code === 'PERMISSION_DENIED') return;
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  protected override _mapError(error: unknown, operation: string): KVError {
    return mapEtcdError(error, operation);
  }

  // ---- primitives ----

  private readMode(consistent: boolean): Pick<IRangeRequest, 'serializable'> {
    return !consistent && this.settings.serializableReads ? { serializable: true } : {};
  }

  protected async _get(key: string, options: PrimitiveReadOptions): Promise<RawPair | null> {
    const response = await this.client.kv.range({ key: keyBytes(key), ...this.readMode(options.consistent) });
    const kv = response.kvs[0];
    return kv ? (rawPair(kv, key) ?? null) : null;
  }

  protected override async _exists(key: string, options: PrimitiveReadOptions): Promise<boolean> {
    const response = await this.client.kv.range({
      key: keyBytes(key),
      count_only: true,
      ...this.readMode(options.consistent),
    });
    return num(response.count) > 0;
  }

  protected async _put(key: string, value: Uint8Array, options: PrimitiveWriteOptions): Promise<void> {
    await this.withWriteLease(options, (lease) =>
      this.client.kv.put({ key: keyBytes(key), value: valueBytes(value), ...(lease ? { lease } : {}) }),
    );
  }

  protected async _delete(key: string, _signal: AbortSignal): Promise<void> {
    await this.client.kv.deleteRange({ key: keyBytes(key) });
  }

  protected async _list(dir: string, options: PrimitiveReadOptions): Promise<RawPair[]> {
    const response = await this.client.kv.range({ ...dirRange(dir), ...this.readMode(options.consistent) });
    return this.rawPairs(response.kvs);
  }

  protected async _deleteTree(dir: string, _signal: AbortSignal): Promise<void> {
    await this.client.kv.txn({
      success: [{ request_delete_range: { key: keyBytes(dir) } }, { request_delete_range: dirRange(dir) }],
    });
  }

  protected async _atomicPut(
    key: string,
    value: Uint8Array,
    previousIndex: number | null,
    options: PrimitiveWriteOptions,
  ): Promise<RawPair> {
    const k = keyBytes(key);
    return this.withWriteLease(options, async (lease) => {
      const response = await this.client.kv.txn({
        compare: previousIndex === null ? [absent(k)] : unchanged(k, previousIndex),
        success: [{ request_put: { key: k, value: valueBytes(value), ...(lease ? { lease } : {}) } }],
        failure: [{ request_range: { key: k, count_only: true } }],
      });
      if (response.succeeded) return { key, value, lastIndex: num(response.header.revision) };
      const user = this.userKey(key);
      if (previousIndex === null) throw new KeyExistsError(user);
      const exists = num(response.responses[0]?.response_range?.count) > 0;
      throw exists ? new KeyModifiedError(user) : new KeyNotFoundError(user);
    });
  }

  protected async _atomicDelete(key: string, previousIndex: number, _signal: AbortSignal): Promise<void> {
    const k = keyBytes(key);
    const response = await this.client.kv.txn({
      compare: unchanged(k, previousIndex),
      success: [{ request_delete_range: { key: k } }],
      failure: [{ request_range: { key: k, count_only: true } }],
    });
    if (response.succeeded) return;
    const exists = num(response.responses[0]?.response_range?.count) > 0;
    throw exists ? new KeyModifiedError(this.userKey(key)) : new KeyNotFoundError(this.userKey(key));
  }

  // ---- TTLs and leases ----

  /**
   * Runs a write with the lease its options call for: none (the key becomes
   * permanent), a new lease of ceil(ttl / 1 s), or the store's kept-alive
   * lease for that ttl. A one-off lease is revoked if the write fails.
   */
  private async withWriteLease<T>(
    options: PrimitiveWriteOptions,
    write: (lease: string | undefined) => Promise<T>,
  ): Promise<T> {
    if (options.ttl === undefined) return write(undefined);
    const seconds = Math.ceil(options.ttl / 1000);
    if (options.keepAlive) {
      for (let attempt = 0; ; attempt++) {
        const lease = await this.sharedLease(seconds);
        if (options.signal.aborted) throw abortError(options.signal);
        try {
          return await write(lease);
        } catch (error) {
          // The kept lease expired under us (the server was unreachable for longer than its ttl).
          if (attempt === 0 && typedError(error) instanceof EtcdLeaseInvalidError) {
            this.dropKeepAliveLease(seconds, lease);
            continue;
          }
          throw error;
        }
      }
    }
    const lease = await this.grant(seconds);
    if (options.signal.aborted) {
      this.revokeLater(lease);
      throw abortError(options.signal);
    }
    try {
      return await write(lease);
    } catch (error) {
      this.revokeLater(lease);
      throw error;
    }
  }

  /** Grants a lease of `seconds`; refuses one the server made longer (its minimum is larger). */
  private async grant(seconds: number): Promise<string> {
    const response = await this.client.leaseClient.leaseGrant({ TTL: seconds });
    if (response.error) throw new Error(`lease grant failed: ${response.error}`);
    const granted = num(response.TTL);
    if (granted > seconds) {
      this.revokeLater(response.ID);
      throw new InvalidArgumentError(
        `a ttl of ${seconds} s is under this etcd server's minimum lease TTL of ${granted} s (the server setting ${MIN_TTL_SETTING} governs it)`,
      );
    }
    return response.ID;
  }

  private sharedLease(seconds: number): Promise<string> {
    const existing = this.keepAliveLeases.get(seconds);
    if (existing) return existing;
    const granting: Promise<string> = this.grant(seconds).then((id) => {
      if (this.closed) {
        this.revokeLater(id);
        throw new InvalidArgumentError('the store closed');
      }
      this.ownedLeases.add(id);
      this.keeper.add(id, seconds, () => this.dropKeepAliveLease(seconds, id));
      return id;
    });
    this.keepAliveLeases.set(seconds, granting);
    granting.catch(() => {
      if (this.keepAliveLeases.get(seconds) === granting) this.keepAliveLeases.delete(seconds);
    });
    return granting;
  }

  private dropKeepAliveLease(seconds: number, id: string): void {
    this.keeper.remove(id);
    this.ownedLeases.delete(id);
    const current = this.keepAliveLeases.get(seconds);
    if (current) {
      void current.then(
        (currentId) => {
          if (currentId === id && this.keepAliveLeases.get(seconds) === current) {
            this.keepAliveLeases.delete(seconds);
          }
        },
        () => {},
      );
    }
  }

  private async revoke(id: string): Promise<void> {
    try {
      await this.client.leaseClient.leaseRevoke({ ID: id });
    } catch (error) {
      if (!(typedError(error) instanceof EtcdLeaseInvalidError)) throw error;
    }
  }

  /** Revokes in the background (the close waits for it, briefly). */
  private revokeLater(id: string): void {
    this.track(this.revoke(id));
  }

  private track(work: Promise<unknown>): void {
    const tracked: Promise<unknown> = work.catch(() => {}).finally(() => this.background.delete(tracked));
    this.background.add(tracked);
  }

  // ---- watches ----

  private async readKey(key: string): Promise<{ pair: RawPair | null; revision: number; mark: ServerMark }> {
    const response = await this.client.kv.range({ key: keyBytes(key) });
    const kv = response.kvs[0];
    const mark = markOf(response.header);
    return { pair: kv ? (rawPair(kv, key) ?? null) : null, revision: mark.revision, mark };
  }

  private async readTree(range: {
    key: Buffer;
    range_end: Buffer;
  }): Promise<{ pairs: Map<string, RawPair>; revision: number; mark: ServerMark }> {
    const response = await this.client.kv.range({ ...range });
    const pairs = new Map<string, RawPair>();
    for (const pair of this.rawPairs(response.kvs)) pairs.set(pair.key, pair);
    const mark = markOf(response.header);
    return { pairs, revision: mark.revision, mark };
  }

  /**
   * A watch's read (the first one, or after a compaction), retried with
   * backoff while the server cannot be reached: only a permanent failure ends
   * a watch.
   */
  private async reread<T>(read: () => Promise<T>, signal: AbortSignal): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await read();
      } catch (error) {
        const mapped = this._mapError(error, 'watch');
        if (signal.aborted || isPermanent(mapped)) throw mapped;
        await delay(backoff(attempt, 100, 2_000), signal);
      }
    }
  }

  /**
   * The key's state (a linearizable read), then every change from the read's
   * revision + 1 on: nothing between the read and the watch is missed, and a
   * reconnect resumes after the last revision handed out. When the history
   * it would resume from is gone (compacted) or was replaced (the cluster was
   * restored from a snapshot or rebuilt: its revision went backwards or its
   * cluster id changed), it re-reads, yields the current state and goes on
   * from the server's revision.
   */
  protected override async *_watch(key: string, signal: AbortSignal): AsyncIterable<RawPair | null> {
    const first = await this.reread(() => this.readKey(key), signal);
    yield first.pair;
    const cursor = new WatchCursor(
      this.watchHost,
      { key: keyBytes(key) },
      first.revision + 1,
      signal,
      first.mark,
    );
    try {
      for (;;) {
        const item = await cursor.next();
        if (item.type !== 'events') {
          const now = await this.reread(() => this.readKey(key), signal);
          yield now.pair;
          cursor.reset(now.revision + 1, now.mark);
          continue;
        }
        for (const event of item.events) {
          yield event.type === 'Delete' ? null : (rawPair(event.kv, key) ?? null);
        }
      }
    } finally {
      cursor.close();
    }
  }

  /** Like `_watch`, over the directory's key range: a listing, then the changes of each revision that touched it. */
  protected override async *_watchTreeChanges(
    dir: string,
    signal: AbortSignal,
  ): AsyncIterable<RawTreeUpdate> {
    const range = dirRange(dir);
    const first = await this.reread(() => this.readTree(range), signal);
    yield { type: 'listing', pairs: [...first.pairs.values()] };
    const cursor = new WatchCursor(this.watchHost, range, first.revision + 1, signal, first.mark);
    try {
      for (;;) {
        const item = await cursor.next();
        if (item.type !== 'events') {
          // Compacted, or the server's history was replaced (restore): re-read and yield the current state.
          const now = await this.reread(() => this.readTree(range), signal);
          yield { type: 'listing', pairs: [...now.pairs.values()] };
          cursor.reset(now.revision + 1, now.mark);
          continue;
        }
        const changes: RawTreeChange[] = [];
        for (const event of item.events) {
          const key = decodeKey(event.kv.key);
          if (!isStoreKey(key)) continue;
          changes.push(
            event.type === 'Delete'
              ? { type: 'delete', key }
              : { type: 'put', pair: rawPair(event.kv, key) as RawPair },
          );
        }
        if (changes.length > 0) yield { type: 'changes', changes };
      }
    } finally {
      cursor.close();
    }
  }

  /** Resolves when `key` is deleted at `fromRevision` or later. */
  private async waitForDelete(key: Buffer, fromRevision: number, signal: AbortSignal): Promise<void> {
    const cursor = new WatchCursor(this.watchHost, { key, filters: ['Noput'] }, fromRevision, signal);
    try {
      for (;;) {
        const item = await cursor.next();
        if (item.type !== 'events') {
          const now = await this.reread(() => this.client.kv.range({ key, count_only: true }), signal);
          if (num(now.count) === 0) return;
          cursor.reset(num(now.header.revision) + 1, markOf(now.header));
          continue;
        }
        if (item.events.some((event) => event.type === 'Delete')) return;
      }
    } finally {
      cursor.close();
    }
  }

  // ---- locks ----

  /**
   * etcd's lock recipe. Each contender grants a lease of the lock's ttl and
   * puts a waiter key `<key>\u0001lock/<lease>`; the waiter with the lowest
   * create revision holds the lock. If no waiter exists, one transaction puts
   * the waiter and the lock's value at `<key>`, both on the ttl lease.
   * Otherwise the waiter key goes on a short queue lease of its own
   * (`QUEUE_LEASE_SECONDS`, kept alive while waiting), so a waiter that dies
   * leaves the queue within seconds, not within the lock's ttl; the
   * contender waits for the delete of the waiter just before it, then, in
   * one transaction that requires its waiter key to still exist with its
   * create revision, moves that key onto the ttl lease and writes the value.
   * A put keeps a key's create revision, so the fencing token (the waiter's
   * create revision) is the revision the contender queued at, and tokens
   * grow with every holder: a holder only ever follows waiters created
   * before it. If the queue lease is lost while waiting, the waiter key is
   * gone and the contender queues again at the back. Unlock revokes the ttl
   * lease, which deletes both keys at once and wakes the next waiter.
   */
  protected override async _acquireLock(key: string, request: AcquireRequest): Promise<AcquiredLock | null> {
    const seconds = Math.ceil(request.ttl / 1000);
    for (;;) {
      if (request.signal.aborted) throw abortError(request.signal);
      // Monotonic: the loss deadline is a duration from here, immune to wall-clock jumps.
      const grantedAt = monotonicNow();
      // lock(): the ttl lease and the queue lease, in one round trip.
      const granted = await Promise.allSettled([
        this.grant(seconds),
        request.wait ? this.grantQueueLease() : Promise.resolve(undefined),
      ]);
      const [ttlLease, queueLease] = granted;
      if (ttlLease.status === 'rejected' || queueLease.status === 'rejected') {
        if (ttlLease.status === 'fulfilled') this.revokeLater(ttlLease.value);
        if (queueLease.status === 'fulfilled' && queueLease.value) this.revokeLater(queueLease.value.id);
        throw ttlLease.status === 'rejected' ? ttlLease.reason : (queueLease as PromiseRejectedResult).reason;
      }
      const lease = ttlLease.value;
      let handedOver = false;
      try {
        const outcome = await this.contend(key, lease, queueLease.value, seconds, grantedAt, request);
        if (outcome === 'again') continue;
        handedOver = outcome !== null;
        return outcome;
      } finally {
        if (!handedOver) this.revokeLater(lease);
        if (queueLease.value) this.revokeLater(queueLease.value.id);
      }
    }
  }

  /** A short lease for a waiter's place in a lock queue; the server may make it longer (its minimum). */
  private async grantQueueLease(): Promise<{ id: string; seconds: number }> {
    const response = await this.client.leaseClient.leaseGrant({ TTL: QUEUE_LEASE_SECONDS });
    if (response.error) throw new Error(`lease grant failed: ${response.error}`);
    return { id: response.ID, seconds: Math.max(1, num(response.TTL)) };
  }

  private async contend(
    key: string,
    lease: string,
    queueLease: { id: string; seconds: number } | undefined,
    seconds: number,
    grantedAt: number,
    request: AcquireRequest,
  ): Promise<AcquiredLock | null | 'again'> {
    const waiter = keyBytes(waiterKey(key, lease));
    const lockKey = keyBytes(key);
    const value = valueBytes(request.value);
    const queue = waiterRange(key);
    const first = await this.client.kv.txn({
      compare: [{ ...queue, target: 'Create', result: 'Equal', create_revision: 0 }],
      success: [
        { request_put: { key: waiter, value: EMPTY, lease } },
        { request_put: { key: lockKey, value, lease } },
      ],
      failure: queueLease ? [{ request_put: { key: waiter, value: EMPTY, lease: queueLease.id } }] : [],
    });
    const mine = num(first.header.revision);
    // Aborted meanwhile: the caller is gone; the leases (and with them anything written) are revoked.
    if (request.signal.aborted) throw abortError(request.signal);
    if (first.succeeded) return this.holding(key, waiter, lease, mine, mine, grantedAt, request);
    if (!queueLease) return this.tryPastDeadWaiters(key, waiter, lease, value, grantedAt, request);

    // Queued: keep both leases alive while waiting; if either is lost anyway, start over.
    const waiting = new AbortController();
    const onAbort = () => waiting.abort(request.signal.reason);
    request.signal.addEventListener('abort', onAbort, { once: true });
    let leaseLost = false;
    const lost = (why: string) => () => {
      leaseLost = true;
      waiting.abort(new Error(why));
    };
    this.keeper.add(lease, seconds, lost('the lock lease expired'), grantedAt);
    this.keeper.add(
      queueLease.id,
      queueLease.seconds,
      lost('the queue lease expired'),
      grantedAt,
      Math.min(QUEUE_KEEPALIVE_MS, (queueLease.seconds * 1000) / 3),
    );
    try {
      for (let failures = 0; ; ) {
        if (request.signal.aborted) throw abortError(request.signal);
        if (leaseLost) return 'again';
        try {
          const before = await this.client.kv.range({
            ...queue,
            max_create_revision: mine - 1,
            sort_order: 'Descend',
            sort_target: 'Create',
            limit: 1,
          });
          const previous = before.kvs[0];
          if (!previous) {
            // First in line: move the waiter key (same create revision, so same token) onto the ttl lease.
            const confirm = await this.client.kv.txn({
              compare: [{ key: waiter, target: 'Create', result: 'Equal', create_revision: mine }],
              success: [
                { request_put: { key: waiter, value: EMPTY, lease } },
                { request_put: { key: lockKey, value, lease } },
              ],
            });
            if (!confirm.succeeded) return 'again';
            if (request.signal.aborted) throw abortError(request.signal);
            // The lease, and so the lock, runs at least its ttl from the last renewal the server confirmed.
            const sentAt = this.keeper.confirmedSentAt(lease) ?? grantedAt;
            this.keeper.remove(lease);
            return this.holding(key, waiter, lease, mine, num(confirm.header.revision), sentAt, request);
          }
          await this.waitForTurn(previous, lockKey, num(before.header.revision) + 1, waiting.signal);
          failures = 0;
        } catch (error) {
          if (request.signal.aborted) throw abortError(request.signal);
          if (leaseLost) return 'again';
          const mapped = this._mapError(error, 'lock');
          if (isPermanent(mapped)) throw mapped;
          // The server is unreachable: keep waiting; the lease keeper decides whether our place is lost.
          await delay(backoff(failures++, 100, 2_000), waiting.signal).catch(() => {});
        }
      }
    } finally {
      request.signal.removeEventListener('abort', onAbort);
      this.keeper.remove(lease);
      this.keeper.remove(queueLease.id);
    }
  }

  /**
   * Waits for the delete of the waiter just before this one. If that one is
   * itself waiting (its key is not on the lock key's lease), its queue lease
   * is looked at every `QUEUE_PROBE_MS`: a live waiter renews it every
   * `QUEUE_KEEPALIVE_MS`, so it always has more than 1 s left; one with less
   * (etcd says 0 s) has stopped renewing, and its key is deleted in a
   * transaction that requires it unchanged since it was read (it never moved
   * onto a ttl lease, so it never held) and not on the lock key's lease.
   * Deleting a waiter's key never frees a held lock: a waiter holds only
   * through a transaction that requires its own key, with its create
   * revision. A waiter stalled that long merely queues again.
   */
  private async waitForTurn(
    previous: IKeyValue,
    lockKey: Buffer,
    fromRevision: number,
    signal: AbortSignal,
  ): Promise<void> {
    if (signal.aborted) throw abortError(signal);
    const stop = new AbortController();
    const onAbort = () => stop.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    const deleted = this.waitForDelete(previous.key, fromRevision, stop.signal);
    const reaped = this.reapWhenDead(previous, lockKey, stop.signal);
    try {
      await Promise.race([deleted, reaped]);
    } finally {
      signal.removeEventListener('abort', onAbort);
      stop.abort();
      deleted.catch(() => {});
      reaped.catch(() => {});
    }
    if (signal.aborted) throw abortError(signal);
  }

  /** Resolves once it deleted the key of a dead waiter; never resolves otherwise (until `signal`). */
  private async reapWhenDead(previous: IKeyValue, lockKey: Buffer, signal: AbortSignal): Promise<void> {
    const never = new Promise<void>((_, reject) =>
      signal.addEventListener('abort', () => reject(abortError(signal)), { once: true }),
    );
    never.catch(() => {});
    const lease = previous.lease ? String(previous.lease) : '0';
    if (!isQueued(previous)) return never;
    try {
      for (;;) {
        await delay(QUEUE_PROBE_MS, signal);
        const ttl = await this.client.leaseClient.leaseTimeToLive({ ID: lease });
        if (num(ttl.TTL) > 0) continue;
        const reap = await this.client.kv.txn({
          compare: [
            { key: previous.key, target: 'Mod', result: 'Equal', mod_revision: previous.mod_revision },
            { key: lockKey, target: 'Lease', result: 'NotEqual', lease },
          ],
          success: [{ request_delete_range: { key: previous.key } }],
        });
        return reap.succeeded ? undefined : never;
      }
    } catch {
      // Unreachable, or stopped: the delete watch decides.
      return never;
    }
  }

  /**
   * `tryLock()` found waiters: if none holds (no waiter key on the lock key's
   * lease) and every one has stopped renewing its queue lease (etcd says 0 s
   * left; see `waitForTurn`), one transaction deletes their keys, provided
   * they are unchanged and no waiter came meanwhile, and takes the lock.
   */
  private async tryPastDeadWaiters(
    key: string,
    waiter: Buffer,
    lease: string,
    value: Buffer,
    grantedAt: number,
    request: AcquireRequest,
  ): Promise<AcquiredLock | null> {
    const queue = waiterRange(key);
    const lockKey = keyBytes(key);
    const [waiting, held] = await Promise.all([
      this.client.kv.range({ ...queue, limit: 17 }),
      this.client.kv.range({ key: lockKey, keys_only: true }),
    ]);
    const dead = waiting.kvs;
    if (dead.length === 0 || dead.length > 16) return null;
    const heldBy = held.kvs[0] ? String(held.kvs[0].lease) : undefined;
    if (dead.some((kv) => !isQueued(kv) || String(kv.lease) === heldBy)) return null;
    const ttls = await Promise.all(
      dead.map((kv) => this.client.leaseClient.leaseTimeToLive({ ID: String(kv.lease) })),
    );
    if (ttls.some((ttl) => num(ttl.TTL) > 0)) return null;
    const newest = Math.max(...dead.map((kv) => num(kv.create_revision)));
    const taken = await this.client.kv.txn({
      compare: [
        ...dead.map(
          (kv): ICompare => ({ key: kv.key, target: 'Mod', result: 'Equal', mod_revision: kv.mod_revision }),
        ),
        { ...queue, target: 'Create', result: 'Less', create_revision: newest + 1 },
      ],
      success: [
        ...dead.map((kv): IRequestOp => ({ request_delete_range: { key: kv.key } })),
        { request_put: { key: waiter, value: EMPTY, lease } },
        { request_put: { key: lockKey, value, lease } },
      ],
    });
    if (!taken.succeeded) return null;
    if (request.signal.aborted) throw abortError(request.signal);
    const token = num(taken.header.revision);
    return this.holding(key, waiter, lease, token, token, grantedAt, request);
  }

  private holding(
    key: string,
    waiter: Buffer,
    lease: string,
    token: number,
    heldSince: number,
    sentAt: number,
    request: AcquireRequest,
  ): AcquiredLock {
    const watching = new AbortController();
    void this.waitForDelete(waiter, heldSince + 1, watching.signal).then(
      () => {
        if (!watching.signal.aborted)
          request.onLost('its waiter key was deleted (the lease expired or the key was removed)');
      },
      () => {},
    );
    return {
      fencingToken: token,
      sentAt,
      renew: async (signal) => {
        const ttl = await keepAliveOnce(this.client, lease, signal);
        if (ttl <= 0) throw new LockLostError(this.userKey(key), 'its lease expired');
      },
      release: async () => {
        watching.abort();
        await this.revoke(lease);
      },
    };
  }

  // ---- closing ----

  protected async _close(): Promise<void> {
    for (const cursor of [...this.cursors]) cursor.close();
    const owned = [...this.ownedLeases];
    this.keeper.stop();
    this.ownedLeases.clear();
    this.keepAliveLeases.clear();
    const stop = new AbortController();
    await Promise.race([
      Promise.allSettled([...owned.map((id) => this.revoke(id)), ...this.background]),
      delay(this.settings.requestTimeout, stop.signal).catch(() => {}),
    ]);
    stop.abort();
    this.client.close();
  }

  // ---- helpers ----

  private userKey(full: string): string {
    return stripPrefix(this.prefix, full);
  }

  private rawPairs(kvs: IKeyValue[]): RawPair[] {
    const pairs: RawPair[] = [];
    for (const kv of kvs) {
      const key = decodeKey(kv.key);
      if (isStoreKey(key)) pairs.push(rawPair(kv, key) as RawPair);
    }
    return pairs;
  }

  /** A server pair as a toolkit pair, or undefined for a key outside the store or a helper key. */
  private keyValue(kv: IKeyValue): EtcdKeyValue | undefined {
    const full = decodeKey(kv.key);
    if (!isStoreKey(full) || (this.prefix !== '' && !isBelow(this.prefix, full))) return undefined;
    const modRevision = num(kv.mod_revision);
    return {
      key: this.userKey(full),
      value: bytesOf(kv.value),
      lastIndex: modRevision,
      createRevision: num(kv.create_revision),
      modRevision,
      version: num(kv.version),
      lease: kv.lease ? String(kv.lease) : '0',
    };
  }

  private keyValues(kvs: IKeyValue[]): EtcdKeyValue[] {
    const out: EtcdKeyValue[] = [];
    for (const kv of kvs) {
      const pair = this.keyValue(kv);
      if (pair) out.push(pair);
    }
    return out;
  }

  private bytes(value: Value): Buffer {
    return valueBytes(this.checkValue(value));
  }

  private leaseId(lease: unknown): string {
    if (typeof lease === 'number' && Number.isSafeInteger(lease) && lease > 0) return String(lease);
    if (typeof lease !== 'string' || !/^[1-9]\d{0,18}$/.test(lease) || BigInt(lease) >= 2n ** 63n) {
      throw new InvalidArgumentError(
        `a lease ID is a positive 64-bit integer as a decimal string, got ${JSON.stringify(lease)}`,
      );
    }
    return lease;
  }

  private ttlSeconds(ttl: unknown): number {
    this.checkTtl(ttl as number, 'ttl');
    return Math.ceil((ttl as number) / 1000);
  }

  private limitOf(limit: unknown): number {
    if (limit === undefined) return 0;
    if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit <= 0) {
      throw new InvalidArgumentError(`limit must be a positive integer, got ${String(limit)}`);
    }
    return limit;
  }

  private revisionOf(revision: unknown): number {
    if (typeof revision !== 'number' || !Number.isSafeInteger(revision) || revision <= 0) {
      throw new InvalidArgumentError(`a revision is a positive integer, got ${String(revision)}`);
    }
    return revision;
  }

  // ---- the etcd toolkit ----

  /**
   * A transaction: `.if(...compares).then(...ops).else(...ops).commit()`, one
   * atomic step. Build conditions with `compare.*` and operations with `op.*`.
   */
  transaction(): EtcdTransaction {
    return new EtcdTransaction((spec, options) => this.run('transaction', options, () => this.commit(spec)));
  }

  private async commit(spec: TxnSpec): Promise<EtcdTxnResult> {
    const compare = spec.compares.map((c) => this.toCompare(c));
    const success = spec.success.map((o) => this.toOps(o));
    const failure = spec.failure.map((o) => this.toOps(o));
    const response = await this.client.kv.txn({
      compare,
      success: success.flatMap((o) => o.requests),
      failure: failure.flatMap((o) => o.requests),
    });
    const ran = response.succeeded ? success : failure;
    const results: EtcdOpResult[] = [];
    let index = 0;
    for (const o of ran) {
      const responses = response.responses.slice(index, index + o.requests.length);
      index += o.requests.length;
      results.push(o.result(responses, num(response.header.revision)));
    }
    return { succeeded: response.succeeded, revision: num(response.header.revision), results };
  }

  private toCompare(c: EtcdCompare): ICompare {
    if (typeof c !== 'object' || c === null)
      throw new InvalidArgumentError('a compare must come from compare.*');
    const key = keyBytes(this.fullKey(c.key));
    const result = OPERATORS[c.operator];
    if (!result) throw new InvalidArgumentError(`unknown compare operator ${JSON.stringify(c.operator)}`);
    switch (c.target) {
      case 'value':
        return { key, result, target: 'Value', value: this.bytes(c.value) };
      case 'version':
        return { key, result, target: 'Version', version: countOf(c.value, 'version') };
      case 'createRevision':
        return { key, result, target: 'Create', create_revision: countOf(c.value, 'createRevision') };
      case 'modRevision':
        return { key, result, target: 'Mod', mod_revision: countOf(c.value, 'modRevision') };
      case 'lease':
        return { key, result, target: 'Lease', lease: c.value === '0' ? '0' : this.leaseId(c.value) };
      default:
        throw new InvalidArgumentError(
          `unknown compare target ${JSON.stringify((c as { target: unknown }).target)}`,
        );
    }
  }

  private toOps(o: EtcdOp): {
    requests: IRequestOp[];
    result: (responses: IResponseOp[], revision: number) => EtcdOpResult;
  } {
    if (typeof o !== 'object' || o === null)
      throw new InvalidArgumentError('an operation must come from op.*');
    switch (o.type) {
      case 'put': {
        const full = this.fullKey(o.key);
        const lease = o.lease === undefined ? undefined : this.leaseId(o.lease);
        return {
          requests: [
            { request_put: { key: keyBytes(full), value: this.bytes(o.value), ...(lease ? { lease } : {}) } },
          ],
          result: (_, revision) => ({ type: 'put', key: this.userKey(full), revision }),
        };
      }
      case 'get': {
        const full = this.fullKey(o.key);
        return {
          requests: [{ request_range: { key: keyBytes(full) } }],
          result: ([response]) => {
            const kv = response?.response_range?.kvs?.[0];
            return { type: 'get', key: this.userKey(full), pair: kv ? (this.keyValue(kv) ?? null) : null };
          },
        };
      }
      case 'list': {
        const dir = this.fullDir(o.directory);
        return {
          requests: [{ request_range: dirRange(dir) }],
          result: ([response]) => ({
            type: 'list',
            directory: this.userKey(dir),
            pairs: this.keyValues(response?.response_range?.kvs ?? []),
          }),
        };
      }
      case 'delete': {
        const full = this.fullKey(o.key);
        return {
          requests: [{ request_delete_range: { key: keyBytes(full) } }],
          result: ([response]) => ({
            type: 'delete',
            key: this.userKey(full),
            deleted: num(response?.response_delete_range?.deleted),
          }),
        };
      }
      case 'deleteTree': {
        const dir = this.fullDir(o.directory);
        if (dir === this.prefix) {
          throw new InvalidArgumentError(
            'deleteTree of the whole store is refused; delete its directories one by one',
          );
        }
        return {
          requests: [
            { request_delete_range: { key: keyBytes(dir) } },
            { request_delete_range: dirRange(dir) },
          ],
          result: (responses) => ({
            type: 'deleteTree',
            directory: this.userKey(dir),
            deleted: responses.reduce((sum, r) => sum + num(r.response_delete_range?.deleted), 0),
          }),
        };
      }
      default:
        throw new InvalidArgumentError(`unknown operation ${JSON.stringify((o as { type: unknown }).type)}`);
    }
  }

  /**
   * Writes every entry in one transaction: all or nothing. With a ttl they
   * share one lease. Resolves to the revision of the write.
   */
  bulkPut(
    entries: Iterable<readonly [string, Value]> | Readonly<Record<string, Value>>,
    options?: WriteOptions,
  ): Promise<number> {
    return this.run('bulkPut', options, async (signal) => {
      const list =
        Symbol.iterator in Object(entries)
          ? [...(entries as Iterable<readonly [string, Value]>)]
          : Object.entries(entries as Record<string, Value>);
      const requests = list.map(([key, value]) => ({
        key: keyBytes(this.fullKey(key)),
        value: this.bytes(value),
      }));
      if (requests.length === 0) return 0;
      return this.withWriteLease(this.writeOptions(options, signal), async (lease) => {
        const response = await this.client.kv.txn({
          success: requests.map((r) => ({ request_put: { ...r, ...(lease ? { lease } : {}) } })),
        });
        return num(response.header.revision);
      });
    });
  }

  /** Deletes the keys (not their children) in one transaction. Resolves to how many existed. */
  bulkDelete(keys: Iterable<string>, options?: CallOptions): Promise<number> {
    return this.run('bulkDelete', options, async () => {
      const requests = [...keys].map((key) => ({
        request_delete_range: { key: keyBytes(this.fullKey(key)) },
      }));
      if (requests.length === 0) return 0;
      const response = await this.client.kv.txn({ success: requests });
      return response.responses.reduce((sum, r) => sum + num(r.response_delete_range?.deleted), 0);
    });
  }

  /** Creates the key if it does not exist. Resolves to true if it was created. */
  putIfAbsent(key: string, value: Value, options?: WriteOptions): Promise<boolean> {
    return this.run('putIfAbsent', options, async (signal) => {
      const k = keyBytes(this.fullKey(key));
      const bytes = this.bytes(value);
      return this.withWriteLease(this.writeOptions(options, signal), async (lease) => {
        const response = await this.client.kv.txn({
          compare: [absent(k)],
          success: [{ request_put: { key: k, value: bytes, ...(lease ? { lease } : {}) } }],
        });
        if (!response.succeeded && lease) throw new LeaseUnused();
        return response.succeeded;
      }).catch((error: unknown) => {
        if (error instanceof LeaseUnused) return false;
        throw error;
      });
    });
  }

  /**
   * Writes `value` only if the key holds exactly `expected` (byte for byte).
   * Resolves to true if it did. A missing key never matches.
   */
  compareAndSwap(key: string, expected: Value, value: Value, options?: WriteOptions): Promise<boolean> {
    return this.run('compareAndSwap', options, async (signal) => {
      const k = keyBytes(this.fullKey(key));
      const want = this.bytes(expected);
      const bytes = this.bytes(value);
      return this.withWriteLease(this.writeOptions(options, signal), async (lease) => {
        const response = await this.client.kv.txn({
          compare: [{ key: k, target: 'Value', result: 'Equal', value: want }],
          success: [{ request_put: { key: k, value: bytes, ...(lease ? { lease } : {}) } }],
        });
        if (!response.succeeded && lease) throw new LeaseUnused();
        return response.succeeded;
      }).catch((error: unknown) => {
        if (error instanceof LeaseUnused) return false;
        throw error;
      });
    });
  }

  /**
   * Moves a key: one transaction that writes `to` (same value, same lease)
   * and deletes `from`, on condition that `from` is unchanged since it was
   * read (re-read and retried if it changed meanwhile). `KeyNotFoundError` if
   * `from` is missing; with `overwrite: false`, `KeyExistsError` if `to`
   * exists. Resolves to the pair at `to`.
   */
  move(from: string, to: string, options?: CallOptions & { overwrite?: boolean }): Promise<EtcdKeyValue> {
    return this.run('move', options, async (signal) => {
      const source = this.fullKey(from);
      const target = this.fullKey(to);
      if (source === target) throw new InvalidArgumentError('move needs two different keys');
      const overwrite = options?.overwrite ?? true;
      const s = keyBytes(source);
      const t = keyBytes(target);
      for (let attempt = 0; ; attempt++) {
        const read = await this.client.kv.range({ key: s });
        const kv = read.kvs[0];
        if (!kv) throw new KeyNotFoundError(from);
        const lease = kv.lease && kv.lease !== '0' ? { lease: kv.lease } : {};
        const response = await this.client.kv.txn({
          compare: [
            { key: s, target: 'Mod', result: 'Equal', mod_revision: kv.mod_revision },
            ...(overwrite ? [] : [absent(t)]),
          ],
          success: [
            { request_put: { key: t, value: kv.value ?? EMPTY, ...lease } },
            { request_delete_range: { key: s } },
          ],
          failure: [
            { request_range: { key: s, count_only: true } },
            { request_range: { key: t, count_only: true } },
          ],
        });
        if (response.succeeded) {
          const revision = num(response.header.revision);
          return {
            key: this.userKey(target),
            value: bytesOf(kv.value),
            lastIndex: revision,
            createRevision: revision,
            modRevision: revision,
            version: 1,
            lease: kv.lease && kv.lease !== '0' ? String(kv.lease) : '0',
          };
        }
        const sourceNow = num(response.responses[0]?.response_range?.count);
        const targetNow = num(response.responses[1]?.response_range?.count);
        if (sourceNow === 0) throw new KeyNotFoundError(from);
        if (!overwrite && targetNow > 0) throw new KeyExistsError(to);
        if (signal.aborted || attempt >= 20) throw new KeyModifiedError(from);
      }
    });
  }

  /** How many keys are below `directory` (at any depth), without fetching values. */
  count(directory: string, options?: ReadOptions): Promise<number> {
    return this.run('count', options, async () => {
      const response = await this.client.kv.range({
        ...dirRange(this.fullDir(directory)),
        keys_only: true,
        ...this.readMode(options?.consistent === true),
      });
      return response.kvs.filter((kv) => isStoreKey(decodeKey(kv.key))).length;
    });
  }

  /** The keys below `directory` (at any depth) in etcd's byte order, at most `limit`, without values. */
  keys(directory: string, options?: ReadOptions & { limit?: number }): Promise<string[]> {
    return this.run('keys', options, async () => {
      const limit = this.limitOf(options?.limit);
      const range = dirRange(this.fullDir(directory));
      const out: string[] = [];
      let start = range.key;
      for (;;) {
        const page = limit === 0 ? 0 : Math.max(limit - out.length, 16);
        const response = await this.client.kv.range({
          key: start,
          range_end: range.range_end,
          keys_only: true,
          ...(page > 0 ? { limit: page } : {}),
          ...this.readMode(options?.consistent === true),
        });
        for (const kv of response.kvs) {
          const key = decodeKey(kv.key);
          if (isStoreKey(key)) out.push(this.userKey(key));
          if (limit > 0 && out.length >= limit) return out;
        }
        const last = response.kvs[response.kvs.length - 1];
        if (!response.more || !last) return out;
        start = Buffer.concat([last.key, Buffer.from([0])]);
      }
    });
  }

  /**
   * The pairs with keys in [`start`, `end`) in etcd's byte order (store keys;
   * `end` omitted: to the end of the store), optionally at a past revision.
   */
  range(start: string, end?: string, options?: RangeOptions): Promise<EtcdKeyValue[]> {
    return this.run('range', options, async () => {
      const limit = this.limitOf(options?.limit);
      const revision = options?.revision === undefined ? 0 : this.revisionOf(options.revision);
      const whole = dirRange(this.prefix);
      const from = start === '' || start === '/' ? whole.key : keyBytes(this.fullKey(start));
      const to = end === undefined ? whole.range_end : keyBytes(this.fullKey(end));
      const response = await this.client.kv.range({
        key: from,
        range_end: to,
        ...(limit > 0 ? { limit } : {}),
        ...(revision > 0 ? { revision } : {}),
        ...this.readMode(options?.consistent === true),
      });
      return this.keyValues(response.kvs);
    });
  }

  /** The key with etcd's revision data (create/mod revision, version, lease). `KeyNotFoundError` if missing. */
  getKeyValue(key: string, options?: ReadOptions): Promise<EtcdKeyValue> {
    return this.run('getKeyValue', options, async () => {
      const response = await this.client.kv.range({
        key: keyBytes(this.fullKey(key)),
        ...this.readMode(options?.consistent === true),
      });
      const pair = response.kvs[0] ? this.keyValue(response.kvs[0]) : undefined;
      if (!pair) throw new KeyNotFoundError(key);
      return pair;
    });
  }

  /**
   * The key as it was at `revision`. `KeyNotFoundError` if it did not exist
   * then; `InvalidArgumentError` if that revision was compacted or is in the future.
   */
  getAt(key: string, revision: number, options?: CallOptions): Promise<EtcdKeyValue> {
    return this.run('getAt', options, async () => {
      const response = await this.client.kv.range({
        key: keyBytes(this.fullKey(key)),
        revision: this.revisionOf(revision),
      });
      const pair = response.kvs[0] ? this.keyValue(response.kvs[0]) : undefined;
      if (!pair) throw new KeyNotFoundError(key);
      return pair;
    });
  }

  /**
   * Grants a lease of `ttl` ms (rounded up to whole seconds). With
   * `keepAlive: true` the store keeps it alive until `revokeLease` or
   * `close()`, which revokes it; otherwise it expires unless kept alive with
   * `keepAliveLease`.
   */
  grantLease(ttl: number, options?: CallOptions & { keepAlive?: boolean }): Promise<EtcdLease> {
    return this.run('grantLease', options, async () => {
      const seconds = this.ttlSeconds(ttl);
      const id = await this.grant(seconds);
      if (options?.keepAlive) {
        this.ownedLeases.add(id);
        this.keeper.add(id, seconds, () => this.ownedLeases.delete(id));
      }
      return { id, ttl: seconds * 1000 };
    });
  }

  /** One keep-alive: resolves to the ms the lease now has left. `InvalidArgumentError` if it is gone. */
  keepAliveLease(id: string, options?: CallOptions): Promise<number> {
    return this.run('keepAliveLease', options, async (signal) => {
      const seconds = await keepAliveOnce(this.client, this.leaseId(id), signal);
      if (seconds <= 0) throw new InvalidArgumentError(`lease ${id} is gone (expired or revoked)`);
      return seconds * 1000;
    });
  }

  /** Revokes a lease: every key attached to it is deleted at once. A lease already gone is fine. */
  revokeLease(id: string, options?: CallOptions): Promise<void> {
    return this.run('revokeLease', options, async () => {
      const lease = this.leaseId(id);
      this.keeper.remove(lease);
      this.ownedLeases.delete(lease);
      await this.revoke(lease);
    });
  }

  /** Writes a key attached to a lease: it is deleted when the lease expires or is revoked. */
  putWithLease(key: string, value: Value, lease: string, options?: CallOptions): Promise<KVPair> {
    return this.run('putWithLease', options, async () => {
      const full = this.fullKey(key);
      const bytes = this.bytes(value);
      const response = await this.client.kv.put({
        key: keyBytes(full),
        value: bytes,
        lease: this.leaseId(lease),
      });
      return { key: this.userKey(full), value: bytesOf(bytes), lastIndex: num(response.header.revision) };
    });
  }

  /** A lease's remaining and granted ttl (ms) and, with `keys: true`, its keys in this store; null if it is gone. */
  leaseTimeToLive(id: string, options?: CallOptions & { keys?: boolean }): Promise<EtcdLeaseInfo | null> {
    return this.run('leaseTimeToLive', options, async () => {
      const response = await this.client.leaseClient.leaseTimeToLive({
        ID: this.leaseId(id),
        keys: options?.keys === true,
      });
      const ttl = num(response.TTL);
      if (ttl < 0) return null;
      const keys: string[] = [];
      for (const raw of response.keys ?? []) {
        const full = decodeKey(raw);
        if (isStoreKey(full) && (this.prefix === '' || isBelow(this.prefix, full)))
          keys.push(this.userKey(full));
      }
      return { id: response.ID, ttl: ttl * 1000, grantedTtl: num(response.grantedTTL) * 1000, keys };
    });
  }

  /** The IDs of every lease on the cluster. */
  leases(options?: CallOptions): Promise<string[]> {
    return this.run('leases', options, async () => {
      const response = await this.client.leaseClient.leaseLeases();
      return (response.leases ?? []).map((lease) => String(lease.ID));
    });
  }

  /** The status of the member that answers: version, database size, leader, revision. */
  status(options?: CallOptions): Promise<EtcdStatus> {
    return this.run('status', options, async () => {
      const s = await this.client.maintenance.status();
      return {
        version: s.version,
        dbSize: num(s.dbSize),
        dbSizeInUse: num(s.dbSizeInUse),
        leader: String(s.leader),
        memberId: String(s.header.member_id),
        isLearner: s.isLearner === true,
        raftIndex: num(s.raftIndex),
        raftTerm: num(s.raftTerm),
        revision: num(s.header.revision),
        errors: s.errors ?? [],
      };
    });
  }

  /** The cluster's members. */
  members(options?: CallOptions): Promise<EtcdMember[]> {
    return this.run('members', options, async () => {
      const response = await this.client.cluster.memberList({});
      return (response.members ?? []).map((m) => ({
        id: String(m.ID),
        name: m.name,
        peerURLs: m.peerURLs ?? [],
        clientURLs: m.clientURLs ?? [],
        isLearner: m.isLearner === true,
      }));
    });
  }

  /**
   * Compacts the history up to `revision`: older revisions can no longer be
   * read or watched from (watches on this store re-read and go on). With
   * `physical: true` it resolves once the space is reclaimed.
   */
  compact(revision: number, options?: CallOptions & { physical?: boolean }): Promise<void> {
    return this.run('compact', options, async () => {
      await this.client.kv.compact({
        revision: this.revisionOf(revision),
        physical: options?.physical === true,
      });
    });
  }
}

/**
 * A waiter key still waiting on its queue lease: its name carries its ttl
 * lease, it sits on another one. A holder's key is on the lease its name
 * carries (put there at once, or moved there when it acquired), as is every
 * key of an older version of this package: never treated as a waiter.
 */
function isQueued(kv: IKeyValue): boolean {
  const lease = kv.lease ? String(kv.lease) : '0';
  if (lease === '0') return false;
  const name = Buffer.from(kv.key).toString('latin1');
  const slash = name.lastIndexOf('/');
  return slash >= 0 && name.slice(slash + 1) !== BigInt(lease).toString(16);
}

/** Internal: a conditional write that did not happen must not leave its lease behind. */
class LeaseUnused extends Error {}

function absent(key: Buffer): ICompare {
  return { key, target: 'Create', result: 'Equal', create_revision: 0 };
}

/** The key exists and is at `index`. */
function unchanged(key: Buffer, index: number): ICompare[] {
  return [
    { key, target: 'Mod', result: 'Equal', mod_revision: index },
    { key, target: 'Version', result: 'Greater', version: 0 },
  ];
}

function countOf(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError(`${what} must be a non-negative integer, got ${String(value)}`);
  }
  return value;
}
