import {
  createStore,
  KeyModifiedError,
  type KVPair,
  LockLostError,
  type Store,
  type TreeEvent,
} from '@kv/core';
import { afterAll, describe, expect, it } from 'vitest';
import '../src/index.js';
import { privateRedis, text, within } from './helpers.js';

const { server, skip } = await privateRedis('the restart test');

describe.skipIf(skip !== false)('redis restart', () => {
  const stores: Store[] = [];
  afterAll(async () => {
    await Promise.allSettled(stores.map((s) => s.close()));
    await server?.dispose();
  });

  it('watch and watchTree survive a server restart: they re-read, yield the current state, and go on', async () => {
    const srv = server as NonNullable<typeof server>;
    const store = await createStore({ backend: 'redis', endpoints: srv.endpoints, prefix: 'restart' });
    stores.push(store);
    const watch = store.watch('k')[Symbol.asyncIterator]();
    const tree = store.watchTree('d')[Symbol.asyncIterator]();
    const next = async <T>(it: AsyncIterator<T>, what: string): Promise<T> => {
      const result = await within(it.next(), 20_000, what);
      expect(result.done, `${what}: the iteration ended`).toBe(false);
      return result.value as T;
    };
    expect(await next(watch, 'first watch event')).toBeNull();
    expect((await next<TreeEvent>(tree, 'first tree event')).pairs).toEqual([]);

    await store.put('k', 'before');
    await store.put('d/x', 'before');
    expect(text(((await next(watch, 'put before')) as KVPair).value)).toBe('before');
    expect((await next<TreeEvent>(tree, 'tree put before')).pairs.map((p) => p.key)).toEqual(['d/x']);

    // No persistence: the restarted server is empty. The watches notice on reconnect.
    await srv.restart();
    expect(await next(watch, 'watch after the restart')).toBeNull();
    const afterRestart = await next<TreeEvent>(tree, 'tree after the restart');
    expect(afterRestart.pairs).toEqual([]);
    expect(afterRestart.changes).toEqual([{ type: 'delete', key: 'd/x' }]);

    // Writes go through the reconnected client and reach the resubscribed watches.
    await store.put('k', 'after');
    await store.put('d/y', 'after');
    expect(text(((await next(watch, 'put after')) as KVPair).value)).toBe('after');
    expect((await next<TreeEvent>(tree, 'tree put after')).pairs.map((p) => p.key)).toEqual(['d/y']);
    await watch.return?.();
    await tree.return?.();
  });
  it('versions and fencing tokens never go back across a restart that lost the data: a stale CAS fails', async () => {
    const srv = server as NonNullable<typeof server>;
    const store = await createStore({ backend: 'redis', endpoints: srv.endpoints, prefix: 'seq' });
    stores.push(store);
    await store.put('k', 'old');
    const old = await store.get('k');
    const lock = store.newLock('job', { ttl: 30_000 });
    const before = (await lock.lock()).fencingToken;
    await lock.unlock();

    await srv.restart(); // no persistence: {kv}:seq is gone with the data
    await store.put('k', 'new');
    const fresh = await store.get('k');
    const after = (await lock.lock()).fencingToken;
    await lock.unlock();
    process.stderr.write(
      `[backend-redis] restart: lastIndex ${old.lastIndex} -> ${fresh.lastIndex}, fencing token ${before} -> ${after}\n`,
    );
    expect(fresh.lastIndex).toBeGreaterThan(old.lastIndex);
    expect(after).toBeGreaterThan(before);
    expect(Number.isSafeInteger(after) && Number.isSafeInteger(fresh.lastIndex)).toBe(true);
    // The pair read before the restart must not match the value written after it.
    const error = await store.atomicPut('k', 'stale', old).catch((e: unknown) => e);
    expect(KeyModifiedError.isInstance(error), `a stale CAS was accepted: ${String(error)}`).toBe(true);
    expect(text((await store.get('k')).value)).toBe('new');
  });

  it('a lock held across a restart that lost it: lost aborts on reconnect, not at the next renewal', async () => {
    const srv = server as NonNullable<typeof server>;
    const store = await createStore({ backend: 'redis', endpoints: srv.endpoints, prefix: 'held' });
    stores.push(store);
    const ttl = 30_000; // the next renewal would come 10 s later
    const lease = await store.newLock('job', { ttl }).lock();
    const lost = new Promise<number>((resolve) =>
      lease.lost.addEventListener('abort', () => resolve(performance.now()), { once: true }),
    );
    const stopped = performance.now();
    await srv.restart();
    const at = await within(lost, 5_000, 'lost aborting after the restart');
    process.stderr.write(
      `[backend-redis] restart: lost aborted ${(at - stopped).toFixed(0)} ms after the restart began\n`,
    );
    expect(LockLostError.isInstance(lease.lost.reason)).toBe(true);
    // Free for others at once.
    const other = await createStore({ backend: 'redis', endpoints: srv.endpoints, prefix: 'held' });
    stores.push(other);
    expect(await other.newLock('job', { ttl }).tryLock()).not.toBeNull();
  });
});
