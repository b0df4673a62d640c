import { randomUUID } from 'node:crypto';
import { createStore, type Store } from '@kv/core';
import { serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import '../src/index.js';
import { CuttingProxy, text, within } from './helpers.js';

const redis = await serverFor('redis');

describe.skipIf(!redis.available)(
  'redis hub: a connection drop during the first SUBSCRIBE is retried',
  () => {
    const stores: Store[] = [];
    const proxies: CuttingProxy[] = [];
    const open = async (endpoint: string, namespace: string) => {
      const store = await createStore({ backend: 'redis', endpoints: [endpoint], namespace, prefix: 'hub' });
      stores.push(store);
      return store;
    };
    afterAll(async () => {
      await Promise.allSettled(stores.map((s) => s.close()));
      await Promise.allSettled(proxies.map((p) => p.close()));
    });

    it('a watch whose first SUBSCRIBE lost its connection still starts and sees later changes', async () => {
      const proxy = await CuttingProxy.start(redis.endpoints[0] as string);
      proxies.push(proxy);
      const ns = `hub-${randomUUID()}`;
      const store = await open(proxy.endpoint, ns);
      const writer = await open(redis.endpoints[0] as string, ns);
      const cut = proxy.cutOnce('$9\r\nsubscribe');
      const watch = store.watch('k')[Symbol.asyncIterator]();
      const first = watch.next();
      await within(cut, 10_000, 'the SUBSCRIBE being cut');
      const cutAt = performance.now();
      expect((await within(first, 10_000, 'the first watch event after the cut')).value).toBeNull();
      process.stderr.write(
        `[backend-redis] watch started ${(performance.now() - cutAt).toFixed(0)} ms after its SUBSCRIBE was cut\n`,
      );
      await writer.put('k', 'after');
      const next = await within(watch.next(), 10_000, 'the put after the cut');
      expect(next.value && text(next.value.value)).toBe('after');
      await watch.return?.();
    });

    it('a lock() wait whose first SUBSCRIBE lost its connection gets the lock once it is unlocked', async () => {
      const proxy = await CuttingProxy.start(redis.endpoints[0] as string);
      proxies.push(proxy);
      const ns = `hub-${randomUUID()}`;
      const holderStore = await open(redis.endpoints[0] as string, ns);
      const waiterStore = await open(proxy.endpoint, ns);
      const holder = holderStore.newLock('job', { ttl: 60_000 });
      await holder.lock();
      const cut = proxy.cutOnce('$9\r\nsubscribe');
      const waiter = waiterStore.newLock('job', { ttl: 60_000 });
      const won = waiter.lock();
      await within(cut, 10_000, 'the SUBSCRIBE being cut');
      await holder.unlock();
      const unlockedAt = performance.now();
      const lease = await within(won, 10_000, 'the waiter getting the unlocked lock');
      process.stderr.write(
        `[backend-redis] lock() wait with a cut SUBSCRIBE: acquired ${(performance.now() - unlockedAt).toFixed(0)} ms after unlock\n`,
      );
      expect(lease.lost.aborted).toBe(false);
      // And the store's watches work too.
      const watch = waiterStore.watch('job')[Symbol.asyncIterator]();
      expect((await within(watch.next(), 10_000, 'a watch of the same store')).value).not.toBeNull();
      await watch.return?.();
      await waiter.unlock();
    });
  },
);
