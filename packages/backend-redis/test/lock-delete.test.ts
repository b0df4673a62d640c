import { randomUUID } from 'node:crypto';
import { createStore, type LockLease, LockLostError, type Store } from '@kv/core';
import { serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import '../src/index.js';
import { within } from './helpers.js';

const redis = await serverFor('redis');

/** Resolves with performance.now() when `signal` aborts. */
const abortedAt = (signal: AbortSignal): Promise<number> =>
  signal.aborted
    ? Promise.resolve(performance.now())
    : new Promise((resolve) =>
        signal.addEventListener('abort', () => resolve(performance.now()), { once: true }),
      );

describe.skipIf(!redis.available)('redis: data deletes never free a held lock', () => {
  const stores: Store[] = [];
  const open = async (namespace: string) => {
    const store = await createStore({
      backend: 'redis',
      endpoints: redis.endpoints,
      namespace,
      prefix: 'ld',
    });
    stores.push(store);
    return store;
  };
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
  });

  for (const how of ['delete of the lock key', 'deleteTree of its parent directory'] as const) {
    it(`${how}: a waiter gets the lock only after the holder's lost aborted (never two holders)`, async () => {
      const ns = `ld-${randomUUID()}`;
      const [holderStore, waiterStore, other] = [await open(ns), await open(ns), await open(ns)];
      const ttl = 3_000;
      const held = await holderStore.newLock('jobs/a', { value: 'holder', ttl }).lock();
      const lost = abortedAt(held.lost);

      const waiter = waiterStore.newLock('jobs/a', { value: 'waiter', ttl });
      let holderLostWhenWaiterWon: boolean | undefined;
      const won = waiter.lock().then((lease: LockLease) => {
        holderLostWhenWaiterWon = held.lost.aborted;
        return { lease, at: performance.now() };
      });
      // Held: nobody else gets it.
      expect(await other.newLock('jobs/a', { ttl }).tryLock()).toBeNull();

      if (how === 'delete of the lock key') await other.delete('jobs/a');
      else await other.deleteTree('jobs');

      // The holder learns (at its next renewal, within ttl/3) and only then frees the lock.
      const lostAt = await within(lost, ttl, 'the holder learning that its key was deleted');
      const { lease, at } = await within(won, ttl, 'the waiter acquiring after the holder let go');
      const overlapMs = Math.max(0, lostAt - at);
      process.stderr.write(`[backend-redis] ${how}: two holders for ${overlapMs.toFixed(1)} ms\n`);
      expect(
        holderLostWhenWaiterWon,
        'the waiter won while the first holder still believed it held the lock',
      ).toBe(true);
      expect(overlapMs).toBe(0);
      // Freed as soon as the holder let go, not at the end of its ttl.
      expect(at - lostAt).toBeLessThan(ttl / 2);
      expect(LockLostError.isInstance(held.lost.reason)).toBe(true);
      expect(lease.fencingToken).toBeGreaterThan(held.fencingToken);
      await waiter.unlock();
    });
  }

  it('a store that deletes the key of a lock it holds: its holder loses at once, then the lock is free', async () => {
    const ns = `ld-${randomUUID()}`;
    const [store, other] = [await open(ns), await open(ns)];
    const ttl = 30_000; // the next renewal would be 10 s away
    const held = await store.newLock('jobs/b', { ttl }).lock();
    const lost = abortedAt(held.lost);
    const started = performance.now();
    await store.deleteTree('jobs');
    const at = await within(lost, 2_000, 'the holder losing after its own store deleted its key');
    process.stderr.write(`[backend-redis] own delete: lost after ${(at - started).toFixed(1)} ms\n`);
    expect(LockLostError.isInstance(held.lost.reason)).toBe(true);
    // Then freed for others at once (not at the end of its ttl).
    const next = await within(other.newLock('jobs/b', { ttl }).lock(), 2_000, 'another store acquiring');
    expect(next.fencingToken).toBeGreaterThan(held.fencingToken);
  });

  it('a delete of the lock key does not let tryLock of another store take it', async () => {
    const ns = `ld-${randomUUID()}`;
    const [a, b] = [await open(ns), await open(ns)];
    const lock = a.newLock('k', { ttl: 30_000 });
    const held = await lock.lock();
    await b.delete('k');
    await b.deleteTree('k');
    expect(await b.newLock('k', { ttl: 30_000 }).tryLock()).toBeNull();
    await lock.unlock();
    expect(held.lost.aborted).toBe(true);
    const next = await b.newLock('k', { ttl: 30_000 }).tryLock();
    expect(next).not.toBeNull();
    await b.close();
  });
});
