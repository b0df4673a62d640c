import { createStore, InvalidArgumentError, KeyNotFoundError, type Store } from '@kv/core';
import { launchZooKeeper, privateServer } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import '../src/index.js';

// A server as most users run it: tickTime 2000 (so sessions from 4 s to 40 s) and no
// zookeeper.extendedTypesEnabled (no TTL nodes). The store enforces ttls itself and says so honestly.
const server = await privateServer('the default-settings server', () =>
  launchZooKeeper({ config: { tickTime: '2000', minSessionTimeout: '4000', maxSessionTimeout: '40000' } }),
);
const stores: Store[] = [];
afterAll(async () => {
  await Promise.allSettled(stores.map((s) => s.close()));
  await server.server?.dispose();
});

describe.skipIf(!server.server)(
  `zookeeper ttl on a default server (${server.skip || 'private server'})`,
  () => {
    it('minTtl is the server’s minimum session; a ttl key goes within ttl + ttlGranularity; watchers see it go', async () => {
      const endpoints = [...(server.server as NonNullable<typeof server.server>).endpoints];
      const store = await createStore({ backend: 'zookeeper', endpoints, prefix: 'ttl' });
      const reader = await createStore({ backend: 'zookeeper', endpoints, prefix: 'ttl' });
      stores.push(store, reader);
      const caps = store.capabilities;
      expect(caps.ttl).toBe(true);
      expect(caps.minTtl, 'minTtl = the server’s minSessionTimeout').toBe(4_000);
      await expect(store.put('short', 'x', { ttl: caps.minTtl - 1 })).rejects.toSatisfy((e: unknown) =>
        InvalidArgumentError.isInstance(e),
      );
      const ttl = caps.minTtl;
      const watch = reader.watch('k')[Symbol.asyncIterator]();
      expect((await watch.next()).value, 'the watch starts on the absent key').toBeNull();
      const started = performance.now();
      await store.put('k', 'v', { ttl });
      await store.put('kept', 'v', { ttl, keepAlive: true });
      expect(new TextDecoder().decode((await reader.get('k')).value)).toBe('v');
      // The watch yields the value, then the deletion, within ttl + ttlGranularity of the write.
      const bound = ttl + caps.ttlGranularity + 1_000;
      const deadline = AbortSignal.timeout(bound + 2_000);
      let goneAt: number | undefined;
      while (goneAt === undefined) {
        const next = await Promise.race([
          watch.next(),
          new Promise<never>((_, reject) =>
            deadline.addEventListener('abort', () => reject(new Error('the ttl key never went')), {
              once: true,
            }),
          ),
        ]);
        if (next.done) throw new Error('the watch ended');
        if (next.value === null) goneAt = performance.now();
        else expect(new TextDecoder().decode(next.value.value)).toBe('v');
      }
      expect(goneAt - started).toBeGreaterThanOrEqual(ttl - 50);
      expect(goneAt - started).toBeLessThan(bound);
      await expect(reader.get('k')).rejects.toSatisfy((e: unknown) => KeyNotFoundError.isInstance(e));
      // A keepAlive key outlives its ttl while its store lives.
      expect(new TextDecoder().decode((await reader.get('kept')).value)).toBe('v');
      await watch.return?.();
    });
  },
);
