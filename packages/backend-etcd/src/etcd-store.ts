import {
  type AcquiredLock,
  type AcquireRequest,
  abortError,
  BaseStore,
  backoff,
  bufferView,
  type Capabilities,
  delay,
  InvalidArgumentError,
  KeyExistsError,
  KeyModifiedError,
  KeyNotFoundError,
  type KVError,
  type PrimitiveReadOptions,
  type PrimitiveWriteOptions,
  type RawPair,
  type RawTreeChange,
  type RawTreeUpdate,
  stripPrefix,
} from '@kv/core';
import { type Etcd3, EtcdLeaseInvalidError, type IRangeRequest } from 'etcd3';
import { createClient, KV_BOUNDED, rangePairs } from './etcd-client.js';
import { DEFAULT_MAX_REQUEST_BYTES, type EtcdSettings, REQUEST_OVERHEAD } from './etcd-config.js';
import { isPermanent, mapEtcdError, typedError } from './etcd-errors.js';
import { absent, decodeKey, dirRange, isStoreKey, keyBytes, num, rawPair, unchanged } from './etcd-keys.js';
import { EtcdLocks } from './etcd-lock.js';
import { LeaseKeeper } from './leases.js';
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

export const MIN_TTL_SETTING = "--election-timeout (etcd's minimum lease TTL is 1.5 x the election timeout)";
/**
 * The Store contract on etcd v3 (the `etcd3` client). Keys are etcd keys: the
 * prefix, `/`, the key (`app/a/b`); directories are key ranges; `lastIndex`
 * is the key's `mod_revision`; TTLs are leases; watches resume from the last
 * seen revision; locks follow etcd's own concurrency recipe (`etcd-lock.ts`).
 *
 * The public class is `EtcdStore` (`etcd-toolkit.ts`): this contract plus the
 * etcd toolkit. Error mapping lives in `etcd-errors.ts`.
 */
export class EtcdContractStore extends BaseStore {
  /** The underlying etcd3 client, for anything this API does not cover. Keys there are raw etcd keys (prefix included). */
  readonly client: Etcd3;
  protected readonly settings: EtcdSettings;
  protected readonly keeper: LeaseKeeper;
  /** One kept-alive lease per ttl (in seconds) for keepAlive keys. */
  private readonly keepAliveLeases = new Map<number, Promise<string>>();
  /** Leases this store keeps alive; revoked on close. */
  protected readonly ownedLeases = new Set<string>();
  private readonly cursors = new Set<WatchCursor>();
  private readonly background = new Set<Promise<unknown>>();
  private readonly watchHost: WatchHost;
  private readonly lockRecipe: EtcdLocks;
  /**
   * gRPC call options of the calls the store's deadline bounds: no gRPC
   * deadline on top (see `KV_BOUNDED`), unless keep-alive pings are off
   * (then the gRPC deadline is what ends a call on a silent connection).
   */
  protected readonly boundedCall: { deadline: number } | undefined;

  protected constructor(prefix: string, settings: EtcdSettings) {
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
    this.boundedCall = settings.keepAliveTime > 0 ? KV_BOUNDED : undefined;
    this.keeper = new LeaseKeeper(this.client, settings.requestTimeout);
    this.lockRecipe = new EtcdLocks({
      client: this.client,
      keeper: this.keeper,
      grant: (seconds) => this.grant(seconds),
      revoke: (id) => this.revoke(id),
      revokeLater: (id) => this.revokeLater(id),
      waitForDelete: (key, fromRevision, signal) => this.waitForDelete(key, fromRevision, signal),
      openCursor: (target, fromRevision, signal) =>
        new WatchCursor(this.watchHost, target, fromRevision, signal),
      mapError: (error, operation) => this._mapError(error, operation),
      userKey: (full) => this.userKey(full),
    });
    this.watchHost = {
      client: this.client,
      mapError: (error, operation) => this._mapError(error, operation),
      cursors: this.cursors,
    };
  }

  /** Reachability and credentials: a read of one key; a permission error still proves both. */
  protected async ping(): Promise<void> {
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

  protected readMode(consistent: boolean): Pick<IRangeRequest, 'serializable'> {
    return !consistent && this.settings.serializableReads ? { serializable: true } : {};
  }

  protected async _get(key: string, options: PrimitiveReadOptions): Promise<RawPair | null> {
    const reply = await rangePairs(
      this.client,
      { key: keyBytes(key), ...this.readMode(options.consistent) },
      this.boundedCall,
    );
    const pair = reply.pairs[0];
    return pair?.key === key ? pair : null;
  }

  protected override async _exists(key: string, options: PrimitiveReadOptions): Promise<boolean> {
    const response = await this.client.kv.range(
      {
        key: keyBytes(key),
        count_only: true,
        ...this.readMode(options.consistent),
      },
      this.boundedCall,
    );
    return num(response.count) > 0;
  }

  protected async _put(key: string, value: Uint8Array, options: PrimitiveWriteOptions): Promise<void> {
    await this.withWriteLease(options, (lease) =>
      this.client.kv.put(
        { key: keyBytes(key), value: bufferView(value), ...(lease ? { lease } : {}) },
        this.boundedCall,
      ),
    );
  }

  protected async _delete(key: string, _signal: AbortSignal): Promise<void> {
    await this.client.kv.deleteRange({ key: keyBytes(key) }, this.boundedCall);
  }

  protected async _list(dir: string, options: PrimitiveReadOptions): Promise<RawPair[]> {
    const { pairs } = await rangePairs(
      this.client,
      { ...dirRange(dir), ...this.readMode(options.consistent) },
      this.boundedCall,
    );
    // Keys another client wrote that no store may show (`a//b`, control characters) are left out.
    let shown = 0;
    for (const pair of pairs) if (isStoreKey(pair.key)) pairs[shown++] = pair;
    pairs.length = shown;
    return pairs;
  }

  protected async _deleteTree(dir: string, _signal: AbortSignal): Promise<void> {
    await this.client.kv.txn(
      {
        success: [{ request_delete_range: { key: keyBytes(dir) } }, { request_delete_range: dirRange(dir) }],
      },
      this.boundedCall,
    );
  }

  protected async _atomicPut(
    key: string,
    value: Uint8Array,
    previousIndex: number | null,
    options: PrimitiveWriteOptions,
  ): Promise<RawPair> {
    const k = keyBytes(key);
    return this.withWriteLease(options, async (lease) => {
      const response = await this.client.kv.txn(
        {
          compare: previousIndex === null ? [absent(k)] : unchanged(k, previousIndex),
          success: [{ request_put: { key: k, value: bufferView(value), ...(lease ? { lease } : {}) } }],
          failure: [{ request_range: { key: k, count_only: true } }],
        },
        this.boundedCall,
      );
      if (response.succeeded) return { key, value, lastIndex: num(response.header.revision) };
      const user = this.userKey(key);
      if (previousIndex === null) throw new KeyExistsError(user);
      const exists = num(response.responses[0]?.response_range?.count) > 0;
      throw exists ? new KeyModifiedError(user) : new KeyNotFoundError(user);
    });
  }

  protected async _atomicDelete(key: string, previousIndex: number, _signal: AbortSignal): Promise<void> {
    const k = keyBytes(key);
    const response = await this.client.kv.txn(
      {
        compare: unchanged(k, previousIndex),
        success: [{ request_delete_range: { key: k } }],
        failure: [{ request_range: { key: k, count_only: true } }],
      },
      this.boundedCall,
    );
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
  protected async withWriteLease<T>(
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
  protected async grant(seconds: number): Promise<string> {
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

  protected async revoke(id: string): Promise<void> {
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

  private async readKey(key: string): Promise<{ pair: RawPair | null; mark: ServerMark }> {
    const reply = await rangePairs(this.client, { key: keyBytes(key) });
    const pair = reply.pairs[0];
    return { pair: pair?.key === key ? pair : null, mark: reply.header };
  }

  private async readTree(range: {
    key: Buffer;
    range_end: Buffer;
  }): Promise<{ pairs: Map<string, RawPair>; mark: ServerMark }> {
    const reply = await rangePairs(this.client, { ...range });
    const pairs = new Map<string, RawPair>();
    for (const pair of reply.pairs) if (isStoreKey(pair.key)) pairs.set(pair.key, pair);
    return { pairs, mark: reply.header };
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
      first.mark.revision + 1,
      signal,
      first.mark,
    );
    try {
      for (;;) {
        const item = await cursor.next();
        if (item.type !== 'events') {
          const now = await this.reread(() => this.readKey(key), signal);
          yield now.pair;
          cursor.reset(now.mark.revision + 1, now.mark);
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
    const cursor = new WatchCursor(this.watchHost, range, first.mark.revision + 1, signal, first.mark);
    try {
      for (;;) {
        const item = await cursor.next();
        if (item.type !== 'events') {
          // Compacted, or the server's history was replaced (restore): re-read and yield the current state.
          const now = await this.reread(() => this.readTree(range), signal);
          yield { type: 'listing', pairs: [...now.pairs.values()] };
          cursor.reset(now.mark.revision + 1, now.mark);
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
    // Opened from the event loop's next turn: a lock released before then (a short critical
    // section) never opens a watch stream, and a later one misses nothing, since the watch starts
    // at `fromRevision` whenever it opens (a compacted start re-reads the key).
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (signal.aborted) return;
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

  /** etcd's lock recipe: see `EtcdLocks` (`etcd-lock.ts`). */
  protected override _acquireLock(key: string, request: AcquireRequest): Promise<AcquiredLock | null> {
    return this.lockRecipe.acquire(key, request);
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

  protected userKey(full: string): string {
    return stripPrefix(this.prefix, full);
  }
}
