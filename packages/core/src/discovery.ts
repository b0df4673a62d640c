import { DEFAULT_KEEPALIVE_TTL } from './base-store.js';
import { backoff, delay } from './call.js';
import { InvalidArgumentError, isAbortError, KVError } from './errors.js';
import { joinKey, normalizeKey } from './keys.js';
import type { CallOptions, KVPair, Store, Value } from './types.js';

export interface RegisterOptions extends CallOptions {
  /** This member's name in the directory: one key segment (no `/`). */
  id: string;
  /** What other members see (an address, a JSON description). Empty by default. */
  value?: Value;
  /**
   * ms: a member that crashes disappears within this (plus the backend's
   * `ttlGranularity`). Default 15 000, or the backend's `minTtl` if larger.
   */
  ttl?: number;
}

/** A member entry kept alive by `register`. */
export interface Registration extends AsyncDisposable {
  /** The member key, `<dir>/<id>`. */
  readonly key: string;
  /** Removes the entry and stops keeping it. Calling it twice is fine. */
  close(): Promise<void>;
}

/**
 * Keeps an ephemeral entry `<dir>/<id>` (a keep-alive key) until closed. When
 * the entry disappears while registered (it expired during a partition, or
 * someone deleted it), it is written again as soon as the store can reach
 * its server. Resolves once the entry is written.
 */
export async function register(
  store: Store,
  directory: string,
  options: RegisterOptions,
): Promise<Registration> {
  const { id, value = new Uint8Array(0), ttl, signal } = options ?? ({} as RegisterOptions);
  if (typeof id !== 'string' || id.includes('/') || normalizeKey(id) !== id) {
    throw new InvalidArgumentError(`register: id must be one key segment, got ${JSON.stringify(id)}`);
  }
  const key = joinKey(normalizeKey(directory, true), id);
  const write = {
    keepAlive: true,
    ttl: ttl ?? Math.max(DEFAULT_KEEPALIVE_TTL, store.capabilities.minTtl),
  };
  await store.put(key, value, { ...write, ...(signal ? { signal } : {}) });

  const stop = new AbortController();
  const keeper = (async () => {
    for (let attempt = 0; !stop.signal.aborted; ) {
      try {
        for await (const pair of store.watch(key, { signal: stop.signal })) {
          attempt = 0;
          if (pair === null && !stop.signal.aborted)
            await store.put(key, value, { ...write, signal: stop.signal });
        }
        return; // the store closed or we were stopped
      } catch (error) {
        if (stop.signal.aborted || isAbortError(error)) return;
        if (KVError.isInstance(error) && (error.code === 'CLOSED' || error.code === 'NOT_SUPPORTED')) return;
        await delay(backoff(attempt++), stop.signal).catch(() => {});
      }
    }
  })();

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      stop.abort();
      await keeper;
      await store.delete(key).catch((error: unknown) => {
        if (!(KVError.isInstance(error) && error.code === 'CLOSED')) throw error;
      });
    })();
    return closing;
  };
  return { key, close, [Symbol.asyncDispose]: close };
}

/** One member as `members` lists it. */
export interface Member {
  /** Its id: the key below the directory. */
  readonly id: string;
  readonly value: Uint8Array;
  readonly lastIndex: number;
}

/**
 * Yields the members of `dir`, sorted by id, first as they are now and again
 * on every change (a member joins, leaves, expires or changes its value),
 * until `signal` aborts or the loop breaks.
 */
export async function* members(
  store: Store,
  directory: string,
  options: CallOptions = {},
): AsyncGenerator<Member[], void, undefined> {
  const dir = normalizeKey(directory, true);
  const cut = dir === '' ? 0 : dir.length + 1;
  let last: Member[] | undefined;
  for await (const event of store.watchTree(dir, options.signal ? { signal: options.signal } : {})) {
    const list = event.pairs.map((pair: KVPair) => ({
      id: pair.key.slice(cut),
      value: pair.value,
      lastIndex: pair.lastIndex,
    }));
    // A renewal that rewrites an entry is not a change of membership.
    if (last && sameMembers(last, list)) continue;
    last = list;
    yield list;
  }
}

function sameMembers(a: readonly Member[], b: readonly Member[]): boolean {
  return (
    a.length === b.length &&
    a.every((m, i) => {
      const n = b[i] as Member;
      return m.id === n.id && Buffer.from(m.value).equals(Buffer.from(n.value));
    })
  );
}
