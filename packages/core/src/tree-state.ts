import type { RawPair } from './base-store.js';
import { compareKeys } from './keys.js';
import type { KVPair, TreeChange, TreeEvent } from './types.js';

/** One change a backend's tree watch reports; keys are full storage keys, prefix included. */
export type RawTreeChange =
  | { readonly type: 'put'; readonly pair: RawPair }
  | { readonly type: 'delete'; readonly key: string };

/**
 * What a backend's incremental tree watch yields: a full listing (the first
 * state, or after a resync: it replaces everything known), or the changes of
 * one commit (or of several), applied in order.
 */
export type RawTreeUpdate =
  | { readonly type: 'listing'; readonly pairs: readonly RawPair[] }
  | { readonly type: 'changes'; readonly changes: readonly RawTreeChange[] };

/** Turns a full storage pair into a user pair, or `undefined` for a key the watch does not show. */
export interface TreeFilter {
  pair(raw: RawPair): KVPair | undefined;
  key(rawKey: string): string | undefined;
}

const byKey = (a: KVPair, b: KVPair): number => compareKeys(a.key, b.key);
const changeKey = (change: TreeChange): string => (change.type === 'put' ? change.pair.key : change.key);

/**
 * The state behind one `watchTree`. Backend updates are applied as they
 * arrive in O(1) per changed key (a full listing is kept as is until it is
 * needed); the sorted listing and the change list are built only when the
 * consumer pulls, once per pull, from everything that arrived meanwhile.
 * Only the latest state of each key is kept, so a slow consumer sees
 * intermediate states merged and the memory held is bounded by the
 * directory's size, never by the number of changes.
 */
export class TreeState {
  /** What the consumer was last given, by key and as the sorted listing. */
  private seen = new Map<string, KVPair>();
  private listing: readonly KVPair[] = [];
  /** A full listing not yet applied: it replaces `seen` at the next pull. */
  private reset: readonly RawPair[] | undefined;
  /** The latest state of each key changed since (after `reset`, if any); `null` is absent. */
  private readonly pending = new Map<string, KVPair | null>();
  private started = false;

  constructor(private readonly filter: TreeFilter) {}

  /** Number of keys whose state waits for the next pull (internal measure). */
  get pendingKeys(): number {
    return this.pending.size;
  }

  apply(update: RawTreeUpdate): void {
    if (update.type === 'listing') {
      this.reset = update.pairs;
      this.pending.clear();
      return;
    }
    for (const change of update.changes) {
      if (change.type === 'put') {
        const pair = this.filter.pair(change.pair);
        if (pair) this.pending.set(pair.key, pair);
      } else {
        const key = this.filter.key(change.key);
        if (key !== undefined) this.pending.set(key, null);
      }
    }
  }

  /**
   * The event for everything applied since the last one, or `undefined` when
   * nothing changed (the first call always gives an event, once a listing arrived).
   */
  take(): TreeEvent | undefined {
    if (!this.started && this.reset === undefined) return undefined;
    const changes = this.reset === undefined ? this.takeChanges() : this.takeReset();
    if (this.started && changes.length === 0) return undefined;
    this.started = true;
    // A copy: the consumer may keep or change its array, the next merge reads this one.
    return { pairs: this.listing.slice(), changes };
  }

  /** Changes of the pending keys against what was seen; `seen` and the listing merged in O(n + c log c). */
  private takeChanges(): TreeChange[] {
    const changes: TreeChange[] = [];
    for (const [key, pair] of this.pending) {
      const before = this.seen.get(key);
      if (pair === null) {
        if (before !== undefined) {
          changes.push({ type: 'delete', key });
          this.seen.delete(key);
        }
      } else if (before === undefined || before.lastIndex !== pair.lastIndex) {
        changes.push({ type: 'put', pair });
        this.seen.set(key, pair);
      }
    }
    this.pending.clear();
    if (changes.length === 0) return changes;
    changes.sort((a, b) => compareKeys(changeKey(a), changeKey(b)));
    const before = this.listing;
    const after: KVPair[] = [];
    let i = 0;
    for (const change of changes) {
      const key = changeKey(change);
      while (i < before.length && compareKeys((before[i] as KVPair).key, key) < 0)
        after.push(before[i++] as KVPair);
      if (i < before.length && (before[i] as KVPair).key === key) i++;
      if (change.type === 'put') after.push(change.pair);
    }
    while (i < before.length) after.push(before[i++] as KVPair);
    this.listing = after;
    return changes;
  }

  /** A full listing (and the changes after it) against what was seen: O(n log n), once per resync. */
  private takeReset(): TreeChange[] {
    const next = new Map<string, KVPair>();
    for (const raw of this.reset as readonly RawPair[]) {
      const pair = this.filter.pair(raw);
      if (pair) next.set(pair.key, pair);
    }
    this.reset = undefined;
    for (const [key, pair] of this.pending) {
      if (pair === null) next.delete(key);
      else next.set(key, pair);
    }
    this.pending.clear();
    const changes: TreeChange[] = [];
    for (const [key, pair] of next) {
      const before = this.seen.get(key);
      if (before === undefined || before.lastIndex !== pair.lastIndex) changes.push({ type: 'put', pair });
    }
    for (const key of this.seen.keys()) if (!next.has(key)) changes.push({ type: 'delete', key });
    changes.sort((a, b) => compareKeys(changeKey(a), changeKey(b)));
    this.seen = next;
    this.listing = [...next.values()].sort(byKey);
    return changes;
  }
}
