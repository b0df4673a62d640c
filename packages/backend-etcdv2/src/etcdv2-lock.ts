import {
  type AcquiredLock,
  type AcquireRequest,
  abortError,
  backoff,
  delay,
  LockLostError,
  monotonicNow,
  timeoutSignal,
} from '@kv/core';
import type { V2Node } from './etcdv2-client.js';
import { isCode, isPermanent, V2 } from './etcdv2-errors.js';
import { encodeValue, leafPath, nodePath, queuePath } from './etcdv2-layout.js';
import type { EtcdV2Store } from './etcdv2-store.js';

/** s: the ttl of a waiter's place in a queue, renewed while it waits, so a dead waiter leaves within seconds. */
const QUEUE_TTL_S = 2;
/** ms between renewals of a waiting place: a live waiter's place always shows 2 s left (v2 rounds up). */
const QUEUE_REFRESH_MS = 400;
/** ms between looks at the queue while waiting (the predecessor's delete is awaited meanwhile). */
const PROBE_MS = 250;
const WAITING = 'w';
const HOLDING = 'h';

const seconds = (ms: number): number => Math.max(1, Math.ceil(ms / 1000));

/**
 * A lock on etcd v2's in-order keys. A contender POSTs a place into the
 * queue `<key>/\u0001q/` (value `w`, a short ttl it renews while waiting);
 * places are named by their createdIndex, so the queue's order is arrival
 * order. The first place holds: its owner turns it into `h` with the lock's
 * ttl, in a CAS on its own modifiedIndex (so a place reaped meanwhile never
 * holds), and writes the lock's value at the key. Each other waiter waits
 * for the delete of the place just before it, and looks at the queue every
 * `PROBE_MS`: a waiting place whose ttl is down to 1 s has stopped renewing
 * (its owner died) and is deleted by CAS on its index; a holding place is
 * never reaped, it expires with the lock's ttl. The fencing token is the
 * place's createdIndex: a holder is first in the queue, so every place
 * created before it is gone for good.
 */
export async function acquireV2Lock(
  store: EtcdV2Store,
  key: string,
  request: AcquireRequest,
): Promise<AcquiredLock | null> {
  const queue = queuePath(key);
  const { signal } = request;
  for (let failures = 0; ; ) {
    if (signal.aborted) throw abortError(signal);
    let place: V2Node;
    try {
      place = (await store.call('POST', queue, { value: WAITING, ttl: QUEUE_TTL_S }, signal)).node as V2Node;
    } catch (error) {
      if (!request.wait || signal.aborted || isPermanent(store.mapped(error, 'lock'))) throw error;
      await delay(backoff(failures++, 100, 2_000), signal);
      continue;
    }
    const outcome = await contend(store, key, queue, place, request);
    if (outcome !== 'again') return outcome;
  }
}

async function contend(
  store: EtcdV2Store,
  key: string,
  queue: string,
  place: V2Node,
  request: AcquireRequest,
): Promise<AcquiredLock | null | 'again'> {
  const { signal } = request;
  const path = nodePath(place.key as string);
  let index = place.modifiedIndex;
  let placeLost = false;
  const refresher = new AbortController();
  const refreshing = (async () => {
    const stop = AbortSignal.any([refresher.signal, signal]);
    while (!stop.aborted) {
      await delay(QUEUE_REFRESH_MS, stop).catch(() => {});
      if (stop.aborted) return;
      try {
        const answer = await store.call(
          'PUT',
          path,
          { refresh: true, prevExist: true, prevIndex: index, ttl: QUEUE_TTL_S },
          timeoutSignal(QUEUE_REFRESH_MS * 2, stop),
        );
        if (answer.node) index = answer.node.modifiedIndex;
      } catch (error) {
        if (isCode(error, V2.keyNotFound) || isCode(error, V2.compareFailed)) {
          placeLost = true;
          return;
        }
      }
    }
  })();
  let handedOver = false;
  const giveUp = async () => {
    refresher.abort();
    await refreshing;
    if (!handedOver) {
      await store
        .call('DELETE', path, { prevIndex: index }, AbortSignal.timeout(store.requestTimeout))
        .catch(() => {});
    }
  };
  try {
    for (let failures = 0; ; ) {
      if (signal.aborted) throw abortError(signal);
      if (placeLost) return request.wait ? 'again' : null;
      try {
        const read = await store.call('GET', queue, { sorted: true, quorum: true }, signal);
        const places = (read.node?.nodes ?? []).filter((n) => !n.dir);
        const at = places.findIndex((n) => n.key === place.key);
        if (at < 0) return request.wait ? 'again' : null;
        const before = places.slice(0, at);
        const live: V2Node[] = [];
        for (const other of before) {
          if (other.value === WAITING && (other.ttl ?? QUEUE_TTL_S) <= 1) {
            await store
              .call('DELETE', nodePath(other.key as string), { prevIndex: other.modifiedIndex }, signal)
              .catch(() => {});
          } else {
            live.push(other);
          }
        }
        if (before.length > 0 && live.length === 0) continue;
        if (before.length === 0) {
          refresher.abort();
          await refreshing;
          if (placeLost) return request.wait ? 'again' : null;
          const sentAt = monotonicNow();
          let held: V2Node;
          try {
            held = (
              await store.call(
                'PUT',
                path,
                { value: HOLDING, prevIndex: index, ttl: seconds(request.ttl) },
                signal,
              )
            ).node as V2Node;
          } catch (error) {
            if (isCode(error, V2.keyNotFound) || isCode(error, V2.compareFailed))
              return request.wait ? 'again' : null;
            throw error;
          }
          index = held.modifiedIndex;
          handedOver = true;
          return await holding(store, key, path, place.createdIndex, held.modifiedIndex, sentAt, request);
        }
        if (!request.wait) return null;
        const previous = live[live.length - 1] as V2Node;
        await waitForTurn(store, previous, read.index + 1, signal);
        failures = 0;
      } catch (error) {
        if (signal.aborted) throw abortError(signal);
        if (!request.wait || isPermanent(store.mapped(error, 'lock'))) throw error;
        await delay(backoff(failures++, 100, 2_000), signal);
      }
    }
  } finally {
    await giveUp();
  }
}

/** Until the place before this one goes, or `PROBE_MS` passed (then the queue is read again). */
async function waitForTurn(
  store: EtcdV2Store,
  previous: V2Node,
  from: number,
  signal: AbortSignal,
): Promise<void> {
  const stop = new AbortController();
  const both = AbortSignal.any([stop.signal, signal]);
  const path = nodePath(previous.key as string);
  const watching = (async () => {
    for (;;) {
      const answer = await store.poll(path, from, false, both);
      if (answer?.node) return;
    }
  })();
  watching.catch(() => {});
  try {
    await Promise.race([watching, delay(PROBE_MS, both)]);
  } finally {
    stop.abort();
  }
}

async function holding(
  store: EtcdV2Store,
  key: string,
  path: string,
  token: number,
  heldIndex: number,
  sentAt: number,
  request: AcquireRequest,
): Promise<AcquiredLock> {
  const value = encodeValue(request.value);
  const ttl = seconds(request.ttl);
  let leafIndex: number | undefined;
  const leaf = await store.call('PUT', leafPath(key), { value, ttl }, request.signal).catch(() => undefined);
  leafIndex = leaf?.node?.modifiedIndex;
  const watching = new AbortController();
  // The place deleted (its ttl ran out, a deleteTree, another client): lost at once, not at the next renewal.
  void (async () => {
    let from = heldIndex + 1;
    for (let failures = 0; !watching.signal.aborted; ) {
      try {
        const answer = await store.poll(path, from, false, watching.signal);
        failures = 0;
        if (!answer?.node) continue;
        from = answer.node.modifiedIndex + 1;
        if (answer.action !== 'update' && answer.action !== 'compareAndSwap' && answer.action !== 'set') {
          if (!watching.signal.aborted) request.onLost(`its queue place was removed (${answer.action})`);
          return;
        }
      } catch (error) {
        if (watching.signal.aborted) return;
        if (isCode(error, V2.eventIndexCleared)) {
          // Too far behind to replay: look at the place itself.
          const now = await store.call('GET', path, { quorum: true }, watching.signal).catch((e) => e);
          if (isCode(now, V2.keyNotFound)) {
            request.onLost('its queue place was removed');
            return;
          }
          if (now?.index) from = now.index + 1;
          continue;
        }
        await delay(backoff(failures++, 100, 2_000), watching.signal).catch(() => {});
      }
    }
  })();
  return {
    fencingToken: token,
    sentAt,
    renew: async (signal) => {
      try {
        await store.call('PUT', path, { refresh: true, prevExist: true, ttl }, signal);
      } catch (error) {
        if (isCode(error, V2.keyNotFound))
          throw new LockLostError(store.userKey(key), 'its queue place is gone');
        throw error;
      }
      if (leafIndex !== undefined) {
        const renewed = await store
          .call('PUT', leafPath(key), { refresh: true, prevExist: true, prevIndex: leafIndex, ttl }, signal)
          .catch(() => undefined);
        leafIndex = renewed?.node?.modifiedIndex ?? leafIndex;
      }
    },
    release: async (signal) => {
      watching.abort();
      // The value first, so it never removes the next holder's.
      if (leafIndex !== undefined) {
        await store.call('DELETE', leafPath(key), { prevIndex: leafIndex }, signal).catch(() => {});
      }
      try {
        await store.call('DELETE', path, {}, signal);
      } catch (error) {
        if (!isCode(error, V2.keyNotFound)) throw error;
      }
    },
  };
}
