import { expect } from 'vitest';
import { KeyModifiedError, type KVPair, type LockLease, type Store } from '../index.js';
import {
  type Define,
  expectKVError,
  type FaultHooks,
  type PartitionableStore,
  Reader,
  sleep,
  type TestEnv,
  text,
  within,
} from './harness.js';

/** Cases that break things through the backend's `faults` hooks, on the backend's own fault server. */
export function faultCases(define: Define): void {
  define(
    'a partitioned holder: lost aborts strictly before another client acquires, which it does within ttl + ttlGranularity',
    {
      rows: ['partition', 'lock'],
      requires: 'lock',
      needsFault: 'openPartitionable',
      timeout: (caps, s) => 60_000 + 3 * (s.lockTtl + caps.ttlGranularity),
    },
    (t) =>
      withFaultStores(t, async (hooks, opened) => {
        const cut = await opened.partitionable(hooks);
        const other = await opened.plain(hooks);
        const ttl = t.settings.lockTtl;
        const held = await cut.store.newLock('locks/p', { value: 'cut', ttl }).lock();
        let lostAt: number | undefined;
        held.lost.addEventListener('abort', () => {
          lostAt = performance.now();
        });
        let holderHadLost: boolean | undefined;
        const waiting = other
          .newLock('locks/p', { value: 'other', ttl })
          .lock()
          .then((lease) => {
            holderHadLost = held.lost.aborted;
            return { lease, at: performance.now() };
          });
        waiting.catch(() => {});
        await cut.partition();
        const partitionedAt = performance.now();
        const bound = ttl + t.caps.ttlGranularity + t.settings.slack * 2;
        const { lease, at } = await within(
          waiting,
          bound,
          `the other client did not get the lock within ${bound} ms of the holder's partition`,
        );
        expect(holderHadLost, 'two holders: the other client acquired before the holder lost').toBe(true);
        expect(lostAt).toBeDefined();
        expect(lostAt as number).toBeLessThan(at);
        expect(at - partitionedAt).toBeLessThan(bound);
        expect(lease.fencingToken).toBeGreaterThan(held.fencingToken);
        // Healed, the old holder's release must not free the new holder's lock.
        await cut.heal();
        await cut.store.newLock('locks/p', { ttl }).tryLock(); // a round trip through the healed link
        const third = await opened.plain(hooks);
        expect(await third.newLock('locks/p', { ttl }).tryLock(), 'the new holder still holds it').toBeNull();
        expect(text((await third.get('locks/p')).value)).toBe('other');
      }),
  );

  define(
    'a partitioned watcher yields the latest state after the partition heals',
    {
      rows: ['partition', 'watch'],
      requires: 'watch',
      needsFault: 'openPartitionable',
      timeout: () => 60_000,
    },
    (t) =>
      withFaultStores(t, async (hooks, opened) => {
        const cut = await opened.partitionable(hooks);
        const writer = await opened.plain(hooks);
        await writer.put('w', 'v0');
        const reader = opened.reader(cut.store, 'w', t.settings.eventTimeout);
        expect(text(((await reader.next()) as KVPair).value)).toBe('v0');
        await cut.partition();
        for (let i = 1; i <= 5; i++) await writer.put('w', `v${i}`);
        await writer.delete('w');
        await writer.put('w', 'final');
        await sleep(500);
        await cut.heal();
        let last: KVPair | null = null;
        const deadline = performance.now() + t.settings.eventTimeout * 3;
        while (last?.value === undefined || text(last.value) !== 'final') {
          if (performance.now() > deadline)
            throw new Error('the healed watcher never yielded the final state');
          last = await reader.next(t.settings.eventTimeout * 3);
        }
        expect(text(last.value)).toBe('final');
      }),
  );

  define(
    'a server restart: watches resume by themselves with the latest state; lastIndex and fencing tokens never go backwards; a stale CAS fails',
    {
      rows: ['restart', 'watch', 'atomicPut', 'lock'],
      requires: ['watch', 'lock'],
      needsFault: 'restart',
      timeout: () => 120_000,
    },
    (t) =>
      withFaultStores(t, async (hooks, opened) => {
        const store = await opened.plain(hooks);
        const before = await store.atomicPut('r', 'before', null);
        const lock = store.newLock('locks/r', { ttl: t.settings.lockTtl });
        const token = (await lock.lock()).fencingToken;
        await lock.unlock();
        const reader = opened.reader(store, 'r', t.settings.eventTimeout);
        expect(text(((await reader.next()) as KVPair).value)).toBe('before');
        await (hooks.restart as () => Promise<void>)();
        // The same store object must come back by itself: retry until the server serves again.
        const after = await retry(() => store.put('r', 'after').then(() => store.get('r')), 30_000);
        expect(after.lastIndex, 'lastIndex went backwards across the restart').toBeGreaterThan(
          before.lastIndex,
        );
        await expectKVError(
          () => store.atomicPut('r', 'stale', before),
          KeyModifiedError,
          'CAS with a pair read before the restart',
        );
        expect(text((await store.get('r')).value)).toBe('after');
        let seen: KVPair | null = null;
        while (seen === null || text(seen.value) !== 'after') {
          seen = await reader.next(30_000);
        }
        const again = (await retry(() => lock.lock(), 30_000)) as LockLease;
        expect(again.fencingToken, 'fencing token went backwards across the restart').toBeGreaterThan(token);
        await lock.unlock();
      }),
  );
}

interface Opened {
  plain(hooks: FaultHooks): Promise<Store>;
  partitionable(hooks: FaultHooks): Promise<PartitionableStore>;
  reader(store: Store, key: string, timeout: number): Reader<KVPair | null>;
}

/** Opens stores on the fault server under the test's prefix, and closes them (healed) at the end. */
async function withFaultStores(
  t: TestEnv,
  body: (hooks: FaultHooks, opened: Opened) => Promise<void>,
): Promise<void> {
  const hooks = t.settings.faults as FaultHooks;
  const stores: Store[] = [];
  const cuts: PartitionableStore[] = [];
  const readers: Reader<unknown>[] = [];
  const opened: Opened = {
    plain: async (h) => {
      const store = await h.open(t.prefix);
      stores.push(store);
      return store;
    },
    partitionable: async (h) => {
      const cut = await (h.openPartitionable as NonNullable<FaultHooks['openPartitionable']>)(t.prefix);
      cuts.push(cut);
      stores.push(cut.store);
      return cut;
    },
    reader: (store, key, timeout) => {
      const reader = new Reader<KVPair | null>(() => store.watch(key), `watch(${key})`, timeout);
      readers.push(reader as Reader<unknown>);
      return reader;
    },
  };
  try {
    await body(hooks, opened);
  } finally {
    await Promise.allSettled(readers.map((r) => r.close()));
    await Promise.allSettled(cuts.map((c) => c.heal()));
    await Promise.allSettled(stores.map((s) => s.close()));
  }
}

/** Retries `fn` until it resolves or `ms` pass (a server coming back); rethrows the last error. */
async function retry<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  const until = performance.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (performance.now() > until) throw error;
      await sleep(200);
    }
  }
}
