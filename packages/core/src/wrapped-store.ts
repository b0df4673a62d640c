import {
  BaseStore,
  DEFAULT_TIMEOUT,
  type PrimitiveReadOptions,
  type PrimitiveWriteOptions,
  type RawPair,
} from './base-store.js';
import { LockLostError, NotSupportedError } from './errors.js';
import { joinKey, stripPrefix } from './keys.js';
import type { AcquiredLock, AcquireRequest } from './lock.js';
import type { RawTreeChange, RawTreeUpdate } from './tree-state.js';
import type { Capabilities, KVPair, Store, WriteOptions } from './types.js';

/** Extra ms a wrapper's own bound waits past the inner store's, so the inner store's error is the one seen. */
const BOUND_MARGIN = 1_000;

/**
 * A store built on another store's public calls, to change what values look
 * like on the way in and out (encryption, checks) without touching keys,
 * indexes or semantics. It is a `BaseStore`, so it validates like every store,
 * and every public call the base class has (today's and later ones) works
 * through it: the base class calls these primitives, which call the inner
 * store.
 *
 * Subclasses implement `encodeValue` and `decodeValue`; `key` is the user key
 * (without the store prefix). `close()` closes the inner store too: the
 * wrapper owns it.
 */
export abstract class WrappedStore extends BaseStore {
  /** The store this one writes through. */
  readonly inner: Store;

  protected constructor(inner: Store, capabilities: Partial<Capabilities> = {}) {
    const timeout = (inner as { requestTimeout?: unknown }).requestTimeout;
    super({
      backend: inner.backend,
      capabilities: { ...inner.capabilities, ...capabilities },
      prefix: inner.prefix,
      requestTimeout: (typeof timeout === 'number' ? timeout : DEFAULT_TIMEOUT) + BOUND_MARGIN,
    });
    this.inner = inner;
  }

  /** The bytes to store for `value` at `key`. */
  protected abstract encodeValue(key: string, value: Uint8Array): Uint8Array | Promise<Uint8Array>;
  /** The value the stored `bytes` at `key` stand for; throws a `KVError` when they are not acceptable. */
  protected abstract decodeValue(key: string, bytes: Uint8Array): Uint8Array | Promise<Uint8Array>;

  /** The inner store's key for a full storage key of this store. */
  private innerKey(full: string): string {
    return stripPrefix(this.prefix, full);
  }

  private async raw(pair: KVPair): Promise<RawPair> {
    return {
      key: joinKey(this.prefix, pair.key),
      value: await this.decodeValue(pair.key, pair.value),
      lastIndex: pair.lastIndex,
    };
  }

  private writeOptionsFor(options: PrimitiveWriteOptions): WriteOptions {
    const out: WriteOptions = { signal: options.signal };
    if (options.ttl !== undefined) out.ttl = options.ttl;
    if (options.keepAlive) out.keepAlive = true;
    return out;
  }

  /** The inner store's figure, when it can tell (a `BaseStore`, or any store with `remainingTtl`). */
  protected override async _remainingTtl(full: string, signal: AbortSignal): Promise<number | undefined> {
    const inner = this.inner as Store & Partial<Pick<BaseStore, 'remainingTtl'>>;
    if (typeof inner.remainingTtl !== 'function') throw new NotSupportedError(this.backend, 'remainingTtl');
    return inner.remainingTtl(this.innerKey(full), { signal });
  }

  protected async _get(full: string, options: PrimitiveReadOptions): Promise<RawPair | null> {
    const key = this.innerKey(full);
    const read = options.consistent
      ? { signal: options.signal, consistent: true }
      : { signal: options.signal };
    const pair = await this.inner.tryGet(key, read);
    return pair === null ? null : this.raw(pair);
  }

  protected override _exists(full: string, options: PrimitiveReadOptions): Promise<boolean> {
    const read = options.consistent
      ? { signal: options.signal, consistent: true }
      : { signal: options.signal };
    return this.inner.exists(this.innerKey(full), read);
  }

  protected async _put(full: string, value: Uint8Array, options: PrimitiveWriteOptions): Promise<void> {
    const key = this.innerKey(full);
    await this.inner.put(key, await this.encodeValue(key, value), this.writeOptionsFor(options));
  }

  protected _delete(full: string, signal: AbortSignal): Promise<void> {
    return this.inner.delete(this.innerKey(full), { signal });
  }

  protected async _list(dir: string, options: PrimitiveReadOptions): Promise<RawPair[]> {
    const read = options.consistent
      ? { signal: options.signal, consistent: true }
      : { signal: options.signal };
    const pairs = await this.inner.list(this.innerKey(dir), read);
    return Promise.all(pairs.map((pair) => this.raw(pair)));
  }

  protected _deleteTree(dir: string, signal: AbortSignal): Promise<void> {
    return this.inner.deleteTree(this.innerKey(dir), { signal });
  }

  protected async _atomicPut(
    full: string,
    value: Uint8Array,
    previousIndex: number | null,
    options: PrimitiveWriteOptions,
  ): Promise<RawPair> {
    const key = this.innerKey(full);
    const previous =
      previousIndex === null ? null : { key, value: new Uint8Array(0), lastIndex: previousIndex };
    const bytes = await this.encodeValue(key, value);
    const pair = await this.inner.atomicPut(key, bytes, previous, this.writeOptionsFor(options));
    // What was written is `value`: no need to decrypt or re-check it.
    return { key: full, value, lastIndex: pair.lastIndex };
  }

  protected _atomicDelete(full: string, previousIndex: number, signal: AbortSignal): Promise<void> {
    const key = this.innerKey(full);
    return this.inner.atomicDelete(
      key,
      { key, value: new Uint8Array(0), lastIndex: previousIndex },
      { signal },
    );
  }

  protected override async *_watch(full: string, signal: AbortSignal): AsyncIterable<RawPair | null> {
    for await (const pair of this.inner.watch(this.innerKey(full), { signal })) {
      yield pair === null ? null : await this.raw(pair);
    }
  }

  protected override async *_watchTreeChanges(
    dir: string,
    signal: AbortSignal,
  ): AsyncIterable<RawTreeUpdate> {
    let first = true;
    for await (const event of this.inner.watchTree(this.innerKey(dir), { signal })) {
      if (first) {
        first = false;
        yield { type: 'listing', pairs: await Promise.all(event.pairs.map((pair) => this.raw(pair))) };
        continue;
      }
      const changes: RawTreeChange[] = await Promise.all(
        event.changes.map(
          async (change): Promise<RawTreeChange> =>
            change.type === 'put'
              ? { type: 'put', pair: await this.raw(change.pair) }
              : { type: 'delete', key: joinKey(this.prefix, change.key) },
        ),
      );
      yield { type: 'changes', changes };
    }
  }

  protected override async _acquireLock(full: string, request: AcquireRequest): Promise<AcquiredLock | null> {
    const key = this.innerKey(full);
    const lock = this.inner.newLock(key, {
      value: await this.encodeValue(key, request.value),
      ttl: request.ttl,
    });
    const lease = request.wait
      ? await lock.lock({ signal: request.signal })
      : await lock.tryLock({ signal: request.signal });
    if (!lease) return null;
    const onLost = () => {
      const reason = lease.lost.reason as { reason?: unknown } | undefined;
      request.onLost(typeof reason?.reason === 'string' ? reason.reason : 'the inner lock was lost', reason);
    };
    if (lease.lost.aborted) onLost();
    else lease.lost.addEventListener('abort', onLost, { once: true });
    return {
      fencingToken: lease.fencingToken,
      // The inner lock renews itself; this only reports what it knows.
      renew: async () => {
        if (lease.lost.aborted) throw new LockLostError(key, 'the inner lock was lost');
      },
      release: async () => {
        lease.lost.removeEventListener('abort', onLost);
        await lock.unlock();
      },
    };
  }

  protected async _close(): Promise<void> {
    await this.inner.close();
  }
}
