import { createStore, type KVPair, type Store, type TreeEvent } from '@kv/core';
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
});
