import { createStore, InvalidArgumentError, KeyNotFoundError, type Store } from '@kv/core';
import { serverFor } from '@kv/test-servers';
import { afterAll, describe, expect, it } from 'vitest';
import { parseZooKeeperUrl, ZooKeeperStore } from '../src/index.js';

const zookeeper = await serverFor('zookeeper');
const stores: Store[] = [];
afterAll(async () => {
  await Promise.allSettled(stores.map((s) => s.close()));
});
const text = (v: Uint8Array): string => new TextDecoder().decode(v);

describe('zookeeper:// URLs', () => {
  it('a URL that is not zookeeper:// is an InvalidArgumentError', () => {
    expect(() => parseZooKeeperUrl('etcd://127.0.0.1:2181/app')).toThrow(InvalidArgumentError);
  });

  it.skipIf(!zookeeper.available)(
    'zookeeper://127.0.0.1:PORT/prefix opens the server there, with the prefix as a path under the root',
    async () => {
      const endpoint = zookeeper.endpoints[0] as string;
      expect(endpoint).toMatch(/^127\.0\.0\.1:\d+$/);
      const prefix = `kvtest-zookeeper/url-${Date.now().toString(36)}-${process.pid}`;
      const store = await createStore(`zookeeper://${endpoint}/${prefix}`);
      stores.push(store);
      expect(store).toBeInstanceOf(ZooKeeperStore);
      await store.put('a/b', 'value');
      // `a` exists only as the parent of `a/b`: it is not a key.
      expect(await store.exists('a')).toBe(false);
      await expect(store.get('a')).rejects.toSatisfy((e: unknown) => KeyNotFoundError.isInstance(e));
      await store.put('a', '');
      expect(await store.exists('a')).toBe(true);
      expect((await store.list('')).map((p) => [p.key, text(p.value)])).toEqual([
        ['a', ''],
        ['a/b', 'value'],
      ]);
      // The prefix is a path: a store opened one level deeper sees the same node.
      const deeper = await createStore(`zookeeper://${endpoint}/${prefix}/a`);
      stores.push(deeper);
      expect(text((await deeper.get('b')).value)).toBe('value');
      await store.deleteTree('a');
      await store.delete('a');
      expect(await store.list('')).toEqual([]);
    },
  );
});
