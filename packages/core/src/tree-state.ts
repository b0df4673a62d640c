import type { RawPair } from './base-store.js';
import { compareKeys, samePair } from './keys.js';
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

/** Most events kept as change lists before they are folded into a new base listing. */
const LOG_EVENTS = 32;

const byKey = (a: KVPair, b: KVPair): number => compareKeys(a.key, b.key);
const changeKey = (change: TreeChange): string => (change.type === 'put' ? change.pair.key : change.key);

/** The arrays joined into one new array. */
function concat(parts: readonly (readonly KVPair[])[]): KVPair[] {
  // `concat` copies whole runs at once; with many runs, element by element keeps its argument list short.
  if (parts.length <= 1024) return ([] as KVPair[]).concat(...parts);
  const out: KVPair[] = [];
  for (const part of parts) for (const pair of part) out.push(pair);
  return out;
}

/** The first index at or after `from` whose key does not sort before `key`. */
function lowerBound(listing: readonly KVPair[], key: string, from: number): number {
  let lo = from;
  let hi = listing.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareKeys((listing[mid] as KVPair).key, key) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The changes of several events, in order, as one net change per key, sorted by key. */
function combine(log: readonly (readonly TreeChange[])[], length: number): TreeChange[] {
  if (length === 1) return log[0] as TreeChange[];
  const latest = new Map<string, TreeChange>();
  for (let i = 0; i < length; i++)
    for (const change of log[i] as readonly TreeChange[]) latest.set(changeKey(change), change);
  return [...latest.values()].sort((a, b) => compareKeys(changeKey(a), changeKey(b)));
}

/** A sorted listing with sorted changes applied: a new array. Unchanged runs are copied in slices, without comparing keys. */
function applyChanges(before: readonly KVPair[], changes: readonly TreeChange[]): KVPair[] {
  const parts: (readonly KVPair[])[] = [];
  let i = 0;
  for (const change of changes) {
    const key = changeKey(change);
    const at = lowerBound(before, key, i);
    if (at > i) parts.push(before.slice(i, at));
    i = at;
    if (i < before.length && (before[i] as KVPair).key === key) i++;
    if (change.type === 'put') parts.push([change.pair]);
  }
  if (i < before.length) parts.push(i === 0 ? before : before.slice(i));
  return concat(parts);
}

/**
 * The state behind one `watchTree`. Backend updates are applied as they
 * arrive, in O(1) per changed key (a full listing is kept as is until it is
 * needed). A pull turns everything that arrived meanwhile into one event:
 * the change list in O(c log c) for c changed keys, and the sorted listing,
 * built at most once per event and only if the consumer reads `pairs`
 * (O(n) copying from the last listing built, no sorting). Only the latest
 * state of each key is kept, so a slow consumer sees intermediate states
 * merged, and the memory held is bounded by the directory's size, never by
 * the number of changes.
 */
export class TreeState {
  /** What the consumer was last given, by key. */
  private seen = new Map<string, KVPair>();
  /** A sorted listing, and the change lists given since: together they are `seen`, in order. Never handed out. */
  private base: readonly KVPair[] = [];
  private log: (readonly TreeChange[])[] = [];
  private logged = 0;
  /** A full listing not yet applied: it replaces `seen` at the next pull. */
  private reset: readonly RawPair[] | undefined;
  /** The latest state of each key changed since (after `reset`, if any); `null` is absent. */
  private readonly pending = new Map<string, KVPair | null>();
  private started = false;
  private built = 0;

  constructor(private readonly filter: TreeFilter) {}

  /** Number of keys whose state waits for the next pull (internal measure). */
  get pendingKeys(): number {
    return this.pending.size;
  }

  /** Number of full listings built so far, for events and for compaction (internal measure). */
  get listingsBuilt(): number {
    return this.built;
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
        if (key === undefined) continue;
        // A key the consumer never saw needs no delete: forgetting it keeps `pending` bounded by the
        // directory, not by how many keys came and went (unless a listing waits to be compared).
        if (this.reset === undefined && !this.seen.has(key)) this.pending.delete(key);
        else this.pending.set(key, null);
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
    return this.event(changes);
  }

  /** An event whose `pairs` is built when first read: what the consumer saw up to this event, sorted. */
  private event(changes: TreeChange[]): TreeEvent {
    const { base, log, countBuilt } = this;
    const length = log.length;
    let pairs: KVPair[] | undefined;
    return {
      changes,
      get pairs(): KVPair[] {
        if (pairs === undefined) {
          countBuilt();
          // A copy either way: the consumer may keep or change its array.
          pairs = length === 0 ? base.slice() : applyChanges(base, combine(log, length));
        }
        return pairs;
      },
      set pairs(value: KVPair[]) {
        pairs = value;
      },
    };
  }

  private readonly countBuilt = () => {
    this.built++;
  };

  /** The changes of the pending keys against what was seen; `seen` updated. */
  private takeChanges(): TreeChange[] {
    const changes: TreeChange[] = [];
    for (const [key, pair] of this.pending) {
      const before = this.seen.get(key);
      if (pair === null) {
        if (before !== undefined) {
          changes.push({ type: 'delete', key });
          this.seen.delete(key);
        }
      } else if (before === undefined || !samePair(before, pair)) {
        changes.push({ type: 'put', pair });
        this.seen.set(key, pair);
      }
    }
    this.pending.clear();
    if (changes.length === 0) return changes;
    changes.sort((a, b) => compareKeys(changeKey(a), changeKey(b)));
    // Events taken before hold this log with their length: pushing keeps their entries; folding starts a new log.
    // A copy: the consumer owns `event.changes` and may change it.
    this.log.push(changes.slice());
    this.logged += changes.length;
    // Folded into the base now and then, so reading `pairs` never replays a long log: O(n) per
    // LOG_EVENTS events or per n/4 changes, whichever comes first.
    if (this.log.length >= LOG_EVENTS || this.logged > Math.max(256, this.base.length >> 2)) {
      this.countBuilt();
      this.base = applyChanges(this.base, combine(this.log, this.log.length));
      this.log = [];
      this.logged = 0;
    }
    return changes;
  }

  /**
   * A full listing (and the changes after it) against what was seen: O(n)
   * map lookups and the changed keys merged into the listing; a full sort
   * only when most keys changed (the first listing). A backend that yields
   * only full listings (`_watchTree`) pays this once per pull, not per commit.
   */
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
      if (before === undefined || !samePair(before, pair)) changes.push({ type: 'put', pair });
    }
    for (const key of this.seen.keys()) if (!next.has(key)) changes.push({ type: 'delete', key });
    changes.sort((a, b) => compareKeys(changeKey(a), changeKey(b)));
    this.seen = next;
    if (changes.length > 0 || this.log.length > 0) {
      this.countBuilt();
      if (changes.length * 2 > next.size) {
        this.base = [...next.values()].sort(byKey);
      } else {
        const current =
          this.log.length > 0 ? applyChanges(this.base, combine(this.log, this.log.length)) : this.base;
        this.base = applyChanges(current, changes);
      }
    }
    this.log = [];
    this.logged = 0;
    return changes;
  }
}
