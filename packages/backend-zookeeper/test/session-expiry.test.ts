import { createStore, type KVPair, type Store } from '@kv/core';
import { launchZooKeeper, privateServer, startRemoteFaultProxy } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import '../src/index.js';

// A client black-holed past its session timeout: the server expires its sessions (their ephemeral
// nodes go), the client learns it when the link heals and builds new sessions.
const server = await privateServer('the session expiry test', () => launchZooKeeper());
const stores: Store[] = [];
afterAll(async () => {
  await Promise.allSettled(stores.map((s) => s.close()));
  await server.server?.dispose();
});

const text = (pair: KVPair | null) => (pair ? new TextDecoder().decode(pair.value) : null);

/** Resolves when `watch(key)` (an async iterable of pairs) yields a state that `ok` accepts. */
async function until(iterator: AsyncIterator<KVPair | null>, ok: (p: KVPair | null) => boolean, ms: number) {
  const deadline = AbortSignal.timeout(ms);
  for (;;) {
    const next = await Promise.race([
      iterator.next(),
      new Promise<never>((_, reject) =>
        deadline.addEventListener('abort', () => reject(new Error(`no such state within ${ms} ms`)), {
          once: true,
        }),
      ),
    ]);
    if (next.done) throw new Error('the watch ended');
    if (ok(next.value)) return performance.now();
  }
}

describe.skipIf(!server.server)(`zookeeper session expiry (${server.skip || 'private server'})`, () => {
  it('lost fires before the server expires the session; a new session re-creates keepAlive keys and watches resume', async () => {
    const endpoint = (server.server as NonNullable<typeof server.server>).endpoints[0] as string;
    const proxy = await startRemoteFaultProxy(endpoint);
    const ttl = 2_000;
    const cut = await createStore({
      backend: 'zookeeper',
      endpoints: [proxy.endpoint],
      prefix: 'expiry',
      sessionTimeout: ttl,
      requestTimeout: 1_000,
    });
    const other = await createStore({ backend: 'zookeeper', endpoints: [endpoint], prefix: 'expiry' });
    stores.push(cut, other);

    await cut.put('live', 'kept', { ttl, keepAlive: true });
    await cut.put('w', 'before');
    const lock = cut.newLock('l', { ttl });
    const held = await lock.lock();
    let lostAt: number | undefined;
    held.lost.addEventListener('abort', () => {
      lostAt = performance.now();
    });
    const cutWatch = cut.watch('w')[Symbol.asyncIterator]();
    await until(cutWatch, (p) => text(p) === 'before', 5_000);
    const otherLive = other.watch('live')[Symbol.asyncIterator]();
    await until(otherLive, (p) => text(p) === 'kept', 5_000);

    await proxy.blackhole();
    const cutAt = performance.now();
    // The server expires the keepAlive key's session: the key goes for everyone else.
    const goneAt = await until(otherLive, (p) => p === null, 3 * ttl + 5_000);
    await other.put('w', 'during');
    expect(lostAt, 'lost fired before the server expired the session').toBeDefined();
    expect(lostAt as number).toBeLessThan(goneAt);
    expect((lostAt as number) - cutAt, 'lost within the ttl of the cut').toBeLessThan(ttl);
    // Another client gets the lock once the holder's session is gone.
    const taken = await other.newLock('l', { ttl }).tryLock();
    expect(taken, 'the lock is free once the holder session expired').not.toBeNull();
    expect(taken?.fencingToken).toBeGreaterThan(held.fencingToken);

    await proxy.pass();
    // The store learns its sessions expired, builds new ones, and re-creates its keepAlive key.
    await until(otherLive, (p) => text(p) === 'kept', 20_000);
    // Its watch resumes by itself and yields the state written while it was cut off, then what follows.
    await until(cutWatch, (p) => text(p) === 'during', 20_000);
    await other.put('w', 'after');
    await until(cutWatch, (p) => text(p) === 'after', 5_000);
    // And it serves calls again.
    await cut.put('x', 'y');
    expect(text(await other.get('x'))).toBe('y');
    await cutWatch.return?.();
    await otherLive.return?.();
    await proxy.close();
  });
});
