import type { AcquiredLock, AcquireRequest } from '@kv/core';
import {
  BaseStore,
  backoff,
  type Capabilities,
  delay,
  InvalidArgumentError,
  type KVError,
  type PrimitiveReadOptions,
  type PrimitiveWriteOptions,
  type RawPair,
  type RawTreeUpdate,
  type ResolvedConfig,
  stripPrefix,
  timeoutSignal,
} from '@kv/core';
import {
  EtcdV2Client,
  type Params,
  speaksTls,
  TransportError,
  type V2Answer,
  type V2Node,
} from './etcdv2-client.js';
import { type EtcdV2Options, type EtcdV2Settings, settingsOf } from './etcdv2-config.js';
import { EtcdV2Error, isCode, isPermanent, mapEtcdV2Error, V2 } from './etcdv2-errors.js';
import { decodeValue, dirPath, encodeValue, keyOfLeaf, leafPath, treePath } from './etcdv2-layout.js';
import { acquireV2Lock } from './etcdv2-lock.js';

export const ETCDV2_CAPABILITIES: Capabilities = Object.freeze({
  watch: true,
  watchTree: true,
  lock: true,
  ttl: true,
  keepAlive: true,
  consistentRead: true,
  // v2 ttls are whole seconds: a ttl is rounded up to the next second.
  minTtl: 1_000,
  // Rounded up by under 1 s, then removed by the leader's expiry sweep (every 500 ms).
  ttlGranularity: 2_000,
  // Under --max-request-bytes (1.5 MiB) once base64 (x 4/3) and the request around it are counted.
  maxValueSize: 1024 * 1024,
  distributed: true,
});

const seconds = (ms: number): number => Math.max(1, Math.ceil(ms / 1000));
const PUT_ACTIONS = new Set(['set', 'create', 'update', 'compareAndSwap']);

/** A write kept alive by this store: renewed with `refresh=true` until rewritten, deleted or the store closes. */
interface KeptAlive {
  index: number;
  readonly ttl: number;
  timer: NodeJS.Timeout | undefined;
  /** `performance.now()` ms by which the key expires unless renewed: the bound of a renewal attempt. */
  expires: number;
}

/**
 * The etcd v2 store (`/v2/keys`). The node layout is in `etcdv2-layout.ts`:
 * each key's value is a leaf below a directory of its own. CAS uses
 * `prevIndex` / `prevExist=false` on that leaf, `lastIndex` is its
 * `modifiedIndex`; watches are long polls (`wait=true&waitIndex=`) that
 * re-read on `EventIndexCleared` (v2 keeps the last 1000 events only).
 */
export class EtcdV2Store extends BaseStore {
  readonly client: EtcdV2Client;
  readonly settings: EtcdV2Settings;
  private readonly kept = new Map<string, KeptAlive>();

  private constructor(settings: EtcdV2Settings, prefix: string) {
    super({
      backend: 'etcdv2',
      capabilities: ETCDV2_CAPABILITIES,
      prefix,
      requestTimeout: settings.requestTimeout,
    });
    this.settings = settings;
    this.client = new EtcdV2Client(settings);
  }

  static async open(config: ResolvedConfig & EtcdV2Options): Promise<EtcdV2Store> {
    const store = new EtcdV2Store(settingsOf(config), config.prefix);
    try {
      const signal = AbortSignal.timeout(config.connectTimeout);
      // One round trip that needs read access where this store lives (and proves the v2 API is on).
      await store.client
        .keys('GET', leafPath(store.prefix), {}, signal, config.connectTimeout)
        .catch((error) => {
          if (isCode(error, V2.keyNotFound)) return;
          if (error instanceof EtcdV2Error && error.status === 404 && error.errorCode === undefined) {
            throw new EtcdV2Error(
              404,
              undefined,
              `${error.message}: is the v2 API on (etcd --enable-v2=true)?`,
              undefined,
            );
          }
          throw error;
        });
    } catch (error) {
      store.client.halt();
      // A TLS-only etcd hangs up on a plain HTTP request without an answer: say what to change.
      if (
        !store.settings.tls &&
        error instanceof TransportError &&
        (error.cause as { code?: string } | undefined)?.code === 'ECONNRESET' &&
        (await speaksTls(store.settings.hosts))
      ) {
        throw new InvalidArgumentError(
          `etcdv2: connect failed: ${error.message} (the server speaks TLS on this port: use etcdv2s:// or tls: true)`,
          { cause: error },
        );
      }
      throw mapEtcdV2Error(error, 'connect');
    }
    return store;
  }

  /** A read that timed out goes to the next endpoint: with several, each attempt gets half the budget. */
  private get readAttempt(): number {
    if (this.settings.hosts.length < 2) return this.writeAttempt;
    return Math.max(100, Math.floor(this.requestTimeout / 2));
  }

  private get writeAttempt(): number {
    return Math.max(100, Math.floor(this.requestTimeout * 0.9));
  }

  /** A v2 call on the client, for this store's primitives and its lock. */
  call(
    method: 'GET' | 'PUT' | 'POST' | 'DELETE',
    path: string,
    params: Params,
    signal: AbortSignal,
  ): Promise<V2Answer> {
    return this.client.keys(
      method,
      path,
      params,
      signal,
      method === 'GET' ? this.readAttempt : this.writeAttempt,
    );
  }

  protected override _mapError(error: unknown, operation: string): KVError {
    return mapEtcdV2Error(error, operation);
  }

  private pairOf(fullKey: string, node: V2Node): RawPair {
    return { key: fullKey, value: decodeValue(node.value), lastIndex: node.modifiedIndex };
  }

  /** The key's state and the index it was read at. */
  async readLeaf(
    fullKey: string,
    consistent: boolean,
    signal: AbortSignal,
  ): Promise<{ pair: RawPair | null; index: number }> {
    try {
      const answer = await this.call('GET', leafPath(fullKey), { quorum: consistent || undefined }, signal);
      return { pair: answer.node ? this.pairOf(fullKey, answer.node) : null, index: answer.index };
    } catch (error) {
      if (isCode(error, V2.keyNotFound)) return { pair: null, index: (error as EtcdV2Error).index ?? 0 };
      throw error;
    }
  }

  protected async _get(key: string, options: PrimitiveReadOptions): Promise<RawPair | null> {
    return (await this.readLeaf(key, options.consistent, options.signal)).pair;
  }

  /** The server keeps the ttl: the node's `expiration` (its clock), else its whole seconds left. */
  protected override async _remainingTtl(key: string, signal: AbortSignal): Promise<number | undefined> {
    let node: V2Node | undefined;
    try {
      node = (await this.call('GET', leafPath(key), {}, signal)).node;
    } catch (error) {
      if (isCode(error, V2.keyNotFound)) return undefined;
      throw error;
    }
    if (!node || node.dir || node.ttl === undefined) return undefined;
    const at = node.expiration === undefined ? Number.NaN : Date.parse(node.expiration);
    const left = Number.isFinite(at) ? at - Date.now() : node.ttl * 1000;
    return Math.max(1, Math.ceil(left));
  }

  private keyError(error: unknown, key: string, operation: string): unknown {
    if (error instanceof EtcdV2Error) return mapEtcdV2Error(error, operation, stripPrefix(this.prefix, key));
    return error;
  }

  protected async _put(key: string, value: Uint8Array, options: PrimitiveWriteOptions): Promise<void> {
    this.forget(key);
    const answer = await this.call(
      'PUT',
      leafPath(key),
      { value: encodeValue(value), ttl: options.ttl === undefined ? undefined : seconds(options.ttl) },
      options.signal,
    );
    if (options.keepAlive && options.ttl !== undefined && answer.node)
      this.keepAlive(key, answer.node, options.ttl);
  }

  protected async _delete(key: string, signal: AbortSignal): Promise<void> {
    this.forget(key);
    try {
      await this.call('DELETE', leafPath(key), {}, signal);
    } catch (error) {
      if (!isCode(error, V2.keyNotFound)) throw error;
      return;
    }
    await this.pruneDirs(key, signal);
  }

  /**
   * Removes the directories a deleted key leaves empty, bottom up. A
   * directory delete without `recursive` fails on a non-empty one, so this
   * never removes anything written meanwhile. Best effort: an empty
   * directory left behind is invisible (only value leaves are listed).
   */
  private async pruneDirs(key: string, signal: AbortSignal): Promise<void> {
    let dir = key;
    while (dir !== '' && dir !== this.prefix) {
      try {
        await this.call('DELETE', dirPath(dir), { dir: true }, signal);
      } catch {
        return;
      }
      const slash = dir.lastIndexOf('/');
      dir = slash < 0 ? '' : dir.slice(0, slash);
    }
  }

  protected async _list(dir: string, options: PrimitiveReadOptions): Promise<RawPair[]> {
    return (await this.listing(dir, options.consistent, options.signal)).pairs;
  }

  /** Every value leaf below `dir`, and the index the listing was read at. */
  async listing(
    dir: string,
    consistent: boolean,
    signal: AbortSignal,
  ): Promise<{ pairs: RawPair[]; index: number }> {
    let answer: V2Answer;
    try {
      answer = await this.call(
        'GET',
        treePath(dir),
        { recursive: true, quorum: consistent || undefined },
        signal,
      );
    } catch (error) {
      if (isCode(error, V2.keyNotFound)) return { pairs: [], index: (error as EtcdV2Error).index ?? 0 };
      throw error;
    }
    const pairs: RawPair[] = [];
    const walk = (node: V2Node | undefined) => {
      if (!node) return;
      if (node.dir) {
        for (const child of node.nodes ?? []) walk(child);
        return;
      }
      const key = node.key === undefined ? undefined : keyOfLeaf(node.key);
      if (key !== undefined) pairs.push(this.pairOf(key, node));
    };
    walk(answer.node);
    return { pairs, index: answer.index };
  }

  protected async _deleteTree(dir: string, signal: AbortSignal): Promise<void> {
    for (const key of this.kept.keys()) if (key === dir || key.startsWith(`${dir}/`)) this.forget(key);
    try {
      await this.call('DELETE', treePath(dir), { recursive: true, dir: true }, signal);
    } catch (error) {
      if (!isCode(error, V2.keyNotFound)) throw error;
    }
  }

  protected async _atomicPut(
    key: string,
    value: Uint8Array,
    previousIndex: number | null,
    options: PrimitiveWriteOptions,
  ): Promise<RawPair> {
    this.forget(key);
    const params: Params = {
      value: encodeValue(value),
      ttl: options.ttl === undefined ? undefined : seconds(options.ttl),
    };
    if (previousIndex === null) params.prevExist = false;
    else params.prevIndex = previousIndex;
    let answer: V2Answer;
    try {
      answer = await this.call('PUT', leafPath(key), params, options.signal);
    } catch (error) {
      throw this.keyError(error, key, 'atomicPut');
    }
    const node = answer.node as V2Node;
    if (options.keepAlive && options.ttl !== undefined) this.keepAlive(key, node, options.ttl);
    return this.pairOf(key, node);
  }

  protected async _atomicDelete(key: string, previousIndex: number, signal: AbortSignal): Promise<void> {
    try {
      await this.call('DELETE', leafPath(key), { prevIndex: previousIndex }, signal);
    } catch (error) {
      throw this.keyError(error, key, 'atomicDelete');
    }
    this.forget(key);
    await this.pruneDirs(key, signal);
  }

  // ---- keep-alive keys ----

  private keepAlive(key: string, written: V2Node, ttl: number): void {
    const entry: KeptAlive = {
      index: written.modifiedIndex,
      ttl,
      timer: undefined,
      expires: performance.now() + ttl,
    };
    this.kept.set(key, entry);
    const schedule = (ms: number) => {
      entry.timer = setTimeout(() => void renew(), ms);
      entry.timer.unref?.();
    };
    const renew = async () => {
      if (this.kept.get(key) !== entry || this.closed) return;
      const sentAt = performance.now();
      try {
        // prevIndex: renew only our own write; anyone's later write ends the keep-alive. A slow
        // answer (a loaded server, bcrypt on every call under auth) still renews in time: an
        // attempt may take until the key would expire.
        const answer = await this.call(
          'PUT',
          leafPath(key),
          { refresh: true, prevExist: true, prevIndex: entry.index, ttl: seconds(ttl) },
          timeoutSignal(Math.max(100, Math.floor(entry.expires - sentAt)), this.closing),
        );
        if (this.kept.get(key) !== entry) return;
        if (answer.node) entry.index = answer.node.modifiedIndex;
        entry.expires = sentAt + ttl;
        schedule(Math.max(100, Math.floor(ttl / 3) - (performance.now() - sentAt)));
      } catch (error) {
        if (this.kept.get(key) !== entry || this.closed) return;
        if (isCode(error, V2.compareFailed)) {
          // Perhaps an earlier attempt whose answer never came did land: then the key's later
          // indexes are our own refreshes, and the keep-alive goes on from the last of them.
          const own = await this.ownRefreshes(key, written, entry.index).catch(() => undefined);
          if (own !== undefined && this.kept.get(key) === entry && !this.closed) {
            entry.index = own;
            schedule(0);
            return;
          }
        }
        if (isCode(error, V2.keyNotFound) || isCode(error, V2.compareFailed)) {
          if (this.kept.get(key) === entry) this.kept.delete(key);
          return;
        }
        schedule(Math.max(50, Math.min(250, Math.floor(ttl / 10))));
      }
    };
    schedule(Math.max(100, Math.floor(ttl / 3)));
  }

  /**
   * The key's modifiedIndex if every change of it after `index` was a
   * refresh (of the write `written`), else `undefined` (rewritten, deleted,
   * or it cannot tell: the keep-alive ends). A refresh keeps the value and
   * createdIndex and leaves no event in v2's history; any other change
   * leaves one, which a wait from `index + 1` returns at once.
   */
  private async ownRefreshes(key: string, written: V2Node, index: number): Promise<number | undefined> {
    const signal = timeoutSignal(this.readAttempt, this.closing);
    const current = (await this.call('GET', leafPath(key), { quorum: true }, signal)).node;
    if (!current || current.createdIndex !== written.createdIndex || current.value !== written.value) {
      return undefined;
    }
    // An event in (index, current] comes back at once; none within a second means there is none.
    // Our own timeout signal (its timer holds it), so a composite of it cannot lose it to a GC.
    const quiet = timeoutSignal(Math.min(1_000, this.readAttempt));
    try {
      const event = await this.client.keys(
        'GET',
        leafPath(key),
        { wait: true, waitIndex: index + 1 },
        AbortSignal.any([signal, quiet]),
        this.readAttempt,
      );
      return event.node && event.node.modifiedIndex > current.modifiedIndex
        ? current.modifiedIndex
        : undefined;
    } catch (error) {
      if (quiet.aborted && !signal.aborted) return current.modifiedIndex;
      throw error;
    }
  }

  private forget(key: string): void {
    const entry = this.kept.get(key);
    if (!entry) return;
    if (entry.timer) clearTimeout(entry.timer);
    this.kept.delete(key);
  }

  // ---- watches ----

  /** One long poll on `path` from `waitIndex`; `undefined` when it timed out without an event. */
  async poll(
    path: string,
    waitIndex: number,
    recursive: boolean,
    signal: AbortSignal,
  ): Promise<V2Answer | undefined> {
    const stop = timeoutSignal(this.settings.pollTimeout, signal);
    try {
      // The attempt bound is the poll timeout itself: a silent long poll is normal, not a dead server.
      return await this.client.keys(
        'GET',
        path,
        { wait: true, waitIndex, recursive: recursive || undefined },
        stop,
        this.settings.pollTimeout + 1_000,
      );
    } catch (error) {
      if (!signal.aborted && stop.aborted) return undefined;
      throw error;
    }
  }

  /** Waits before retrying after `error`, or throws it when retrying cannot help. */
  private async retryAfter(
    error: unknown,
    attempt: number,
    signal: AbortSignal,
    operation: string,
  ): Promise<void> {
    if (signal.aborted) throw signal.reason;
    const mapped = this._mapError(error, operation);
    if (isPermanent(mapped)) throw mapped;
    await delay(backoff(attempt, 100, 2_000), signal);
  }

  protected override async *_watch(key: string, signal: AbortSignal): AsyncIterable<RawPair | null> {
    const path = leafPath(key);
    let next = 0;
    let failures = 0;
    // (Re)reads the state: the first one, after a cleared history, after a reconnect.
    let resync = true;
    while (!signal.aborted) {
      try {
        if (resync) {
          const state = await this.readLeaf(key, true, signal);
          resync = false;
          failures = 0;
          next = state.index + 1;
          yield state.pair;
          continue;
        }
        const answer = await this.poll(path, next, false, signal);
        failures = 0;
        if (!answer?.node) continue;
        next = answer.node.modifiedIndex + 1;
        const own = answer.node.key !== undefined && keyOfLeaf(answer.node.key) === key;
        yield own && PUT_ACTIONS.has(answer.action ?? '') ? this.pairOf(key, answer.node) : null;
      } catch (error) {
        if (isCode(error, V2.eventIndexCleared) || isCode(error, V2.watcherCleared)) {
          resync = true;
          continue;
        }
        await this.retryAfter(error, failures++, signal, 'watch');
        // After a lost connection, read again: the index may have been cleared meanwhile, and a
        // member that lagged would only make the poll wait.
        resync = true;
      }
    }
  }

  protected override async *_watchTreeChanges(
    dir: string,
    signal: AbortSignal,
  ): AsyncIterable<RawTreeUpdate> {
    const path = treePath(dir);
    let next = 0;
    let failures = 0;
    let resync = true;
    while (!signal.aborted) {
      try {
        if (resync) {
          const listing = await this.listing(dir, true, signal);
          resync = false;
          failures = 0;
          next = listing.index + 1;
          yield { type: 'listing', pairs: listing.pairs };
          continue;
        }
        const answer = await this.poll(path, next, true, signal);
        failures = 0;
        const node = answer?.node;
        if (!node) continue;
        next = node.modifiedIndex + 1;
        const action = answer.action ?? '';
        const key = node.key === undefined ? undefined : keyOfLeaf(node.key);
        if (key !== undefined) {
          yield PUT_ACTIONS.has(action)
            ? { type: 'changes', changes: [{ type: 'put', pair: this.pairOf(key, node) }] }
            : { type: 'changes', changes: [{ type: 'delete', key }] };
        } else if (!PUT_ACTIONS.has(action) && (node.dir || answer.prevNode?.dir)) {
          // A directory went (a deleteTree): which keys went with it, the event does not say.
          resync = true;
        }
      } catch (error) {
        if (isCode(error, V2.eventIndexCleared) || isCode(error, V2.watcherCleared)) {
          resync = true;
          continue;
        }
        await this.retryAfter(error, failures++, signal, 'watchTree');
        resync = true;
      }
    }
  }

  // ---- locks ----

  protected override _acquireLock(key: string, request: AcquireRequest): Promise<AcquiredLock | null> {
    return acquireV2Lock(this, key, request);
  }

  userKey(fullKey: string): string {
    return stripPrefix(this.prefix, fullKey);
  }

  /** Raised so the lock can tell a permanent failure from one worth retrying. */
  mapped(error: unknown, operation: string): KVError {
    return this._mapError(error, operation);
  }

  /** Used by the lock: the closing signal of the store. */
  get closingSignal(): AbortSignal {
    return this.closing;
  }

  protected async _close(): Promise<void> {
    for (const key of [...this.kept.keys()]) this.forget(key);
    this.client.halt();
  }
}
