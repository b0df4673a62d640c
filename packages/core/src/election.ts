import { bufferView } from './bytes.js';
import { InvalidArgumentError } from './errors.js';
import { toBytes } from './keys.js';
import type { CallOptions, Store, Value } from './types.js';

export interface CampaignOptions extends CallOptions {
  /** Stored at the election key while this candidate leads: what `observe` shows (e.g. its address). */
  value?: Value;
  /** ms: a leader that dies is replaced within this (plus the backend's `ttlGranularity`). */
  ttl?: number;
}

/** What `campaign` resolves to once this candidate leads. */
export interface Leadership extends AsyncDisposable {
  readonly key: string;
  /** Aborts when this candidate stops leading: `resign()`, the store closed, or leadership lost. */
  readonly lost: AbortSignal;
  /** Strictly greater than every token of an earlier leader: pass it to what the leader writes to. */
  readonly fencingToken: number;
  /** Steps down at once: a waiting candidate leads without waiting for any ttl. */
  resign(): Promise<void>;
}

/**
 * Waits until this candidate leads the election at `key`, then resolves to
 * its leadership. Built on the store's lock: at most one leader at a time,
 * across processes; a leader that cannot renew sees `lost` abort before
 * another can lead. Aborting `signal` stops waiting (an `AbortError`).
 */
export async function campaign(
  store: Store,
  key: string,
  options: CampaignOptions = {},
): Promise<Leadership> {
  const { value, ttl, signal } = options;
  const lock = store.newLock(key, {
    ...(value === undefined ? {} : { value }),
    ...(ttl === undefined ? {} : { ttl }),
  });
  const lease = await lock.lock(signal ? { signal } : {});
  return {
    key: lock.key,
    lost: lease.lost,
    fencingToken: lease.fencingToken,
    resign: () => lock.unlock(),
    [Symbol.asyncDispose]: () => lock.unlock(),
  };
}

/** The leader as `observe` shows it. */
export interface Leader {
  /** The value the leader campaigned with. */
  readonly value: Uint8Array;
  readonly lastIndex: number;
}

/**
 * Yields the current leader of the election at `key` (`null` when there is
 * none), then each change, until `signal` aborts or the loop breaks. A
 * leader is shown by its value: candidates should campaign with distinct
 * values (their id or address), or a hand-over between two equal values
 * may show as no change.
 */
export async function* observe(
  store: Store,
  key: string,
  options: CallOptions = {},
): AsyncGenerator<Leader | null, void, undefined> {
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object');
  let last: Uint8Array | null | undefined;
  for await (const pair of store.watch(key, options.signal ? { signal: options.signal } : {})) {
    const value = pair === null ? null : pair.value;
    if (last !== undefined && sameValue(last, value)) continue;
    last = value;
    yield pair === null ? null : { value: pair.value, lastIndex: pair.lastIndex };
  }
}

function sameValue(a: Uint8Array | null, b: Uint8Array | null): boolean {
  if (a === null || b === null) return a === b;
  return bufferView(a).equals(toBytes(b));
}
