import {
  type AcquiredLock,
  type AcquireRequest,
  abortError,
  backoff,
  bufferView,
  delay,
  type KVError,
  LockLostError,
  monotonicNow,
} from '@kv/core';
import type { Etcd3, ICompare, IKeyValue, IRequestOp, IResponseOp } from 'etcd3';
import { isPermanent } from './etcd-errors.js';
import { keyBytes, NO_BYTES, num, waiterKey, waiterRange } from './etcd-keys.js';
import { keepAliveOnce, type LeaseKeeper } from './leases.js';
import { markOf, type WatchCursor, type WatchTarget } from './watch-cursor.js';

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

/** What the lock recipe needs from the store that runs it. */
export interface LockHost {
  readonly client: Etcd3;
  readonly keeper: LeaseKeeper;
  /** Grants a lease of `seconds` (refusing one the server made longer). */
  grant(seconds: number): Promise<string>;
  revoke(id: string): Promise<void>;
  /** Revokes in the background (the store's close waits for it, briefly). */
  revokeLater(id: string): void;
  /** Resolves when `key` is deleted at `fromRevision` or later. */
  waitForDelete(key: Buffer, fromRevision: number, signal: AbortSignal): Promise<void>;
  /** A watch of `target` from `fromRevision` on, until `signal` aborts (or it is closed). */
  openCursor(target: WatchTarget, fromRevision: number, signal: AbortSignal): WatchCursor;
  mapError(error: unknown, operation: string): KVError;
  /** A full etcd key as the store key the user gave. */
  userKey(full: string): string;
}

/** The lock primitive of the etcd store (`_acquireLock`), on leases and waiter keys. */
export class EtcdLocks {
  private readonly client: Etcd3;
  private readonly keeper: LeaseKeeper;

  constructor(private readonly host: LockHost) {
    this.client = host.client;
    this.keeper = host.keeper;
  }

  /**
   * etcd's lock recipe. Each contender grants a lease of the lock's ttl and
   * puts a waiter key `<key>\u0001lock/<lease>`; the waiter with the lowest
   * create revision holds the lock. If no waiter exists, one transaction puts
   * the waiter and the lock's value at `<key>`, both on the ttl lease.
   * Otherwise (only then) it grants a short queue lease
   * (`QUEUE_LEASE_SECONDS`, kept alive while waiting) and the waiter key goes
   * on it, so a waiter that dies leaves the queue within seconds, not within
   * the lock's ttl; the contender watches the queue until every waiter
   * created before it is gone, then, in
   * one transaction that requires its waiter key to still exist with its
   * create revision, moves that key onto the ttl lease and writes the value.
   * A put keeps a key's create revision, so the fencing token (the waiter's
   * create revision) is the revision the contender queued at, and tokens
   * grow with every holder: a holder only ever follows waiters created
   * before it. If the queue lease is lost while waiting, the waiter key is
   * gone and the contender queues again at the back. Unlock revokes the ttl
   * lease, which deletes both keys at once and wakes the next waiter.
   */
  async acquire(key: string, request: AcquireRequest): Promise<AcquiredLock | null> {
    const seconds = Math.ceil(request.ttl / 1000);
    for (;;) {
      if (request.signal.aborted) throw abortError(request.signal);
      // Monotonic: the loss deadline is a duration from here, immune to wall-clock jumps.
      const grantedAt = monotonicNow();
      const lease = await this.host.grant(seconds);
      // The queue lease is granted only when the lock is taken: an uncontended lock needs none.
      let queueLease: Promise<{ id: string; seconds: number }> | undefined;
      const queueLeaseOf = () => {
        queueLease ??= this.grantQueueLease();
        return queueLease;
      };
      let handedOver = false;
      try {
        const outcome = await this.contend(
          key,
          lease,
          request.wait ? queueLeaseOf : undefined,
          seconds,
          grantedAt,
          request,
        );
        if (outcome === 'again') continue;
        handedOver = outcome !== null;
        return outcome;
      } finally {
        if (!handedOver) this.host.revokeLater(lease);
        if (queueLease)
          void queueLease.then(
            (granted) => this.host.revokeLater(granted.id),
            () => {},
          );
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
    queueLeaseOf: (() => Promise<{ id: string; seconds: number }>) | undefined,
    seconds: number,
    grantedAt: number,
    request: AcquireRequest,
  ): Promise<AcquiredLock | null | 'again'> {
    const waiter = keyBytes(waiterKey(key, lease));
    const lockKey = keyBytes(key);
    const value = bufferView(request.value);
    const queue = waiterRange(key);
    /** Takes the lock if no waiter exists; else, with a queue lease, queues (and reads who is before). */
    const holdOrQueue = (queueLease: string | undefined) =>
      this.client.kv.txn({
        compare: [{ ...queue, target: 'Create', result: 'Equal', create_revision: 0 }],
        success: [
          { request_put: { key: waiter, value: NO_BYTES, lease } },
          { request_put: { key: lockKey, value, lease } },
        ],
        failure: queueLease
          ? [
              { request_range: { ...queue, keys_only: true } },
              { request_put: { key: waiter, value: NO_BYTES, lease: queueLease } },
            ]
          : [],
      });
    let first = await holdOrQueue(undefined);
    let queueLease: { id: string; seconds: number } | undefined;
    if (!first.succeeded && queueLeaseOf) {
      queueLease = await queueLeaseOf();
      if (request.signal.aborted) throw abortError(request.signal);
      first = await holdOrQueue(queueLease.id);
    }
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
    // The waiters before this one, by key; a waiter is first in line once none is left. The watch
    // of the queue tells of every change from the queueing on, so no read is needed in between:
    // the hand-over is the holder's revoke, the delete event, and the transaction below.
    const before = new Map<string, IKeyValue>();
    const learn = (kvs: IKeyValue[] | undefined) => {
      before.clear();
      for (const kv of kvs ?? []) {
        if (num(kv.create_revision) < mine) before.set(nameOf(kv.key), kv);
      }
    };
    learn(first.responses[0]?.response_range?.kvs);
    // The watch of the queue outlives the wait when this waiter acquires: the holder's own key is in it.
    const watch = new AbortController();
    const stopWatch = () => watch.abort();
    waiting.signal.addEventListener('abort', stopWatch, { once: true });
    const cursor = this.host.openCursor(queue, mine + 1, watch.signal);
    const reaper = this.reapDeadWaiters(() => lastOf(before), lockKey, waiting.signal);
    reaper.catch(() => {});
    let handedOver = false;
    try {
      for (let failures = 0; ; ) {
        if (request.signal.aborted) throw abortError(request.signal);
        if (leaseLost) return 'again';
        try {
          if (before.size === 0) {
            // First in line: move the waiter key (same create revision, so same token) onto the ttl
            // lease, provided it is still queued and no waiter created before it is left.
            const confirm = await this.client.kv.txn({
              compare: [
                { key: waiter, target: 'Create', result: 'Equal', create_revision: mine },
                { ...queue, target: 'Create', result: 'Greater', create_revision: mine - 1 },
              ],
              success: [
                { request_put: { key: waiter, value: NO_BYTES, lease } },
                { request_put: { key: lockKey, value, lease } },
              ],
              failure: [
                { request_range: { key: waiter, keys_only: true } },
                { request_range: { ...queue, keys_only: true, max_create_revision: mine - 1 } },
              ],
            });
            if (!confirm.succeeded) {
              if (!stillQueued(confirm.responses[0], mine)) return 'again';
              learn(confirm.responses[1]?.response_range?.kvs);
              continue;
            }
            if (request.signal.aborted) throw abortError(request.signal);
            // The lease, and so the lock, runs at least its ttl from the last renewal the server confirmed.
            const sentAt = this.keeper.confirmedSentAt(lease) ?? grantedAt;
            this.keeper.remove(lease);
            handedOver = true;
            waiting.signal.removeEventListener('abort', stopWatch);
            return this.holding(key, waiter, lease, mine, num(confirm.header.revision), sentAt, request, {
              cursor,
              stop: watch,
            });
          }
          const item = await cursor.next();
          failures = 0;
          if (item.type !== 'events') {
            // Compacted or rewound: read the queue again and go on from there.
            const now = await this.client.kv.txn({
              success: [
                { request_range: { key: waiter, keys_only: true } },
                { request_range: { ...queue, keys_only: true, max_create_revision: mine - 1 } },
              ],
            });
            if (!stillQueued(now.responses[0], mine)) return 'again';
            learn(now.responses[1]?.response_range?.kvs);
            cursor.reset(num(now.header.revision) + 1, markOf(now.header));
            continue;
          }
          for (const event of item.events) {
            const name = nameOf(event.kv.key);
            if (event.type === 'Delete') {
              // This waiter's own key deleted: its place is lost (the confirm would fail); queue again.
              if (name === nameOf(waiter)) return 'again';
              before.delete(name);
            } else if (before.has(name)) {
              before.set(name, event.kv);
            }
          }
        } catch (error) {
          if (request.signal.aborted) throw abortError(request.signal);
          if (leaseLost) return 'again';
          const mapped = this.host.mapError(error, 'lock');
          if (isPermanent(mapped)) throw mapped;
          // The server is unreachable: keep waiting; the lease keeper decides whether our place is lost.
          await delay(backoff(failures++, 100, 2_000), waiting.signal).catch(() => {});
        }
      }
    } finally {
      request.signal.removeEventListener('abort', onAbort);
      waiting.abort();
      if (!handedOver) watch.abort();
      this.keeper.remove(lease);
      this.keeper.remove(queueLease.id);
    }
  }

  /**
   * While this one waits: looks at the queue lease of the waiter just before
   * it every `QUEUE_PROBE_MS`. A live waiter renews it every
   * `QUEUE_KEEPALIVE_MS`, so it always has more than 1 s left; one with less
   * (etcd says 0 s) has stopped renewing, and its key is deleted in a
   * transaction that requires it unchanged since it was seen (it never moved
   * onto a ttl lease, so it never held) and not on the lock key's lease. The
   * queue watch then sees the delete. Deleting a waiter's key never frees a
   * held lock: a waiter holds only through a transaction that requires its
   * own key, with its create revision. A waiter stalled that long merely
   * queues again. Ends (rejects) when `signal` aborts.
   */
  private async reapDeadWaiters(
    previous: () => IKeyValue | undefined,
    lockKey: Buffer,
    signal: AbortSignal,
  ): Promise<void> {
    const given = new Set<string>();
    for (;;) {
      await delay(QUEUE_PROBE_MS, signal);
      const kv = previous();
      if (!kv || !isQueued(kv)) continue;
      const seen = `${nameOf(kv.key)}@${kv.mod_revision}`;
      if (given.has(seen)) continue;
      const lease = String(kv.lease);
      try {
        const ttl = await this.client.leaseClient.leaseTimeToLive({ ID: lease });
        if (num(ttl.TTL) > 0) continue;
        const reap = await this.client.kv.txn({
          compare: [
            { key: kv.key, target: 'Mod', result: 'Equal', mod_revision: kv.mod_revision },
            { key: lockKey, target: 'Lease', result: 'NotEqual', lease },
          ],
          success: [{ request_delete_range: { key: kv.key } }],
        });
        // Changed since (it acquired, or someone else reaped it): the watch tells.
        if (!reap.succeeded) given.add(seen);
      } catch {
        // Unreachable: try again at the next probe.
      }
    }
  }

  /**
   * `tryLock()` found waiters: if none holds (no waiter key on the lock key's
   * lease) and every one has stopped renewing its queue lease (etcd says 0 s
   * left; see `reapDeadWaiters`), one transaction deletes their keys, provided
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
        { request_put: { key: waiter, value: NO_BYTES, lease } },
        { request_put: { key: lockKey, value, lease } },
      ],
    });
    if (!taken.succeeded) return null;
    if (request.signal.aborted) throw abortError(request.signal);
    const token = num(taken.header.revision);
    return this.holding(key, waiter, lease, token, token, grantedAt, request);
  }

  /** Resolves when the queue watch (which this holder queued with) sees its own key deleted. */
  private async ownKeyDeleted(cursor: WatchCursor, waiter: Buffer): Promise<void> {
    const name = nameOf(waiter);
    try {
      for (;;) {
        const item = await cursor.next();
        if (item.type !== 'events') {
          const now = await this.client.kv.range({ key: waiter, count_only: true });
          if (num(now.count) === 0) return;
          cursor.reset(num(now.header.revision) + 1, markOf(now.header));
          continue;
        }
        if (item.events.some((event) => event.type === 'Delete' && nameOf(event.kv.key) === name)) return;
      }
    } finally {
      cursor.close();
    }
  }

  private holding(
    key: string,
    waiter: Buffer,
    lease: string,
    token: number,
    heldSince: number,
    sentAt: number,
    request: AcquireRequest,
    queued?: { cursor: WatchCursor; stop: AbortController },
  ): AcquiredLock {
    const watching = queued?.stop ?? new AbortController();
    const deleted = queued
      ? this.ownKeyDeleted(queued.cursor, waiter)
      : this.host.waitForDelete(waiter, heldSince + 1, watching.signal);
    void deleted.then(
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
        if (ttl <= 0) throw new LockLostError(this.host.userKey(key), 'its lease expired');
      },
      release: async () => {
        watching.abort();
        await this.host.revoke(lease);
      },
    };
  }
}

/** A key as a map key (byte for byte). */
function nameOf(key: Buffer): string {
  return Buffer.from(key).toString('latin1');
}

/** The waiter created last of these: the one just before a waiter. */
function lastOf(waiters: Map<string, IKeyValue>): IKeyValue | undefined {
  let last: IKeyValue | undefined;
  for (const kv of waiters.values()) {
    if (!last || num(kv.create_revision) > num(last.create_revision)) last = kv;
  }
  return last;
}

/** The read of a waiter's own key says it is still there, created at `mine`. */
function stillQueued(response: IResponseOp | undefined, mine: number): boolean {
  const kv = response?.response_range?.kvs?.[0];
  return kv !== undefined && num(kv.create_revision) === mine;
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
