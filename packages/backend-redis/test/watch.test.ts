import { randomBytes } from 'node:crypto';
import { createStore, type KVPair, type Store, type TreeEvent } from '@kv/core';
import { serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import '../src/index.js';
import { text, within } from './helpers.js';

const redis = await serverFor('redis');

describe.skipIf(!redis.available)('redis watches follow the change channel', () => {
  const stores: Store[] = [];
  const open = async () => {
    const store = await createStore({
      backend: 'redis',
      endpoints: redis.endpoints,
      prefix: `watch-${Date.now()}-${stores.length}`,
    });
    stores.push(store);
    return store;
  };
  afterAll(async () => {
    for (const store of stores) await store.deleteTree('d').catch(() => {});
    await Promise.allSettled(stores.map((s) => s.close()));
  });

  it('every one of a burst of puts from another store is seen, in commit order, same values included', async () => {
    const store = await open();
    const writer = await createStore({ backend: 'redis', endpoints: redis.endpoints, prefix: store.prefix });
    stores.push(writer);
    const watch = store.watch('d/k')[Symbol.asyncIterator]();
    expect((await within(watch.next(), 10_000, 'first event')).value).toBeNull();
    const written: number[] = [];
    // Pipelined: the writes reach the server back to back, faster than any re-read could follow.
    await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const pair = await writer.atomicPut(`d/other${i % 3}`, 'x', null).catch(() => undefined);
        await writer.put('d/k', i % 2 === 0 ? 'same' : String(i));
        return pair;
      }),
    );
    for (const pair of await writer.list('d')) if (pair.key === 'd/k') written.push(pair.lastIndex);
    const seen: KVPair[] = [];
    while (seen.length < 200) {
      seen.push((await within(watch.next(), 10_000, `event ${seen.length + 1}`)).value as KVPair);
    }
    await watch.return?.();
    const indexes = seen.map((p) => p.lastIndex);
    expect([...indexes].sort((a, b) => a - b)).toEqual(indexes);
    expect(new Set(indexes).size).toBe(200);
    expect(indexes[199]).toBe(written[0]);
    expect(seen.filter((p) => text(p.value) === 'same').length).toBe(100);
  });

  it('values too large for a change message (over 64 KiB) are re-read, by watch and watchTree', async () => {
    const store = await open();
    const big = new Uint8Array(randomBytes(200_000));
    const watch = store.watch('d/big')[Symbol.asyncIterator]();
    const tree = store.watchTree('d')[Symbol.asyncIterator]();
    expect((await within(watch.next(), 10_000, 'first event')).value).toBeNull();
    expect(((await within(tree.next(), 10_000, 'first tree event')).value as TreeEvent).pairs).toEqual([]);
    await store.put('d/big', big);
    const pair = (await within(watch.next(), 10_000, 'big put')).value as KVPair;
    expect(Buffer.compare(pair.value, big)).toBe(0);
    const event = (await within(tree.next(), 10_000, 'big put in the tree')).value as TreeEvent;
    expect(event.pairs.length).toBe(1);
    expect(Buffer.compare((event.pairs[0] as KVPair).value, big)).toBe(0);
    expect((event.pairs[0] as KVPair).lastIndex).toBe(pair.lastIndex);
    await watch.return?.();
    await tree.return?.();
  });
});
